"""Fuel rules on synthetic traces, including the hard ones: slosh, refuel while idling,
theft overnight, a slow leak, a leak while driving, sensor dropouts."""

from __future__ import annotations

import math

import pytest
from test_rules_synth import DEVICE, EPOCH_MS, Car, config, run, types

from obdsync.config import FuelConfig
from obdsync.rules import RuleEngine


def city(tau: float) -> float:
    """Stop and go: 90 s cycles of 40 s at 50 km/h, ramps, 20 s standing."""
    x = tau % 90
    return 50.0 if x < 40 else (50.0 - (x - 40) * 5 if x < 50 else (0.0 if x < 70 else (x - 70) * 2.5))


FUEL = ("low_fuel", "refuel", "fuel_drop")


def fuel(changes):
    """The fuel events among the changes (trips end in these traces too)."""
    return [c for c in changes if c.event.type in FUEL]


def ftypes(changes, change=None):
    return types(fuel(changes), change)


def only(changes, type_):
    return [c for c in changes if c.event.type == type_]


@pytest.mark.parametrize("seed", range(6))
def test_slosh_of_4_percent_around_a_steady_level_gives_no_events(seed):
    car = Car(level=50, seed=seed).drive(3600, lambda tau: 60 + 40 * math.sin(tau / 60), slosh=4.0)
    car.drive(1800, city, slosh=4.0)
    assert ftypes(run(car.items)) == []


def test_slosh_near_the_low_threshold_opens_low_fuel_once_and_never_flaps():
    for seed in range(4):
        car = Car(level=15.5, seed=seed).drive(3600, city, slosh=4.0, lph=0.0)  # sloshing across 15 %
        ch = run(car.items)
        assert ftypes(ch, "cleared") == []
        assert ftypes(ch).count("low_fuel") <= 1
    car = Car(level=19, seed=2).drive(1800, 60.0, slosh=4.0, lph=0.0)  # 4 % above: never
    assert ftypes(run(car.items)) == []


def test_low_fuel_opens_below_15_with_range_and_clears_above_20():
    car = Car(level=17, tank=50).drive(3600, 80.0, lph=6.0)  # 80 km, 6 L: 17 % → 5 %
    car.park(600, added_l=30).drive(120, 30.0)
    ch = run(car.items)
    low = only(ch, "low_fuel")
    assert [c.change for c in low] == ["opened", "cleared"]
    ev = low[0].event
    assert ev.values["level_pct"] < 15 and ev.severity == "warning"
    # 7.5 L/100 km observed: 14.x % of 50 L ≈ 7.3 L ≈ 95 km
    assert ev.values["range_km"] == pytest.approx(ev.values["litres_left"] / 7.5 * 100, rel=0.1)
    assert "km left" in ev.message and ev.message.startswith("Fuel low: 1")
    assert low[1].event.id == ev.id and low[1].event.cleared_ms > ev.opened_ms


def test_refuel_with_the_engine_off_is_one_event_with_its_litres():
    car = Car(level=20, seed=4).drive(600, city, slosh=4.0).park(300, added_l=30)
    car.drive(600, city, slosh=4.0)
    ch = run(car.items)
    assert ftypes(ch) == ["refuel"]
    assert fuel(ch)[0].event.values["litres"] == pytest.approx(30, abs=1.5)
    assert fuel(ch)[0].change == "instant" and fuel(ch)[0].event.severity == "info"


def test_refuel_while_the_engine_idles_is_one_event():
    car = Car(level=25, seed=5).drive(300, city, slosh=4.0)
    car.idle(60).idle(150, refuel_lph=35 * 60 / 2.5).idle(90)  # 35 L in 2.5 min at the pump, idling
    car.drive(600, city, slosh=4.0)
    ch = run(car.items)
    assert ftypes(ch) == ["refuel"]
    assert fuel(ch)[0].event.values["litres"] == pytest.approx(35, abs=2)


def test_a_pump_that_pauses_is_still_one_refuel():
    car = Car(level=25, seed=6).idle(30)
    car.idle(60, refuel_lph=15 * 60).idle(50).idle(60, refuel_lph=15 * 60).idle(30).drive(300, 40.0, slosh=3)
    ch = run(car.items)
    assert ftypes(ch) == ["refuel"]
    assert fuel(ch)[0].event.values["litres"] == pytest.approx(30, abs=2)


def test_theft_overnight_is_one_fuel_drop_with_litres():
    car = Car(level=70, tank=60, seed=7).drive(600, city, slosh=4.0)
    car.park(10 * 3600, lost_l=15).drive(600, city, slosh=4.0)
    ch = run(car.items, config(tank=60))
    assert ftypes(ch) == ["fuel_drop"]
    ev = fuel(ch)[0].event
    assert ev.values["litres"] == pytest.approx(15, abs=1.5)
    assert ev.values["while"] == "parked" and ev.severity == "critical"
    assert f"{ev.values['litres']:g} L" in ev.message


def test_a_slow_leak_while_parked_is_one_fuel_drop():
    # 3.5 L seeping out over a night; the drives start and end standing (the gauge is exact then)
    car = Car(level=60, seed=8).idle(30).drive(300, 50.0, slosh=4.0).idle(30)
    car.park(12 * 3600, lost_l=3.5).idle(30).drive(300, 50.0, slosh=4.0)
    ch = run(car.items)
    assert ftypes(ch) == ["fuel_drop"]
    assert fuel(ch)[0].event.values["litres"] == pytest.approx(3.5, abs=0.5)


