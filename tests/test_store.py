"""The daemon's store: exactly-once ingest, watermark, time anchors, full disk, retention."""

from __future__ import annotations

import random
import sqlite3
from types import SimpleNamespace

import pytest

from obdsync import schema
from obdsync.forward.outbox_sql import OutboxSql
from obdsync.model import Event, HeldDongleEvent, HeldDtc, HeldSamples, Trip
from obdsync.store import Store, StoreBusyError, StoreFullError
from protocol.record import KIND_ANCHOR, KIND_DTC, KIND_EVENT, KIND_GAP, KIND_SAMPLES

DEV = "00112233aabbccdd"
WALL = 1_700_000_000_000  # Unix ms of the anchor
NOW = 1_700_000_500_000  # the test clock's "now", ms


def samples(seq, boot=1, t0=None, n=3):
    """A SAMPLES record: n groups of RPM + speed, 100 ms apart, values varying with seq."""
    t0 = seq * 1000 if t0 is None else t0
    s = []
    for i in range(n):
        s.append((t0 + 100 * i, 0x0C, bytes([0x0B, (seq * 7 + i) & 0xFF])))
        s.append((t0 + 100 * i, 0x0D, bytes([(seq + i) & 0x7F])))
    return SimpleNamespace(kind=KIND_SAMPLES, seq=seq, boot=boot, t0=t0, samples=s)


def anchor(seq, boot=1, t0=0, wall_ms=WALL):
    return SimpleNamespace(kind=KIND_ANCHOR, seq=seq, boot=boot, t0=t0, wall_ms=wall_ms)


def gap(seq, first, count, boot=1):
    return SimpleNamespace(kind=KIND_GAP, seq=seq, boot=boot, t0=0, first=first, count=count)


@pytest.fixture
async def store(tmp_path):
    st = await Store.open(tmp_path / "obdsync.db", clock=lambda: NOW / 1000)
    yield st
    await st.close()


async def dump(st):
    """Every sample row and record of the database, in a canonical order."""
    rows = await st.db.fetch("SELECT device, channel, time_ms, seq, n, boot, t_ms, value, raw, approx"
                           " FROM samples ORDER BY device, channel, time_ms, seq, n", ())
    recs = await st.db.fetch("SELECT device, seq, boot, kind FROM records ORDER BY device, seq", ())
    return rows, recs


async def count(st, table):
    (n,), = await st.db.fetch(f"SELECT COUNT(*) FROM {table}", ())
    return n


def test_record_kinds_match_the_wire():
    record = pytest.importorskip("protocol.record", reason="protocol.record not written yet")
    assert (record.KIND_SAMPLES, record.KIND_GAP, record.KIND_ANCHOR, record.KIND_EVENT, record.KIND_DTC) == (
        KIND_SAMPLES, KIND_GAP, KIND_ANCHOR, KIND_EVENT, KIND_DTC)


async def test_new_file_is_migrated_and_reopen_is_idempotent(tmp_path):
    path = tmp_path / "sub" / "obdsync.db"
    st = await Store.open(path)
    assert await st.ingest(DEV, [anchor(1), samples(2)]) == 2
    await st.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()

    st = await Store.open(path)
    assert await st.ingest(DEV, [samples(2)]) == 2  # the duplicate is still known after reopen
    assert await count(st, "samples") == 6
    await st.close()


async def test_database_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "obdsync.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(schema.SchemaError, match="newer"):
        await Store.open(path)


async def test_samples_are_decoded_and_mapped_to_wall_time(store):
    wm = await store.ingest(DEV, [anchor(10, t0=500), samples(11, t0=1500, n=1)])
    assert wm == 11
    rpm = await store.samples(DEV, 0x0C)
    assert [(r.time_ms, r.value, r.raw, r.approx) for r in rpm] == [(WALL + 1000, (256 * 0x0B + 77) / 4, b"\x0b\x4d",
                                                                    False)]
    speed = await store.samples(DEV, 0x0D)
    assert speed[0].value == 11.0


