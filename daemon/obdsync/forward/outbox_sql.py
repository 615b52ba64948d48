"""The outbox's storage: the queries the forwarder and the operator commands make of the
``outbox`` table (entries are queued with their event by ``Store.put_event``, in the
event's transaction).

Over the store's database (``store.db``, an ``obdsync.db.Db``: its lock, transactions and
reads, with SQLite's errors as ``StoreError``). The ``outbox`` table's columns are used as
follows::

    state 'pending'           waiting; next_attempt = when it may be tried; last_error = last failure
    state 'sent'              delivered (after the broker's PUBACK / a 2xx); next_attempt = when
    state 'dead'              refused by the target, not retried; last_error = reason;
                              next_attempt = when it was refused
    state 'dropped'           dropped by the outbox bound, not yet reported to the target
    state 'dropped_reported'  dropped, and the ``dropped`` record counting it was delivered

An entry's device is that of its event (``events.device`` by ``event_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..db import Db, Params
from ..model import OutboxEntry

PENDING, SENT, DEAD, DROPPED, DROPPED_REPORTED = "pending", "sent", "dead", "dropped", "dropped_reported"


@dataclass(frozen=True)
class Pending:
    id: int
    device: str
    event_id: str | None
    payload: bytes
    attempts: int
    next_attempt: int


@dataclass(frozen=True)
class DroppedRun:
    """Unreported dropped entries of one device on one target."""

    device: str
    count: int
    first_id: int
    last_id: int
    first_ms: int
    last_ms: int


@dataclass(frozen=True)
class DeadLetter:
    id: int
    target: str
    event_id: str | None
    device: str
    reason: str
    created_ms: int
    dead_ms: int
    attempts: int


@dataclass(frozen=True)
class TargetCounts:
    target: str
    pending: int
    oldest_pending_ms: int | None
    sent: int
    last_success_ms: int | None
    dead: int
    dropped_unreported: int
    dropped_total: int
    last_error: str | None
    """the error of the latest failed attempt still unresolved (pending in backoff or dead)."""


_DEVICE = "COALESCE((SELECT device FROM events WHERE events.id = outbox.event_id), '')"


def _marks(values: tuple[Any, ...]) -> str:
    return ",".join("?" * len(values))


class OutboxSql:
    """See the module docstring; over one store's :class:`~obdsync.db.Db`."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def now_ms(self) -> int:
        return self.db.now_ms()

    async def due(self, target: str, *, now_ms: int | None = None, limit: int = 100) -> list[OutboxEntry]:
        """Pending entries of ``target`` whose next attempt is due, oldest first."""
        now = self.now_ms() if now_ms is None else now_ms
        rows = await self.db.fetch(
            "SELECT id, target, event_id, payload, created_ms, attempts, next_attempt, last_error, state"
            " FROM outbox WHERE target=? AND state='pending' AND next_attempt<=? ORDER BY id LIMIT ?",
            (target, now, limit))
        return [OutboxEntry(*r) for r in rows]

    async def by_state(self) -> dict[tuple[str, str], int]:
        """``(target, state) -> entries``."""
        rows = await self.db.fetch("SELECT target, state, COUNT(*) FROM outbox GROUP BY target, state", ())
        return {(r[0], r[1]): r[2] for r in rows}

    async def pending(self, target: str, after_id: int = 0, limit: int = 200) -> list[Pending]:
        """Pending entries of ``target`` with id above ``after_id``, whatever their next
        attempt, oldest first."""
        rows = await self.db.fetch(
            f"SELECT id, {_DEVICE}, event_id, payload, attempts, next_attempt FROM outbox"
            " WHERE target=? AND state='pending' AND id>? ORDER BY id LIMIT ?", (target, after_id, limit))
        return [Pending(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]

    async def dropped_runs(self, target: str) -> list[DroppedRun]:
        rows = await self.db.fetch(
            f"SELECT {_DEVICE} AS dev, COUNT(*), MIN(id), MAX(id), MIN(created_ms), MAX(created_ms)"
            " FROM outbox WHERE target=? AND state='dropped' GROUP BY dev ORDER BY MIN(id)", (target,))
        return [DroppedRun(*r) for r in rows]

    async def dropped_reported(self, target: str, run: DroppedRun) -> int:
        """Mark the entries a delivered ``dropped`` record counted; returns how many."""
        return await self._update(
            f"marking dropped entries of {target} reported",
            f"UPDATE outbox SET state='dropped_reported' WHERE target=? AND state='dropped'"
            f" AND id BETWEEN ? AND ? AND {_DEVICE}=?", (target, run.first_id, run.last_id, run.device))

    async def sent(self, entry_id: int, now_ms: int) -> None:
        """Mark an entry delivered at ``now_ms`` (kept in next_attempt: 'last success')."""
        await self.db.write(f"marking outbox entry {entry_id} sent", [(
            "UPDATE outbox SET state='sent', attempts=attempts+1, last_error=NULL, next_attempt=?"
            " WHERE id=? AND state='pending'", (now_ms, entry_id))])

    async def failed(self, entry_id: int, error: str, next_attempt_ms: int) -> None:
        """Count a failed attempt and schedule the next one."""
        await self._update(f"marking outbox entry {entry_id} failed",
                           "UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt=? WHERE id=?",
                           (error[:500], next_attempt_ms, entry_id))

    async def hold(self, entry_id: int, until_ms: int) -> None:
        """Make a pending entry due at ``until_ms`` without counting an attempt (quiet hours)."""
        await self._update(f"holding outbox entry {entry_id}",
                           "UPDATE outbox SET next_attempt=? WHERE id=? AND state='pending'", (until_ms, entry_id))

    async def dead(self, entry_id: int, reason: str, now_ms: int) -> None:
        """Dead-letter an entry the target refused; it is not retried unless an operator asks."""
        await self.db.write(f"dead-lettering outbox entry {entry_id}", [(
            "UPDATE outbox SET state='dead', attempts=attempts+1, last_error=?, next_attempt=?"
            " WHERE id=? AND state='pending'", (reason[:500], now_ms, entry_id))])

    async def targets(self) -> list[str]:
        return [r[0] for r in await self.db.fetch("SELECT DISTINCT target FROM outbox ORDER BY target", ())]

    async def counts(self, target: str) -> TargetCounts:
        by_state = {r[0]: r[1:] for r in await self.db.fetch(
            "SELECT state, COUNT(*), MIN(created_ms), MAX(next_attempt) FROM outbox WHERE target=?"
            " GROUP BY state", (target,))}

        def n(state: str) -> int:
            return int(by_state.get(state, (0,))[0])

        err = await self.db.fetch(
            "SELECT last_error FROM outbox WHERE target=? AND state IN ('pending','dead')"
            " AND last_error IS NOT NULL ORDER BY next_attempt DESC, id DESC LIMIT 1", (target,))
        return TargetCounts(
            target=target,
            pending=n(PENDING),
            oldest_pending_ms=by_state.get(PENDING, (0, None))[1],
            sent=n(SENT),
            last_success_ms=by_state.get(SENT, (0, None, None))[2],
            dead=n(DEAD),
            dropped_unreported=n(DROPPED),
            dropped_total=n(DROPPED) + n(DROPPED_REPORTED),
            last_error=err[0][0] if err else None,
        )

    async def dead_letters(self, target: str | None = None, limit: int = 100) -> list[DeadLetter]:
        where, args = "state='dead'", ()  # type: tuple[str, Params]
        if target is not None:
            where, args = "state='dead' AND target=?", (target,)
        rows = await self.db.fetch(
            f"SELECT id, target, event_id, {_DEVICE}, last_error, created_ms, next_attempt, attempts"
            f" FROM outbox WHERE {where} ORDER BY id LIMIT ?", (*args, limit))
        return [DeadLetter(r[0], r[1], r[2], r[3], r[4] or "", r[5], r[6], r[7]) for r in rows]

    async def retry(self, target: str | None, ids: tuple[int, ...], now_ms: int) -> int:
        """Dead letters (all of ``target``, or ``ids``) and pending entries in backoff become due now.

        A retried dead letter goes back into its device's order by id: entries of the
        device queued after it wait until it is delivered or refused again.
        """
        where, args = ["state IN ('dead','pending')"], [now_ms]  # type: list[str], list[Any]
        if target is not None:
            where.append("target=?")
            args.append(target)
        if ids:
            where.append(f"id IN ({_marks(ids)})")
            args.extend(ids)
        return await self._update("retrying outbox entries",
                                  "UPDATE outbox SET state='pending', next_attempt=? WHERE " + " AND ".join(where),
                                  tuple(args))

    async def purge(self, target: str | None, states: tuple[str, ...], before_ms: int | None,
                    ids: tuple[int, ...] = ()) -> int:
        """Delete entries in ``states`` (of ``target``; created before ``before_ms``).
        Of the sent entries the newest of each target is kept: it holds 'last success'."""
        where = [f"state IN ({_marks(states)})"]
        args: list[Any] = list(states)
        if target is not None:
            where.append("target=?")
            args.append(target)
        if before_ms is not None:
            where.append("created_ms<?")
            args.append(before_ms)
        if ids:
            where.append(f"id IN ({_marks(ids)})")
            args.extend(ids)
        if SENT in states:
            where.append("id NOT IN (SELECT MAX(id) FROM outbox WHERE state='sent' GROUP BY target)")
        return await self._update("purging outbox entries", "DELETE FROM outbox WHERE " + " AND ".join(where),
                                  tuple(args))

    async def _update(self, what: str, sql: str, args: Params) -> int:
        return await self.db.write(what, [(sql, args)])
