"""Service reminders by distance (odometer, 0x31 deltas, integrated speed) and by time."""

from __future__ import annotations

import json

import pytest
from test_rules_synth import ATRV, DEVICE, EPOCH_MS, Car, config, run

from obdsync.config import ServiceConfig, ServiceItem
from obdsync.rules import RuleEngine
from obdsync.rules.service import add_months

DAY = 86_400_000


def service_events(changes, item="oil"):
    return [(c.event.type, c.event.values["by"]) for c in changes
            if c.event.type.startswith("service") and c.event.values["item"] == item]


def test_odometer_distance_warns_1000_km_ahead_then_is_due_traccar_style():
    cfg = config(service=ServiceConfig(interval_km=100.0, warn_km=20.0))
    eng = RuleEngine(cfg, DEVICE)
    car = Car(odometer=42000.0)
    eng.service_done(EPOCH_MS, km=42000.0)
    ch = run(car.drive(3636, 100.0).items, engine=eng)  # 101 km
    assert service_events(ch) == [("service_soon", "km"), ("service_due", "km")]
    due = [c.event for c in ch if c.event.type == "service_due"][0]
    assert due.values["km_since_service"] == pytest.approx(100, abs=0.2)
    assert due.message == "Service due: oil and filter — 100 km since it was last done"
    st = eng.service_state()
    assert st["distance_source"] == "odometer" and st["km_to_due"] == pytest.approx(-1, abs=0.2)
    seen = len(car.items)
    ch = run(car.drive(3600, 100.0).items[seen:], engine=eng)  # the next 100 km: Traccar fires again
    assert service_events(ch) == [("service_soon", "km"), ("service_due", "km")]


def test_distance_since_clear_deltas_survive_a_code_clear():
    cfg = config(service=ServiceConfig(interval_km=50.0, warn_km=5.0))
    eng = RuleEngine(cfg, DEVICE)
    eng.service_baseline(120_000, EPOCH_MS)
    car = Car(odometer=None, d31=1500.0)
    run(car.drive(900, 100.0).items, engine=eng)  # 25 km
    car.d31 = 0.0  # codes cleared: 0x31 restarts at 0
    seen = len(car.items)
    ch = run(car.drive(1080, 100.0).items[seen:], engine=eng)  # 30 km more
    st = eng.service_state()
    assert st["distance_source"] == "distance_since_clear"
    assert st["odometer_km"] == pytest.approx(120_054, abs=2)
    assert service_events(ch) == [("service_soon", "km"), ("service_due", "km")]


def test_integrated_speed_when_the_car_has_neither():
    eng = RuleEngine(config(), DEVICE)
    eng.service_baseline(80_000, EPOCH_MS)
    run(Car(odometer=None).drive(1800, 80.0).items, engine=eng)
    st = eng.service_state()
    assert st["distance_source"] == "speed" and st["odometer_km"] == pytest.approx(80_040, abs=0.5)
    assert st["km_since_service"] == pytest.approx(40, abs=0.5)
    assert st["km_to_due"] == pytest.approx(15_000 - 40, abs=0.5)


def test_time_warns_30_days_ahead_and_is_due_after_12_months():
    eng = RuleEngine(config(), DEVICE)
    eng.service_done(EPOCH_MS, km=10_000)
    due = add_months(EPOCH_MS, 12)
    assert due == 1_731_622_400_000  # 2023-11-14 22:13:20 UTC + 12 months
    days = {}
    for d in range(0, 400, 5):
        eng.samples([(EPOCH_MS + d * DAY, ATRV, 12.6)])
        for c in eng.drain():
            days[c.event.type] = d
    assert days == {"service_soon": 340, "service_due": 370}  # oil; cabin filter, brake fluid: 24 months
    assert eng.service_state(due - 10 * DAY)["days_to_due"] == 10