async def test_duplicates_are_dropped_and_are_handed_on_once(store):
    seen = []

    async def ingest(batch):
        got = await store.ingester.ingest(DEV, batch)
        if got.held:  # what the pipeline derives from: each new record once, with its rows
            seen.append((got.held[0].seq, len(got.rows)))
            seen.append(len(got.rows))
        return got.acked

    batch = [anchor(1), samples(2), samples(3)]
    assert await ingest(batch) == 3
    assert await ingest(batch) == 3  # all duplicates
    assert await ingest([samples(3), samples(3), samples(4)]) == 4
    assert await count(store, "samples") == 18
    assert await count(store, "records") == 4
    assert seen == [(1, 12), 12, (4, 6), 6]


async def test_any_order_and_split_of_the_same_records_gives_the_same_database(tmp_path):
    recs = [anchor(1, boot=1)] + [samples(s, boot=1) for s in range(2, 30)]
    recs += [anchor(30, boot=2, t0=0, wall_ms=WALL + 10**6), anchor(31, boot=2, t0=0, wall_ms=WALL + 5 * 10**6)]
    recs += [samples(s, boot=2) for s in range(32, 50)] + [gap(50, 51, 3)]
    ref = await Store.open(tmp_path / "ref.db", clock=lambda: NOW / 1000)
    assert await ref.ingest(DEV, recs) == 53  # the GAP covers 51-53
    expected = await dump(ref)
    await ref.close()

    rng = random.Random(7)
    for trial in range(4):
        shuffled = recs + rng.sample(recs, 15)  # with duplicates
        rng.shuffle(shuffled)
        st = await Store.open(tmp_path / f"t{trial}.db", clock=lambda: NOW / 1000)
        i = 0
        while i < len(shuffled):
            k = rng.randint(1, 9)
            wm = await st.ingest(DEV, shuffled[i:i + k])
            i += k
        assert wm == 53
        assert await dump(st) == expected
        await st.close()


async def test_watermark_stops_at_a_hole_and_gap_records_cover_it(tmp_path):
    path = tmp_path / "obdsync.db"
    st = await Store.open(path)
    assert await st.ingest(DEV, [anchor(100), samples(101), samples(103)]) == 101
    assert await st.ingest(DEV, [samples(104)]) == 101
    (status,) = await st.status(DEV)
    assert (status.first_seq, status.contiguous, status.missing) == (100, 101, 1)
    await st.close()

    st = await Store.open(path)  # pending seqs survive a restart
    assert await st.ingest(DEV, [gap(105, 102, 1)]) == 105
    assert await st.ingest(DEV, [gap(106, 107, 4), samples(111)]) == 111
    assert await st.ingest(DEV, [samples(102)]) == 111  # late arrival of a dropped one: stored, no harm
    (status,) = await st.status(DEV)
    assert (status.gaps, status.lost, status.missing) == (2, 5, 0)
    await st.close()


async def test_samples_before_their_anchor_are_approximate_then_remapped(store):
    # boot 2 has no anchor yet: its latest tick (t=3200) is mapped to the receive time
    assert await store.ingest(DEV, [samples(1, boot=2, t0=3000)], received_ms=NOW) == 1
    rows = await store.samples(DEV, 0x0D)
    assert [(r.time_ms, r.approx) for r in rows] == [(NOW - 200, True), (NOW - 100, True), (NOW, True)]
    # a second batch of the same boot keeps the same provisional mapping
    await store.ingest(DEV, [samples(2, boot=2, t0=4000, n=1)], received_ms=NOW + 60_000)
    assert (await store.samples(DEV, 0x0D))[-1].time_ms == NOW + 800

    await store.ingest(DEV, [anchor(3, boot=2, t0=5000, wall_ms=WALL)])
    rows = await store.samples(DEV, 0x0D)
    assert [(r.time_ms, r.approx) for r in rows] == [
        (WALL - 2000, False), (WALL - 1900, False), (WALL - 1800, False), (WALL - 1000, False)]
    # a later anchor of the same boot does not move anything: the first one stays
    await store.ingest(DEV, [anchor(4, boot=2, t0=6000, wall_ms=WALL + 999_999)])
    assert [r.time_ms for r in await store.samples(DEV, 0x0D)] == [r.time_ms for r in rows]


