"""Live == replay == restore: stable ids, snapshots, and inputs that are not tidy
(equal or slightly decreasing stamps, a new boot, jitter from a backlog)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rules_synth import ATRV, DEVICE, EPOCH_MS, RPM, SPEED, Car, config, run, types

from obdsync.rules import RuleEngine


def feed_with_restore(items, cut, cfg=None):
    cfg = cfg or config()
    eng = RuleEngine(cfg, DEVICE)
    first = run(items[:cut], engine=eng)
    snap = json.loads(json.dumps(eng.snapshot()))
    return first + run(items[cut:], engine=RuleEngine.restore(cfg, DEVICE, snap))


segment = st.one_of(
    st.tuples(st.just("drive"), st.integers(20, 600), st.floats(0, 130), st.floats(0, 4),
              st.sampled_from([None, 115.0]), st.sampled_from([14.2, 12.5]), st.sampled_from([None, 0, 1])),
    st.tuples(st.just("park"), st.integers(30, 20_000), st.floats(0, 12), st.floats(0, 25), st.floats(11.3, 12.8)),
    st.tuples(st.just("dtc"), st.sampled_from([3, 7, 10]), st.lists(st.sampled_from(["P0301", "P0420", "U0100"]),
                                                                 max_size=2)),
    st.tuples(st.just("boot")),
)


def build(segments, seed):
    car = Car(level=18.0, seed=seed)
    for s in segments:
        if s[0] == "drive":
            _, secs, v, slosh, hot, volts, mil = s
            car.drive(secs, v, slosh=slosh, coolant=hot, volts=volts, mil=mil)
        elif s[0] == "park":
            _, secs, lost, added, volts = s
            car.park(secs, lost_l=lost, added_l=added, volts=volts)
        elif s[0] == "dtc":
            car.dtcs(s[1], s[2])
        else:
            car.event(1)
    return car.items


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(segment, min_size=1, max_size=7), st.integers(0, 3), st.floats(0, 1))
def test_feed_half_snapshot_restore_feed_rest_equals_feed_all(segments, seed, frac):
    items = build(segments, seed)
    whole = run(items)
    cut = int(len(items) * frac)
    assert feed_with_restore(items, cut) == whole
    # and a replay from scratch is the same, ids included
    assert run(items) == whole


def test_restore_at_every_point_of_a_busy_trace():
    car = Car(level=14, seed=1).drive(120, 40.0, slosh=3, mil=1).dtcs(3, ["P0301"]).park(300, added_l=20)
    car.drive(200, 60.0, coolant=lambda tau: 90 + tau / 4, volts=12.5).park(4000, volts=11.9, lost_l=6)
    car.event(1).drive(100, 20.0, mil=0).dtcs(3, []).park(400)
    items = car.items
    whole = run(items)
    assert {"refuel", "mil_on", "dtc_new", "overheat", "charging_fault", "battery_low", "fuel_drop", "trip",
            "dtc_cleared", "low_fuel"} <= set(types(whole))
    for cut in range(0, len(items), 7):
        assert feed_with_restore(items, cut) == whole, cut


def test_ids_depend_on_the_situation_not_on_when_it_was_drained():
    car = Car(level=60, seed=2).drive(300, 50.0).park(36_000, lost_l=10).drive(300, 50.0).park(600)
    per_item = run(car.items)
    eng = RuleEngine(config(), DEVICE)
    for it in car.items:
        if it[0] == "s":
            eng.samples(it[1])
        else:
            eng.dongle_event(it[1], it[2])
    assert eng.drain() == per_item
    other = run(car.items, engine=RuleEngine(config(), "ffffffffffffffff"))
    assert {c.event.id for c in other}.isdisjoint({c.event.id for c in per_item})


def test_equal_and_slightly_decreasing_stamps_are_harmless():
    car = Car(level=50, seed=3).drive(600, 60.0, slosh=3).park(600)
    clean = run(car.items)
    rng = random.Random(4)
    messy = []
    for it in car.items:
        if it[0] == "s":
            # each record's samples share a stamp already; shift some back by up to 300 ms
            d = rng.choice([0, 0, 0, -300, -100])
            messy.append(("s", [(w + d, ch, v) for (w, ch, v) in it[1]] * 2))  # and duplicated
        else:
            messy.append(it)
    got = run(messy)
    assert types(got) == types(clean) == ["trip"]
    t = got[0].trip
    assert t.duration_s > 0 and t.distance_km == pytest.approx(clean[0].trip.distance_km, rel=0.02)


def test_a_new_boot_mid_drive_integrates_nothing_across_it():
    eng = RuleEngine(config(), DEVICE)
    eng.samples([(EPOCH_MS + s * 1000, SPEED, 100.0) for s in range(60)])
    eng.dongle_event(EPOCH_MS + 60_000, 1)
    # an hour later by its anchor: nothing was seen in between, nothing is assumed
    eng.samples([(EPOCH_MS + 3_660_000 + s * 1000, SPEED, 100.0) for s in range(60)])
    eng.samples([(EPOCH_MS + 3_720_000 + s * 1000, RPM, 0.0) for s in range(2)])
    eng.samples([(EPOCH_MS + 4_000_000, ATRV, 12.6)])
    trips = [c.trip for c in eng.drain() if c.trip]
    assert sum(t.distance_km for t in trips) == pytest.approx(2 * 59 / 36, rel=0.01)


def test_a_boot_with_an_earlier_clock_does_not_run_timers_backwards():
    eng = RuleEngine(config(), DEVICE)
    eng.samples([(EPOCH_MS + s * 1000, SPEED, 50.0) for s in range(100)])
    eng.dongle_event(EPOCH_MS + 40_000, 1)  # approximate anchor, 60 s in the past
    eng.samples([(EPOCH_MS + 40_000 + s * 1000, SPEED, 50.0) for s in range(100)])
    eng.samples([(EPOCH_MS + 1_000_000, ATRV, 12.6)])
    (t,) = [c.trip for c in eng.drain() if c.trip]
    assert t.duration_s >= 0 and t.distance_km >= 0


def test_a_snapshot_of_another_device_or_version_is_refused():
    snap = RuleEngine(config(), DEVICE).snapshot()
    with pytest.raises(ValueError, match="device"):
        RuleEngine.restore(config(), "0000000000000000", snap)
    with pytest.raises(ValueError, match="version"):
        RuleEngine.restore(config(), DEVICE, {**snap, "version": 99})
    with pytest.raises(ValueError, match="malformed"):
        RuleEngine.restore(config(), DEVICE, {**snap, "ctx": {}})


LOAD, THROTTLE = 0x04, 0x11  # signals no rule reads


def with_unread_signals(items, rng):
    """The items with load and throttle samples mixed in as a dongle's requests carry
    them: first in a request, between others, and in requests of their own."""
    out = []
    for it in items:
        if it[0] != "s":
            out.append(it)
            continue
        rows = []
        for r in it[1]:
            if rng.random() < 0.3:
                rows.append((r[0], LOAD, rng.uniform(0, 100)))
            rows.append(r)
            if rng.random() < 0.3:
                rows.append((r[0] - rng.choice([0, 0, 5]), THROTTLE, rng.uniform(0, 100)))
        if rng.random() < 0.2:
            rows.append((rows[-1][0] + rng.choice([1, 700, 400_000]), LOAD, 12.0))
        out.append(("s", rows))
    return out


def feed_one_by_one(items):
    eng = RuleEngine(config(), DEVICE)
    out = []
    for it in items:
        if it[0] == "s":
            for wall, sig, v in it[1]:
                eng.sample(wall, sig, v)
        elif it[0] == "d":
            eng.dtcs(it[1], it[2], it[3])
        else:
            eng.dongle_event(it[1], it[2])
        out += eng.drain()
    return out, eng.snapshot()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(segment, min_size=1, max_size=6), st.integers(0, 3), st.integers(0, 2**32))
def test_batched_samples_equal_one_at_a_time_with_signals_no_rule_reads(segments, seed, mix):
    # samples() passes over unread signals at a time already clocked: exactly as if
    # each sample had gone through sample() on its own.
    items = with_unread_signals(build(segments, seed), random.Random(mix))
    eng = RuleEngine(config(), DEVICE)
    batched = run(items, engine=eng)
    one_by_one, snap = feed_one_by_one(items)
    assert batched == one_by_one
    assert eng.snapshot() == snap
