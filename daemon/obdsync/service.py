"""`obdsync run`: keep every paired dongle connected, forever.

Each dongle has its own task: connect, sync, stream; when the link drops, wait
with capped exponential backoff and full jitter, then try again. A dongle that
becomes unreachable is logged once, and once more when it is back — a car parked
overnight should not fill the journal.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import Callable
from typing import Any

from obdsync.link import AuthError, DeviceLink, IncompatibleError, LinkError

log = logging.getLogger("obdsync.service")


class Backoff:
    """Capped exponential backoff with full jitter (AWS architecture blog's
    'full jitter'): many daemons retrying one flaky radio don't synchronise."""

    def __init__(self, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class DeviceRunner:
    """The reconnect loop of one dongle."""

    def __init__(self, link: DeviceLink, backoff: Backoff) -> None:
        self.link = link
        self.backoff = backoff
        link.on_ready = lambda _info: self.connected()
        self._stopping = asyncio.Event()
        self.available: bool | None = None
        self.last_error: str | None = None

    def stop(self) -> None:
        self._stopping.set()
        self.link.stop()

    async def run(self) -> None:
        while not self._stopping.is_set():
            delivered = self.link.stats.records  # a running count: this session's are those above it
            try:
                await self.link.session()
                if self._stopping.is_set():
                    break
                self._mark(False, "disconnected")
            except (AuthError, IncompatibleError) as e:
                self._mark(False, str(e), level=logging.ERROR)
            except LinkError as e:
                self._mark(False, str(e))
            if self.link.stats.records > delivered:
                # This session streamed: the dongle was fine, the next try starts quick.
                # (Testing the running count itself reset the backoff forever after the
                # first record: every retry waited under `base`, an unreachable dongle too.)
                self.backoff.reset()
            delay = self.backoff.next()
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                pass

    def _mark(self, available: bool, why: str, level: int = logging.WARNING) -> None:
        self.last_error = None if available else why
        if self.available is not False:
            log.log(level, "dongle %s unavailable: %s", self.link.address, why)
        self.available = available

    def connected(self) -> None:
        if self.available is False:
            log.info("dongle %s is back", self.link.address)
        elif self.available is None:
            log.info("dongle %s connected", self.link.address)
        self.available = True
        self.last_error = None


async def run_service(runners: list[DeviceRunner], on_stop: Callable[[], Any] | None = None,
                      install_signals: bool = True, stop: asyncio.Event | None = None) -> None:
    """Run every dongle's loop until SIGINT/SIGTERM (or `stop` is set), then stop
    them cleanly: the batch in hand is stored and acked before the links close."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    if install_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(r.run(), name=f"dongle {r.link.address}") for r in runners]
    waiter = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            exc = t.exception() if t is not waiter else None
            if exc is not None:
                raise exc
    finally:
        log.info("stopping: storing and acknowledging what is in hand")
        for r in runners:
            r.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        waiter.cancel()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if on_stop is not None:
            r = on_stop()
            if asyncio.iscoroutine(r):
                await r
