"""MQTT target: QoS 1 publishes through aiomqtt, one broker connection per device.

One connection per device because a last will names one topic: each device's
``<prefix>/<device>/status`` is ``online`` (retained) while its connection is up and
becomes ``offline`` through the will when the daemon dies, or explicitly on a clean stop.

An outbox entry counts as delivered only when ``publish(qos=1)`` returns. In aiomqtt 2.5
that is when paho's ``on_publish`` fires for the message id, which for QoS 1 happens on
the broker's PUBACK (paho ``_handle_pubackcomp`` → ``_do_on_publish``); on a lost
connection paho marks only QoS 0 messages published. aiomqtt's publish does not notice a
disconnect by itself (it waits for its timeout), so :meth:`_Link.publish` races it
against the client's disconnect future: a connection lost before the PUBACK is a
:class:`TargetDown` and the entry stays pending. MQTT 3.1.1 is used: its PUBACK has no
reason code, so a PUBACK always means accepted (v5 brokers could PUBACK a refusal, which
aiomqtt would not surface).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

import aiomqtt

from ..config import MqttTarget
from . import homeassistant, payloads
from .outbox import Backoff, Delivery, Rejected, TargetDown

log = logging.getLogger(__name__)

STATE_BACKOFF = Backoff(1.0, 60.0)
MAX_PAYLOAD = 256 * 1024  # far above any event; larger means a bug, not a transient failure


def client_id(cfg: MqttTarget, device: str) -> str:
    """``client_id`` with ``{device}`` filled in, or ``<client_id>-<device>``; default ``obdsync-<device>``.

    Brokers allow one connection per client id, so every device needs its own."""
    base = cfg.client_id or "obdsync"
    return base.replace("{device}", device) if "{device}" in base else f"{base}-{device}"


class _Link:
    """The connection of one device: opened on demand, dropped on the first error."""

    def __init__(self, sender: MqttSender, device: str):
        self.sender = sender
        self.device = device
        self.client: aiomqtt.Client | None = None
        self.lock = asyncio.Lock()

    async def get(self) -> aiomqtt.Client:
        async with self.lock:
            if self.client is None:
                self.client = await self.sender._connect(self.device)
            return self.client

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        client = await self.get()
        try:
            await self.sender._publish(client, topic, payload, retain)
        except TargetDown:
            await self.drop(client)
            raise

    async def drop(self, client: aiomqtt.Client | None = None) -> None:
        async with self.lock:
            if client is not None and client is not self.client:
                return  # another task already replaced it
            client, self.client = self.client, None
        if client is not None:
            await _close(client, self.sender.timeout_s)


async def _close(client: aiomqtt.Client, timeout_s: float) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout_s):
            await client.__aexit__(None, None, None)


class MqttSender:
    """A ``[[forward.mqtt]]`` target. ``send`` delivers outbox messages; ``set_state``
    publishes the latest state (lossy: only the newest value per device is kept)."""

    def __init__(self, cfg: MqttTarget, *, timeout_s: float = 10.0, keepalive_s: int = 60,
                 discovery_prefix: str | None = None, backoff: Backoff = STATE_BACKOFF,
                 rnd: Callable[[], float] = random.random):
        self.cfg = cfg
        self.name = cfg.name or f"mqtt:{cfg.host}:{cfg.port}"
        self.prefix = cfg.topic_prefix or payloads.DEFAULT_PREFIX
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self.discovery_prefix = discovery_prefix or cfg.discovery_prefix
        self.backoff = backoff
        self.rnd = rnd
        self._links: dict[str, _Link] = {}
        # Retained messages waiting to be published, latest per topic wins: (device, topic) -> payload.
        self._retained: dict[tuple[str, str], bytes] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._forgotten: set[str] = set()
        self._state_wake: asyncio.Event | None = None
        self._state_task: asyncio.Task[None] | None = None
        self._closed = False

    # ---- connections -------------------------------------------------------

    def _link(self, device: str) -> _Link:
        link = self._links.get(device)
        if link is None:
            link = self._links[device] = _Link(self, device)
        return link

    def _client(self, device: str) -> aiomqtt.Client:
        cfg = self.cfg
        tls = None
        if cfg.tls:
            tls = aiomqtt.TLSParameters(ca_certs=cfg.ca, certfile=cfg.cert, keyfile=cfg.key)
        password = cfg.password.reveal() if cfg.password is not None else None
        return aiomqtt.Client(
            cfg.host, cfg.port or (8883 if cfg.tls else 1883),
            username=cfg.username, password=password if cfg.username is not None else None,
            identifier=client_id(cfg, device),
            protocol=aiomqtt.ProtocolVersion.V311,
            # The outbox is our session: after a reconnect unconfirmed entries are sent again.
            clean_session=True,
            will=aiomqtt.Will(payloads.status_topic(self.prefix, device), payloads.OFFLINE, qos=1, retain=True),
            timeout=self.timeout_s, keepalive=self.keepalive_s, tls_params=tls,
        )

    async def _connect(self, device: str) -> aiomqtt.Client:
        if self._closed:
            raise TargetDown("forwarder is stopping")
        client = self._client(device)
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as e:
            # A CONNACK timeout leaves paho's socket open: close it.
            with contextlib.suppress(Exception):
                client._client.disconnect()
            raise TargetDown(f"cannot connect to {self.cfg.host}:{self.cfg.port}: {e}") from e
        except OSError as e:  # TLS files unreadable and the like
            raise TargetDown(f"cannot connect to {self.cfg.host}:{self.cfg.port}: {e}") from e
        log.info("mqtt %s: connected for device %s as %s", self.name, device, client.identifier)
        if device in self._forgotten:
            return client  # connected only to take its retained messages away
        try:
            await self._publish(client, payloads.status_topic(self.prefix, device), payloads.ONLINE, True)
            if self.cfg.ha_discovery:
                for topic, body in self._discovery(device):
                    await self._publish(client, topic, body, True)
        except TargetDown:
            await _close(client, self.timeout_s)
            raise
        return client

    async def _publish(self, client: aiomqtt.Client, topic: str, payload: bytes, retain: bool) -> None:
        pub = asyncio.ensure_future(client.publish(topic, payload, qos=1, retain=retain, timeout=self.timeout_s))
        # Private in aiomqtt, but the only way to learn of a lost connection while the
        # publish waits for its PUBACK (see the module docstring).
        lost = getattr(client, "_disconnected", None)
        waits = {pub} if lost is None else {pub, lost}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            pub.cancel()
            raise
        if pub not in done:
            pub.cancel()
            cause = lost.exception() if lost is not None and not lost.cancelled() else None
            raise TargetDown(f"connection lost before PUBACK: {cause or 'disconnected'}")
        try:
            pub.result()
        except aiomqtt.MqttError as e:
            raise TargetDown(f"publish to {topic}: {e}") from e

    # ---- outbox deliveries -------------------------------------------------

    async def send(self, delivery: Delivery) -> None:
        if len(delivery.payload) > MAX_PAYLOAD:
            raise Rejected(f"payload of {len(delivery.payload)} bytes exceeds {MAX_PAYLOAD}")
        topic = payloads.event_topic(self.prefix, delivery.device, delivery.type)
        await self._link(delivery.device).publish(topic, delivery.payload)

    # ---- retained: state, connection, discovery ------------------------------

    def _discovery(self, device: str) -> list[tuple[str, bytes]]:
        return homeassistant.discovery_messages(self.prefix, device, discovery_prefix=self.discovery_prefix,
                                                info=self._info.get(device),
                                                expire_after_s=self.cfg.ha_expire_after)

    def set_state(self, device: str, state: dict[str, Any]) -> None:
        """Publish ``state`` retained on ``<prefix>/<device>/state`` soon (latest wins)."""
        self._queue(device, payloads.state_topic(self.prefix, device), payloads.encode(state))

    def set_connected(self, device: str, connected: bool) -> None:
        """Whether the dongle is connected now: ``<prefix>/<device>/link`` = ``ON``/``OFF``, retained."""
        self._queue(device, homeassistant.link_topic(self.prefix, device), b"ON" if connected else b"OFF")

    def set_device_info(self, device: str, info: dict[str, Any]) -> None:
        """What is known of the device (``firmware``, ``vin``, ``name``): Home Assistant's
        device block. A change announces the device again."""
        info = {k: v for k, v in info.items() if v}
        if self._info.get(device) == info:
            return
        self._info[device] = info
        if self.cfg.ha_discovery:
            for topic, body in self._discovery(device):
                self._queue(device, topic, body)

    def forget(self, device: str) -> None:
        """The device was unpaired: take its entities out of Home Assistant and its
        retained state, connection and status off the broker (empty retained payloads)."""
        self._forgotten.add(device)
        for topic, body in homeassistant.removal_messages(self.prefix, device,
                                                          discovery_prefix=self.discovery_prefix):
            self._queue(device, topic, body)
        self._queue(device, payloads.status_topic(self.prefix, device), b"")

    def _queue(self, device: str, topic: str, body: bytes) -> None:
        self._retained.pop((device, topic), None)  # re-inserted last: topics go out in the order queued
        self._retained[(device, topic)] = body
        if self._state_task is None and not self._closed:
            self._state_wake = asyncio.Event()
            self._state_task = asyncio.get_running_loop().create_task(self._state_loop(self._state_wake),
                                                                      name=f"mqtt-state {self.name}")
        if self._state_wake is not None:
            self._state_wake.set()

    async def _state_loop(self, wake: asyncio.Event) -> None:
        failures = 0
        while True:
            await wake.wait()
            wake.clear()
            for key, body in list(self._retained.items()):
                device, topic = key
                try:
                    await self._link(device).publish(topic, body, retain=True)
                except TargetDown as e:
                    failures += 1
                    log.debug("mqtt %s: %s not published: %s", self.name, topic, e)
                    wake.set()  # try again after the backoff
                    await asyncio.sleep(self.backoff.delay_s(failures, self.rnd))
                    break
                failures = 0
                if self._retained.get(key) is body:
                    del self._retained[key]

    def pending_retained(self) -> int:
        """Retained messages not yet published (tests wait for 0)."""
        return len(self._retained)

    # ---- lifecycle ---------------------------------------------------------

    async def close(self) -> None:
        """Say ``offline`` on each device's status topic and disconnect cleanly."""
        self._closed = True
        if self._state_task is not None:
            self._state_task.cancel()
            with contextlib.suppress(BaseException):
                await self._state_task
        for link in list(self._links.values()):
            client = link.client
            if client is not None and link.device not in self._forgotten:
                with contextlib.suppress(TargetDown):
                    await self._publish(client, payloads.status_topic(self.prefix, link.device),
                                        payloads.OFFLINE, True)
            await link.drop()