def test_a_small_loss_overnight_is_not_an_alarm():
    car = Car(level=60, seed=9).drive(300, 50.0).park(12 * 3600, lost_l=1.0).drive(300, 50.0)
    assert ftypes(run(car.items)) == []


def test_a_leak_while_driving_faster_than_consumption():
    car = Car(level=60, seed=10).drive(1200, 90.0, slosh=4.0)
    car.drive(300, 90.0, slosh=4.0, leak_lph=60.0).drive(900, 90.0, slosh=4.0)
    ch = run(car.items)
    assert ftypes(ch) == ["fuel_drop"]
    assert fuel(ch)[0].event.values["while"] == "driving"
    assert fuel(ch)[0].event.values["litres"] == pytest.approx(5.0, abs=1.5)


def test_without_a_consumption_source_driving_never_looks_like_a_leak_but_theft_still_does():
    car = Car(level=80, rate=False, seed=11).drive(2 * 3600, 100.0, slosh=4.0, lph=8.0)  # 32 % burnt
    assert ftypes(run(car.items)) == []
    car.park(8 * 3600, lost_l=10).drive(300, 40.0)
    ch = run(car.items)
    assert ftypes(ch) == ["fuel_drop"]
    assert fuel(ch)[0].event.values["litres"] == pytest.approx(10, abs=1.5)


def test_maf_stands_in_for_the_fuel_rate():
    car = Car(level=60, rate=False, maf=True, seed=12).drive(1200, 90.0, slosh=4.0)
    car.drive(300, 90.0, slosh=4.0, leak_lph=60.0).drive(900, 90.0).park(600)
    ch = run(car.items)
    assert ftypes(ch) == ["fuel_drop"]
    assert types(ch)[-1] == "trip"
    trip = ch[-1].trip
    assert trip.fuel_source == "maf"
    assert trip.fuel_l == pytest.approx(car.burnt, rel=0.02)


def test_level_dropouts_and_no_data_gaps_give_no_events():
    car = Car(level=50, seed=13).drive(600, 70.0, slosh=4.0, dropout=(100, 400))
    car.drive(1800, 70.0, slosh=4.0, level_every=60).drive(600, city, slosh=4.0, dropout=(0, 250))
    assert ftypes(run(car.items)) == []


def test_thresholds_come_from_the_config():
    car = Car(level=60, seed=14).drive(300, 50.0).park(3600, lost_l=2.0).drive(300, 50.0)  # 4 %
    assert ftypes(run(car.items, config(fuel=FuelConfig(drop_min_pct=5.0)))) == []
    assert ftypes(run(car.items, config(fuel=FuelConfig(drop_min_litres=2.5)))) == []  # in litres
    ch = run(car.items)  # the default: 3 %
    assert ftypes(ch) == ["fuel_drop"]
    assert fuel(ch)[0].event.values["litres"] == pytest.approx(2.0, abs=0.3)


def test_range_is_never_null_after_a_trip_and_learns_the_car_without_consumption_pids():
    # the case: no 0x5E, no MAF; an 18 km trip, then the level runs low
    car = Car(level=40, rate=False, seed=15).idle(20).drive(1080, 60.0, lph=7.2).idle(20).park(900)  # 12 L/100 km
    car.idle(20).drive(3600, 90.0, lph=10.8, slosh=2.0).idle(30).park(600)  # 90 km: 40 % → ~ 6 %
    low = [c.event for c in run(car.items) if c.event.type == "low_fuel"]
    assert low and low[0].values["range_km"] is not None
    ev = low[0]
    # learnt from the level: 12 L/100 km, blended with the configured 8 over 50 km
    assert 9.5 <= ev.values["l_per_100km"] <= 12.5
    assert ev.values["range_km"] == pytest.approx(ev.values["litres_left"] / ev.values["l_per_100km"] * 100, abs=1)
    assert f"≈ {ev.values['range_km']:g} km left" in ev.message


def test_a_refuel_carries_its_cost_at_the_price_in_force():
    car = Car(level=20, seed=4).drive(600, city, slosh=4.0).park(300, added_l=30).drive(600, city, slosh=4.0)
    eng = RuleEngine(config(fuel=FuelConfig(price_per_litre=1.5)), DEVICE)
    (ev,) = [c.event for c in fuel(run(car.items, engine=eng))]
    assert ev.values["price_per_litre"] == 1.5 and ev.values["cost"] == pytest.approx(ev.values["litres"] * 1.5)
    eng = RuleEngine(config(fuel=FuelConfig(price_per_litre=1.5)), DEVICE)
    eng.fuel_price(EPOCH_MS + 700_000, 2.0)  # entered at the pump, before the fill shows
    (ev,) = [c.event for c in fuel(run(car.items, engine=eng))]
    assert ev.values["price_per_litre"] == 2.0 and "at 2/L" in ev.message
    with pytest.raises(ValueError, match="fuel price"):
        eng.fuel_price(EPOCH_MS, float("nan"))
