"""Forwarding events to the platform: a durable outbox drained to MQTT brokers and webhooks.

The daemon stores an event together with one outbox entry per target, in one
transaction, then wakes the forwarder::

    fwd = Forwarder(store, config.forward)
    await fwd.start()
    ...
    await store.put_event(event, outbox=fwd.outbox_entries(event))   # or: await fwd.put_event(event)
    fwd.notify()
    fwd.publish_state(device, {"fuel_pct": 41.0, "battery_v": 12.6, ...})   # retained, lossy
    ...
    await fwd.stop()

Operators (``obdsync status`` / ``obdsync outbox retry|purge``) use the module-level
coroutines :func:`outbox_status`, :func:`dead_letters`, :func:`outbox_retry` and
:func:`outbox_purge`, which need only a :class:`~obdsync.store.Store` (a running daemon
picks changes up within its idle poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import DisplayConfig, ForwardConfig
from ..model import Event
from ..store import Store
from . import payloads
from .mqtt import MqttSender
from .outbox import (
    Backoff,
    Delivery,
    Hold,
    LiveStatus,
    Rejected,
    RetryLater,
    Sender,
    TargetDown,
    TargetWorker,
)
from .outbox_sql import DEAD, PENDING, SENT, DeadLetter, OutboxSql, TargetCounts
from .webhook import WebhookSender, verify_signature

__all__ = [
    "Backoff", "DeadLetter", "Delivery", "Forwarder", "Hold", "MqttSender", "Rejected", "RetryLater", "Sender",
    "TargetDown", "TargetStatus", "WebhookSender", "dead_letters", "outbox_purge", "outbox_retry",
    "outbox_status", "verify_signature",
]

log = logging.getLogger(__name__)

#: Delivery retries: 1 s doubling up to 5 min (a broker down for a day costs ~300 connects).
DELIVERY_BACKOFF = Backoff(1.0, 300.0)
_NO_TARGETS = ForwardConfig()


@dataclass(frozen=True)
class TargetStatus(TargetCounts):
    """One target's line in ``obdsync status``: the database's counts (exact across
    processes), whether the config still names it, and what only a running forwarder
    knows (``up``, ``last_error_ms``, ``retry_at_ms``)."""

    configured: bool = True
    up: bool | None = None
    last_error_ms: int | None = None
    retry_at_ms: int | None = None


async def outbox_status(store: Store, targets: Iterable[str] = (), *,
                        live: dict[str, LiveStatus] | None = None) -> list[TargetStatus]:
    """Status of the configured ``targets`` and of every target that has outbox entries
    (a target removed from the config still shows its backlog, to be purged)."""
    sql = OutboxSql(store.db)
    configured = list(targets)
    names = configured + [t for t in await sql.targets() if t not in configured]
    out = []
    for name in names:
        c = await sql.counts(name)
        lv = (live or {}).get(name)
        last_success = c.last_success_ms
        if lv is not None and lv.last_success_ms is not None:
            last_success = max(last_success or 0, lv.last_success_ms)
        out.append(TargetStatus(
            target=name, configured=name in configured, pending=c.pending, oldest_pending_ms=c.oldest_pending_ms,
            sent=c.sent, last_success_ms=last_success, dead=c.dead, dropped_unreported=c.dropped_unreported,
            dropped_total=c.dropped_total,
            last_error=c.last_error if lv is None or lv.last_error is None else lv.last_error,
            up=lv.up if lv else None, last_error_ms=lv.last_error_ms if lv else None,
            retry_at_ms=lv.retry_at_ms if lv else None))
    return out


async def dead_letters(store: Store, target: str | None = None, limit: int = 100) -> list[DeadLetter]:
    """Entries the targets refused, oldest first, with the reason."""
    return await OutboxSql(store.db).dead_letters(target, limit)


async def outbox_retry(store: Store, target: str | None = None, ids: Sequence[int] = ()) -> int:
    """Make dead letters (and entries waiting in backoff) of ``target`` (all targets: None),
    or only ``ids``, due now. Returns how many entries were changed."""
    sql = OutboxSql(store.db)
    return await sql.retry(target, tuple(ids), sql.now_ms())


async def outbox_purge(store: Store, target: str | None = None, *, states: Sequence[str] = (DEAD,),
                       before_ms: int | None = None, ids: Sequence[int] = ()) -> int:
    """Delete entries of ``target`` in ``states`` (default: dead letters), optionally only
    those created before ``before_ms`` or only ``ids``. Purging ``pending`` loses those
    deliveries: the CLI should make the operator say so. Returns how many were deleted."""
    known = {PENDING, SENT, DEAD, "dropped", "dropped_reported"}
    bad = [s for s in states if s not in known]
    if bad or not states:
        raise ValueError(f"outbox states to purge must be among {sorted(known)}, got {list(states)}")
    return await OutboxSql(store.db).purge(target, tuple(states), before_ms, tuple(ids))


def _takes(sender: Sender, event: Event) -> bool:
    """Whether ``sender`` takes ``event``: all do, but those with a ``wants`` filter (notify)."""
    wants: Callable[[Event], bool] | None = getattr(sender, "wants", None)
    return wants is None or wants(event)


class Forwarder:
    """Runs one delivery worker per configured target. Start once, stop once."""

    def __init__(self, store: Store, forward: ForwardConfig = _NO_TARGETS, *,
                 senders: Sequence[Sender] = (), backoff: Backoff = DELIVERY_BACKOFF,
                 idle_poll_s: float = 30.0, mqtt_timeout_s: float = 10.0,
                 discovery_prefix: str | None = None, display: DisplayConfig | None = None):
        self.store = store
        self._sql = OutboxSql(store.db)
        built: list[Sender] = [MqttSender(t, timeout_s=mqtt_timeout_s, discovery_prefix=discovery_prefix)
                               for t in forward.mqtt]
        built += [WebhookSender(t) for t in forward.webhook]
        if forward.notify:
            from .notify import NotifySender  # imports Apprise: only when configured

            built += [NotifySender(t, display or DisplayConfig()) for t in forward.notify]
        self.senders: list[Sender] = built + list(senders)
        names = [s.name for s in self.senders]
        if len(set(names)) != len(names):
            raise ValueError(f"forward target names must be distinct, got {names}")
        self.workers = [TargetWorker(self._sql, s, backoff=backoff, idle_poll_s=idle_poll_s) for s in self.senders]
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def targets(self) -> list[str]:
        return [s.name for s in self.senders]

    def outbox_entries(self, event: Event) -> list[tuple[str, bytes]]:
        """``(target, payload)`` for ``Store.put_event``: the event message for each target
        that takes it (a notification target filters by type and severity)."""
        if not self.senders:
            return []
        body = payloads.event_payload(event)
        return [(s.name, body) for s in self.senders if _takes(s, event)]

    async def put_event(self, event: Event) -> list[int]:
        """Store ``event`` with its deliveries (one transaction) and wake the workers."""
        ids = await self.store.put_event(event, outbox=self.outbox_entries(event))
        self.notify()
        return ids

    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("forwarder already started")
        for w in self.workers:
            self._tasks.append(asyncio.get_running_loop().create_task(self._supervise(w), name=f"forward {w.target}"))
        if self.workers:
            log.info("forwarding to %s", ", ".join(self.targets))

    async def _supervise(self, worker: TargetWorker) -> None:
        # A bug in one worker must not stop the others, nor spin.
        failures = 0
        while True:
            try:
                await worker.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.exception("forward %s: worker failed; restarting", worker.target)
                await asyncio.sleep(worker.backoff.delay_s(failures))

    def notify(self) -> None:
        """New entries were written: look now instead of at the next poll."""
        for w in self.workers:
            w.wake()

    def publish_state(self, device: str, state: dict[str, Any]) -> None:
        """Publish ``state`` retained on each MQTT target's ``<prefix>/<device>/state``.
        Lossy by design: only the newest state per device waits for a connection."""
        for s in self.senders:
            if isinstance(s, MqttSender):
                s.set_state(device, state)

    def set_connected(self, device: str, connected: bool) -> None:
        """Whether the dongle is connected now (Home Assistant's connectivity sensor)."""
        for s in self.senders:
            if isinstance(s, MqttSender):
                s.set_connected(device, connected)

    def set_device_info(self, device: str, **info: Any) -> None:
        """``firmware``, ``vin``, ``name`` of a device as they become known."""
        for s in self.senders:
            if isinstance(s, MqttSender):
                s.set_device_info(device, info)

    def forget(self, device: str) -> None:
        """An unpaired device: its Home Assistant entities and retained topics are removed."""
        for s in self.senders:
            if isinstance(s, MqttSender):
                s.forget(device)

    async def status(self) -> list[TargetStatus]:
        return await outbox_status(self.store, self.targets, live={w.target: w.live for w in self.workers})

    async def stop(self) -> None:
        """Stop the workers (an unconfirmed delivery stays pending) and close the targets."""
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for s in self.senders:
            try:
                await s.close()
            except Exception:
                log.exception("forward %s: close failed", s.name)