async def test_events_and_dtc_records_are_kept_with_their_time(store):
    ev = SimpleNamespace(kind=KIND_EVENT, seq=2, boot=1, t0=100, code=2, millivolts=14100)
    dtc = SimpleNamespace(kind=KIND_DTC, seq=3, boot=1, t0=200, mode=3, codes=[b"\x03\x01", b"\x00\x00"], ecus=[])
    assert await store.ingest(DEV, [anchor(1), ev, dtc]) == 3
    assert await store.device_events(DEV) == [(WALL + 100, 2, 14100, False)]
    assert await store.dtcs(DEV) == [(WALL + 200, 3, ["P0301"], False)]


async def test_status_shows_last_values(store):
    await store.ingest(DEV, [anchor(1), samples(2, n=2), SimpleNamespace(
        kind=KIND_SAMPLES, seq=3, boot=1, t0=9000, samples=[(9000, 0x01, b"\x83\x07\x65\x04"),
                                                          (9000, 0xFF, b"\x31\x10")])])
    (st,) = await store.status()
    assert st.device == DEV and st.records == 3
    assert st.last_values[0x0D] == (WALL + 2100, 3.0, "km/h")
    assert st.last_values[0x01][1:] == (1.0, "bool")  # MIL on
    assert st.last_values[0x101][1:] == (3.0, "count")
    assert st.last_values[0xFF][1:] == (12.56, "V")


async def test_full_disk_stores_nothing_of_the_batch_and_recovers(tmp_path):
    path = tmp_path / "obdsync.db"
    st = await Store.open(path, clock=lambda: NOW / 1000)
    await st.ingest(DEV, [anchor(1)])
    size = (await st.db.fetch("PRAGMA page_count", ()))[0][0] * st._page_size
    await st.set_max_bytes(size + 8 * 4096)
    seq, wm = 2, 1
    with pytest.raises(StoreFullError, match="full"):
        while True:  # fill until a batch does not fit
            batch = [samples(s, n=20) for s in range(seq, seq + 20)]
            wm = await st.ingest(DEV, batch)
            seq += 20
    assert seq < 2000, "never filled up"
    before = await dump(st)
    (status,) = await st.status(DEV)
    assert status.contiguous == wm == seq - 1
    assert all(r[3] < seq for r in before[0]) and before[1][-1][1] == seq - 1

    await st.close()  # and nothing half-done on disk either
    st = await Store.open(path, clock=lambda: NOW / 1000)
    assert await dump(st) == before

    # space is freed (here: the cap lifted): the same batch now goes in whole
    await st.set_max_bytes(None)
    assert await st.ingest(DEV, batch) == seq + 19
    assert await count(st, "samples") == len(before[0]) + 20 * 20 * 2
    await st.close()


async def test_locked_database_raises_busy_and_stores_nothing(tmp_path):
    path = tmp_path / "obdsync.db"
    st = await Store.open(path, busy_timeout_s=0.05)
    await st.ingest(DEV, [anchor(1)])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreBusyError, match="locked"):
            await st.ingest(DEV, [samples(2)])
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await count(st, "samples") == 0
    assert await st.ingest(DEV, [samples(2)]) == 2
    await st.close()


