"""obdsync.ingest: the watermark's loop as a pure function, and what a stored batch hands on
(``Ingested``) so the pipeline never asks the store again about it."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from obdsync.ingest import advance_watermark
from obdsync.model import HeldDongleEvent, HeldMark, HeldSamples
from obdsync.store import Store
from protocol.record import KIND_ANCHOR, KIND_EVENT, KIND_SAMPLES

DEV = "00112233aabbccdd"
WALL = 1_700_000_000_000
NOW = 1_700_000_500_000


def test_the_watermark_moves_over_stored_seqs_and_stops_at_a_hole():
    assert advance_watermark(4, {5, 6, 8}, []) == (6, {8}, [])


def test_a_gap_range_carries_the_watermark_over_what_the_dongle_lost():
    # 7..9 lost: 5, 6, then the gap to 9, then 10; 12 waits for 11.
    assert advance_watermark(4, {5, 6, 10, 12}, [(7, 9)]) == (10, {12}, [])


def test_gaps_and_seqs_below_the_new_watermark_are_dropped_the_rest_kept():
    c, pending, gaps = advance_watermark(0, {1, 3, 20}, [(2, 2), (4, 6), (15, 18)])
    assert (c, pending, gaps) == (6, {20}, [(15, 18)])


def test_overlapping_gaps_reach_the_furthest_end():
    assert advance_watermark(0, set(), [(1, 5), (3, 9), (10, 10)]) == (10, set(), [])


def test_nothing_to_advance_leaves_everything_as_it_was():
    pending, gaps = {7}, [(9, 12)]
    assert advance_watermark(4, pending, gaps) == (4, {7}, [(9, 12)])
    assert pending == {7}  # the caller's set is not changed


def test_the_watermark_is_the_same_whatever_order_the_seqs_come_in():
    rng = random.Random(16)
    seqs = [s for s in range(1, 200) if rng.random() > 0.1]
    gaps = [(s, s) for s in range(1, 200) if s not in seqs and rng.random() > 0.3]
    whole = advance_watermark(0, set(seqs), gaps)
    c, pending, left = 0, set(), list(gaps)
    rng.shuffle(seqs)
    for i in range(0, len(seqs), 17):  # in batches, out of order
        c, pending, left = advance_watermark(c, pending | set(seqs[i:i + 17]), left)
    assert (c, pending, left) == whole
    assert whole[0] > 0


def _samples(seq, t0, boot=1):
    return SimpleNamespace(kind=KIND_SAMPLES, seq=seq, boot=boot, t0=t0,
                           samples=[(t0, 0x0D, bytes([seq])), (t0 + 50, 0x0C, b"\x0b\x4d")])


@pytest.fixture
async def store(tmp_path):
    st = await Store.open(tmp_path / "obdsync.db", clock=lambda: NOW / 1000)
    yield st
    await st.close()


async def test_a_batch_hands_on_its_records_rows_anchors_and_latest_values(store):
    anchor = SimpleNamespace(kind=KIND_ANCHOR, seq=1, boot=1, t0=0, wall_ms=WALL)
    event = SimpleNamespace(kind=KIND_EVENT, seq=3, boot=1, t0=2500, code=2, millivolts=13900)
    got = await store.ingester.ingest(DEV, [anchor, _samples(2, 1000), event, _samples(4, 3000)])
    assert got.acked == 4 and got.contiguous == 4 and got.seq_base == 0
    assert [type(h) for h in got.held] == [HeldMark, HeldSamples, HeldDongleEvent, HeldSamples]
    assert got.held[2] == HeldDongleEvent(3, 1, 2500, 2)
    # A record's rows are its own, times in the boot's ticks, the anchor's base beside them.
    assert [r[6] for r in got.held[1].rows] == [1000, 1050]
    assert got.anchors == {1: (WALL, False)}
    assert len(got.rows) == 4
    # The latest value of each signal, as the store's status keeps it.
    (status,) = await store.status(DEV)
    assert got.last_values == status.last_values
    assert got.last_values[0x0D] == (WALL + 3000, 4.0, "km/h")


async def test_a_boot_without_its_anchor_hands_on_a_provisional_one_then_the_real_one(store):
    got = await store.ingester.ingest(DEV, [_samples(1, 1000, boot=2)], received_ms=NOW)
    assert got.anchors == {2: (NOW - 1050, True)}
    real = SimpleNamespace(kind=KIND_ANCHOR, seq=2, boot=2, t0=0, wall_ms=WALL)
    got = await store.ingester.ingest(DEV, [real])
    assert got.anchors == {2: (WALL, False)}


async def test_duplicates_hand_on_nothing(store):
    batch = [SimpleNamespace(kind=KIND_ANCHOR, seq=1, boot=1, t0=0, wall_ms=WALL), _samples(2, 1000)]
    assert len((await store.ingester.ingest(DEV, batch)).held) == 2
    again = await store.ingester.ingest(DEV, batch)
    assert (again.acked, again.held, again.rows, again.anchors) == (2, [], [], {})
