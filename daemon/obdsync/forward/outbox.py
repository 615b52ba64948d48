"""The delivery loop: one worker per target drains the store's outbox through a sender.

Guarantees (state lives only in SQLite, so they hold across restarts and kill -9):

- at least once: an entry leaves ``pending`` only after the target confirmed it (the
  broker's PUBACK, a 2xx) or refused it for good (dead letter);
- ordered per device and target: an entry is not tried before the earlier entries of
  its device on that target are delivered or dead-lettered;
- loss is visible: entries the outbox bound dropped are reported to the target as one
  ``dropped`` record per device, before anything else is sent to it.

Failures come in three kinds, raised by a sender:
:class:`TargetDown` (no connection, timeout: the whole target backs off),
:class:`RetryLater` (this message failed, e.g. HTTP 5xx: the entry backs off and blocks
its device), :class:`Rejected` (refused, e.g. HTTP 4xx: dead letter with the reason).
A sender may also :class:`Hold` a message until a time (quiet hours): not a failure.

A sender whose messages stand alone (``ordered = False``: notifications) is not held
to the per-device order: an entry waiting in backoff or held does not keep its
device's later entries back.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..db import StoreError
from . import payloads
from .outbox_sql import DroppedRun, OutboxSql, Pending

log = logging.getLogger(__name__)

#: A target's Retry-After is honoured up to this; a longer one is taken as this.
RETRY_AFTER_MAX_S = 3600.0


class DeliveryError(Exception):
    """A delivery did not happen; the subclass says what to do about it."""


class TargetDown(DeliveryError):
    """The target can't be reached (connect failed, connection lost, timeout)."""


class RetryLater(DeliveryError):
    """The target is there but did not take this message now. ``after_s``: the target
    said when to come back (HTTP ``Retry-After``); None leaves it to the backoff."""

    def __init__(self, message: str, *, after_s: float | None = None):
        super().__init__(message)
        self.after_s = after_s


class Hold(DeliveryError):
    """Not now, by the target's own rule (quiet hours): try again at ``until_ms``.
    Counts as neither an attempt nor an error."""

    def __init__(self, message: str, until_ms: int):
        super().__init__(message)
        self.until_ms = int(until_ms)


class Rejected(DeliveryError):
    """The target refused this message; retrying the same bytes won't help."""


@dataclass(frozen=True)
class Delivery:
    """One message for a sender. ``entry_id`` is None for a ``dropped`` record."""

    entry_id: int | None
    device: str
    key: str
    payload: bytes
    message: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.message.get("type") or "event")


class Sender(Protocol):
    name: str

    async def send(self, delivery: Delivery) -> None:
        """Deliver, returning only once the target confirmed; raise a :class:`DeliveryError`."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: attempt n waits base·2^(n-1), at most cap,
    times a random factor in [0.5, 1) so that many clients don't retry in step."""

    base_s: float = 1.0
    cap_s: float = 300.0

    def delay_s(self, attempt: int, rnd: Callable[[], float] = random.random) -> float:
        d = min(self.cap_s, self.base_s * (2.0 ** min(max(attempt, 1) - 1, 60)))
        return d * (0.5 + 0.5 * rnd())


@dataclass
class LiveStatus:
    """What a running worker knows beyond the database (exact times, connection state)."""

    up: bool | None = None
    last_success_ms: int | None = None
    last_error: str | None = None
    last_error_ms: int | None = None
    retry_at_ms: int | None = None


