"""The outbox delivery loop against a scripted target and a real SQLite store:
order per device, backoff, dead letters, the dropped record, operator functions."""

from __future__ import annotations

import pytest
from forward_util import DEV_A, DEV_B, FAST, ScriptedSender, event, rows, wait_until

from obdsync.forward import (
    Backoff,
    Forwarder,
    Rejected,
    RetryLater,
    dead_letters,
    outbox_purge,
    outbox_retry,
    outbox_status,
)
from obdsync.forward.payloads import decode, event_payload
from obdsync.store import Store


@pytest.fixture
async def store(tmp_path):
    st = await Store.open(tmp_path / "obdsync.db")
    yield st
    await st.close()


def key(ev, state="open"):
    return f"{ev.id}:{state}:{ev.severity}"


async def run(store, sender, **kw):
    fwd = Forwarder(store, senders=[sender], backoff=FAST, idle_poll_s=5, **kw)
    await fwd.start()
    return fwd


async def put(store, fwd_or_targets, *events):
    targets = fwd_or_targets if isinstance(fwd_or_targets, list) else None
    for ev in events:
        if targets is None:
            await fwd_or_targets.put_event(ev)
        else:
            await store.put_event(ev, outbox=[(t, event_payload(ev)) for t in targets])


def test_backoff_is_capped_exponential_with_jitter():
    b = Backoff(1.0, 30.0)
    for attempt, full in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (200, 30)]:
        assert b.delay_s(attempt, lambda: 0.0) == pytest.approx(full * 0.5)
        assert b.delay_s(attempt, lambda: 0.999999) == pytest.approx(full, rel=1e-5)
    assert b.delay_s(3, lambda: 0.5) == pytest.approx(3.0)


async def test_a_device_waits_for_its_failed_head_while_others_go_on(store):
    a1, a2, a3 = event(1), event(2), event(3)
    b1, b2 = event(1, DEV_B), event(2, DEV_B)
    sender = ScriptedSender(script={key(a1): [RetryLater("HTTP 503"), RetryLater("HTTP 503"), None]})
    await put(store, ["fake"], a1, b1, a2, b2, a3)  # stored before the worker runs: one pass sees all
    fwd = await run(store, sender)
    try:
        await wait_until(lambda: len(sender.delivered) == 5, what="all five delivered")
        await wait_until(lambda: all(r[0] == "sent" for r in rows(store.path, "SELECT state FROM outbox")),
                         what="all five marked sent")
    finally:
        await fwd.stop()
    calls = sender.calls
    # B never waited for A's retries; A's later entries were not even tried before a1 got through.
    assert calls[:2] == [key(a1), key(b1)]
    assert calls.index(key(b2)) < calls.index(key(a2))
    assert calls.count(key(a1)) == 3 and calls.count(key(a2)) == 1 and calls.count(key(a3)) == 1
    assert [k for k in sender.keys if k.startswith(DEV_A)] == [key(a1), key(a2), key(a3)]
    assert [k for k in sender.keys if k.startswith(DEV_B)] == [key(b1), key(b2)]
    db = rows(store.path, "SELECT event_id, state, attempts FROM outbox ORDER BY id")
    assert db == [(a1.id, "sent", 3), (b1.id, "sent", 1), (a2.id, "sent", 1), (b2.id, "sent", 1), (a3.id, "sent", 1)]


async def test_worker_sleeps_until_the_blocked_head_is_due_not_the_entries_behind_it(store):
    a1, a2, b1 = event(1), event(2), event(1, DEV_B)
    sender = ScriptedSender(script={key(a1): [RetryLater("HTTP 503")]})
    await put(store, ["fake"], a1, a2, b1)
    fwd = Forwarder(store, senders=[sender], backoff=Backoff(60.0, 60.0), idle_poll_s=600)
    await fwd.start()
    try:
        worker = fwd.workers[0]
        await wait_until(lambda: worker.sleeping_until_ms is not None, what="the worker idle")
        [(retry_at,)] = rows(store.path, "SELECT next_attempt FROM outbox WHERE event_id=?", (a1.id,))
        # a2 is overdue but waits behind a1: waking for it would spin until a1's backoff ends.
        assert abs(worker.sleeping_until_ms - retry_at) <= 1
        assert sender.calls == [key(a1), key(b1)]
    finally:
        await fwd.stop()