async def test_retention_deletes_old_samples_and_keeps_events_and_trips(store):
    day = 86_400_000
    await store.ingest(DEV, [anchor(1, t0=0, wall_ms=NOW - 40 * day), samples(2, t0=0, n=1),
                             anchor(3, boot=2, t0=0, wall_ms=NOW - day), samples(4, boot=2, t0=0, n=1)])
    await store.put_event(Event("e1", DEV, "overheat", "warning", NOW - 40 * day))
    await store.put_trip(Trip("t1", DEV, NOW - 40 * day, NOW - 40 * day + 3_600_000, 12.5))
    assert await store.retain(30) == 2
    assert [r.boot for r in await store.samples(DEV, 0x0D)] == [2]
    assert [e.id for e in await store.events(DEV)] == ["e1"]
    assert [t.distance_km for t in await store.trips(DEV)] == [12.5]
    await store.vacuum()
    assert await count(store, "samples") == 2


async def test_event_and_its_outbox_entries_are_stored_together(tmp_path):
    st = await Store.open(tmp_path / "o.db", clock=lambda: NOW / 1000, outbox_max=2)
    ids = await st.put_event(Event("e1", DEV, "fuel_low", "warning", NOW, values={"pct": 12.0}),
                             [("mqtt", b"a"), ("webhook", b"b")])
    assert len(ids) == 2
    await st.put_event(Event("e1", DEV, "fuel_low", "warning", NOW, cleared_ms=NOW + 5, values={"pct": 25.0}))
    (ev,) = await st.events(DEV)
    assert (ev.cleared_ms, ev.values) == (NOW + 5, {"pct": 25.0})
    outbox = OutboxSql(st.db)
    (due,) = await outbox.due("mqtt")
    assert (due.event_id, due.payload, due.attempts) == ("e1", b"a", 0)
    await outbox.failed(due.id, "connection refused", NOW + 1000)
    assert await outbox.due("mqtt") == []
    (due,) = await outbox.due("mqtt", now_ms=NOW + 1000)
    assert (due.attempts, due.last_error) == (1, "connection refused")
    await outbox.sent(due.id, NOW + 1000)
    await st.put_event(Event("e2", DEV, "dtc", "critical", NOW), [("mqtt", b"c"), ("mqtt", b"d")])
    # max 2 pending: the oldest pending (webhook "b") is dropped, visibly
    assert await outbox.by_state() == {("mqtt", "sent"): 1, ("mqtt", "pending"): 2, ("webhook", "dropped"): 1}
    await st.close()


async def test_export_pages_through_all_samples(store):
    await store.ingest(DEV, [anchor(1)] + [samples(s, n=5) for s in range(2, 12)])
    rows = [r async for r in store.export(DEV, chunk=7)]
    assert len(rows) == 100
    assert [r.channel for r in rows] == [0x0C] * 50 + [0x0D] * 50
    assert rows[:50] == sorted(rows[:50], key=lambda r: r.time_ms)


async def test_bad_device_id_is_refused(store):
    with pytest.raises(ValueError, match="16 hex"):
        await store.ingest("../../etc", [samples(1)])


async def test_records_off_the_wire_are_stored(store):
    record = pytest.importorskip("protocol.record", reason="protocol.record not written yet")
    key = bytes(range(32))
    w = record.RecordWriter(key)
    rpm, speed = b"\x1a\xf8", b"\x32"
    for i in range(3):
        w.group(1000 + 250 * i)
        w.add(0x0C, rpm, 0, 2)
        w.add(0x0D, speed, 0, 1)
    wire = [bytes(w.out[:w.seal(7, 1)])]
    buf = bytearray(64)
    wire.append(bytes(buf[:record.Signer(key).anchor(buf, 6, 1, 500, WALL)]))
    from protocol.record_decode import decode_record

    recs = [decode_record(data, key) for data in wire]
    assert await store.ingest(DEV, recs) == 7
    rows = await store.samples(DEV, 0x0C)
    assert [(r.time_ms, r.value) for r in rows] == [(WALL + 500 + 250 * i, 1726.0) for i in range(3)]