def test_service_done_restarts_both_and_keeps_history():
    eng = RuleEngine(config(), DEVICE)
    eng.service_baseline(50_000, EPOCH_MS)
    eng.service_done(EPOCH_MS + 100 * DAY, km=50_500)
    eng.service_done(EPOCH_MS + 200 * DAY)
    st = eng.service_state(EPOCH_MS + 200 * DAY)
    every = [i.name for i in ServiceConfig().schedule]
    assert st["history"] == [[EPOCH_MS + 100 * DAY, 50_500.0, every], [EPOCH_MS + 200 * DAY, 50_000.0, every]]
    assert st["last_service_ms"] == EPOCH_MS + 200 * DAY and st["days_to_due"] >= 365
    assert eng.drain() == []


def test_bad_user_input_is_refused_clearly():
    eng = RuleEngine(config(), DEVICE)
    with pytest.raises(ValueError, match="baseline odometer"):
        eng.service_baseline(-5, EPOCH_MS)
    with pytest.raises(ValueError, match="service km"):
        eng.service_done(EPOCH_MS, km=float("nan"))


def test_no_baseline_no_reminders():
    eng = RuleEngine(config(), DEVICE)
    run(Car(odometer=None).drive(600, 80.0).items, engine=eng)
    assert eng.service_state()["km_since_service"] is None


# ---- the schedule: several items, whichever interval comes first ------------------------------

def schedule_config(**kw):
    return config(service=ServiceConfig(interval_km=100.0, warn_km=20.0, warn_days=7, items=(
        ServiceItem("brake_fluid", months=1),          # by time only
        ServiceItem("tyre_rotation", km=50.0),         # by distance only
        ServiceItem("air_filter", km=1000.0, months=2, warn_km=100.0),
    ), **kw))


def test_each_item_has_its_own_intervals_and_warnings():
    eng = RuleEngine(schedule_config(), DEVICE)
    eng.service_done(EPOCH_MS, km=42000.0)
    car = Car(odometer=42000.0)
    ch = run(car.drive(2160, 100.0).items, engine=eng)  # 60 km in 36 min
    assert service_events(ch, "tyre_rotation") == [("service_soon", "km"), ("service_due", "km")]
    assert service_events(ch, "oil") == []  # 60 km of 100, warned at 80
    st = {i["item"]: i for i in eng.service_state()["items"]}
    assert [i["item"] for i in eng.service_state()["items"]] == ["oil", "brake_fluid", "tyre_rotation", "air_filter"]
    assert st["tyre_rotation"]["status"] == "due" and st["tyre_rotation"]["km_to_due"] == pytest.approx(-10, abs=0.5)
    assert st["tyre_rotation"]["days_to_due"] is None  # no time interval
    assert st["brake_fluid"]["km_to_due"] is None and st["brake_fluid"]["days_to_due"] == 29  # due 2023-12-14, 30 days less 36 min
    assert st["oil"]["km_to_due"] == pytest.approx(40, abs=0.5) and st["oil"]["days_to_due"] == 366 - 1  # a leap year
    assert st["air_filter"]["status"] == "ok"
    # A month on, parked: brake fluid by time (warned a week ahead), nothing by distance.
    days = {}
    for d in range(1, 32):
        eng.samples([(EPOCH_MS + d * DAY, ATRV, 12.6)])
        for c in eng.drain():
            if c.event.type.startswith("service"):
                days[(c.event.type, c.event.values["item"], c.event.values["by"])] = d
    assert days == {("service_soon", "brake_fluid", "time"): 23, ("service_due", "brake_fluid", "time"): 30}


def test_a_service_of_one_item_restarts_that_item_only():
    eng = RuleEngine(schedule_config(), DEVICE)
    eng.service_done(EPOCH_MS, km=42000.0)
    car = Car(odometer=42000.0)
    run(car.drive(2160, 100.0).items, engine=eng)  # 60 km
    eng.service_done(car.wall(), km=42060.0, items=["tyre_rotation"])
    st = {i["item"]: i for i in eng.service_state()["items"]}
    assert st["tyre_rotation"]["km_to_due"] == pytest.approx(50, abs=0.5) and st["tyre_rotation"]["status"] == "ok"
    assert st["oil"]["km_to_due"] == pytest.approx(40, abs=0.5)
    assert eng.service_state()["history"][-1][2] == ["tyre_rotation"]
    with pytest.raises(ValueError, match="unknown service item timing_belt"):
        eng.service_done(car.wall(), items=["timing_belt"])


