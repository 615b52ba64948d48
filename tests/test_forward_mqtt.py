"""MQTT forwarding against a real Mosquitto: topics, JSON, retain flags, last will,
Home Assistant discovery, a broker outage, kill -9 between publish and PUBACK, the
dropped record."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path

import mosquitto
import pytest
from forward_util import DEV_A, DEV_B, FAST, event, rows, wait_until
from mosquitto import Collector

from obdsync.config import ForwardConfig, MqttTarget
from obdsync.forward import Forwarder, outbox_status
from obdsync.forward.payloads import event_payload
from obdsync.store import Store

TARGET = "mqtt-test"
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with mosquitto.running(tmp_path_factory.mktemp("mosquitto")) as b:
        yield b


@pytest.fixture
def own_broker(tmp_path):
    """A broker this test may stop, restart or pause."""
    d = tmp_path / "mosquitto"
    d.mkdir()
    with mosquitto.running(d) as b:
        yield b


@pytest.fixture
async def store(tmp_path):
    st = await Store.open(tmp_path / "obdsync.db")
    yield st
    await st.close()


def target(port: int, **kw) -> ForwardConfig:
    return ForwardConfig(mqtt=(MqttTarget(host="127.0.0.1", port=port, name=TARGET, **kw),))


@contextlib.asynccontextmanager
async def forwarder(store, port, **kw):
    fwd = Forwarder(store, target(port, **kw), backoff=FAST, idle_poll_s=5, mqtt_timeout_s=5)
    await fwd.start()
    try:
        yield fwd
    finally:
        await fwd.stop()


def keys(msgs, device=None):
    """Idempotency keys of the event messages received, in arrival order."""
    out = []
    for m in msgs:
        if "/event/" in m.topic:
            k = json.loads(m.payload)["key"]
            if device is None or k.startswith(device):
                out.append(k)
    return out


def first_occurrences(seq):
    seen, out = set(), []
    for k in seq:
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


async def test_events_state_and_status_arrive_with_their_topics_and_retain_flags(broker, store):
    ev = event(1)
    async with Collector(broker.port, ("obdsync/#",), ident="c-topics", clean=True) as col:
        async with forwarder(store, broker.port) as fwd:
            fwd.publish_state(DEV_A, {"fuel_pct": 14.5, "mil": False, "odometer_km": 12345.6})
            await fwd.put_event(ev)
            await fwd.put_event(event(1, cleared=True))
            await col.wait_for(lambda ms: len(keys(ms)) == 2 and col.on(f"obdsync/{DEV_A}/state"), what="events")
            await wait_until(lambda: rows(store.path, "SELECT state FROM outbox") == [("sent",), ("sent",)],
                             what="entries marked sent")
            opened, cleared = (json.loads(m.payload) for m in col.on(f"obdsync/{DEV_A}/event/low_fuel"))
            assert opened == json.loads(event_payload(ev))
            assert (opened["id"], opened["state"], cleared["id"], cleared["state"]) == (ev.id, "open", ev.id, "cleared")
            assert all(m.qos == 1 for m in col.messages)
            assert json.loads(col.on(f"obdsync/{DEV_A}/state")[-1].payload)["odometer_km"] == 12345.6
            # The broker is shared by the module's tests: a status an earlier test left retained
            # arrives first, flagged retained; what this forwarder published comes live.
            live_status = [m.payload for m in col.on(f"obdsync/{DEV_A}/status") if not m.retain]
            assert live_status[:1] == [b"online"], live_status
            [st] = await fwd.status()
            assert (st.target, st.pending, st.sent, st.up) == (TARGET, 0, 2, True)

            # A late subscriber gets state and status (retained), not the events.
            async with Collector(broker.port, ("obdsync/#",), ident="c-late", clean=True) as late:
                await late.wait_for(lambda ms: len(ms) >= 2, what="retained messages")
                assert sorted((m.topic, m.retain) for m in late.messages) == [
                    (f"obdsync/{DEV_A}/state", True), (f"obdsync/{DEV_A}/status", True)]
        # A clean stop says offline, retained.
        await col.wait_for(lambda ms: [m.payload for m in col.on(f"obdsync/{DEV_A}/status")][-1:] == [b"offline"],
                           what="offline on stop")


async def test_broker_down_during_a_drive_then_back_loses_nothing(own_broker, store):
    evs = [event(i, DEV_A if i % 3 else DEV_B) for i in range(24)]
    async with Collector(own_broker.port, ("obdsync/+/event/#",), ident="c-outage") as col:
        async with forwarder(store, own_broker.port) as fwd:
            for ev in evs[:6]:
                await fwd.put_event(ev)
            await col.wait_for(lambda ms: len(set(keys(ms))) == 6, what="first events")

            own_broker.stop()
            for ev in evs[6:18]:
                await fwd.put_event(ev)
            await wait_until(lambda: fwd.workers[0].live.up is False, what="the target seen down")
            [st] = await fwd.status()
            assert st.pending == 12 and st.last_error

            own_broker.start()
            for ev in evs[18:]:
                await fwd.put_event(ev)
            want = [f"{e.id}:open:warning" for e in evs]
            await col.wait_for(lambda ms: set(keys(ms)) >= set(want), timeout=30, what="every event after the outage")
            await wait_until(lambda: rows(store.path, "SELECT COUNT(*) FROM outbox WHERE state='sent'")[0][0] == 24,
                             what="all marked sent")
    for dev in (DEV_A, DEV_B):
        assert first_occurrences(keys(col.messages, dev)) == [k for k in want if k.startswith(dev)]


async def test_connection_lost_while_waiting_for_puback_leaves_the_entry_pending(own_broker, store, caplog):
    caplog.set_level(logging.DEBUG, logger="obdsync.forward")
    ev = event(9)
    async with Collector(own_broker.port, ("obdsync/#",), ident="c-lost", clean=True) as col:
        fwd = Forwarder(store, target(own_broker.port), backoff=FAST, idle_poll_s=5, mqtt_timeout_s=60)
        await fwd.start()
        try:
            fwd.publish_state(DEV_A, {"fuel_pct": 30.0})
            await col.wait_for(lambda ms: col.on(f"obdsync/{DEV_A}/state"), what="connected")
            own_broker.pause()
            [entry] = await fwd.put_event(ev)
            await wait_until(lambda: any(f"sending outbox entry {entry} " in r.getMessage() for r in caplog.records),
                             what="publish under way")
            own_broker.kill()
            # Noticed from the disconnect, long before the 60 s PUBACK timeout.
            # Counted and still pending. (With the test's fast backoff the retries that
            # follow, refused while the broker is gone, may count too: at least one.)
            await wait_until(lambda: [(st, n >= 1) for st, n in rows(store.path, "SELECT state, attempts FROM outbox")]
                             == [("pending", True)], what="attempt counted, entry still pending")
            assert any("connection lost before PUBACK" in r.getMessage() for r in caplog.records)
        finally:
            await fwd.stop()


async def test_outbox_bound_delivers_the_dropped_record_first(broker, tmp_path):
    async with await Store.open(tmp_path / "b.db", outbox_max=2) as store:
        evs = [event(i) for i in range(5)]
        for ev in evs:  # no forwarder yet: the target is "down"
            await store.put_event(ev, outbox=[(TARGET, event_payload(ev))])
        async with Collector(broker.port, (f"obdsync/{DEV_A}/event/#",), ident="c-dropped", clean=True) as col:
            async with forwarder(store, broker.port):
                await col.wait_for(lambda ms: len(ms) >= 3, what="dropped record and the kept events")
        first = json.loads(col.messages[0].payload)
        assert col.messages[0].topic == f"obdsync/{DEV_A}/event/dropped"
        assert (first["type"], first["count"], first["device"]) == ("dropped", 3, DEV_A)
        assert keys(col.messages[1:]) == [f"{evs[3].id}:open:warning", f"{evs[4].id}:open:warning"]
        [st] = await outbox_status(store, [TARGET])
        assert (st.dropped_total, st.dropped_unreported, st.sent) == (3, 0, 2)


class Child:
    """The forwarder process of the kill -9 test; its stdout lines are collected."""

    def __init__(self, proc):
        self.proc = proc
        self.lines: list[str] = []
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self):
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())

    async def wait_line(self, pattern: str, timeout: float = 15):
        await wait_until(lambda: any(re.search(pattern, x) for x in self.lines) or self.proc.returncode is not None,
                         timeout, what=f"child line {pattern!r}")
        assert self.proc.returncode is None, "\n".join(self.lines[-30:])

    async def kill(self):
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        await self.reader


@pytest.fixture
async def children():
    started: list[Child] = []

    async def spawn(*args):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-u", str(TESTS / "forward_child.py"), *map(str, args),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])})
        c = Child(proc)
        started.append(c)
        return c

    yield spawn
    for c in started:
        await c.kill()


async def test_kill_9_between_publish_and_puback_loses_nothing(own_broker, store, children):
    db = store.path
    ev = event(42)
    topic = f"obdsync/{DEV_A}/event/low_fuel"
    async with Collector(own_broker.port, ("obdsync/#",), ident="c-kill", clean=True) as col:
        first = await children(db, own_broker.port, DEV_A)
        # Its connection is up once its state arrived.
        await col.wait_for(lambda ms: col.on(f"obdsync/{DEV_A}/state"), what="child connected")

        own_broker.pause()  # from now on no PUBACK can come
        [entry] = await store.put_event(ev, outbox=[("mqtt-test", event_payload(ev))])
        await first.wait_line(rf"sending outbox entry {entry} ")
        await first.kill()
        assert rows(db, "SELECT state FROM outbox WHERE id=?", (entry,)) == [("pending",)]

        own_broker.resume()
        # The broker saw the connection die without DISCONNECT: the last will says offline.
        await col.wait_for(lambda ms: [m.payload for m in col.on(f"obdsync/{DEV_A}/status")][-1:] == [b"offline"],
                           what="last will")

        second = await children(db, own_broker.port, DEV_A)
        await col.wait_for(lambda ms: f"{ev.id}:open:warning" in keys(col.on(topic)), what="event after restart")
        await wait_until(lambda: rows(db, "SELECT state FROM outbox WHERE id=?", (entry,)) == [("sent",)],
                         what="entry marked sent by the restarted forwarder")
        await second.wait_line(rf"outbox entry {entry} delivered")
        assert keys(col.on(topic)).count(f"{ev.id}:open:warning") in (1, 2)  # a duplicate is allowed, a loss is not
