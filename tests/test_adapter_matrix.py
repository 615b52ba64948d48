"""The adapter/ECU profile matrix (hil/adapters): the firmware's driver on MicroPython against
every profile, python-OBD as the oracle for every value, every code and the VIN.

For each profile the driver reads the plan's PIDs, the three DTC modes and the VIN through
the emulator and the link model wearing that profile (headers on or off, 11/29-bit CAN,
ISO 9141, KWP, J1850, clones answering OK to ATDPN, lower case, NULs, BUFFER FULL, batches
refused). python-OBD decodes the same ECU messages (as its own parser reads them: with
headers, from `hil.adapter.format_lines`), and the daemon's decoder must give the same values
from what the driver kept. The car holds codes in two ECUs: a read is the whole list,
attributed where the bus shows addresses, or a named error — never fewer codes.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import time
from pathlib import Path

import obd
import pytest
from obd.protocols import (
    ISO_9141_2,
    SAE_J1850_PWM,
    SAE_J1850_VPW,
    ISO_14230_4_5baud,
    ISO_14230_4_fast,
    ISO_15765_4_11bit_250k,
    ISO_15765_4_11bit_500k,
    ISO_15765_4_29bit_250k,
    ISO_15765_4_29bit_500k,
)
from test_elm327 import WARNING_LOG, dongle_mpy, lines_by_key, run_module  # noqa: F401  (fixtures)

from hil import adapter, mpy, scenario
from hil.adapter import Profile, format_lines
from hil.emulator import Emulator
from hil.linkmodel import LinkModel
from hil.vehicle import dtc_bytes
from obdsync.decode import Decoder, dtc_from_raw, ecu_name

PYOBD = {1: SAE_J1850_PWM, 2: SAE_J1850_VPW, 3: ISO_9141_2, 4: ISO_14230_4_5baud, 5: ISO_14230_4_fast,
         6: ISO_15765_4_11bit_500k, 7: ISO_15765_4_29bit_500k, 8: ISO_15765_4_11bit_250k, 9: ISO_15765_4_29bit_250k}
PROFILES = adapter.names()
SLICE = [n for n in PROFILES if not adapter.load_profile(n).soak_only]


def pyobd_messages(prof: Profile, served_0100, reply):
    """python-OBD's messages for the ECUs' reply, printed with headers (its parser needs them)."""
    lines0 = [ln for ecu, m in served_0100 for ln in format_lines(prof, ecu, m, True, True)]
    proto = PYOBD[prof.dpn](lines0)
    lines = [ln for ecu, m in reply for ln in format_lines(prof, ecu, m, True, True)]
    return proto(lines)


def pyobd_values(msgs) -> dict:
    """PID -> python-OBD's value, from its reassembled messages; a multi-PID answer (python-OBD
    asks one PID at a time) split by python-OBD's own command lengths. The first ECU's wins."""
    out = {}
    for m in msgs:
        data = bytes(m.data)
        i = 1
        while data[:1] == b"\x41" and i < len(data) and obd.commands.has_pid(1, data[i]):
            cmd = obd.commands[1][data[i]]
            piece = copy.copy(m)
            piece.data = bytearray(b"\x41" + data[i:i + cmd.bytes - 1])
            out.setdefault(data[i], cmd([piece]).value)
            i += cmd.bytes - 1
    return out


def run_profile(dongle_mpy, name):  # noqa: F811
    prof = adapter.load_profile(name)
    scn = scenario.load("city")
    # 2 minutes into the city drive: the engine runs, values move
    with Emulator(scn, clock=scn.schedule(time.time() - 120 / scn.phases[0].speedup), adapter=prof) as emu, \
            LinkModel(emu.pty, latency_s=0.005, adapter=prof) as link:
        lines = run_module(dongle_mpy, "elm_profile", link.pty, timeout=120)
        served = list(emu.served)
        truth = emu.vehicle.truth(emu.sim_s())
    return prof, lines, served, truth, emu.vehicle.params.vin


def check_profile(prof: Profile, lines: list[str], served: list, truth, vin: str) -> None:
    got = lines_by_key(lines)
    init = got["init"].split()
    assert init[0] == "OK", lines
    assert init[2] == str(int(prof.is_can)), f"bus family from the replies: {lines}"
    first_0100 = next(r for req, _t, r in served if req.startswith("0100") and not isinstance(r, str))
    decoder = Decoder()
    # every PID request: the driver's bytes, decoded by the daemon, equal python-OBD's decode
    # of the ECU's answer to that request
    by_req = {}
    for req, _t, reply in served:
        by_req.setdefault(req[:len(req) - len(req) % 2], []).append(reply)
    values = 0
    for ln in (x for x in lines if x.startswith("pids ")):
        f = ln.split()
        pids, status, results = bytes.fromhex(f[1]), f[2], f[3:]
        replies = by_req.pop("01" + f[1].upper(), None)
        assert replies, f"no served request for {ln}"
        reply = replies.pop(0)
        if replies:
            by_req["01" + f[1].upper()] = replies
        if isinstance(reply, str):
            assert status != "OK" and not results, ln
            continue
        # (a reply cut by BUFFER FULL: what came before the cut is checked like the rest)
        msgs = pyobd_messages(prof, first_0100, reply)
        for r in results:
            ch, ecu, data = r.split(":")
            ch = int(ch, 16)
            assert ch in pids
            # the ECU's address, kept from the header (0: the adapter printed none)
            assert int(ecu, 16) == (prof.ecu_label(0) if prof.headers == "always" else 0), ln
            ours = decoder.decode(ch, bytes.fromhex(data))
            theirs = pyobd_values(msgs)[ch]
            if ch == 0x01:
                assert ours[0].value == float(theirs.MIL) and ours[1].value == theirs.DTC_count, ln
            else:
                assert ours[0].value == pytest.approx(theirs.magnitude, rel=1e-9), (ln, ours, theirs)
            values += 1
    assert values >= 8, lines
    # DTCs: the whole list from every ECU, attributed where the bus showed addresses
    headers = prof.headers == "always"
    for mode, want_engine, key in ((3, truth.stored_dtcs, "stored_dtcs"), (7, truth.pending_dtcs, "pending_dtcs"),
                                   (0x0A, truth.permanent_dtcs, "stored_dtcs")):
        row = next(x for x in lines if x.startswith(f"dtc {mode} "))
        f = row.split()
        assert f[2] == "OK", row
        pairs = [p.split(":") for p in f[3:]]
        codes = sorted(dtc_from_raw(bytes.fromhex(c)) for _e, c in pairs)
        want = list(want_engine)
        for ecu in prof.ecus:
            want += ecu.stored_dtcs if key == "stored_dtcs" else ecu.pending_dtcs + ecu.stored_dtcs
        assert codes == sorted(set(want)), row
        if headers:
            names = {dtc_from_raw(bytes.fromhex(c)): ecu_name(int(e, 16)) for e, c in pairs}
            for i, ecu in enumerate(prof.ecus, start=1):
                for c in ecu.stored_dtcs:
                    assert names[c] == ecu_name(prof.ecu_label(i)), row
        if mode == 3 or prof.is_can:
            # python-OBD reads the same codes from the same ECU messages (its legacy parser
            # knows the frame layout of mode 03 only)
            reply = next(r for req, _t, r in served if req == f"{mode:02X}")
            theirs = sorted({c for m in pyobd_messages(prof, first_0100, reply) for c, _d in obd.decoders.dtc([m])})
            assert theirs == codes, (row, theirs)
    if prof.buffer_bytes and got["vin"] != f"OK {vin}":
        assert got["vin"] == "BUFFER_FULL ", got["vin"]  # the VIN's 3 frames do not fit: named, not cut
    else:
        assert got["vin"] == f"OK {vin}", got["vin"]


@pytest.mark.parametrize("name", SLICE)
def test_profile_reads_correct_values_codes_and_vin(dongle_mpy, name):  # noqa: F811
    check_profile(*run_profile(dongle_mpy, name))


@pytest.mark.soak
@pytest.mark.parametrize("name", [n for n in PROFILES if n not in SLICE])
def test_profile_reads_correct_values_codes_and_vin_soak(dongle_mpy, name):  # noqa: F811
    check_profile(*run_profile(dongle_mpy, name))


def test_the_matrix_covers_every_bus_and_clone_family():
    profs = [adapter.load_profile(n) for n in PROFILES]
    assert {p.protocol for p in profs} == set(adapter.PROTOCOLS)
    assert {"always"} <= {p.headers for p in profs} and {"lower"} <= {p.case for p in profs}
    assert {"no_data", "unknown"} <= {p.multi_pid for p in profs}
    assert any(p.at_ok for p in profs) and any(p.nul for p in profs) and any(p.buffer_bytes for p in profs)
    assert any(p.interleave and len(p.ecus) >= 2 for p in profs if p.headers == "always")
    assert any(p.ecus for p in profs if p.family == "kline") and any(p.ecus for p in profs if p.family == "can29")
    slice_ = [adapter.load_profile(n) for n in SLICE]
    assert {p.family for p in slice_} >= {"can11", "can29", "kline"}
    for p in profs:
        for e in p.ecus:
            for c in e.stored_dtcs + e.pending_dtcs:
                dtc_bytes(c)


def test_a_bad_profile_is_a_named_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('protocol = "CAN11/1000"\n')
    with pytest.raises(adapter.ProfileError, match="protocol must be one of"):
        adapter.load_profile(bad)
    bad.write_text('protocol = "CAN11/500"\nheaders = "sometimes"\n')
    with pytest.raises(adapter.ProfileError, match="headers must be one of"):
        adapter.load_profile(bad)
    with pytest.raises(adapter.ProfileError, match="no adapter profile 'nope'"):
        adapter.load_profile("nope")


# ---- the ELM327-emulator's own scenarios, unmodified ----------------------------------------

@contextlib.contextmanager
def stock_emulator(tmp_path, name):
    """`elm -b - -s NAME` on a pty, stopped (SIGINT) whatever the test did."""
    cfg = tmp_path / "log.yaml"
    cfg.write_text(WARNING_LOG)
    proc = subprocess.Popen([str(Path(mpy.interpreter()).with_name("elm")), "-b", "-", "-s", name],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd=tmp_path, env=dict(os.environ, ELM_LOG_CFG=str(cfg)))
    try:
        path = proc.stdout.readline().decode().strip()
        assert path.startswith("/dev/"), f"emulator printed {path!r}"
        yield path
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        proc.stdin.close()
        proc.stdout.close()


def raw_lines(hexs: str) -> list[str]:
    text = bytes.fromhex(hexs).decode("ascii", "replace")
    return [ln.strip() for ln in text.replace("\n", "\r").split("\r") if ln.strip() and "SEARCHING" not in ln]


@pytest.mark.parametrize("name", ["car", "default"])
def test_stock_emulator_scenarios_give_the_values_python_obd_reads_from_the_same_bytes(dongle_mpy, tmp_path, name):  # noqa: F811
    with stock_emulator(tmp_path, name) as pty:
        lines = run_module(dongle_mpy, "elm_profile", pty, "raw", timeout=120)
    got = lines_by_key(lines)
    assert got["init"].startswith("OK 6 1 ") and got["h1"] == "OK", lines
    first = lines.index(next(x for x in lines if x.startswith("raw ")))
    proto = ISO_15765_4_11bit_500k(raw_lines(lines[first].split()[1]))
    decoder = Decoder()
    values = 0
    for i, ln in enumerate(lines):
        if not ln.startswith("pids ") or not lines[i - 1].startswith("raw "):
            continue
        f = ln.split()
        if f[2] != "OK":
            continue
        theirs_by_ecu = {}
        for m in proto(raw_lines(lines[i - 1].split()[1])):  # the bytes the driver parsed
            for pid, v in pyobd_values([m]).items():
                theirs_by_ecu.setdefault((pid, 0xE8 + m.tx_id), v)
        for r in f[3:]:
            ch, ecu, data = (int(r.split(":")[0], 16), int(r.split(":")[1], 16), r.split(":")[2])
            if ch == 0x00:
                continue
            ours = decoder.decode(ch, bytes.fromhex(data))
            theirs = theirs_by_ecu[(ch, ecu)]
            if ch == 0x01:
                assert (ours[0].value, ours[1].value) == (float(theirs.MIL), theirs.DTC_count), ln
            else:
                assert ours[0].value == pytest.approx(theirs.magnitude, rel=1e-9), (ln, ours, theirs)
            values += 1
    assert values >= (8 if name == "car" else 4), lines
    # `car`: mode 03 answered without the count byte, no codes; `default` has no mode 03 at all
    # (NO DATA): not a read, and never "no codes"
    for mode in (3, 7, 10):
        row = next(x for x in lines if x.startswith(f"dtc {mode} ")).split()
        assert row[2] == ("OK" if name == "car" else "NO_DATA") and len(row) == 3, row
    assert got["vin"] == "OK WP0ZZZ99ZTS390000"