async def test_open_and_clear_are_two_deliveries_with_their_own_keys(store):
    ev = event(7)
    sender = ScriptedSender()
    fwd = await run(store, sender)
    try:
        await fwd.put_event(ev)
        await fwd.put_event(event(7, cleared=True))
        await wait_until(lambda: len(sender.delivered) == 2, what="open and clear")
    finally:
        await fwd.stop()
    opened, cleared = (d.message for d in sender.delivered)
    assert (opened["id"], opened["state"], opened["cleared_ms"]) == (ev.id, "open", None)
    assert (cleared["id"], cleared["state"]) == (ev.id, "cleared")
    assert [d.key for d in sender.delivered] == [key(ev), key(ev, "cleared")]


async def test_refused_entry_is_dead_lettered_with_reason_and_does_not_block(store):
    a1, a2 = event(1), event(2)
    sender = ScriptedSender(script={key(a1): [Rejected("HTTP 400 Bad Request: unknown field")]})
    fwd = await run(store, sender)
    try:
        await fwd.put_event(a1)
        await fwd.put_event(a2)
        await wait_until(lambda: sender.keys == [key(a2)], what="a2 delivered after a1 refused")
        [st] = await fwd.status()
        assert (st.target, st.dead, st.pending, st.sent) == ("fake", 1, 0, 1)
        assert "HTTP 400" in st.last_error and st.last_success_ms is not None
        [dl] = await dead_letters(store)
        assert (dl.event_id, dl.device, dl.target) == (a1.id, DEV_A, "fake")
        assert dl.reason == "HTTP 400 Bad Request: unknown field"

        # The operator fixed the receiver and retries: it goes through.
        assert await outbox_retry(store, "fake") == 1
        fwd.notify()
        await wait_until(lambda: sender.keys == [key(a2), key(a1)], what="retried dead letter delivered")
        [st] = await fwd.status()
        assert (st.dead, st.pending, st.sent) == (0, 0, 2)
    finally:
        await fwd.stop()


async def test_payload_that_is_not_json_is_dead_lettered(store):
    ev = event(1)
    await store.put_event(ev, outbox=[("fake", b"\xff not json")])
    sender = ScriptedSender()
    fwd = await run(store, sender)
    try:
        await wait_until(lambda: rows(store.path, "SELECT state FROM outbox") == [("dead",)], what="dead letter")
    finally:
        await fwd.stop()
    assert sender.calls == []
    [dl] = await dead_letters(store, "fake")
    assert "not a JSON object" in dl.reason


async def test_target_down_then_back_delivers_everything_in_order(store):
    sender = ScriptedSender()
    sender.down = 4
    evs = [event(i, DEV_A if i % 2 else DEV_B) for i in range(10)]
    fwd = await run(store, sender)
    try:
        for ev in evs:
            await fwd.put_event(ev)
        await wait_until(lambda: len(sender.delivered) == 10, what="all delivered after the outage")
        [st] = await fwd.status()
    finally:
        await fwd.stop()
    assert sender.calls.count(key(evs[0])) >= 2  # it was tried while down
    for dev in (DEV_A, DEV_B):
        assert [k for k in sender.keys if k.startswith(dev)] == [key(e) for e in evs if e.device == dev]
    assert (st.pending, st.sent, st.dead, st.up) == (0, 10, 0, True)
    # The failed attempts were counted on the entry that was tried.
    assert rows(store.path, "SELECT attempts FROM outbox WHERE event_id=?", (evs[0].id,))[0][0] >= 2


