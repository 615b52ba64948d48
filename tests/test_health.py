"""The health check against scenarios that plant each condition: the vehicle model's ECU
answers are polled at the firmware's default plan rates (firmware/dongle/plan.py, read
from its source), stored as the link would deliver them, events derived by a replay,
then `health.check` reads the store. One condition per scenario, and a healthy car that
raises no warning; the shipped `used_car` scenario plants them all at once."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from e2e import scenario

from hil import scenario as hil_scenario
from obdsync import health
from obdsync.config import Config
from obdsync.pipeline import replay
from obdsync.store import Store
from protocol.channels import CH_VOLTAGE, DATA_LEN
from protocol.record import KIND_ANCHOR, KIND_DTC, KIND_SAMPLES

EPOCH_MS = 1_700_000_000_000
DEVICE = "00112233aabbccdd"
ROOT = Path(__file__).resolve().parents[1]


def default_plan() -> tuple:
    """DEFAULT of firmware/dongle/plan.py (MicroPython source: read, not imported)."""
    src = (ROOT / "firmware" / "dongle" / "plan.py").read_text()
    block = re.search(r"^DEFAULT = (\(.*?^\))", src, re.S | re.M).group(1)
    return ast.literal_eval(re.sub(r"#[^\n]*", "", block).replace("CH_VOLTAGE", str(CH_VOLTAGE)))


PLAN = default_plan()
# The firmware polls speed and RPM at 5 Hz; once a second is plenty for health and 5 × cheaper.
TICK_ON_S = 1.0


def records_of(scn) -> list:
    """What an idealised dongle logs for the scenario: a time anchor, SAMPLES records per
    poll tick (DRIVING/IDLE/PARKED columns of the plan, at most once a tick), the three DTC reads at every
    engine start and once a minute while it runs."""
    veh = scn.make_vehicle()
    recs = [SimpleNamespace(kind=KIND_ANCHOR, seq=0, boot=1, t0=0, wall_ms=EPOCH_MS)]
    due: dict[int, float] = {}
    was_on, next_dtc = False, 0.0
    t, end = 0.0, scn.total_sim_s

    def add(kind, **kw):
        recs.append(SimpleNamespace(kind=kind, seq=len(recs), boot=1, t0=int(round(t * 1000)), **kw))

    while t <= end + 1e-9:
        tr = veh.truth(t)
        on = tr.engine_on
        if on and not was_on:
            due, next_dtc = {}, t
        was_on = on
        if on and t >= next_dtc - 1e-9:
            for mode in (0x03, 0x07, 0x0A):
                r = veh.respond(f"{mode:02X}", t)
                if isinstance(r, list):  # every ECU's message, each with its ECU (7E8 + index)
                    codes = [m[2 + i:4 + i] for m in r for i in range(0, len(m) - 2, 2)]
                    ecus = [0xE8 + m.ecu for m in r for i in range(0, len(m) - 2, 2)]
                    add(KIND_DTC, mode=mode, codes=codes, ecus=ecus)
            next_dtc = t + 60.0
        state = 2 if not on else (0 if tr.speed_kmh > 0 else 1)
        samples = []
        for ch, *iv in PLAN:
            if not iv[state] or t < due.get(ch, 0.0) - 1e-9:
                continue
            due[ch] = t + iv[state] / 10.0
            ms = int(round(t * 1000))
            if ch == CH_VOLTAGE:
                samples.append((ms, ch, int(round(veh.battery_volts(t) * 1000)).to_bytes(2, "big")))
                continue
            data = veh.pid_data(ch, tr) if tr.bus == "awake" else None  # what respond("01..") answers
            if data is not None and len(data) == DATA_LEN[ch]:
                samples.append((ms, ch, bytes(data)))
        if samples:
            add(KIND_SAMPLES, samples=samples)
        t = round(t + (TICK_ON_S if on else 5.0), 3)
    return recs


async def checked(scn, tmp_path: Path, config: Config | None = None) -> health.Report:
    cfg = config or Config()
    async with await Store.open(tmp_path / "h.db") as store:
        await store.ingest(DEVICE, records_of(scn))
        await replay(store, cfg, DEVICE)  # overheating and the like become stored events
        return await health.check(store, cfg, DEVICE)


def run_check(scn, tmp_path) -> dict[str, health.Finding]:
    report = asyncio.run(checked(scn, tmp_path))
    return {f.id: f for f in report.findings}


def drive(**vehicle) -> object:
    """A cold start, twenty minutes in town and on the highway, a night parked, a start."""
    return scenario("health", [
        {"kind": "city", "duration_s": 900, "speedup": 60},
        {"kind": "highway", "duration_s": 600, "speedup": 60},
        {"kind": "park", "duration_s": 8 * 3600, "speedup": 3600},
        {"kind": "city", "duration_s": 300, "speedup": 60},
    ], **vehicle)


def problems(found: dict[str, health.Finding]) -> dict[str, str]:
    return {k: f.severity for k, f in found.items() if f.severity in (health.WARNING, health.CRITICAL)}


def test_a_healthy_car_raises_nothing(tmp_path):
    found = run_check(drive(), tmp_path)
    assert problems(found) == {}, [f.title for f in found.values()]
    for key in ("codes.none", "readiness", "since_clear", "fuel_trim.bank1", "cooling.warmup",
                "battery.resting", "battery.charging"):
        assert found[key].severity == health.OK, found[key]
    assert found["battery.cranking"].severity == health.INFO  # no crank modelled: no dip caught
    assert 0x07 in found["vehicle.pids"].values["pids"]


def test_a_code_on_the_second_ecu_is_found_explained_with_the_mil_distance(tmp_path):
    scn = scenario("tcm", [{"kind": "city", "duration_s": 600, "speedup": 60},
                           {"kind": "dtc", "code": "P0730", "ecu": 1, "at_s": 10, "duration_s": 600, "speedup": 60},
                           {"kind": "dtc", "code": "P1234", "at_s": 10, "duration_s": 300, "speedup": 60}])
    veh = scn.make_vehicle()
    assert len(veh.respond("03", 1500)) == 2  # the engine's message and the transmission's
    assert veh.freeze_frame(1500)[:2] == (1, "P0730")  # its freeze frame, from the TCM
    assert veh.respond("020200", 1500) == [b"\x42\x02\x00\x07\x30"]
    found = run_check(scn, tmp_path)
    tcm = found["dtc.P0730"]
    assert tcm.severity == health.WARNING and tcm.values["status"] == ["stored", "pending", "permanent"]
    assert tcm.title == "P0730 (stored, pending, permanent, Powertrain): Incorrect Gear Ratio"
    assert tcm.values["ecu"] == "transmission (7E9)"  # where the code is, from the reply's header
    maker = found["dtc.P1234"]
    assert "no known description (manufacturer-specific code)" in maker.title
    assert "manufacturer's service information" in maker.action
    mil = found["mil"]
    assert mil.severity == health.WARNING and mil.values["distance_with_mil_km"] > 1
    assert "Check-engine light (MIL) on for" in mil.title


def test_a_monitor_not_ready_means_not_ready_for_inspection(tmp_path):
    found = run_check(drive(monitors_incomplete=["evap", "catalyst"]), tmp_path)
    r = found["readiness"]
    assert r.severity == health.WARNING and "Not ready for an emissions inspection: 2 of 7" in r.title
    assert r.values["incomplete"] == ["CATALYST_MONITORING", "EVAPORATIVE_SYSTEM_MONITORING"]
    assert r.values["this_drive_cycle"] == r.values["incomplete"]  # PID 0x41 too
    assert problems(found) == {"readiness": "warning"}


def test_a_recent_clear_on_a_used_car_is_said(tmp_path):
    found = run_check(drive(distance_since_clear_km=40, minutes_since_clear=90), tmp_path)
    f = found["since_clear"]
    assert f.severity == health.WARNING and f.title.startswith("Trouble codes were cleared recently")
    assert f.values["distance_km"] < 100 and "ask why" in f.action
    assert problems(found) == {"since_clear": "warning"}


@pytest.mark.parametrize("trim, severity, word", [(14.0, health.WARNING, "lean"), (-23.0, health.CRITICAL, "rich")])
def test_a_long_term_trim_beyond_10_percent_names_the_condition_and_causes(tmp_path, trim, severity, word):
    found = run_check(drive(ltft_pct=trim, stft_pct=2.0), tmp_path)
    f = found["fuel_trim.bank1"]
    assert f.severity == severity and f"runs {word}" in f.title
    assert f.values["long_term_pct"] == pytest.approx(trim, abs=0.8)
    assert ("vacuum leak" if word == "lean" else "leaking injector") in f.action
    assert problems(found) == {"fuel_trim.bank1": severity}


def test_a_slow_warm_up_points_at_the_thermostat(tmp_path):
    found = run_check(drive(thermostat_c=76, warmup_factor=3.0), tmp_path)
    f = found["cooling.warmup"]
    assert f.severity == health.WARNING and f.title.startswith("Slow warm-up")
    assert "thermostat stuck open" in f.action and f.values["never_warm"] >= 1
    assert problems(found) == {"cooling.warmup": "warning"}


def test_a_weak_crank_and_a_weak_resting_battery(tmp_path):
    found = run_check(drive(crank_v=8.9, battery_v=12.1), tmp_path)
    crank, rest = found["battery.cranking"], found["battery.resting"]
    assert crank.severity == health.WARNING and crank.values["crank_min_v"] == pytest.approx(8.9, abs=0.01)
    assert rest.severity == health.WARNING and rest.values["resting_v"] == pytest.approx(12.1, abs=0.05)
    assert problems(found) == {"battery.cranking": "warning", "battery.resting": "warning"}
    healthy = run_check(drive(crank_v=10.6), tmp_path / "b")
    assert healthy["battery.cranking"].severity == health.OK


def test_a_gap_in_the_samples_is_not_a_new_cold_start():
    m = 60_000
    warming = [(k * m, 20.0 + 2.0 * k) for k in range(8)]          # 20 → 34 °C in 7 min
    after_gap = [(k * m, 36.0 + 1.5 * (k - 20)) for k in range(20, 52)]  # 13 min without samples
    (w,) = health.warmups(warming + after_gap)
    assert w["from_c"] == 20.0 and w["warmup_s"] == pytest.approx(50 * 60, abs=60)
    parked = [(t + 3 * 3600_000, c) for t, c in warming]  # hours later, cold again: a second start
    assert len(health.warmups(warming + after_gap + parked)) == 2


def test_overheating_history(tmp_path):
    found = run_check(hil_scenario.load("overheat"), tmp_path)
    f = found["cooling.overheat"]
    assert f.severity == health.CRITICAL and f.values["count"] == 1 and f.values["peak_c"] > 110


def test_the_used_car_scenario_plants_every_condition(tmp_path):
    report = asyncio.run(checked(hil_scenario.load("used_car"), tmp_path))
    found = {f.id: f for f in report.findings}
    assert set(problems(found)) >= {"mil", "dtc.P0730", "readiness", "since_clear", "fuel_trim.bank1",
                                    "cooling.warmup", "battery.cranking"}
    text = "\n".join(health.render(report))
    assert "Trouble codes" in text and "→ Usual causes: a vacuum leak" in text
    assert report.json()["worst"] == health.WARNING


@pytest.mark.slow
def test_the_real_firmware_in_the_rig_brings_every_condition_to_the_check(tmp_path):
    """The used car through the whole chain (emulator, firmware on MicroPython, BLE, daemon):
    the default poll plan reads what the check needs, the second ECU's code is stored."""
    from hil.runner import run_scenario

    report = asyncio.run(run_scenario("used_car", workdir=tmp_path, echo=None))
    assert report.ok, report

    async def check_db():
        async with await Store.open(tmp_path / "obdsync.db") as store:
            (dev,) = [s.device for s in await store.status()]
            return await health.check(store, Config(), dev)

    found = {f.id: f for f in asyncio.run(check_db()).findings}
    assert set(problems(found)) >= {"mil", "dtc.P0730", "readiness", "since_clear", "fuel_trim.bank1",
                                    "cooling.warmup"}, [f.title for f in found.values()]