async def test_a_version_2_database_keeps_its_samples_through_the_split_of_values(tmp_path):
    path = tmp_path / "obdsync.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for step in range(2):  # the schema as obdsync with two migrations left it
        conn.execute("BEGIN")
        for stmt in schema._statements(schema.MIGRATIONS[step]):
            conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {step + 1}")
        conn.execute("COMMIT")
    old = [(1, 12, WALL + 5, 2, 0, 1, 5, 700.25, b"\x0a\xf1", 0), (1, 12, WALL + 9, 3, 0, 1, 9, 700.25, b"\x0a\xf1", 1),
           (1, 13, WALL + 5, 2, 1, 1, 5, 30.0, b"\x1e", 0), (1, 0x43, WALL + 6, 2, 2, 1, 6, None, b"\x01", 0)]
    conn.executemany("INSERT INTO samples VALUES (?,?,?,?,?,?,?,?,?,?)", old)
    conn.close()
    st = await Store.open(path)
    try:
        rows, _ = await dump(st)
        assert sorted(rows) == sorted(old)
        assert await count(st, "sample_values") == 3  # the repeated RPM value is stored once
        # the values of migrated rows serve new ones too (ids continue after the old ones)
        assert await st.ingest(DEV, [anchor(10), samples(11, n=1)]) == 11
        rpm = [(r.time_ms, r.value, r.raw) for r in await st.samples(DEV, 0x0C)]  # DEV got num 1: the old rows
        assert rpm == [(WALL + 5, 700.25, b"\x0a\xf1"), (WALL + 9, 700.25, b"\x0a\xf1"),
                       (WALL + 11_000, (256 * 0x0B + 77) / 4, b"\x0b\x4d")]
    finally:
        await st.close()


async def test_values_stay_right_when_the_value_cache_restarts_or_a_batch_fails(tmp_path, monkeypatch):
    import obdsync.ingest as ingest_mod

    monkeypatch.setattr(ingest_mod, "VALUE_CACHE_LIMIT", 3)
    path = tmp_path / "obdsync.db"
    st = await Store.open(path, clock=lambda: NOW / 1000)
    await st.ingest(DEV, [anchor(1)] + [samples(s) for s in range(2, 8)])
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreBusyError):  # a failed batch: the ids it gave out were not stored
            await st.ingest(DEV, [samples(s) for s in range(8, 12)])
    finally:
        other.execute("ROLLBACK")
        other.close()
    await st.ingest(DEV, [samples(s) for s in range(8, 12)])
    assert await st.retain(1, now_ms=WALL + 6_000 + 86_400_000) > 0
    await st.vacuum()  # drops values no row uses; the cache must not hand their ids out again
    await st.ingest(DEV, [samples(s) for s in range(12, 14)])
    got = {(r.time_ms, r.raw): r.value for r in await st.samples(DEV, 0x0C, limit=10_000)}
    await st.close()
    want = {}
    for s in range(6, 14):
        for t, ch, data in samples(s).samples:
            if ch == 0x0C and WALL + t >= WALL + 6_000:
                want[(WALL + t, data)] = (data[0] * 256 + data[1]) / 4
    assert got == want


async def test_dtc_records_keep_each_codes_ecu(store):
    dtc = SimpleNamespace(kind=KIND_DTC, seq=2, boot=1, t0=200, mode=3,
                          codes=[b"\x01\x33", b"\x00\x00", b"\xc1\x23"], ecus=[0xE8, 0xE8, 0x18])
    assert await store.ingest(DEV, [anchor(1), dtc]) == 2
    items = [i async for i in store.replay_items(DEV, 0)]
    assert items[-1] == HeldDtc(2, None, WALL + 200, 3, ["P0133", "U0123"], ["engine (7E8)", "transmission (18)"])