async def test_outbox_bound_reports_dropped_count_before_anything_else(tmp_path):
    async with await Store.open(tmp_path / "o.db", outbox_max=3) as store:
        evs = [event(i) for i in range(5)] + [event(0, DEV_B)]
        await put(store, ["fake"], *evs)  # target not running: the bound drops the 3 oldest
        st = (await outbox_status(store, ["fake"]))[0]
        assert (st.pending, st.dropped_unreported, st.dropped_total) == (3, 3, 3)
        sender = ScriptedSender()
        fwd = await run(store, sender)
        try:
            await wait_until(lambda: len(sender.delivered) == 4, what="dropped record + 3 events")
        finally:
            await fwd.stop()
        first = sender.delivered[0].message
        assert first["type"] == "dropped" and first["device"] == DEV_A and first["count"] == 3
        assert (first["first_outbox_id"], first["last_outbox_id"]) == (1, 3)
        assert sender.keys[1:] == [key(evs[3]), key(evs[4]), key(evs[5])]
        st = (await outbox_status(store, ["fake"]))[0]
        assert (st.pending, st.sent, st.dropped_unreported, st.dropped_total) == (0, 3, 0, 3)
        assert rows(store.path, "SELECT state FROM outbox WHERE id<=3") == [("dropped_reported",)] * 3


async def test_restart_resumes_from_the_database(tmp_path):
    db = tmp_path / "r.db"
    async with await Store.open(db) as store:
        sender = ScriptedSender()
        sender.down = 10 ** 6
        fwd = await run(store, sender)
        for i in range(3):
            await fwd.put_event(event(i))
        await wait_until(lambda: len(sender.calls) >= 2, what="attempts while down")
        await fwd.stop()
    async with await Store.open(db) as store:
        sender2 = ScriptedSender()
        fwd = await run(store, sender2)
        try:
            await wait_until(lambda: len(sender2.delivered) == 3, what="delivery after restart")
        finally:
            await fwd.stop()
        assert sender2.keys == [key(event(i)) for i in range(3)]


async def test_purge_removes_dead_letters_and_old_sent_but_keeps_last_success(store):
    await put(store, ["fake"], event(1), event(2), event(3))
    sender = ScriptedSender(script={key(event(2)): [Rejected("HTTP 410 Gone")]})
    fwd = await run(store, sender)
    try:
        await wait_until(lambda: len(sender.calls) == 3 and rows(store.path, "SELECT COUNT(*) FROM outbox"
                                                                 " WHERE state='pending'")[0][0] == 0,
                         what="all tried")
    finally:
        await fwd.stop()
    before = (await outbox_status(store))[0]
    assert await outbox_purge(store, "fake") == 1  # dead letters by default
    assert await outbox_purge(store, "fake", states=("sent",)) == 1  # the newest sent stays
    after = (await outbox_status(store))[0]
    assert (after.dead, after.sent, after.last_success_ms) == (0, 1, before.last_success_ms)
    with pytest.raises(ValueError, match="states"):
        await outbox_purge(store, states=("bogus",))


def test_event_payload_is_stable_json():
    ev = event(3)
    body = event_payload(ev)
    assert body == event_payload(ev)
    msg = decode(body)
    assert msg["key"] == key(ev) and msg["device"] == DEV_A and msg["values"] == {"fuel_pct": 14.5, "n": 3}
    with pytest.raises(ValueError):
        event_payload(event(1).__class__(**{**event(1).__dict__, "values": {"x": float("nan")}}))


def test_a_consumer_deduplicating_by_key_sees_every_change():
    """Identity and updates (forward/payloads.py): an escalation and a clearing are new
    keys, a retry repeats its key, an instant is never left open."""
    from dataclasses import replace

    from obdsync.rules.events import Event

    warn = Event("e1", DEV_A, "battery_low", "warning", 1000, None, {"volts": 11.9}, "Battery low")
    crit = replace(warn, severity="critical", values={"volts": 11.4}, message="Battery low — the car may not start")
    gone = replace(crit, cleared_ms=5000)
    trip = Event("t1", DEV_A, "trip", "info", 1000, None, {"distance_km": 3.2}, "Trip")
    deliveries = [warn, warn, crit, crit, gone, gone, trip]  # at least once: each maybe twice
    seen: dict[str, dict] = {}
    for ev in deliveries:
        msg = decode(event_payload(ev))
        seen.setdefault(msg["key"], msg)
    got = [(m["state"], m["severity"]) for m in seen.values()]
    assert got == [("open", "warning"), ("open", "critical"), ("cleared", "critical"), ("instant", "info")]
    assert seen[key(crit)]["message"].endswith("may not start")
