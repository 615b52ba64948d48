"""Power states of the real firmware against the emulated car (hil.rig): engine off stops OBD
polling and leaves only ATRV, engine on resumes it; parked and idle, or with a battery below
the floor, the dongle goes to deep sleep — a reset, as on the board: the process ends and the
rig starts it again at the timer or when the supply rises (hil/mpy/simsleep.py). A timer wake
looks at the supply and sleeps again; the engine starting wakes it in full. What the car
receives is recorded at the emulated ELM327, so "polling stops" is checked where it matters."""

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


def boots_between(lines: list[str], first: str, last: str) -> list[list[str]]:
    """The output of each boot (split at "boot ") from the line starting with `first` on."""
    out: list[list[str]] = []
    started = False
    for ln in lines:
        started = started or ln.startswith(first)
        if not started:
            continue
        if ln.startswith("boot "):
            out.append([])
        if out:
            out[-1].append(ln)
        if ln.startswith(last):
            break
    return out


def test_battery_below_the_floor_logs_once_sleeps_and_each_timer_wake_only_reads_the_supply(
        tmp_path, requests_to_car):
    # floor 12.0 V after 5 sim minutes (the default floor is 11.8 V), 10 sim minutes of sleep.
    # Parked and healthy at first, it sleeps (10 minutes parked); the battery falls while it
    # sleeps, the timer wakes see it below the floor twice and start it to log battery_low.
    provision(tmp_path, power={"floor_mv": 12000, "floor_after_ms": 300000, "sleep_ms": 600000})
    with Rig(battery_draining(), tmp_path, deep_sleep=True) as rig:
        d = rig.dongle
        d.wait_for("event engine_off", 30)
        assert d.wait_for("sleep", 30) == "sleep 600000 (parked)"
        start = d.wait_for(lambda ln: ln.startswith("wake timer") and ln.endswith(": start"), 60)
        assert int(start.split()[2]) < 12000, start
        d.wait_for("event battery_low", 30)
        logged = len(d.boots)
        assert d.wait_for("sleep", 5) == "sleep 600000 (battery low)"
        mark = len(requests_to_car)
        for _ in range(2):
            assert d.wait_for("boot", 30) == "boot timer"
            woke = d.wait_for("wake timer", 30)
            assert woke.endswith(": parked, sleep 600000"), woke
            assert int(woke.split()[2]) < 12000  # still below the floor: asleep again, not logged again
        asleep = requests_to_car[mark:]
        # Each timer wake asks the adapter for the supply and nothing of the car.
        assert set(asleep) == {"ATRV"} and len(asleep) >= 2, asleep
        lines = d.lines
        assert lines.count("event battery_low") == 1
        after = d.boots[logged:logged + 2]
        assert [b.reason for b in after] == ["timer", "timer"] and after[0].slept
        # a timer wake that sleeps again never brings up the radio or the log
        wakes = boots_between(lines, "sleep 600000 (battery low)", "never")
        assert len(wakes) >= 2
        for w in wakes[:2]:
            assert not [ln for ln in w if ln.startswith(("ready", "event"))], w
        out = "\n".join(lines)
        assert "Traceback" not in out and "MemoryError" not in out


def park_then_start(park_s: int = 3600, park_x: int = 600, idle_s: int = 600, idle_x: int = 30):
    # A short drive, a long park (healthy battery: 12.6 V), then the engine runs (14 V+).
    return parse({"name": "park_then_start", "phase": [
        {"kind": "city", "duration_s": 40, "speedup": 10},
        {"kind": "park", "duration_s": park_s, "speedup": park_x},
        {"kind": "idle", "duration_s": idle_s, "speedup": idle_x},
    ]})


def test_parked_and_healthy_it_sleeps_and_the_supply_rising_wakes_it_in_full(tmp_path, requests_to_car):
    # The timer is armed for a day, so the only wake before it is the supply pin's: with timer
    # wakes every few sim minutes at 800x, one could be running (reading ATRV) just as the engine
    # starts and rightly start the dongle itself, and the supply pin would go untested. Timer
    # wakes that look and sleep again are the battery test's (above) and the "park" bench's.
    park_s = 4800
    provision(tmp_path, supply_pin=32, power={"park_sleep_after_ms": 120000, "sleep_ms": 86_400_000})
    with Rig(park_then_start(park_s=park_s, park_x=800), tmp_path, deep_sleep=True) as rig:
        d = rig.dongle
        d.wait_for("event engine_off", 30)
        assert d.wait_for("sleep", 30) == "sleep 86400000 (parked)"
        mark = len(requests_to_car)
        # The engine starts: the comparator on the supply pin wakes the board at once.
        d.wait_for("boot supply", 90)
        supply = d.boots[-1]
        truth = rig.emulator.vehicle.truth(supply.sim0)
        assert truth.phase == "idle"
        asleep = list(requests_to_car[mark:])
        d.wait_for("ready", 30)
        d.wait_for("event engine_on", 30)
        mark2 = len(requests_to_car)
        wait_until(lambda: len([r for r in requests_to_car[mark2:] if r.startswith("01")]) >= 10, 30,
                   "mode 01 polling after the supply wake")
        assert [b.reason for b in d.boots] == ["cold", "supply"]
        # Asleep, nothing reached the car: the first request after the sleep is the supply boot's.
        before_supply = asleep[: asleep.index("ATZ")] if "ATZ" in asleep else asleep
        assert before_supply == [], before_supply
        # At once: within minutes of sim time of the start (5 s real at 30x; the timer was a day away).
        started_s = 40 + park_s  # the drive, then the park
        assert 0 <= supply.sim0 - started_s < 150, supply.sim0
        # The radio came up twice only: the cold boot and the supply wake.
        assert sum(1 for ln in d.lines if ln.startswith("ready")) == 2
        out = "\n".join(d.lines)
        assert "Traceback" not in out and "MemoryError" not in out


def test_without_a_supply_pin_the_timer_wake_finds_the_running_engine(tmp_path):
    provision(tmp_path, power={"park_sleep_after_ms": 120000, "sleep_ms": 600000})
    with Rig(park_then_start(park_s=1800, idle_s=1800, idle_x=120), tmp_path, deep_sleep=True) as rig:
        d = rig.dongle
        assert d.wait_for("sleep", 60) == "sleep 600000 (parked)"
        start = d.wait_for(lambda ln: ln.startswith("wake timer") and ln.endswith(": start"), 60)
        assert int(start.split()[2]) >= 13000, start  # the alternator's voltage
        assert rig.emulator.vehicle.truth(d.boots[-1].sim0).phase == "idle"
        d.wait_for("ready", 30)
        d.wait_for("event engine_on", 30)
        assert "supply" not in [b.reason for b in d.boots]
