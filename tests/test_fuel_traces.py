"""The fuel rules on independent traces with known truth (hil/fueltrace.py), across the
noise families: no fuel event on noise alone; a planted refuel or theft found once,
with its litres within ±10 % (±1 L for small ones). Hypothesis draws the families and
the drives; ``make soak`` runs a bigger sweep of combined families and reports rates."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.fueltrace import FuelTrace, Noise, family
from obdsync.config import Config, VehicleConfig
from obdsync.rules import EventChange, RuleEngine

DEVICE = "f0e1d2c3b4a59687"
FUEL = ("refuel", "fuel_drop", "fuel_leak_suspected")


def run(tr: FuelTrace) -> list[EventChange]:
    eng = RuleEngine(Config(vehicle=VehicleConfig(tank_litres=tr.tank)), DEVICE)
    out: list[EventChange] = []
    for it in tr.items:
        if it[0] == "s":
            eng.samples(it[1])
        else:
            eng.dongle_event(it[1], it[2])
        out += eng.drain()
    return out


def fuel_events(tr: FuelTrace) -> list[tuple[str, float | None]]:
    return [(c.event.type, c.event.values.get("litres")) for c in run(tr) if c.event.type in FUEL]


def within(got: float, want: float) -> bool:
    return abs(got - want) <= max(0.1 * want, 1.0)


# Every family at its full severity, alone (on top of 2 % of slosh, as on any road).
FAMILIES = {
    "slosh 4 %, correlated": dict(slosh_pct=4.0, slosh_corr=0.5),
    "slosh 6 %": dict(slosh_pct=6.0, slosh_corr=0.3),
    "40 % dropouts": dict(dropout=0.4),
    "fine sender (no 1/255 steps)": dict(quantise=False),
    "cornering spikes": dict(spikes=0.08),
    "gauge damped 30 s": dict(gauge_tau_s=30.0),
    "gauge damped 120 s": dict(gauge_tau_s=120.0),
    "ECU answering when parked": dict(parked_answering=True),
    "MAF, no fuel rate": dict(fuel_rate=False, maf=True),
    "no fuel rate, no MAF": dict(fuel_rate=False),
    "no speed PID": dict(speed_pid=False),
    "GPS-grade speed noise": dict(speed_noise_kmh=4.0),
}
BASE = Noise(slosh_pct=2.0)

families = st.sampled_from(sorted(FAMILIES)).map(lambda k: dataclasses.replace(BASE, **FAMILIES[k]))
# Any mix of the families, the harshest included: for the noise-only property.
mixes = st.builds(
    Noise, slosh_pct=st.sampled_from([0.0, 2.0, 4.0, 6.0]), slosh_corr=st.floats(0.0, 0.8),
    dropout=st.sampled_from([0.0, 0.1, 0.4]), quantise=st.booleans(), spikes=st.sampled_from([0.0, 0.02, 0.08]),
    gauge_tau_s=st.sampled_from([0.0, 30.0, 60.0, 120.0]), parked_answering=st.booleans(), fuel_rate=st.booleans(),
    maf=st.booleans(), speed_pid=st.booleans(), speed_noise_kmh=st.sampled_from([0.0, 4.0]),
    consumption_err=st.floats(-0.05, 0.05))
seeds = st.integers(0, 2 ** 32 - 1)
# Derandomized: make test sees the same draws every run (a failure is reproducible, not
# a flake); the soak below and `--hypothesis-seed` explore further.
FAST = settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def noise_only(noise: Noise, seed: int) -> FuelTrace:
    rng = random.Random(seed)
    tr = FuelTrace(noise, seed, level=rng.uniform(30, 90))
    return tr.drive(rng.randint(600, 2400)).park(rng.randint(300, 7200)).drive(rng.randint(600, 2400)).park(600)


def planted_refuel(noise: Noise, seed: int) -> FuelTrace:
    rng = random.Random(seed)
    tr = FuelTrace(noise, seed, level=rng.uniform(5, 40))
    tr.drive(rng.randint(600, 2400))
    engine = rng.choice(["off", "ignition", "idle"])
    # without a speed PID an idling car cannot be told from a driving one: a key-off
    # in the middle of an idling fill then splits it (README, "fuel")
    key_off = rng.random() < 0.3 and not (engine == "idle" and not noise.speed_pid)
    tr.refuel(rng.uniform(15, 45), secs=rng.randint(60, 300), engine=engine, key_off_mid=key_off)
    if rng.random() < 0.5:
        tr.idle(rng.randint(30, 300))  # or drive off at once
    return tr.drive(rng.randint(600, 2400)).park(600)


def planted_theft(noise: Noise, seed: int) -> FuelTrace:
    rng = random.Random(seed)
    tr = FuelTrace(noise, seed, level=rng.uniform(40, 90))
    tr.drive(rng.randint(600, 2400)).park(rng.randint(60, 3600))
    tr.theft(rng.uniform(4, 15), secs=rng.randint(60, 1200)).park(rng.randint(60, 3600))
    return tr.drive(rng.randint(600, 2400)).park(600)


def assert_found(tr: FuelTrace) -> None:
    (want,) = tr.truth
    got = fuel_events(tr)
    assert len(got) == 1 and got[0][0] == want.kind and within(got[0][1], want.litres), (tr.noise, want, got)


@FAST
@given(mixes, seeds)
def test_noise_alone_gives_no_fuel_event(noise, seed):
    assert fuel_events(noise_only(noise, seed)) == []


@FAST
@given(families, seeds)
def test_a_planted_refuel_is_one_event_with_its_litres(noise, seed):
    assert_found(planted_refuel(noise, seed))


@FAST
@given(families, seeds)
def test_a_planted_theft_is_one_event_with_its_litres(noise, seed):
    assert_found(planted_theft(noise, seed))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_finds_a_refuel_with_the_ecu_silent_and_one_while_idling(name):
    noise = dataclasses.replace(BASE, **FAMILIES[name])
    for engine in ("off", "idle"):
        tr = FuelTrace(noise, 7, level=20).drive(900).refuel(30, secs=150, engine=engine).drive(900).park(600)
        assert_found(tr)


def test_a_refuel_across_a_key_off_mid_fill_is_one_event():
    for engine in ("off", "ignition", "idle"):
        tr = FuelTrace(Noise(slosh_pct=4.0, gauge_tau_s=60.0), 3, level=15).drive(900)
        tr.refuel(35, secs=240, engine=engine, key_off_mid=True).drive(900).park(600)
        assert_found(tr)


def test_a_drop_within_a_stop_while_the_ecu_answers_has_its_window():
    # the case: −8 % in 5 minutes while readings continue
    tr = FuelTrace(Noise(slosh_pct=4.0, parked_answering=True), 5, level=60).drive(1200).park(900)
    tr.theft(4.0, secs=300).park(1800)
    (ev,) = [c.event for c in run(tr) if c.event.type in FUEL]
    assert ev.type == "fuel_drop" and ev.values["while"] == "parked" and within(ev.values["litres"], 4.0)
    want = tr.truth[0]
    assert ev.values["window_start_ms"] <= want.start_ms + 60_000 and ev.values["window_end_ms"] >= want.end_ms - 60_000
    assert ev.values["window_end_ms"] - ev.values["window_start_ms"] < 30 * 60_000


def test_a_leak_while_driving_is_suspected_from_the_trend():
    for noise in (Noise(slosh_pct=4.0), Noise(slosh_pct=4.0, fuel_rate=False, maf=True)):
        tr = FuelTrace(noise, 11, level=80).drive(1800, 90.0).leak(10.0, 2400, 90.0).park(600)
        evs = [c.event for c in run(tr) if c.event.type == "fuel_leak_suspected"]
        assert len(evs) == 1, noise
        ev = evs[0]
        assert ev.severity == "warning" and ev.values["excess_lph"] == pytest.approx(10.0, abs=4.0)
        assert tr.truth[0].start_ms - 15 * 60_000 <= ev.opened_ms <= tr.truth[0].end_ms


# ---- the bigger sweep (make soak) --------------------------------------------------------------

@pytest.mark.soak
def test_soak_false_alarms_and_detection_over_mixed_families():
    """Figures for the README: fuel events on noise-only drives (any mix of families, the
    harshest included), and planted fills/thefts found once within tolerance."""
    n = 300
    false_alarms = sum(bool(fuel_events(noise_only(family(random.Random(s)), s))) for s in range(n))
    assert false_alarms == 0
    ok = {"refuel": 0, "fuel_drop": 0}
    for s in range(n):
        noise = family(random.Random(s))
        for kind, make in (("refuel", planted_refuel), ("fuel_drop", planted_theft)):
            tr = make(noise, s)
            got = fuel_events(tr)
            want = tr.truth[0]
            ok[kind] += len(got) == 1 and got[0][0] == kind and within(got[0][1], want.litres)
    print(f"\nfuel soak: {n} noise-only traces, {false_alarms} with a fuel event; planted fills found once within"
          f" tolerance {ok['refuel']}/{n}, thefts {ok['fuel_drop']}/{n}")
    # combined extremes (6 % slosh with 0.8 correlation on a 2-min damped gauge, ...) cost some
    assert ok["refuel"] >= 0.95 * n and ok["fuel_drop"] >= 0.93 * n, ok
