"""Power states of the real firmware against the emulated car (hil.rig): engine off stops OBD
polling and leaves only ATRV, engine on resumes it, a battery below the floor for long enough
sends the dongle to (simulated) deep sleep and the timer wakes it. What the car receives is
recorded at the emulated ELM327, so "polling stops" is checked where it matters."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from hil.rig import Rig
from hil.scenario import parse

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("micropython")]

# ATRV, and the RPM probe of the default plan's parked column (firmware/dongle/plan.py)
PARKED_REQUESTS = {"ATRV"}


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def obd(requests: list[str]) -> list[str]:
    return [r for r in requests if not r.startswith("AT")]


def provision(workdir: Path, **cfg) -> None:
    flash = Path(workdir) / "flash0"
    flash.mkdir(parents=True, exist_ok=True)
    base = {"device_id": secrets.token_bytes(8).hex(), "secret": secrets.token_bytes(32).hex(),
            "pairing": True, "log_capacity": 1 << 20}
    (flash / "config.json").write_text(json.dumps({**base, **cfg}))


def drive_park_start():
    # A short drive (the firmware finds the ECU), parked (the bus answers NO DATA, then
    # sleeps), then the engine runs again (the alternator lifts the volts).
    return parse({"name": "park_and_start", "phase": [
        {"kind": "city", "duration_s": 40, "speedup": 10},
        {"kind": "park", "duration_s": 300, "speedup": 100},
        {"kind": "idle", "duration_s": 1200, "speedup": 60},
    ]})


def test_engine_off_stops_polling_but_atrv_and_engine_on_resumes(tmp_path, requests_to_car):
    with Rig(drive_park_start(), tmp_path) as rig:
        rig.dongle.wait_for("event engine_off", 30)
        assert rig.emulator.vehicle.truth(rig.sim_s()).phase == "park"
        assert len(obd(requests_to_car)) > 20  # it did poll while the engine ran
        mark = len(requests_to_car)
        # Parked: the supply is still watched (ATRV, the adapter's own pin: no bus
        # traffic) and nothing is sent to the car, so its modules can sleep.
        wait_until(lambda: requests_to_car[mark:].count("ATRV") >= 4, 20, "4 ATRV while parked")
        parked = requests_to_car[mark:]
        assert set(parked) == {"ATRV"}, parked

        rig.dongle.wait_for("event engine_on", 30)
        assert rig.emulator.vehicle.truth(rig.sim_s()).phase == "idle"
        before_on = requests_to_car[mark:]
        assert set(before_on) <= PARKED_REQUESTS, before_on  # nothing else until the decision
        mark = len(requests_to_car)
        wait_until(lambda: len([r for r in requests_to_car[mark:] if r.startswith("01")]) >= 10, 20,
                   "mode 01 polling to resume")
        out = "\n".join(rig.dongle.lines)
        assert "Traceback" not in out and "MemoryError" not in out


def battery_draining():
    return parse({"name": "battery_drain", "vehicle": {"battery_v": 12.4}, "phase": [
        {"kind": "city", "duration_s": 30, "speedup": 10},
        {"kind": "weak_battery", "end_volts": 11.0, "duration_s": 7200, "speedup": 1200},
    ]})


def test_battery_below_the_configured_floor_logs_sleeps_and_wakes(tmp_path, requests_to_car):
    # floor 12.0 V after 5 sim minutes (the default floor is 11.8 V), 10 sim minutes of sleep
    provision(tmp_path, power={"floor_mv": 12000, "floor_after_ms": 300000, "sleep_ms": 600000})
    with Rig(battery_draining(), tmp_path) as rig:
        rig.dongle.wait_for("event engine_off", 30)
        rig.dongle.wait_for("event battery_low", 30)
        volts = rig.emulator.vehicle.battery_volts(rig.sim_s())
        assert 11.8 < volts < 12.0, volts  # the configured floor decided, not the default
        assert rig.dongle.wait_for("sleep", 5) == "sleep 600000"
        mark = len(requests_to_car)
        rig.dongle.wait_for("woke", 30)
        asleep = requests_to_car[mark:]
        # Nothing is polled while asleep; at most the first ATRV after the timer wake can
        # reach the car before its "woke" line reaches us.
        assert obd(asleep) == [] and asleep.count("ATRV") <= 1, asleep
        mark = len(requests_to_car)
        wait_until(lambda: "ATRV" in requests_to_car[mark:], 20, "ATRV after waking")
        # Still below the floor: the same decision again, after the same wait.
        rig.dongle.wait_for("event battery_low", 30)
        out = "\n".join(rig.dongle.lines)
        assert "Traceback" not in out and "MemoryError" not in out
