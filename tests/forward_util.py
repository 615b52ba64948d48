"""Helpers for the forwarding tests: events, a scripted sender, waiting on a condition."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
from pathlib import Path

from obdsync.forward import Backoff, Delivery
from obdsync.model import Event

DEV_A = "00112233aabbccdd"
DEV_B = "ffeeddccbbaa9988"
FAST = Backoff(0.01, 0.05)  # retries in tens of ms: tests wait on outcomes, never on the clock


def event(n: int, device: str = DEV_A, type: str = "low_fuel", cleared: bool = False) -> Event:
    return Event(id=f"{device}-{type}-{n}", device=device, type=type, severity="warning",
                 opened_ms=1_700_000_000_000 + n, cleared_ms=1_700_000_100_000 + n if cleared else None,
                 values={"fuel_pct": 14.5, "n": n}, message=f"event {n}")


async def wait_until(cond, timeout: float = 15.0, what: str = "condition"):
    """Poll ``cond`` (sync or async) until truthy; fail with ``what`` after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                v = cond()
                if inspect.isawaitable(v):
                    v = await v
                if v:
                    return v
                await asyncio.sleep(0.01)  # re-check interval; the deadline bounds the wait
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def rows(db: Path, sql: str = "SELECT id, target, event_id, state, attempts, last_error FROM outbox ORDER BY id",
         args: tuple = ()) -> list[tuple]:
    """Read the database from outside the store (another connection, as another process would)."""
    conn = sqlite3.connect(db, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


class ScriptedSender:
    """A target that does what the test says: ``script[key]`` lists outcomes for the
    successive attempts of a message (an exception instance to raise, None to accept);
    ``down`` makes the next n calls raise TargetDown."""

    def __init__(self, name: str = "fake", script: dict | None = None):
        self.name = name
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.down = 0
        self.calls: list[str] = []
        self.delivered: list[Delivery] = []
        self.closed = False

    async def send(self, d: Delivery) -> None:
        from obdsync.forward import TargetDown

        self.calls.append(d.key)
        if self.down > 0:
            self.down -= 1
            raise TargetDown("scripted outage")
        outcomes = self.script.get(d.key)
        if outcomes:
            o = outcomes.pop(0)
            if o is not None:
                raise o
        self.delivered.append(d)

    async def close(self) -> None:
        self.closed = True

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.delivered]