class TargetWorker:
    """Drains one target. ``wake()`` makes a sleeping worker look at the outbox now."""

    def __init__(self, sql: OutboxSql, sender: Sender, *, backoff: Backoff = Backoff(),
                 idle_poll_s: float = 30.0, batch: int = 200, rnd: Callable[[], float] = random.random):
        self.sql = sql
        self.sender = sender
        self.target = sender.name
        self.ordered = getattr(sender, "ordered", True)
        self.backoff = backoff
        self.idle_poll_s = idle_poll_s
        self.batch = batch
        self.rnd = rnd
        self.live = LiveStatus()
        self._wake = asyncio.Event()
        self._down_count = 0
        self.sleeping_until_ms: int | None = None
        """while idle: when the worker looks again unless woken (the earliest due device head)."""

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            self._wake.clear()
            try:
                wake_at = await self._pass()
            except TargetDown as e:
                await self._target_down(e)
                continue
            except StoreError as e:
                # The database is busy or full: nothing was marked, try again later.
                log.error("forward %s: outbox not readable: %s", self.target, e)
                self._note_error(f"store: {e}")
                await self._sleep(self.backoff.delay_s(3, self.rnd))
                continue
            now = self.sql.now_ms()
            timeout = self.idle_poll_s if wake_at is None else min(self.idle_poll_s, max(0, wake_at - now) / 1000)
            self.sleeping_until_ms = now + int(timeout * 1000)
            if timeout > 0:
                await self._sleep(timeout, wakeable=True)
            self.sleeping_until_ms = None

    async def _sleep(self, seconds: float, *, wakeable: bool = False) -> None:
        if not wakeable:
            await asyncio.sleep(seconds)
            return
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _target_down(self, e: TargetDown) -> None:
        self._down_count += 1
        delay = self.backoff.delay_s(self._down_count, self.rnd)
        if self._down_count == 1:
            log.warning("forward %s: target unavailable: %s (retrying with backoff)", self.target, e)
        else:
            log.debug("forward %s: still unavailable (%d): %s", self.target, self._down_count, e)
        self.live.up = False
        self._note_error(str(e))  # status shows why, also when no entry was being sent (a connect)
        self.live.retry_at_ms = self.sql.now_ms() + int(delay * 1000)
        # New entries don't make a down target come back: no wake-up, only the backoff.
        await self._sleep(delay)

    def _note_error(self, text: str) -> None:
        self.live.last_error, self.live.last_error_ms = text, self.sql.now_ms()

    def _note_success(self) -> None:
        if self._down_count:
            log.info("forward %s: target reachable again", self.target)
            self._down_count = 0
        self.live.up, self.live.retry_at_ms = True, None
        self.live.last_success_ms = self.sql.now_ms()

    async def _pass(self) -> int | None:
        """One pass over every pending entry, page by page (entries added meanwhile included).

        Walking past a blocked device's entries costs a read of them, but never lets
        one device's backlog hide another device's head. Returns when the earliest
        device head waiting in backoff is due (None: nothing waits)."""
        for run in await self.sql.dropped_runs(self.target):
            await self._report_dropped(run)
        blocked: set[str] = set()
        wake_at: int | None = None
        after = 0
        while True:
            rows = await self.sql.pending(self.target, after, self.batch)
            now = self.sql.now_ms()
            for row in rows:
                after = row.id
                if row.device in blocked:
                    continue
                retry_at = row.next_attempt if row.next_attempt > now else await self._deliver(row)
                if retry_at is not None:
                    # Its head waits in backoff: the device's later entries wait behind it,
                    # and only the head's time matters for when to look again.
                    if self.ordered:
                        blocked.add(row.device)
                    wake_at = retry_at if wake_at is None else min(wake_at, retry_at)
                now = self.sql.now_ms()
            if len(rows) < self.batch:
                return wake_at

    async def _deliver(self, row: Pending) -> int | None:
        """Try one entry: None if it left the pending state (sent or dead-lettered), else
        when it is due again."""
        try:
            msg = payloads.decode(row.payload)
        except ValueError as e:
            await self._dead(row, f"payload is not a JSON object: {e}")
            return None
        key = str(msg.get("key") or row.event_id or row.id)
        device = str(msg.get("device") or row.device)
        d = Delivery(row.id, device, key, row.payload, msg)
        log.debug("forward %s: sending outbox entry %d (%s)", self.target, row.id, key)
        try:
            await self.sender.send(d)
        except Rejected as e:
            await self._dead(row, str(e))
            return None
        except Hold as e:
            log.debug("forward %s: entry %d held until %d: %s", self.target, row.id, e.until_ms, e)
            await self.sql.hold(row.id, e.until_ms)
            return e.until_ms
        except RetryLater as e:
            delay = self.backoff.delay_s(row.attempts + 1, self.rnd)
            if e.after_s is not None:
                # The target's own word (Retry-After), within reason: an hour at most.
                delay = min(max(0.0, e.after_s), RETRY_AFTER_MAX_S)
            self._note_error(str(e))
            log.info("forward %s: entry %d not taken (%s); retry in %.1f s", self.target, row.id, e, delay)
            retry_at = self.sql.now_ms() + int(delay * 1000)
            await self.sql.failed(row.id, str(e), retry_at)
            return retry_at
        except TargetDown as e:
            # Counted on the entry (status shows why it waits); due again as soon as the
            # target is back, whose own backoff paces the retries.
            self._note_error(str(e))
            await self.sql.failed(row.id, str(e), self.sql.now_ms())
            raise
        # Delivered: record it even if we are being stopped right now, or a clean
        # shutdown would deliver it again after the restart.
        await asyncio.shield(self.sql.sent(row.id, self.sql.now_ms()))
        self._note_success()
        log.debug("forward %s: outbox entry %d delivered", self.target, row.id)
        return None

    async def _dead(self, row: Pending, reason: str) -> None:
        log.error("forward %s: outbox entry %d (event %s) refused, moved to dead letters: %s",
                  self.target, row.id, row.event_id, reason)
        self._note_error(reason)
        await self.sql.dead(row.id, reason, self.sql.now_ms())

    async def _report_dropped(self, run: DroppedRun) -> None:
        msg = payloads.dropped_message(run.device, run.count, run.first_id, run.last_id, run.first_ms, run.last_ms)
        d = Delivery(None, run.device, msg["key"], payloads.encode(msg), msg)
        try:
            await self.sender.send(d)
        except Rejected as e:
            # Not retried: the drop stays counted in status (dropped_total) and in the log.
            log.error("forward %s: the report of %d dropped entries of %s was refused: %s",
                      self.target, run.count, run.device, e)
            self._note_error(str(e))
        except RetryLater as e:
            # It must go first: hold the target back as if it were down.
            raise TargetDown(f"dropped record not taken: {e}") from e
        else:
            self._note_success()
            log.warning("forward %s: reported %d dropped entries of %s", self.target, run.count, run.device)
        await self.sql.dropped_reported(self.target, run)