def test_an_item_added_to_the_config_later_counts_from_the_baseline():
    eng = RuleEngine(config(), DEVICE)
    eng.service_baseline(10_000, EPOCH_MS)
    eng.service_done(EPOCH_MS + DAY, km=10_100, items=["oil"])
    snap = eng.snapshot()
    cfg = config(service=ServiceConfig(items=(ServiceItem("timing_belt", km=90_000.0, months=60),)))
    eng2 = RuleEngine.restore(cfg, DEVICE, snap)
    st = {i["item"]: i for i in eng2.service_state(EPOCH_MS + DAY)["items"]}
    assert set(st) == {"oil", "timing_belt"}  # the defaults replaced by the config's items
    assert st["timing_belt"]["last_km"] == 10_000 and st["timing_belt"]["km_to_due"] == 90_000
    assert st["oil"]["last_km"] == 10_100


def test_entries_that_contradict_what_is_known_are_refused():
    eng = RuleEngine(config(), DEVICE)
    eng.service_baseline(42_000, EPOCH_MS - 10 * DAY)
    run(Car(odometer=42_007.0).drive(60, 10.0).items, engine=eng)  # the car's own odometer
    now = eng.ctx.now
    with pytest.raises(ValueError, match=r"9 km is below the odometer \(42007 km, from the car's odometer"):
        eng.service.check_entry(now, 9.0, now)
    with pytest.raises(ValueError, match="in the future"):
        eng.service.check_entry(now + 2 * DAY, None, now)
    eng.service.check_entry(now, 42_010.0, now)
    eng.service.check_entry(now - DAY, None, now)
    # An older service: below today's odometer is fine, but not below the baseline before it.
    eng.service.check_entry(EPOCH_MS - 5 * DAY, 42_003.0, now)
    with pytest.raises(ValueError, match="below the baseline: 42000 km"):
        eng.service.check_entry(EPOCH_MS - 5 * DAY, 41_000.0, now)
    with pytest.raises(ValueError, match="above the baseline entered later"):
        eng.service.check_entry(EPOCH_MS - 20 * DAY, 43_000.0, now)


def test_the_schedule_survives_a_snapshot():
    eng = RuleEngine(schedule_config(), DEVICE)
    eng.service_done(EPOCH_MS, km=42000.0)
    car = Car(odometer=42000.0)
    run(car.drive(1296, 100.0).items, engine=eng)  # 36 km: tyre rotation warned
    back = RuleEngine.restore(schedule_config(), DEVICE, json.loads(json.dumps(eng.snapshot())))
    assert back.service_state() == eng.service_state()
    seen = len(car.items)
    ch = run(car.drive(1296, 100.0).items[seen:], engine=back)
    assert service_events(ch, "tyre_rotation") == [("service_due", "km")]  # the warning is not repeated


async def test_an_older_snapshot_is_derived_again_not_a_failure(tmp_path):
    from obdsync.pipeline import NOTE_BASELINE, Pipeline
    from obdsync.store import Store

    old = RuleEngine(config(), DEVICE).snapshot()
    old["version"] = 1
    async with await Store.open(tmp_path / "db.sqlite") as store:
        await store.set_device_info(DEVICE)
        await store.save_rules_state(DEVICE, 5, json.dumps({"engine": old, "services_fed": 0}))
        await store.add_service(DEVICE, EPOCH_MS, 70_000.0, NOTE_BASELINE)
        await store.add_service(DEVICE, EPOCH_MS + DAY, None, "service:oil,brake_fluid")
        eng = await Pipeline(store, config()).service_engine(DEVICE)
    st = eng.service_state(EPOCH_MS + DAY)
    assert st["odometer_km"] == 70_000 and st["history"] == [[EPOCH_MS + DAY, 70_000.0, ["oil", "brake_fluid"]]]
