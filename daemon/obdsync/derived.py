"""What is kept beside the dongle's log: events with their outbox entries (one
transaction, so an event is never stored without its deliveries), trips, the rules'
saved state, the user's service records and the freeze frames read.

Writes over the shared :class:`~obdsync.db.Db` (its lock, ``async with
db.transaction()``, SQLite's errors as ``StoreError``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from .db import Db, map_error
from .model import Event, TripRecord
from .paths import normalize_device_id
from .queries import device_num

log = logging.getLogger("obdsync.store")


class Derived:
    """See the module docstring. ``outbox_max``: pending outbox entries kept at most."""

    def __init__(self, db: Db, outbox_max: int) -> None:
        self.db = db
        self.outbox_max = outbox_max

    async def put_event(self, event: Event, outbox: Sequence[tuple[str, bytes]] = ()) -> list[int]:
        """Insert or update ``event`` (by id) and queue ``(target, payload)`` entries for it,
        in one transaction, so an event is never stored without its deliveries.

        Returns the outbox ids. When more than ``outbox_max`` entries are pending, the
        oldest are marked ``dropped`` (counted in ``OutboxSql.by_state``, logged).
        """
        now = self.db.now_ms()
        device = normalize_device_id(event.device)
        ids: list[int] = []
        async with self.db.transaction(f"storing event {event.id}") as c:
            async with c.execute("SELECT severity, cleared_ms, values_json, message FROM events WHERE id=?",
                                 (event.id,)) as cur:
                old = await cur.fetchone()
            if old == (event.severity, event.cleared_ms, json.dumps(event.values, sort_keys=True), event.message):
                # Re-derived after a restart or a replay, unchanged: its
                # deliveries were queued the first time.
                outbox = ()
            await c.execute(
                "INSERT INTO events (id, device, type, severity, opened_ms, cleared_ms, values_json, message)"
                " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET severity=excluded.severity,"
                " cleared_ms=excluded.cleared_ms, values_json=excluded.values_json, message=excluded.message",
                (event.id, device, event.type, event.severity, event.opened_ms, event.cleared_ms,
                 json.dumps(event.values, sort_keys=True), event.message))
            for target, payload in outbox:
                cur = await c.execute(
                    "INSERT INTO outbox (target, event_id, payload, created_ms, next_attempt)"
                    " VALUES (?,?,?,?,?)", (target, event.id, bytes(payload), now, now))
                assert cur.lastrowid is not None  # an INSERT's
                ids.append(cur.lastrowid)
            dropped = 0
            if outbox:
                cur = await c.execute(
                    "UPDATE outbox SET state='dropped', last_error='outbox full' WHERE id IN"
                    " (SELECT id FROM outbox WHERE state='pending' ORDER BY id DESC LIMIT -1 OFFSET ?)",
                    (self.outbox_max,))
                dropped = cur.rowcount
        if dropped > 0:
            log.warning("outbox full (%d pending max): dropped the %d oldest entries", self.outbox_max, dropped)
        return ids

    async def put_trip(self, trip: TripRecord) -> None:
        """Insert or update ``trip`` (by id)."""
        device = normalize_device_id(trip.device)
        async with self.db.lock:
            await self.db.write(f"storing trip {trip.id}", [(
                "INSERT INTO trips (id, device, started_ms, ended_ms, distance_km, fuel_l, values_json)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET ended_ms=excluded.ended_ms,"
                " distance_km=excluded.distance_km, fuel_l=excluded.fuel_l, values_json=excluded.values_json",
                (trip.id, device, trip.started_ms, trip.ended_ms, trip.distance_km, trip.fuel_l,
                 json.dumps(trip.values, sort_keys=True)))], locked=True)

    async def rules_state(self, device: str) -> tuple[int, str] | None:
        """(last seq fed, snapshot JSON) saved for a device's rules engine."""
        rows = await self.db.fetch("SELECT seq, snapshot FROM rules_state WHERE device=?",
                                   (normalize_device_id(device),))
        return (rows[0][0], rows[0][1]) if rows else None

    async def save_rules_state(self, device: str, seq: int, snapshot: str) -> None:
        async with self.db.lock:
            await self.db.write("saving the rules state", [(
                "INSERT INTO rules_state (device, seq, snapshot, saved_ms) VALUES (?,?,?,?) ON CONFLICT (device)"
                " DO UPDATE SET seq=excluded.seq, snapshot=excluded.snapshot, saved_ms=excluded.saved_ms",
                (normalize_device_id(device), seq, snapshot, self.db.now_ms()))], locked=True)

    async def add_service(self, device: str, done_ms: int, odometer_km: float | None = None,
                          note: str = "") -> int:
        """Record a service (resets the service reminder); returns its id."""
        device = normalize_device_id(device)
        async with self.db.lock:
            c = self.db.conn
            try:
                cur = await c.execute("INSERT INTO service_records (device, done_ms, odometer_km, note)"
                                      " VALUES (?,?,?,?)", (device, done_ms, odometer_km, note))
            except sqlite3.Error as e:
                raise map_error(e, "storing service record") from e
            assert cur.lastrowid is not None  # an INSERT's
            return cur.lastrowid

    async def services(self, device: str) -> list[tuple[int, int, float | None, str]]:
        """``(id, done_ms, odometer_km, note)`` of a device's services, newest first."""
        return [(r[0], r[1], r[2], r[3]) for r in await self.db.fetch(
            "SELECT id, done_ms, odometer_km, note FROM service_records WHERE device=?"
            " ORDER BY done_ms DESC", (normalize_device_id(device),))]

    async def put_freeze_frames(self, device: str, frames: dict[str, dict[str, Any]], read_ms: int) -> None:
        """Keep the freeze frames just read (code -> decoded frame), each replacing the code's last."""
        num = await device_num(self.db, device)
        if num is None:
            raise ValueError(f"no device {device} in the store")
        async with self.db.lock:
            await self.db.write("storing freeze frames", [(
                "INSERT INTO freeze_frames (device, code, read_ms, frame) VALUES (?,?,?,?) ON CONFLICT"
                " (device, code) DO UPDATE SET read_ms=excluded.read_ms, frame=excluded.frame",
                (num, code, read_ms, json.dumps(frame, sort_keys=True))) for code, frame in frames.items()],
                locked=True)
