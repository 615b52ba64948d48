"""The driving evaluation: each component from a drive that plants it, the documented
formula, the tips, the weekly summary with its trend, and a restart mid-trip."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from test_rules_synth import DEVICE, EPOCH_MS, Car, config, run

from obdsync.config import Config, DrivingConfig, VehicleConfig
from obdsync.rules import RuleEngine
from obdsync.rules.score import evaluate, weekly

DAY = 86_400_000


def ramp(v0: float, v1: float, secs: float = 20.0):
    """From v0 to v1 in ``secs`` (about 1 m/s² for 70 km/h: no hard acceleration), then v1."""
    return lambda tau: v0 + (v1 - v0) * min(1.0, tau / secs)


def scored(car: Car, cfg=None):
    (ch,) = [c for c in run(car.items, cfg) if c.event.type == "trip"]
    assert ch.event.values["score"] == ch.trip.score  # the trip event carries it
    return ch.trip.score


def penalties(ev):
    return {k: c["penalty"] for k, c in ev["components"].items() if c["penalty"]}


def test_a_calm_trip_scores_100_with_no_tips():
    ev = scored(Car().drive(1200, 60.0).park(600))
    assert ev["score"] == 100 and penalties(ev) == {} and ev["tips"] == []
    assert set(ev["components"]) == {"hard_brakes", "hard_accels", "speeding", "idling", "cold_revving",
                                     "over_revving"}


def test_speeding_is_the_share_of_moving_time_above_the_limit():
    ev = scored(Car().drive(600, ramp(0, 80)).drive(200, ramp(80, 130)).drive(400, ramp(130, 80)).park(600))
    assert ev["components"]["speeding"]["value"] == pytest.approx(100 * 190 / 1200, abs=1)
    assert penalties(ev) == {"speeding": pytest.approx(7.9, abs=0.5)} and ev["score"] == 92
    assert ev["tips"][0]["id"] == "speeding" and ev["tips"][0]["limit_kmh"] == 120
    # The limit is the user's.
    strict = config(driving=DrivingConfig(speed_limit_kmh=70))
    assert scored(Car().drive(600, 80.0).park(600), strict)["components"]["speeding"]["value"] == 100


def test_revving_a_cold_engine_counts_until_it_is_warm():
    def warming(tau):  # 20 °C to 90 °C over five minutes
        return min(90.0, 20.0 + 70.0 * tau / 300.0)

    ev = scored(Car(coolant=20).drive(600, 100.0, coolant=warming).park(600))  # 3800 rpm
    cold = ev["components"]["cold_revving"]["value"]
    assert cold == pytest.approx(300 * 40 / 70, abs=3)  # below 60 °C: the first 171 s
    assert penalties(ev) == {"cold_revving": 15.0}  # capped
    gentle = scored(Car(coolant=20).drive(600, 60.0, coolant=warming).park(600))  # 2600 rpm: fine cold
    assert gentle["components"]["cold_revving"]["value"] == 0 and gentle["score"] == 100


def test_over_revving_counts_the_time_above_the_limit_for_the_fuel():
    ev = scored(Car().drive(300, ramp(0, 170)).drive(30, ramp(170, 180, 2)).drive(300, ramp(180, 100)).park(600))
    assert ev["components"]["over_revving"]["value"] == pytest.approx(30 + 2, abs=1)  # above 6000 rpm: 173 km/h
    assert penalties(ev)["over_revving"] == pytest.approx(6.4, abs=0.3)
    diesel = Config(vehicle=VehicleConfig(fuel_type="diesel"))  # over 4500 rpm: above 123 km/h
    ev = scored(Car().drive(300, ramp(0, 120)).drive(60, 130.0).drive(300, ramp(130, 100)).park(600), diesel)
    assert ev["components"]["over_revving"]["value"] == pytest.approx(60 + 4.4, abs=1.5)  # and the first 4 s slowing down


def test_idling_beyond_a_tenth_of_the_trip_costs_points():
    ev = scored(Car().idle(600).drive(600, ramp(0, 60)).park(600))
    assert ev["components"]["idling"]["value"] == pytest.approx(50, abs=1)
    assert penalties(ev) == {"idling": 10.0}  # (50 − 10) × 0.5 = 20, capped at 10
    assert ev["tips"] == [{"id": "idling", "value": ev["components"]["idling"]["value"], "penalty": 10.0}]


def test_hard_brakes_come_from_the_trip_and_the_tip_knows_city_traffic():
    car = Car()
    for _ in range(3):  # up to 40 km/h, then a stop in 2 s (≈ 5.6 m/s²), three times in town
        car.drive(120, ramp(0, 40)).drive(2, lambda tau: 40.0 - 20.0 * (tau + 1)).idle(20)
    car.park(600)
    (ch,) = [c for c in run(car.items) if c.event.type == "trip"]
    ev = ch.trip.score
    assert ch.trip.hard_brakes == 3 and ev["components"]["hard_brakes"]["value"] == 3
    assert penalties(ev)["hard_brakes"] == 15.0  # 5 km: counted as 10 km, 5 points each
    brakes = [t for t in ev["tips"] if t["id"] == "hard_brakes"]
    assert brakes == [{"id": "hard_brakes", "value": 3, "penalty": 15.0, "city": True}]


def test_the_formula_as_documented():
    cfg = config()
    ev = evaluate(cfg, distance_km=40.0, duration_s=3600, idle_s=720, hard_brakes=6, hard_accels=2,
                  moving_s=2880, speeding_s=288, cold_revving_s=50, over_revving_s=10)
    assert penalties(ev) == {
        "hard_brakes": 7.5,   # 6 × 5 per 10 km of 40 km
        "hard_accels": 1.5,   # 2 × 3 / 4
        "speeding": 5.0,      # 10 % of the moving time, 1 per 2 %
        "idling": 5.0,        # 20 % idle, beyond 10 %: 1 per 2 %
        "cold_revving": 5.0,  # 50 s, 1 per 10 s
        "over_revving": 2.0,  # 10 s, 1 per 5 s
    }
    assert ev["score"] == 74
    worst = evaluate(cfg, distance_km=1.0, duration_s=600, idle_s=600, hard_brakes=50, hard_accels=50,
                     moving_s=600, speeding_s=600, cold_revving_s=600, over_revving_s=600)
    assert worst["score"] == 0 and sum(c["max"] for c in worst["components"].values()) == 100


def test_the_score_survives_a_restart_mid_trip():
    car = Car().drive(300, 100.0).drive(30, 180.0).drive(300, 130.0).park(600)
    whole = scored(car)
    eng = RuleEngine(config(), DEVICE)
    half = len(car.items) // 2
    run(car.items[:half], engine=eng)
    back = RuleEngine.restore(config(), DEVICE, json.loads(json.dumps(eng.snapshot())))
    (ch,) = [c for c in run(car.items[half:], engine=back) if c.event.type == "trip"]
    assert ch.trip.score == whole


def trip(day: int, km: float, score: int, brakes: int = 0):
    comps = {k: {"value": 0, "penalty": 0.0, "max": 0} for k in ("hard_brakes", "hard_accels")}
    comps["hard_brakes"]["value"] = brakes
    return SimpleNamespace(started_ms=EPOCH_MS + day * DAY, distance_km=km,
                           values={"score": {"score": score, "components": comps, "tips": []}})


def test_weekly_summary_is_distance_weighted_with_the_change_from_the_week_before():
    # EPOCH_MS is Tuesday 2023-11-14: days 0-5 are one ISO week, 7-12 the next.
    weeks = weekly([trip(0, 10, 60, brakes=4), trip(1, 30, 80), trip(7, 20, 90), trip(8, 20, 94, brakes=1),
                    SimpleNamespace(started_ms=EPOCH_MS, distance_km=5, values={})])  # an old trip: no score
    assert [(w["week"], w["trips"], w["km"], w["score"], w["change"], w["hard_brakes"]) for w in weeks] == [
        ("2023-W46", 2, 40.0, 75.0, None, 4), ("2023-W47", 2, 40.0, 92.0, 17.0, 1)]
