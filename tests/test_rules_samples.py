"""`RuleEngine.samples()` is `sample()` inlined for the ingest hot path (a backlog is a
million samples). This property pins the two together: any sequence of samples, fed one
way or the other, leaves the same engine (snapshot) and derives the same event changes.
A change to one that the other does not follow fails here, not in a car."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rules_synth import (
    ATRV,
    COOLANT,
    DEVICE,
    DTCN,
    EPOCH_MS,
    LEVEL,
    MAF,
    MIL,
    MODV,
    RATE,
    RPM,
    SPEED,
    config,
)

from obdsync.rules import RuleEngine

LOAD, THROTTLE = 0x04, 0x11  # signals no hook reads: samples() may pass over them
CHANNELS = (SPEED, RPM, COOLANT, LEVEL, RATE, MAF, MODV, ATRV, MIL, DTCN, LOAD, THROTTLE)

values = st.one_of(
    st.none(),
    st.just(math.nan), st.just(math.inf),
    st.floats(-20, 8000, allow_nan=False),
    st.sampled_from([0.0, 1.0, 2.0, 2.5, 12.1, 14.2, 50.0, 110.0, 130.0]),
)
# Steps in ms: the same request's samples (0), a poll apart, silences past the quiet and
# pre-tick limits, and now and then a step back in time (clocks do that).
steps = st.one_of(st.just(0), st.integers(1, 1500), st.sampled_from([5_000, 30_000, 400_000]),
                  st.integers(-2_000, -1))
drives = st.lists(st.tuples(steps, st.sampled_from(CHANNELS), values), min_size=1, max_size=300)


def rows_of(drive: list[tuple[int, int, float | None]]) -> list[tuple[int, int, float | None]]:
    t = 0
    out = []
    for step, channel, value in drive:
        t += step
        out.append((t, channel, value))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drive=drives, split=st.integers(0, 300))
def test_samples_and_sample_derive_the_same(drive, split):
    rows = rows_of(drive)
    one = RuleEngine(config(), DEVICE)
    for t, channel, value in rows:
        one.sample(EPOCH_MS + t, channel, value)
    many = RuleEngine(config(), DEVICE)
    # In two batches, as the store's rows arrive: the offset and field order of the pipeline's call.
    k = min(split, len(rows))
    many.samples([(v, c, t) for t, c, v in rows[:k]], offset=EPOCH_MS, fields=(2, 1, 0))
    many.samples([(EPOCH_MS + t, c, v) for t, c, v in rows[k:]])
    assert many.drain() == one.drain()
    assert many.snapshot() == one.snapshot()