async def test_freeze_frames_are_kept_per_code_the_last_read_replacing_the_one_before(store):
    with pytest.raises(ValueError, match="no device"):
        await store.put_freeze_frames(DEV, {"P0133": {"ecu": "", "values": {}}}, 1)
    await store.ingest(DEV, [anchor(10, t0=500)])
    assert await store.freeze_frames(DEV) == {}
    a = {"ecu": "engine (7E8)", "values": {"RPM": [1726.0, "rpm"]}}
    b = {"ecu": "engine (7E8)", "values": {"RPM": [900.0, "rpm"]}}
    await store.put_freeze_frames(DEV, {"P0133": a, "P0730": a}, 1000)
    await store.put_freeze_frames(DEV, {"P0133": b}, 2000)
    assert await store.freeze_frames(DEV) == {"P0133": (2000, b), "P0730": (1000, a)}


def _wrapping_boot():
    """One boot's records off the wire across the dongle's ticks wrap (2**30 ms, 12.4 days):
    the anchor 1 s before it, a record whose groups cross it, an event and a record after it."""
    from protocol import record
    from protocol.record_decode import decode_record

    period = 1 << 30
    key = bytes(range(32))
    buf = bytearray(64)
    sign = record.Signer(key)
    wire = [bytes(buf[:sign.anchor(buf, 1, 4, period - 1000, WALL)])]
    w = record.RecordWriter(key)
    for t in (period - 300, period - 50, 200):  # the clock reads 200 after 2**30 - 50
        w.group(t)
        w.add(0x0D, bytes([40]), 0, 1)
    wire.append(bytes(w.out[:w.seal(2, 4)]))
    wire.append(bytes(buf[:sign.event(buf, 3, 4, 700, record.EVENT_ENGINE_OFF, 12400)]))
    w.group(5000)
    w.add(0x0D, bytes([0]), 0, 1)
    wire.append(bytes(w.out[:w.seal(4, 4)]))
    return [decode_record(data, key) for data in wire]


async def test_a_boot_whose_ticks_wrap_keeps_its_times_in_order(store):
    recs = _wrapping_boot()
    assert recs[1].samples[-1][0] == 200  # on the wire: wrapped
    got = await store.ingester.ingest(DEV, recs)
    seen = [(KIND_EVENT, h.t_ms) if type(h) is HeldDongleEvent else (KIND_SAMPLES, h.rows[0][6])
            for h in got.held if type(h) in (HeldDongleEvent, HeldSamples)]
    rows = await store.samples(DEV, 0x0D)
    assert [(r.time_ms, r.approx) for r in rows] == [
        (WALL + 700, False), (WALL + 950, False), (WALL + 1200, False), (WALL + 6000, False)]
    assert await store.device_events(DEV) == [(WALL + 1700, 3, 12400, False)]
    # The pipeline (Ingested.held) gets the ticks on the boot's scale too; the link's records stay as sent.
    assert seen[1:] == [(KIND_EVENT, (1 << 30) + 700), (KIND_SAMPLES, (1 << 30) + 5000)]
    assert recs[2].t0 == 700


async def test_a_wrapped_boot_maps_the_same_when_its_anchor_comes_last(tmp_path):
    recs = _wrapping_boot()
    def mapped(rows_recs):  # t_ms is on the scale of the boot's first anchor, whichever came first
        rows, recs = rows_recs
        return [r[:6] + r[7:] for r in rows], recs

    ref = await Store.open(tmp_path / "ref.db", clock=lambda: NOW / 1000)
    await ref.ingest(DEV, recs)
    expected = mapped(await dump(ref))
    await ref.close()
    for order in ([recs[1:], recs[:1]], [recs[3:], recs[1:3], recs[:1]], [recs[2:3], recs[:2], recs[3:]]):
        st = await Store.open(tmp_path / f"t{len(order)}{order[0][0].seq}.db", clock=lambda: NOW / 1000)
        for batch in order:
            await st.ingest(DEV, batch)
        assert mapped(await dump(st)) == expected
        assert await st.device_events(DEV) == [(WALL + 1700, 3, 12400, False)]
        await st.close()
