"""Trips: start, end after 3 min engine off, the summary."""

from __future__ import annotations

import re

import pytest
from test_rules_synth import ATRV, DEVICE, EPOCH_MS, RPM, SPEED, Car, config, run

from obdsync.config import TripConfig
from obdsync.rules import RuleEngine


def trips(changes):
    return [c.trip for c in changes if c.event.type == "trip"]


def test_a_trip_ends_three_minutes_after_the_engine_stops_and_sums_up():
    car = Car(level=50).idle(60).drive(1200, 72.0).idle(30).park(1800)
    (t,) = trips(run(car.items))
    assert t.started_ms == EPOCH_MS
    assert t.ended_ms == car.wall(1290 - 1)  # the last sign of life, not when the wait ran out
    assert t.distance_km == pytest.approx(24.0, abs=0.15)
    assert t.duration_s == pytest.approx(1289)
    assert t.idle_s == pytest.approx(88, abs=3)
    assert t.max_speed_kmh == 72
    assert t.avg_speed_kmh == pytest.approx(24.0 / (1289 / 3600), rel=0.01)
    assert t.fuel_l == pytest.approx(car.burnt, rel=0.02)
    assert t.l_per_100km == pytest.approx(car.burnt / 24.0 * 100, rel=0.03)
    assert t.fuel_source == "fuel_rate" and t.distance_source == "odometer"
    assert (t.hard_brakes, t.hard_accels) == (1, 1)  # this car jumps between 0 and 72 km/h in a second


def test_a_short_stop_stays_in_the_trip_and_an_open_trip_is_not_emitted():
    car = Car().drive(600, 50.0).park(120).drive(600, 50.0)
    eng = RuleEngine(config(), DEVICE)
    assert trips(run(car.items, engine=eng)) == []
    assert eng.current_trip()["distance_km"] == pytest.approx(16.6, abs=0.2)
    car.park(600)
    (t,) = trips(run(car.items))
    assert t.distance_km == pytest.approx(16.6, abs=0.2)


def test_end_after_is_configurable():
    car = Car().drive(600, 50.0).park(120).drive(600, 50.0).park(600)
    assert len(trips(run(car.items, config(trip=TripConfig(end_after_secs=60))))) == 2


def profile(points):
    """Speed from (t, kmh) knots, linear in between."""
    def v(tau):
        for (t0, v0), (t1, v1) in zip(points, points[1:], strict=False):
            if t0 <= tau <= t1:
                return v0 + (v1 - v0) * (tau - t0) / (t1 - t0)
        return points[-1][1]
    return v


def five_hz(eng, speeds, t0=0.0):
    """Feed speed and rpm at 5 Hz (the firmware's driving rate), integer km/h like PID 0x0D."""
    for k, v in enumerate(speeds):
        w = EPOCH_MS + int((t0 + k * 0.2) * 1000)
        eng.samples([(w, SPEED, float(round(v))), (w, RPM, 900.0 + 30 * v)])


def test_hard_braking_and_acceleration_are_counted_once_each():
    eng = RuleEngine(config(), DEVICE)
    # gentle 2 m/s² up to 72, cruise, a 6 m/s² stop, a 4 m/s² launch, cruise, gentle stop
    v = profile([(0, 0), (10, 72), (30, 72), (33.33, 0), (40, 0), (45, 72), (60, 72), (80, 0), (90, 0)])
    five_hz(eng, [v(k * 0.2) for k in range(450)])
    eng.dongle_event(EPOCH_MS + 91_000, 3)
    eng.samples([(EPOCH_MS + 400_000, ATRV, 12.6)])
    (t,) = trips(eng.drain())
    assert (t.hard_brakes, t.hard_accels) == (1, 1)


def test_speed_quantisation_at_5_hz_is_not_hard_driving():
    eng = RuleEngine(config(), DEVICE)
    v = profile([(0, 0), (14, 70), (40, 70), (50, 0), (60, 0)])  # 1.4 and 1.9 m/s²
    five_hz(eng, [v(k * 0.2) + (0.49 if k % 2 else -0.49) for k in range(300)])
    eng.samples([(EPOCH_MS + 400_000, ATRV, 12.6)])
    (t,) = trips(eng.drain())
    assert (t.hard_brakes, t.hard_accels) == (0, 0)


def test_trip_without_odometer_or_fuel_rate_uses_speed_and_level():
    car = Car(level=80, odometer=None, rate=False).idle(20).drive(3600, 100.0, lph=10.0).idle(20).park(600)
    (t,) = trips(run(car.items))
    assert t.distance_source == "speed" and t.distance_km == pytest.approx(100, abs=0.5)
    assert t.fuel_source == "level" and t.fuel_l == pytest.approx(car.burnt, abs=0.4)


def test_the_trip_event_carries_the_summary_and_the_trip_id():
    car = Car().drive(600, 60.0).park(600)
    (ch,) = [c for c in run(car.items) if c.event.type == "trip"]
    assert ch.change == "instant" and ch.event.id == ch.trip.id
    assert ch.event.values["distance_km"] == ch.trip.distance_km
    assert re.match(r"Trip: (9\.9|10\.0) km in 10 min, 0\.7 L \(7\.\d L/100 km\)$", ch.event.message)
    assert set(ch.trip.values) >= {"duration_s", "idle_s", "max_speed_kmh", "l_per_100km", "hard_brakes"}


def test_gps_grade_speed_noise_is_not_hard_driving():
    """±4 km/h on every reading (1 Hz and 5 Hz) over a 65 km trip: no hard event; a real
    4 m/s² stop in the same noise still counts once."""
    import random

    from hil.fueltrace import random_drive

    for hz in (1, 5):
        rng = random.Random(hz)
        eng = RuleEngine(config(), DEVICE)
        speeds = random_drive(rng, 4500)
        assert sum(speeds) / 3600 > 65  # km
        step = 1.0 / hz
        for k in range(4500 * hz):
            v = speeds[int(k * step)]
            w = EPOCH_MS + int(k * step * 1000)
            noisy = max(0.0, v + rng.uniform(-4, 4)) if v > 0 else 0.0
            eng.samples([(w, SPEED, float(round(noisy))), (w, RPM, 900.0 + 30 * v)])
        eng.samples([(EPOCH_MS + 5_000_000, ATRV, 12.6)])
        (t,) = trips(eng.drain())
        assert t.distance_km > 65 and (t.hard_brakes, t.hard_accels) == (0, 0), hz
    eng = RuleEngine(config(), DEVICE)
    rng = random.Random(9)
    v = profile([(0, 0), (20, 72), (40, 72), (45, 0), (60, 0)])  # 4 m/s² for 5 s
    five_hz(eng, [max(0.0, v(k * 0.2) + rng.uniform(-4, 4)) for k in range(300)])
    eng.samples([(EPOCH_MS + 400_000, ATRV, 12.6)])
    (t,) = trips(eng.drain())
    assert (t.hard_brakes, t.hard_accels) == (1, 0)


def test_the_trip_cost_uses_the_price_in_force():
    eng = RuleEngine(config(), DEVICE)
    eng.fuel_price(EPOCH_MS - 1000, 2.0)
    car = Car().drive(600, 60.0).park(600)
    (ch,) = [c for c in run(car.items, engine=eng) if c.event.type == "trip"]
    assert ch.trip.fuel_cost == pytest.approx(ch.trip.fuel_l * 2.0, abs=0.01)
    assert ch.event.values["fuel_cost"] == ch.trip.fuel_cost and "cost" in ch.event.message
    (plain,) = [c for c in run(car.items) if c.event.type == "trip"]
    assert plain.trip.fuel_cost is None
