"""The pipeline (store → rules → events): live derivation equals a replay from the
store, whatever the batching, duplicates and resends, across a restart (kill -9:
no close), and with the time anchor arriving after the backlog it maps."""

import random

import pytest

from hil.bench.ingest import DEVICE, SECRET, WALL_T0_MS, backlog
from obdsync.config import Config
from obdsync.pipeline import Pipeline, replay
from obdsync.store import Store
from protocol.auth import telemetry_key
from protocol.record import KIND_ANCHOR, RecordWriter, Signer
from protocol.record_decode import decode_record

KEY = telemetry_key(SECRET)


@pytest.fixture(scope="module")
def records():
    """Nine minutes of driving, then a trouble code that comes and goes and an
    overheating that opens and clears: events to derive."""
    raws, _ = backlog(12_000)
    recs = [decode_record(r, KEY) for r in raws]
    seq, t = recs[-1].seq + 1, recs[-1].samples[-1][0] + 1000
    w, sign, buf = RecordWriter(KEY), Signer(KEY), bytearray(512)

    def add(n):
        recs.append(decode_record(bytes(buf[:n]) if n > 0 else bytes(w.out[:-n]), KEY))

    add(sign.dtc(buf, seq, 1, t, 0x03, b"\x03\x01", 1))  # P0301 stored
    seq += 1
    for k in range(240):  # coolant 120 °C for two minutes, then 85 °C for two, at 1 Hz
        w.group(t + 1000 * k)
        w.add(0x05, bytes([160 if k < 120 else 125]), 0, 1)
        w.add(0x0D, b"\x00", 0, 1)
        if k % 10 == 9:
            add(-w.seal(seq, 1))
            seq += 1
    add(sign.dtc(buf, seq, 1, t + 240_000, 0x03, b"", 0))  # the code is gone
    return recs


def deliveries(records, seed):
    """Batches as a link delivers them: random sizes, some records twice, a few late."""
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(records):
        n = rng.randint(1, 40)
        batch = list(records[i:i + n])
        if rng.random() < 0.3 and i:
            batch.insert(rng.randrange(len(batch) + 1), records[rng.randrange(max(0, i - 20), i)])  # a resend
        if rng.random() < 0.2 and len(batch) > 2:
            batch[0], batch[1] = batch[1], batch[0]
        out.append(batch)
        i += n
    return out


def view(events):
    return sorted((e.id, e.type, e.severity, e.opened_ms, e.cleared_ms, e.message) for e in events)


async def live(path, batches, restart_after=None):
    store = await Store.open(path)
    try:
        p = Pipeline(store, Config())
        for k, batch in enumerate(batches):
            acked = await p.ingest(DEVICE, batch)
            if k == restart_after:
                await p.flush()
                p = Pipeline(store, Config())  # the old one is dropped unclosed, as by kill -9
        await p.close()
        return acked, view(await store.events(limit=1000)), await store.trips(limit=1000)
    finally:
        await store.close()


async def test_live_equals_replay_and_survives_a_restart(records, tmp_path):
    acked, events, trips = await live(tmp_path / "a.db", deliveries(records, 1))
    assert acked == records[-1].seq
    assert {e[1] for e in events} >= {"overheat", "dtc_new"}, events  # the trace does produce events
    assert all(e[4] is not None for e in events if e[1] in ("overheat", "dtc_new")), events  # and clears them

    acked_b, events_b, trips_b = await live(tmp_path / "b.db", deliveries(records, 2), restart_after=7)
    assert acked_b == acked
    assert events_b == events
    assert [t.id for t in trips_b] == [t.id for t in trips]

    store = await Store.open(tmp_path / "a.db")
    try:
        changes = await replay(store, Config(), DEVICE)
        assert view({c.event.id: c.event for c in changes}.values()) == events  # the latest state of each id
        assert view(await store.events(limit=1000)) == events  # nothing new stored by the replay
    finally:
        await store.close()


