"""The first vertical slice end to end: vehicle (ELM327 emulator) → link model → the real
firmware on MicroPython → simulated BLE → the daemon → SQLite.

Every record the dongle logged lands exactly once, and every stored sample is the
bytes the vehicle model answered, in the order it answered them, decoded as
python-OBD decodes them.
"""

from __future__ import annotations

import math

import obd
import pytest
from e2e import Answers, assert_exactly_once, query, running_daemon, short_city, sim_reaches, synced
from obd.OBDResponse import Status
from obd.protocols import ISO_15765_4_11bit_500k

from hil.rig import Rig

pytestmark = pytest.mark.slow

DRIVE_S = 300  # sim seconds of the city drive at its 48x: about 6 s
# A sample is stamped when its answer is complete on the dongle, the vehicle answered
# when the request arrived: the link's latency apart (about 2 sim s at 48x here), plus
# the anchor's own error. Generous, because the order check below is exact and this one
# only catches a wrong time mapping (off by a whole boot offset or a unit).
STAMP_TOLERANCE_S = 15.0
# Decoded by our own code, each for a reason given in obdsync.decode; checked by rule here.
OWN_DECODE = {0x01, 0xA6, 0xFF}


def python_obd_value(pid: int, data: bytes) -> object:
    """What python-OBD makes of the ECU's answer, through its own CAN frame parser (the
    path it takes on a real adapter), not through our decode module: a number, or its
    non-numeric value (a Status for the readiness PID 0x41) as it is."""
    proto = ISO_15765_4_11bit_500k(["7E8 06 41 00 BE 3F A8 13"])
    payload = bytes((0x41, pid)) + data
    line = "7E8 " + " ".join(f"{b:02X}" for b in bytes((len(payload),)) + payload)
    value = obd.commands[1][pid](proto([line])).value
    if isinstance(value, Status):
        return value
    return float(getattr(value, "magnitude", value))


def own_value(signal: int, raw: bytes) -> float:
    if signal == 0x01:
        return float(raw[0] >> 7)  # MIL (SAE J1979 PID 01, byte A bit 7)
    if signal == 0x101:
        return float(raw[0] & 0x7F)  # DTC count
    if signal == 0xA6:
        return int.from_bytes(raw, "big") / 10.0
    return int.from_bytes(raw, "big") / 1000.0  # ATRV in mV


async def test_city_drive_lands_every_record_once_with_the_vehicles_values(tmp_path, monkeypatch):
    answers = Answers().install(monkeypatch)
    sc = short_city(DRIVE_S)
    db = tmp_path / "obdsync.db"
    with Rig(sc, tmp_path) as rig:
        async with running_daemon(rig, db) as daemon:
            await sim_reaches(rig, DRIVE_S)
            (status,) = await synced(daemon)
        device = rig.dongle.device_id
        vehicle = rig.emulator.vehicle
        schedule = rig.schedule

    # -- exactly once ------------------------------------------------------------------
    stored = assert_exactly_once(db, device, status["next_seq"] - 1)
    # Stopped as by SIGTERM: what it had received is stored and acked, up to the last.
    assert daemon.runners[0].link.stats.acked == stored[-1]
    kinds = dict(query(db, "SELECT kind, COUNT(*) FROM records GROUP BY kind"))
    assert kinds.get(1, 0) > 20, f"too few sample records for a {DRIVE_S} s drive: {kinds}"

    # -- the vehicle's bytes, in its order ----------------------------------------------
    (t0, wall_ms), = query(db, "SELECT t0, wall_ms FROM anchors WHERE boot = ? AND approx = 0",
                           (status["boot"],))
    boot_sim_ms = schedule.sim_ms(wall_ms / 1000) - t0  # the dongle's clock at its boot, in sim ms
    rows = query(db, "SELECT channel, raw, t_ms, value, approx FROM samples WHERE channel < 256"
                     " ORDER BY boot, t_ms, seq, n")
    assert not any(r[4] for r in rows), "samples of an anchored boot marked approximate"
    served = answers.mode01(vehicle)
    by_pid: dict[int, list[tuple[bytes, int]]] = {}
    for ch, raw, t_ms, _v, _a in rows:
        if ch != 0xFF:
            by_pid.setdefault(ch, []).append((raw, t_ms))
    assert {0x0C, 0x0D, 0x2F} <= set(by_pid), f"no RPM, speed or fuel level stored: {sorted(by_pid)}"
    for pid, got in sorted(by_pid.items()):
        want = served.get(pid, [])
        # The dongle logs every answer, so the stored series is the answered one up to
        # where the daemon stopped (synced() made that the end of the drive).
        assert [raw for raw, _ in got] == [data for _, data in want[:len(got)]], \
            f"PID {pid:02X}: stored bytes differ from what the vehicle answered, in order"
        for (_raw, t_ms), (t_answer, _data) in zip(got, want, strict=False):
            stamp = (boot_sim_ms + t_ms) / 1000
            assert abs(stamp - t_answer) <= STAMP_TOLERANCE_S, \
                f"PID {pid:02X}: sample stamped at sim {stamp:.1f} s, answered at {t_answer:.1f} s"

    # The answers are the model's own numbers: a fresh vehicle of the same seed, asked at
    # the same sim times, says the same bytes (slosh noise included).
    fresh = sc.make_vehicle()
    for pid in (0x0C, 0x0D, 0x2F):
        for t, data in served[pid][:: max(1, len(served[pid]) // 10)]:
            assert fresh.pid_data(pid, fresh.truth(t)) == data, f"PID {pid:02X} at sim {t} s"

    # -- decoded as python-OBD decodes them ----------------------------------------------
    pairs = query(db, "SELECT DISTINCT channel, raw, value FROM samples")
    checked = 0
    for signal, raw, value in pairs:
        if signal in OWN_DECODE or signal >> 8:
            want = own_value(signal, raw)
        else:
            want = python_obd_value(signal, raw)
        if isinstance(want, Status):
            # Not a number: no value is stored, only the raw bytes python-OBD read it from.
            assert value is None, f"signal {signal:#x} raw {raw.hex()}: stored {value}, python-OBD gives {want}"
            checked += 1
            continue
        assert value is not None and math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-9), \
            f"signal {signal:#x} raw {raw.hex()}: stored {value}, python-OBD/SAE gives {want}"
        checked += 1
    assert checked >= len(by_pid)
