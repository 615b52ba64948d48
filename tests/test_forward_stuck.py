"""Targets that take a delivery and never confirm it: a broker that accepts the
connection and every PUBLISH but never sends a PUBACK, a webhook that answers only long
after (a stand-in for "200 after 60 s": it holds the reply until the test ends; the
target's timeout is set short, as any user may configure it). Both on loopback. The
outbox keeps their entries pending, the other target is not held up, and status shows
the backlog and why."""

from __future__ import annotations

import asyncio
import contextlib

from forward_util import FAST, event, wait_until
from test_forward_webhook import SECRET, receiver

from obdsync.config import ForwardConfig, MqttTarget, Secret, WebhookTarget
from obdsync.forward import Forwarder
from obdsync.store import Store

N = 3


class SilentBroker:
    """Speaks just enough MQTT 3.1.1 to be connected to (CONNACK, PINGRESP) and swallows
    every PUBLISH without a PUBACK."""

    def __init__(self) -> None:
        self.publishes = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> SilentBroker:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readexactly(1))[0]
                n, shift = 0, 0
                while True:
                    b = (await reader.readexactly(1))[0]
                    n |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                await reader.readexactly(n)
                kind = head >> 4
                if kind == 1:  # CONNECT
                    writer.write(b"\x20\x02\x00\x00")
                elif kind == 12:  # PINGREQ
                    writer.write(b"\xd0\x00")
                elif kind == 3:  # PUBLISH: taken, never acknowledged
                    self.publishes += 1
                elif kind == 8:  # SUBSCRIBE: SUBACK with QoS 0 for one topic
                    writer.write(b"\x90\x03" + b"\x00\x01" + b"\x00")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_unconfirmed_deliveries_stay_queued_and_do_not_hold_up_other_targets(tmp_path):
    store = await Store.open(tmp_path / "obdsync.db")
    try:
        async with SilentBroker() as broker:
            with receiver(["hang"] * 50) as slow, receiver() as good:
                cfg = ForwardConfig(
                    mqtt=(MqttTarget(host="127.0.0.1", port=broker.port, name="silent-broker"),),
                    webhook=(WebhookTarget(url=slow.url, name="slow-hook", secret=Secret(SECRET), timeout=0.3),
                             WebhookTarget(url=good.url, name="good-hook", secret=Secret(SECRET), timeout=5.0)))
                fwd = Forwarder(store, cfg, backoff=FAST, idle_poll_s=5, mqtt_timeout_s=0.3)
                await fwd.start()
                try:
                    for n in range(N):
                        await fwd.put_event(event(n))
                    await wait_until(lambda: len(good.requests) >= N, 30, "every event at the healthy target")
                    await wait_until(lambda: broker.publishes >= 1 and len(slow.requests) >= 1, 30,
                                     "the stuck targets to be tried")

                    async def both_failed():
                        st = {t.target: t for t in await fwd.status()}
                        done = st["silent-broker"].last_error and st["slow-hook"].last_error and st["good-hook"].sent == N
                        return st if done else None

                    st = await wait_until(both_failed, 30, "a failed attempt on each stuck target")
                finally:
                    await asyncio.wait_for(fwd.stop(), 30)  # a publish that never completes does not hang stop
        assert st["good-hook"].pending == 0 and st["good-hook"].sent == N
        for name in ("silent-broker", "slow-hook"):
            assert st[name].pending == N, (name, st[name])  # nothing marked sent without a confirmation
            assert st[name].sent == 0
        assert "0.3" in st["slow-hook"].last_error or "time" in st["slow-hook"].last_error.lower()
    finally:
        await store.close()


async def test_a_target_down_is_said_once_and_back_once_and_status_names_the_error(tmp_path, caplog):
    """A broker port with nothing listening: one warning however many retries, the
    error in status, and one line when it is back (Home Assistant's rule for
    unavailable integrations)."""
    import logging

    import mosquitto
    from forward_util import rows

    caplog.set_level(logging.INFO, logger="obdsync.forward")
    d = tmp_path / "mosquitto"
    d.mkdir()
    store = await Store.open(tmp_path / "obdsync.db")
    try:
        with mosquitto.running(d) as broker:
            broker.stop()  # its port now has nothing listening
            cfg = ForwardConfig(mqtt=(MqttTarget(host="127.0.0.1", port=broker.port, name="broker"),))
            fwd = Forwarder(store, cfg, backoff=FAST, idle_poll_s=5, mqtt_timeout_s=2)
            await fwd.start()
            try:
                await fwd.put_event(event(1))
                await wait_until(lambda: rows(store.path, "SELECT attempts FROM outbox")[0][0] >= 4, 30,
                                 "several attempts at the dead port")
                (st,) = await fwd.status()
                assert st.pending == 1 and st.last_error and st.up is False, st
                broker.start()
                await wait_until(lambda: rows(store.path, "SELECT state FROM outbox")[0][0] == "sent"
                                 and fwd.workers[0].live.up, 30, "the entry delivered once the broker is back")
                (st,) = await fwd.status()
                assert st.pending == 0 and st.up is True
            finally:
                await asyncio.wait_for(fwd.stop(), 30)
    finally:
        await store.close()
    said = [r.getMessage() for r in caplog.records if r.name.startswith("obdsync.forward")]
    assert sum("unavailable" in m for m in said) == 1, said
    assert sum("reachable again" in m for m in said) == 1, said