async def test_records_wait_for_their_boot_anchor(records, tmp_path):
    """The dongle logs the anchor when the daemon connects, after the backlog it then
    replays: derivation waits for it and uses it, rather than the receive time."""
    samples = [r for r in records if r.kind != KIND_ANCHOR]
    t_last = max(r.samples[-1][0] if r.samples else r.t0 for r in samples)
    buf = bytearray(64)
    n = Signer(KEY).anchor(buf, max(r.seq for r in samples) + 1, 1, t_last, WALL_T0_MS + t_last)
    late_anchor = decode_record(bytes(buf[:n]), KEY)
    _, events, _ = await live(tmp_path / "first.db", deliveries(records, 3))
    _, events_late, _ = await live(tmp_path / "late.db", deliveries(samples + [late_anchor], 3))
    assert events_late == events


@pytest.mark.parametrize("snapshot", [
    '{"engine": {"version": 999, "device": "%s", "ctx": {}, "rules": {}}, "services_fed": 0}',  # a future release
    '{"engine": {"version": 1, "device": "%s", "ctx": ',  # torn JSON
    '{"engine": {"version": 1, "device": "%s", "ctx": 7, "rules": []}}',  # the right version, nonsense inside
], ids=["future-version", "truncated", "malformed"])
async def test_an_unreadable_snapshot_never_stops_storage_or_acks(records, tmp_path, snapshot):
    """After an upgrade (or a damaged row) the saved rules state cannot be read: every
    batch is still stored and acked, and the events come out as a fresh replay makes
    them, each stored once."""
    cut = len(records) // 2
    acked, events, _ = await live(tmp_path / "ref.db", deliveries(records, 4))
    path = tmp_path / "upgraded.db"
    first, rest = records[:cut], records[cut:]
    await live(path, deliveries(first, 5))
    store = await Store.open(path)
    try:
        (seq, _snap), = [await store.rules_state(DEVICE)]
        await store.save_rules_state(DEVICE, seq, snapshot % DEVICE)
        p = Pipeline(store, Config())
        got = [await p.ingest(DEVICE, batch) for batch in deliveries(rest, 6)]
        await p.close()
        assert got[-1] == acked == records[-1].seq
        assert all(b >= a for a, b in zip(got, got[1:], strict=False)) and got[0] > first[-1].seq - 40
        assert view(await store.events(limit=1000)) == events
        async with store.db.conn.execute("SELECT COUNT(*) FROM records") as cur:
            assert (await cur.fetchone())[0] == len({r.seq for r in records})
    finally:
        await store.close()


class _Forwarder:
    """What the pipeline asks of obdsync.forward.Forwarder: entries, a wake-up, the retained state."""

    def __init__(self):
        self.states = []

    def outbox_entries(self, event):
        return [("mqtt", event.id.encode())]

    def notify(self):
        pass

    def publish_state(self, device, state):
        self.states.append(state)


async def test_a_record_goes_one_way_through_the_store(records, tmp_path, monkeypatch):
    """Once a device is met (its saved state, latest values and trip read), a batch goes
    into the store once and its events out: derivation, the retained state and the
    anchors come from what ingest handed on, never from reading the store back."""
    import obdsync.pipeline as pipeline_mod

    monkeypatch.setattr(pipeline_mod, "STATE_SECONDS", 0.0)  # the retained state after every batch
    store = await Store.open(tmp_path / "one-way.db")
    reads = []
    for name in ("status", "last_values", "samples", "events", "trips", "epochs", "rules_state", "dtcs",
                 "device_events", "replay_items", "export", "freeze_frames"):
        fn = getattr(store, name)

        def spy(*a, _name=name, _fn=fn, **k):
            reads.append(_name)
            return _fn(*a, **k)

        monkeypatch.setattr(store, name, spy)
    try:
        fwd = _Forwarder()
        p = Pipeline(store, Config(), forwarder=fwd)
        batches = deliveries(records, 7)
        await p.ingest(DEVICE, batches[0])  # the device met: its state read once
        await p.flush()
        met = list(reads)
        assert {"rules_state", "last_values", "trips", "epochs"} <= set(met)
        for batch in batches[1:]:
            await p.ingest(DEVICE, batch)
        await p.close()
        assert reads == met  # nothing read back after that
        assert {e.type for e in await store.events(limit=1000)} >= {"overheat", "dtc_new"}
        # The retained state's latest values are the stored ones.
        (status,) = await store.status(DEVICE)
        speed_t, speed, _unit = status.last_values[0x0D]
        assert fwd.states[-1]["speed_kmh"] == round(speed) and fwd.states[-1]["time_ms"] >= speed_t
    finally:
        await store.close()
