"""Service reminders by distance (odometer, 0x31 deltas, integrated speed) and by time."""

from __future__ import annotations

import pytest
from test_rules_synth import ATRV, DEVICE, EPOCH_MS, Car, config, run

from obdsync.config import ServiceConfig
from obdsync.rules import RuleEngine
from obdsync.rules.service import add_months

DAY = 86_400_000


def service_events(changes):
    return [(c.event.type, c.event.values["by"]) for c in changes if c.event.type.startswith("service")]


def test_odometer_distance_warns_1000_km_ahead_then_is_due_traccar_style():
    cfg = config(service=ServiceConfig(interval_km=100.0, warn_km=20.0))
    eng = RuleEngine(cfg, DEVICE)
    car = Car(odometer=42000.0)
    eng.service_done(EPOCH_MS, km=42000.0)
    ch = run(car.drive(3636, 100.0).items, engine=eng)  # 101 km
    assert service_events(ch) == [("service_soon", "km"), ("service_due", "km")]
    due = [c.event for c in ch if c.event.type == "service_due"][0]
    assert due.values["km_since_service"] == pytest.approx(100, abs=0.2)
    assert due.message == "Service due: 100 km since the last service"
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
    assert days == {"service_soon": 340, "service_due": 370}
    assert eng.service_state(due - 10 * DAY)["days_to_due"] == 10


def test_service_done_restarts_both_and_keeps_history():
    eng = RuleEngine(config(), DEVICE)
    eng.service_baseline(50_000, EPOCH_MS)
    eng.service_done(EPOCH_MS + 100 * DAY, km=50_500)
    eng.service_done(EPOCH_MS + 200 * DAY)
    st = eng.service_state(EPOCH_MS + 200 * DAY)
    assert st["history"] == [[EPOCH_MS + 100 * DAY, 50_500.0], [EPOCH_MS + 200 * DAY, 50_000.0]]
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
