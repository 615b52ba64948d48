"""HIL scenarios end to end through the rules, without emulator or firmware: the vehicle
model's ECU answers (``Vehicle.respond``) are polled at the firmware's default plan rates,
decoded by ``obdsync.decode`` and fed to a RuleEngine the way the pipeline feeds it. Each
scenario's ``[[expect]]`` list must hold exactly.

The dongle here is an idealised one: it notices an engine start within a tick (the real
firmware's parked plan only reads ATRV once a minute and detects a start by the
alternator's voltage) and it does not deep-sleep on a low battery (it reports it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from hil import scenario as hil_scenario
from obdsync.config import Config, FuelConfig, VehicleConfig
from obdsync.decode import CH_VOLTAGE, Decoder, dtcs_from_raw
from obdsync.rules import EventChange, RuleEngine
from protocol.channels import DATA_LEN

EPOCH_MS = 1_700_000_000_000
DEVICE = "00112233aabbccdd"

# The firmware's default poll plan (firmware/dongle/plan.py): channel, driving, idle, parked, in 100 ms.
PLAN = (
    (0x0D, 2, 10, 0), (0x0C, 2, 10, 0), (0x04, 2, 10, 0), (0x11, 2, 10, 0), (0x05, 10, 10, 0),
    (0x0F, 10, 10, 0), (0x10, 10, 10, 0), (0x5E, 10, 10, 0), (0x2F, 100, 100, 0), (0x31, 100, 100, 0),
    (0xA6, 100, 100, 0), (0x01, 100, 100, 0), (0x42, 100, 100, 0), (CH_VOLTAGE, 50, 50, 600),
)
TICK_ON_S = 0.2
TICK_PARKED_S = 5.0
QUIET_OFF_S = 60.0        # firmware PowerConfig.off_after_ms
FLOOR_V, FLOOR_S = 11.8, 300.0  # firmware PowerConfig.floor_mv / floor_after_ms


@dataclass
class Trace:
    """What the dongle produced, in order: ("s", rows) | ("d", wall, mode, codes) | ("e", wall, code)."""
    items: list = field(default_factory=list)


def dongle_trace(scn: hil_scenario.Scenario, epoch_ms: int = EPOCH_MS) -> Trace:
    veh = scn.make_vehicle()
    dec = Decoder()
    out = Trace()
    due: dict[int, float] = {}
    polling = False
    quiet_since: float | None = None
    low_since: float | None = None
    low_sent = False
    status: tuple | None = None
    t, end = 0.0, scn.total_sim_s

    def wall(x: float) -> int:
        return epoch_ms + int(round(x * 1000))

    def read_dtcs(x: float) -> None:
        for mode in (0x03, 0x07, 0x0A):
            r = veh.respond(f"{mode:02X}", x)
            if isinstance(r, list):
                body = r[0][2:]
                codes = dtcs_from_raw([body[i:i + 2] for i in range(0, len(body) - 1, 2)])
                out.items.append(("d", wall(x), mode, codes))

    out.items.append(("e", wall(0), 1))
    while t <= end + 1e-9:
        tr = veh.truth(t)
        if not polling and tr.engine_on:
            polling, quiet_since, low_since, low_sent = True, None, None, False
            out.items.append(("e", wall(t), 2))
            due = {}
            read_dtcs(t)
        state = 2 if not polling else (0 if tr.speed_kmh > 0 else 1)
        batch = []
        for ch, *iv in PLAN:
            if iv[state] and t >= due.get(ch, 0.0) - 1e-9:
                batch.append(ch)
                due[ch] = t + iv[state] / 10.0
        rows: list[tuple[int, int, float | None]] = []
        obd = [ch for ch in batch if ch != CH_VOLTAGE]
        answered = False
        for i in range(0, len(obd), 6):
            r = veh.respond("01" + "".join(f"{ch:02X}" for ch in obd[i:i + 6]), t)
            if not isinstance(r, list):
                continue
            msg, o = r[0], 1
            while o < len(msg):
                pid = msg[o]
                n = DATA_LEN[pid]
                for rd in dec.decode(pid, bytes(msg[o + 1:o + 1 + n])):
                    rows.append((wall(t), rd.signal, rd.value))
                    answered = True
                o += 1 + n
        volts = veh.battery_volts(t)
        if CH_VOLTAGE in batch:
            for rd in dec.decode(CH_VOLTAGE, int(round(volts * 1000)).to_bytes(2, "big")):
                rows.append((wall(t), rd.signal, rd.value))
        if rows:
            out.items.append(("s", rows))
        st = {(s, v) for (_w, s, v) in rows if s in (0x001, 0x101)}
        if polling and st:
            if status is not None and st != status:
                read_dtcs(t)
            status = st
        if polling:
            if answered or volts >= 13.0:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = t
            elif t - quiet_since >= QUIET_OFF_S:
                polling = False
                out.items.append(("e", wall(t), 3))
                due = {}
        elif CH_VOLTAGE in batch:
            if volts < FLOOR_V:
                low_since = t if low_since is None else low_since
                if t - low_since >= FLOOR_S and not low_sent:
                    out.items.append(("e", wall(t), 4))
                    low_sent = True
            else:
                low_since = None
        t = round(t + (TICK_ON_S if polling or tr.engine_on else TICK_PARKED_S), 3)
    return out


def feed(engine: RuleEngine, items: list) -> list[EventChange]:
    changes: list[EventChange] = []
    for it in items:
        if it[0] == "s":
            engine.samples(it[1])
        elif it[0] == "d":
            engine.dtcs(it[1], it[2], it[3])
        else:
            engine.dongle_event(it[1], it[2])
        changes += engine.drain()
    return changes


def config_for(scn: hil_scenario.Scenario) -> Config:
    return Config(vehicle=VehicleConfig(tank_litres=float(scn.vehicle.tank_l), fuel_type=scn.vehicle.fuel_type),
                  fuel=FuelConfig())


def events_of(changes: list[EventChange]) -> dict[str, dict]:
    """Each event once (by id), in its latest form."""
    evs: dict[str, dict] = {}
    for ch in changes:
        evs[ch.event.id] = ch.event.to_dict()
    return evs


_TRACES: dict[str, Trace] = {}


def trace_of(name: str) -> tuple[hil_scenario.Scenario, Trace]:
    scn = hil_scenario.load(name)
    if name not in _TRACES:
        _TRACES[name] = dongle_trace(scn)
    return scn, _TRACES[name]


@pytest.mark.parametrize("name", ["demo", "refuel", "theft_overnight", "overheat", "dtc", "weak_battery",
                                  "city", "highway"])
def test_scenario_gives_exactly_its_expected_events(name):
    scn, trace = trace_of(name)
    changes = feed(RuleEngine(config_for(scn), DEVICE), trace.items)
    evs = list(events_of(changes).values())
    for ex in scn.expects:
        got = [e for e in evs if e["type"] == ex.type]
        if ex.phase is not None:
            a, b = scn.phase_window(ex.phase)
            got = [e for e in got if EPOCH_MS + a * 1000 <= e["opened_ms"] <= EPOCH_MS + b * 1000]
        assert ex.count_ok(len(got)), (ex, [e["message"] for e in got])
        for e in got:
            assert ex.matches(e), (ex, e)


def test_scenarios_raise_nothing_unexpected():
    """Beyond the expectations: the quiet scenarios raise no alarm of any kind."""
    for name in ("city", "highway"):
        scn, trace = trace_of(name)
        evs = events_of(feed(RuleEngine(config_for(scn), DEVICE), trace.items)).values()
        assert sorted(e["type"] for e in evs) == ["trip"], [e["message"] for e in evs]


def test_demo_trip_summary_is_plausible():
    scn, trace = trace_of("demo")
    changes = feed(RuleEngine(config_for(scn), DEVICE), trace.items)
    trips = [c.trip for c in changes if c.trip is not None]
    assert len(trips) == 1  # the short city drive at the end stays open
    trip = trips[0]
    veh = scn.make_vehicle()
    a, _ = scn.phase_window(0)
    _, b = scn.phase_window(2)  # city, highway, idle: one trip
    want_km = veh.truth(b).odometer_km - veh.truth(a).odometer_km
    want_l = veh.truth(a).fuel_l - veh.truth(b).fuel_l
    assert trip.distance_km == pytest.approx(want_km, rel=0.02)
    assert trip.fuel_l == pytest.approx(want_l, rel=0.05)
    assert trip.idle_s >= 55  # the idle phase at the pump queue
    assert trip.max_speed_kmh >= 100
    assert trip.hard_brakes == 0 and trip.hard_accels == 0
    assert trip.fuel_source == "fuel_rate" and trip.distance_source == "odometer"


def test_replay_gives_the_same_events_and_ids():
    scn, trace = trace_of("theft_overnight")
    a = feed(RuleEngine(config_for(scn), DEVICE), trace.items)
    b = feed(RuleEngine(config_for(scn), DEVICE), trace.items)
    assert a and a == b


@pytest.mark.parametrize("name", ["demo", "dtc", "weak_battery"])
def test_restore_midway_equals_one_run(name):
    scn, trace = trace_of(name)
    whole = feed(RuleEngine(config_for(scn), DEVICE), trace.items)
    for cut in (len(trace.items) // 3, 2 * len(trace.items) // 3):
        eng = RuleEngine(config_for(scn), DEVICE)
        first = feed(eng, trace.items[:cut])
        snap = json.loads(json.dumps(eng.snapshot()))
        again = RuleEngine.restore(config_for(scn), DEVICE, snap)
        assert first + feed(again, trace.items[cut:]) == whole
