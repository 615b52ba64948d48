"""Overheating, low battery while parked, charging fault while running: held
conditions, hysteresis, dropouts."""

from __future__ import annotations

from test_rules_synth import ATRV, COOLANT, DEVICE, EPOCH_MS, MODV, RPM, SPEED, Car, config, run, types

from obdsync.config import BatteryConfig, EngineConfig
from obdsync.rules import RuleEngine


def ramp(a: float, b: float, secs: float):
    return lambda tau: a + (b - a) * min(1.0, tau / secs)


def of(changes, type_):
    return [c for c in changes if c.event.type == type_]


# ---- overheat ----------------------------------------------------------------------------------

def test_overheat_opens_after_30_s_at_110_and_clears_below_100():
    car = Car().drive(300, 40.0, coolant=ramp(90, 115, 100)).drive(600, 40.0, coolant=ramp(115, 95, 300))
    ch = of(run(car.items), "overheat")
    assert [c.change for c in ch] == ["opened", "cleared"]
    opened = ch[0].event
    # 110 °C is reached at 80 s; 30 s later it opens
    assert EPOCH_MS + 105_000 <= opened.opened_ms <= EPOCH_MS + 111_000
    assert opened.severity == "critical" and opened.values["coolant_c"] >= 110
    assert ch[1].event.id == opened.id and ch[1].event.values["peak_c"] == 115


def test_coolant_hovering_at_the_thresholds_opens_once_and_clears_once():
    car = Car().drive(60, 40.0, coolant=112.0)
    car.drive(900, 40.0, coolant=lambda tau: 105 if int(tau / 20) % 2 else 112)  # above 100: stays open
    car.drive(900, 40.0, coolant=lambda tau: 99 if int(tau / 20) % 2 else 112)   # dips below: clears, 20 s hot
    ch = of(run(car.items), "overheat")
    assert [c.change for c in ch] == ["opened", "cleared"]


def test_short_spikes_are_not_overheating():
    car = Car().drive(1800, 40.0, coolant=lambda tau: 115 if tau % 60 < 20 else 95)
    assert types(run(car.items)) == []


def test_a_dropout_restarts_the_overheat_count():
    eng = RuleEngine(config(), DEVICE)
    # 20 s hot, 5 min of NO DATA, 20 s hot: never 30 s in a row that we know of
    rows = [(EPOCH_MS + s * 1000, COOLANT, 112.0) for s in range(20)]
    rows += [(EPOCH_MS + 320_000 + s * 1000, COOLANT, 112.0) for s in range(20)]
    eng.samples(rows)
    assert eng.drain() == []


def test_overheat_settings_are_read_from_the_config():
    car = Car().drive(300, 40.0, coolant=100.0)
    cfg = config(engine=EngineConfig(overheat_open_c=99.0, overheat_clear_c=90.0, overheat_secs=10.0))
    assert types(run(car.items, cfg)) == ["overheat"]


# ---- battery -------------------------------------------------------------------------------------

def test_battery_low_parked_warns_then_escalates_to_critical():
    car = Car().drive(120, 30.0)
    car.park(6 * 3600, volts=lambda s: 12.6 - 1.0 * s / (6 * 3600))  # 12.6 → 11.6 V
    ch = of(run(car.items), "battery_low")
    assert [c.change for c in ch] == ["opened", "updated"]
    assert ch[0].event.severity == "warning" and ch[1].event.severity == "critical"
    assert ch[0].event.id == ch[1].event.id
    # 12.2 V is crossed at 2.4 h; five minutes of it are needed
    assert ch[0].event.opened_ms >= car.wall(120 + 2.4 * 3600 + 300) - 60_000


def test_surface_charge_and_a_healthy_battery_give_nothing():
    car = Car().drive(600, 50.0).park(3600, volts=lambda s: 12.5 + 0.4 * max(0.0, 1 - s / 300))
    car.drive(600, 50.0).park(8 * 3600, volts=12.45)
    assert types(run(car.items)) == ["trip", "trip"]


def test_battery_low_clears_once_it_is_charged_again():
    car = Car().drive(60, 30.0).park(3600, volts=12.0).drive(600, 30.0, volts=14.3)
    ch = of(run(car.items), "battery_low")
    assert [c.change for c in ch] == ["opened", "cleared"]


def test_dongle_battery_low_event_opens_critical():
    car = Car().drive(60, 30.0).park(200, volts=11.5).event(4)
    ch = of(run(car.items), "battery_low")
    assert [(c.change, c.event.severity) for c in ch] == [("opened", "critical")]
    assert ch[0].event.values["dongle_sleeping"] is True


def test_charging_fault_after_two_minutes_below_13_running():
    car = Car().drive(300, 50.0, volts=14.2).drive(300, 50.0, volts=12.4).drive(300, 50.0, volts=14.1)
    ch = of(run(car.items), "charging_fault")
    assert [c.change for c in ch] == ["opened", "cleared"]
    assert ch[0].event.opened_ms == car.wall(300 + 120)


def test_a_smart_alternator_above_the_running_threshold_is_fine():
    car = Car().drive(1800, 50.0, volts=13.2)
    assert types(run(car.items)) == []
    cfg = config(battery=BatteryConfig(running_min_v=13.5))
    assert types(run(car.items, cfg)) == ["charging_fault"]


def test_engine_stop_is_not_a_charging_fault():
    # After the engine stops the adapter still reads 12.6 V for the dongle's quiet minute.
    car = Car().drive(300, 50.0)
    car.park(600, volts=12.6, every=5)
    assert types(run(car.items)) == ["trip"]


def test_module_voltage_stands_in_only_when_atrv_is_silent():
    eng = RuleEngine(config(), DEVICE)
    rows = []
    for s in range(0, 400):
        w = EPOCH_MS + s * 1000
        rows += [(w, RPM, 800.0), (w, SPEED, 30.0), (w, MODV, 12.5)]
        if s % 5 == 0:
            rows.append((w, ATRV, 14.2))
    eng.samples(rows)
    assert eng.drain() == []
    eng = RuleEngine(config(), DEVICE)
    eng.samples([r for r in rows if r[1] != ATRV])
    assert [c.event.type for c in eng.drain()] == ["charging_fault"]
