"""The firmware's ELM327 driver on the real MicroPython interpreter: scripted replies, a
seeded fuzz of hostile replies, and the ELM327 emulator on a pty."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hil import mpy
from hil.build_firmware import cross_compile

TESTS = Path(__file__).resolve().parent
MODULES = {"firmware/dongle": ("__init__", "elm327", "elm_rare", "plan", "scheduler", "uart"), "protocol": ("__init__", "channels")}
WARNING_LOG = "version: 1\ndisable_existing_loggers: false\nroot:\n  level: WARNING\n  handlers: []\n"


@pytest.fixture(scope="session")
def dongle_mpy(tmp_path_factory) -> Path:
    """The driver, protocol/channels and the tests/mpy scripts compiled with mpy-cross, as on
    the board: compiling sources on a 64K heap does not fit."""
    out = tmp_path_factory.mktemp("dongle_mpy")
    jobs = [(mpy.ROOT / d / f"{m}.py", out / Path(d).name / f"{m}.mpy") for d, ms in MODULES.items() for m in ms]
    jobs += [(p, out / f"{p.stem}.mpy") for p in sorted((TESTS / "mpy").glob("elm_*.py"))]
    jobs += [(p, out / f"{p.stem}.mpy") for p in sorted((TESTS / "mpy").glob("sched_*.py"))]
    for src, dst in jobs:
        dst.parent.mkdir(exist_ok=True)
        cross_compile(src, dst)
    return out


# The firmware's data budget (mpy.HEAPSIZE, 64K) plus room for the driver's and scheduler's own
# code, which these scripts load from .mpy into the same heap (≈ 20 KB on the 64-bit build,
# where 64K alone left the scheduler's arrays 2 KB short). These tests check parsing and
# allocation per request; the memory budget is figure "board" and tests/test_firmware_heap.py.
DRIVER_HEAPSIZE = "96K"


def run_module(compiled: Path, module: str, *args: str, heapsize: str = DRIVER_HEAPSIZE,
               timeout: float = 120) -> list[str]:
    """Run a compiled tests/mpy module on MicroPython; its stdout lines (fails on a crash)."""
    env = dict(os.environ, MICROPYPATH=f"{compiled}:.frozen")
    proc = subprocess.run([mpy.interpreter(), "-X", f"heapsize={heapsize}", "-m", module, *args],
                          capture_output=True, timeout=timeout, env=env, cwd=compiled)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out[-2000:] + proc.stderr.decode(errors="replace")[-3000:]
    return out.splitlines()


def lines_by_key(lines: list[str]) -> dict[str, str]:
    return {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] if " " in ln else "" for ln in lines}


@pytest.fixture
def elm_pty(tmp_path):
    """`elm -b - -s car` on a pty (its path is its first stdout line); SIGINT stops it, and it
    is stopped whatever the test did."""
    cfg = tmp_path / "log.yaml"
    cfg.write_text(WARNING_LOG)
    proc = subprocess.Popen([str(Path(sys.executable).with_name("elm")), "-b", "-", "-s", "car"],
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


# The scripted cases create many drivers and a Python fake chip: a heap for them, not the board's.
def test_scripted_replies_parse_to_defined_outcomes(dongle_mpy, micropython):
    lines = run_module(dongle_mpy, "elm_cases", heapsize="256K")
    got = lines_by_key(lines)
    assert got["init"].startswith("6 True 12600 be3fa813901ff015") and "b'ATZ', b'ATE0'" in got["init"]
    assert got["supported"] == "['0xc', '0xd', '0xa6']"  # 0x5E is not in the bitmap, A7 neither
    both = "OK 0C=1af8 0D=32 uns=0 tr=0 gb=0"
    for name in ("single", "spaces", "two_ecus", "searching"):
        assert got[name] == both, name
    assert got["reordered"] == "OK 0D=32 0C=1af8 uns=0 tr=0 gb=0"
    six = "OK 0C=1af8 0D=32 04=11 05=0f 11=7f 0F=44 uns=0 tr=0 gb=0"
    for name in ("multi", "multi_nolen", "two_ecus_multi", "slow_line"):
        assert got[name] == six, name
    assert got["partial"] == "OK 0C=1af8 uns=0 tr=0 gb=0"
    assert got["no_data"] == "NO_DATA  uns=0 tr=0 gb=0"
    assert got["unasked"] == "NO_DATA  uns=1 tr=0 gb=0"
    assert got["truncated_pid"] == "OK 0C=1af8 uns=0 tr=1 gb=0"
    assert got["odd_line"] == "NO_DATA  uns=0 tr=1 gb=0"
    assert got["garbage"] == "GARBAGE  uns=0 tr=0 gb=1"
    for name, st in (("can_error", "CAN_ERROR"), ("bus_init", "BUS_INIT"), ("unable", "UNABLE"),
                     ("buffer_full", "BUFFER_FULL"), ("stopped", "STOPPED"), ("reset", "RESET"),
                     ("no_prompt", "TIMEOUT")):
        assert got[name].split()[0] == st, name
    assert got["mode61"] == "NO_DATA  uns=1 tr=0 gb=0"  # the emulator's 0x61 answer to A6
    assert got["frame_gap"].startswith("OK 0C=1af8 0D=32 uns=0")  # frames after a gap are dropped
    assert got["reset_ready"] == "False 1"
    assert got["stuck_refuses"] == "NOT_READY OK True"  # nothing is sent until recover() found a prompt
    assert got["digit"] == "UNKNOWN OK [b'010D1', b'010D'] False"
    assert got["multi_no_digit"] == "b'010C0D'"
    assert got["busy"] == "True BUSY b'010C1'"
    assert got["bad_args"] == "BAD_ARG BAD_ARG"
    assert got["vin"] == "OK b'WP0ZZZ99ZTS390000'"
    assert got["vin_kline"] == "OK b'WP0LSZZZ999ZTS390'"
    # dongle.elm_rare (VIN, freeze frame) is unloaded after each read, whatever its outcome
    assert got["rare_unloaded"].split()[:3] == ["True", "True", "True"], got["rare_unloaded"]
    assert got["dtc03"] == "OK 0133c123"
    assert got["dtc_nocount"] == "OK 0133"
    assert got["dtc07"] == "OK 0"
    assert got["dtc_bad_mode"] == "BAD_ARG"
    assert got["clear"] == "OK b'04'"
    vol = [ln for ln in lines if ln.startswith("volts")]
    assert vol[0] == "volts OK 12600 FF=3138"
    assert [v.rsplit(" ", 2)[1:] for v in vol[1:]] == [["OK", "13000"], ["OK", "12450"], ["GARBAGE", "12450"],
                                                       ["GARBAGE", "12450"], ["GARBAGE", "12450"]]
    # the whitelist: no method sends caller-supplied text
    assert got["methods"] == ("['clear_dtcs', 'clock', 'init', 'is_legacy', 'pid_supported', 'poll', 'query_pids', 'read_dtcs', "
                              "'read_freeze', 'read_freeze_frame', 'read_vin', 'read_voltage', 'recover', 'start_pids', 'start_voltage']")


def test_the_chip_messages_table_names_each_message_with_its_status():
    # _ERRORS is one bytes object (length, status, text per message) for the board's heap:
    # read back, it must say what the module doc and the statuses say.
    from dongle import elm327 as E

    table, k = [], 0
    while k < len(E._ERRORS):
        n = E._ERRORS[k]
        table.append((E._ERRORS[k + 2:k + 2 + n].decode(), E.NAMES[E._ERRORS[k + 1]]))
        k += 2 + n
    assert k == len(E._ERRORS)
    assert table == [("NO DATA", "NO_DATA"), ("STOPPED", "STOPPED"), ("CAN ERROR", "CAN_ERROR"),
                     ("BUS INIT", "BUS_INIT"), ("BUS ERROR", "BUS_ERROR"), ("BUS BUSY", "BUS_ERROR"),
                     ("UNABLE TO CONNECT", "UNABLE"), ("BUFFER FULL", "BUFFER_FULL"), ("ELM327", "RESET"),
                     ("LV RESET", "RESET"), ("?", "UNKNOWN"), ("DATA ERROR", "OTHER_ERROR"),
                     ("<DATA ERROR", "OTHER_ERROR"), ("<RX ERROR", "OTHER_ERROR"), ("FB ERROR", "OTHER_ERROR"),
                     ("ERR", "OTHER_ERROR"), ("ACT ALERT", "OTHER_ERROR"), ("LP ALERT", "OTHER_ERROR")]


def test_every_reply_shape_parses_without_allocating(dongle_mpy, micropython):
    # The poll path runs per sample: under heap_lock, on both word sizes (32-bit: the ESP32's).
    got = lines_by_key(run_module(dongle_mpy, "elm_heap"))
    assert "end" in got
    assert got["headers_off_frames"] == "OK 6 ok -"
    assert got["headers_off_single"] == "OK 1 ok -"
    assert got["can11_two_ecus_interleaved"] == "OK 6 ok gathered"
    assert got["can29"] == "OK 2 ok -"
    assert got["legacy"] == "OK 1 ok -"
    assert got["volts"] == "OK 1 ok -"
    assert got["no_data"] == "NO_DATA 0 ok -"


def test_fuzzed_replies_never_raise_or_hang_and_reinit_after_banner(dongle_mpy, micropython):
    got = lines_by_key(run_module(dongle_mpy, "elm_fuzz", "3000", "20240611"))
    assert not any(k == "FAIL" for k in got), got
    assert got["cases"] == "3000 fails 0 reinits True after OK"
    for st in ("OK", "NO_DATA", "GARBAGE", "TIMEOUT", "RESET", "UNKNOWN", "CAN_ERROR"):
        assert f"'{st}'" in got["statuses"], st
    assert got["counters"] == "True True True True True"


def test_driver_against_the_emulator(dongle_mpy, elm_pty, micropython):
    lines = run_module(dongle_mpy, "elm_emu", elm_pty, timeout=60)
    got = lines_by_key(lines)
    assert got["init"] == "OK protocol 6 can True volts True"
    assert got["supported"] == "['0x1', '0x4', '0x5', '0xc', '0xd', '0xf', '0x10', '0x11', '0x2f', '0x31', '0x42', '0xa6']"
    assert got["multi"] == "OK [4, 5, 12, 13, 15, 17] True"
    assert got["single"] == "OK 1 True"  # the emulator ignores the count digit on one PID
    assert got["odometer"] == "NO_DATA 0 1"  # A6 answered as 0x61: ignored and counted
    assert got["vin"] == "OK 17 True"
    assert [ln for ln in lines if ln.startswith("dtc")] == ["dtc 3 OK 0", "dtc 7 OK 0", "dtc 10 OK 0"]
    assert got["volts"] == "True"


def test_clone_and_bus_variants_read_by_the_bytes(dongle_mpy):
    got = {" ".join(ln.split()[:2]): ln.split(" ", 2)[2] for ln in run_module(dongle_mpy, "elm_clones", heapsize="256K")}
    vin = "OK b'WVWZZZ1KZAW386754'"
    # Headers on (a clone ignoring ATH0): every line used to be dropped as truncated, and the
    # DTC read came back OK with 0 codes. Now: read, and each code kept with its ECU.
    for name in ("hdr11", "hdr11_spaces"):
        assert got[f"{name} init"] == "OK 6 True False 1 be3fa813", name
        assert got[f"{name} pids"] == "OK 0C@E8=1af8 0D@E8=32", name
        assert got[f"{name} dtc"] == "OK E8:0133 E9:c123", name  # P0133 from 7E8, U0123 from 7E9
        assert got[f"{name} vin"] == vin, name
    assert got["hdr29 init"] == "OK 6 True False 3 be3fa813"  # CAN | 29-bit
    assert got["hdr29 pids"] == "OK 0C@10=1af8 0D@10=32"
    assert got["hdr29 dtc"] == "OK 10:0133 18:c123"
    assert got["hdr29 vin"] == vin
    # "v2.1": OK to ATDPN and ATRV. The bus is read from a headers-on probe (CAN: multi-PID
    # allowed), ATRV is no voltage, and the count byte is not read as part of a code
    # (it used to give P0201 and P33C1).
    assert got["v21 init"] == "OK 0 True 0 [b'0160', b'0180', b'01A0']"
    assert got["v21 dtc"] == "OK 00:0133 00:c123"
    assert got["v21 pids"].startswith("OK 0C@00=") and " 0D@00=" in got["v21 pids"]
    # lower case, `searching...`, `no data` and NULs are the chip's words, not garbage
    assert got["lower init"] == "OK be3fa813 0"
    assert got["lower pids"] == "OK 0C@00=1af8 | NO_DATA  0"
    assert got["lower dtc"] == "OK 00:0133"
    # legacy buses with headers: check byte verified, 3 codes a frame without a count, VIN in 5 lines
    for name, proto in (("iso9141", "3"), ("kwp", "0")):
        assert got[f"{name} init"] == f"OK {proto} False True 4 be3fa813", name
        assert got[f"{name} pids"] == "OK 0C@10=1af8", name
        assert got[f"{name} dtc"] == "OK 10:0133 18:c123", name
        assert got[f"{name} vin"] == vin, name
    # a DTC reply that cannot be read whole is a named error, never fewer codes
    for name in ("count_mismatch", "cut_line", "frame_gap", "other_mode", "bad_check"):
        assert got[f"bad {name}"].split() == ["MALFORMED"], name
    # Two ECUs' multi-frame replies interleaved (headers on): reassembled per CAN id, each code
    # with its ECU (this used to be a cut message: MALFORMED). A missing or misordered frame of
    # one ECU's message still fails the read.
    for name, e, t in (("ilv11", "E8", "E9"), ("ilv29", "10", "18")):
        read, cut, misordered = (r.split() for r in got[f"{name} dtc"].split("|"))
        assert read == ["OK", f"{e}:0133", f"{e}:0134", f"{e}:0135", f"{t}:c123", f"{t}:c124", f"{t}:c125"], name
        assert cut[0] == misordered[0] == "MALFORMED", name
    # Freeze frame (mode 02 frame 0): the code that stored it and the frame's PIDs, per ECU where
    # headers show it; a value of the wrong length is MALFORMED, not a number; only the
    # whitelisted mode 02 PIDs are ever sent (01, 20: BAD_ARG, nothing written).
    for name, e, t in (("can11", "E8", "E9"), ("can29", "10", "18"), ("iso9141", "10", "18"), ("plain", "00", "00")):
        f = [r.split() for r in got[f"ff_{name} read"].split("|")]
        assert f[0] == ["OK", f"02@{e}=0133"] + ([f"02@{t}=0730"] if t != e else []), name
        assert f[1] == ["OK", f"0C@{e}=1af8"], name
        assert f[2] == ["MALFORMED"], name
        assert f[3] == ["NO_DATA"], name
        assert f[4] == ["BAD_ARG"] and f[5][0] == "BAD_ARG" and f[5][1] == "b'020500'", name
    assert got["bad error_beside"].split()[0] == "CAN_ERROR"
    assert got["bad vin_cut"] == "MALFORMED"
    assert got["bad buffer_full"].split() == ["BUFFER_FULL"]
    assert got["ok frames"] == "OK 00:0133 00:c123"  # ISO-TP frames, headers off
