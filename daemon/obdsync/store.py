"""The daemon's durable store: one SQLite file (WAL) behind aiosqlite.

Use::

    store = await Store.open(path)            # creates/migrates the file
    acked = await store.ingest(device_id, records)   # -> seq to ACK, or None
    ...
    await store.close()                       # or: async with await Store.open(p) as store:

The store is parts over one :class:`~obdsync.db.Db` (the connection, its lock,
``async with db.transaction()``, SQLite's errors mapped once; python-can's BusABC is the
model: the shared work lives once, the parts use it):

- :mod:`obdsync.ingest` — the dongle's records in, durably, and the watermark to ack
  (:class:`~obdsync.ingest.Ingester`, ``store.ingester``);
- :mod:`obdsync.derived` — events with their outbox entries, trips, the rules' state,
  service records, freeze frames (``store.derived``);
- :mod:`obdsync.queries` — everything read back (``store.queries``);
- :mod:`obdsync.forward.outbox_sql` — the outbox's own queries (``OutboxSql(store.db)``);
- this module — the file: creating, migrating, opening, the size cap, retention, vacuum.

:class:`Store` is a thin facade over them: some forty callers (the CLI, the web
dashboard, the forwarder, the HIL rig, the tests) open one file and ask it things; the
facade keeps that one object and its method names, each a one-line hand-over to the part
that does it, so no caller needs to know which part holds what. The types it hands out
live in :mod:`obdsync.model`.

One :class:`Store` per database file per process; it serializes its own operations.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from . import schema
from .db import (
    Db,
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreMissingError,
)
from .db import map_error as _map_error
from .decode import Decoder
from .derived import Derived
from .ingest import Ingester, Record
from .model import DeviceStatus, EpochInfo, Event, Held, SampleRow, Trip, TripRecord
from .paths import private_dir, private_file
from .queries import Queries

__all__ = ["Store", "corrupt_advice", "StoreError", "StoreFullError", "StoreBusyError", "StoreCorruptError",
           "StoreMissingError"]  # the errors are obdsync.db's, re-exported for the store's users

log = logging.getLogger(__name__)


def corrupt_advice(path: str | os.PathLike[str]) -> str:
    """What to do with a damaged database, in one sentence."""
    return (f"the file was not modified; recover what is readable with"
            f" `sqlite3 {path} .recover | sqlite3 {path}.recovered` and use that, or move {path} aside"
            f" to start a new one")


def _prepare(path: Path) -> None:
    """Create the file (0600: SQLite gives its -wal and -shm the database's mode), switch it to
    WAL and migrate, on a plain connection."""
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p is path or p.exists():
            try:
                private_file(p)
            except OSError as e:
                raise StoreError(f"cannot create {p}: {e.strerror}") from e
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"{path}: cannot use WAL journal (got {mode})")
        schema.migrate(conn)
    except sqlite3.Error as e:
        raise _map_error(e, f"opening {path}") from e
    finally:
        conn.close()

class Store:
    """See the module docstring. Create with :meth:`open`."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, *, clock: Callable[[], float],
                 decoder: Decoder, outbox_max: int, raw: sqlite3.Connection | None = None):
        self.db = Db(conn, raw, clock)  # the connection, its lock and transactions, shared by the parts
        self.path = path
        self.ingester = Ingester(self.db, decoder)
        self.derived = Derived(self.db, outbox_max)
        self.queries = Queries(self.db)
        self._page_size = 4096

    # ---- lifecycle ---------------------------------------------------------


    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, max_bytes: int | None = None,
                   busy_timeout_s: float = 5.0, clock: Callable[[], float] = time.time,
                   decoder: Decoder | None = None, outbox_max: int = 10000, create: bool = True) -> Store:
        """Open (creating and migrating) the database at ``path``.

        ``max_bytes`` caps the file size (SQLite ``max_page_count``): past it, writes
        fail with :class:`StoreFullError` as on a full disk. ``clock`` gives Unix seconds
        (receive times, retention). ``create=False`` (readers): a missing file raises
        :class:`StoreMissingError` and nothing is created. A damaged file raises
        :class:`StoreCorruptError` and is not written to. Raises :class:`StoreError` or
        ``schema.SchemaError``.
        """
        p = Path(path)
        if not create and not p.is_file():
            raise StoreMissingError(f"{p}: no such database (a typo in --db? `obdsync run` creates it)")
        try:
            private_dir(p.parent)
        except OSError as e:
            raise StoreError(f"cannot create {p.parent}: {e.strerror}") from e
        await asyncio.to_thread(_prepare, p)
        made: list[sqlite3.Connection] = []

        def connector() -> sqlite3.Connection:
            # check_same_thread off: _commit_plan also uses it from the loop's thread,
            # never while aiosqlite's thread runs something on it.
            made.append(sqlite3.connect(p, isolation_level=None, timeout=busy_timeout_s, check_same_thread=False))
            return made[0]

        try:
            conn = await aiosqlite.Connection(connector, 64)
        except sqlite3.Error as e:
            raise _map_error(e, f"opening {p}") from e
        store = cls(conn, p, clock=clock, decoder=decoder or Decoder(), outbox_max=outbox_max, raw=made[0])
        try:
            # FULL: in WAL mode NORMAL skips the fsync at commit, and a commit is an ACK
            # promise. We commit once per batch, so this is one fsync per batch.
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute("PRAGMA foreign_keys=OFF")
            await conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000):d}")
            store._page_size = await store.db.fetch_one("PRAGMA page_size")
            if max_bytes:
                await store.set_max_bytes(max_bytes)
        except sqlite3.Error as e:
            await conn.close()
            raise _map_error(e, f"opening {p}") from e
        return store

    async def close(self) -> None:
        """Close the connection; idempotent."""
        await self.db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def set_max_bytes(self, max_bytes: int | None) -> int:
        """Cap the database size (None: SQLite's default, effectively unlimited).

        Returns the cap in bytes actually in force: SQLite never sets it below the
        current size.
        """
        pages = max_bytes // self._page_size if max_bytes else 0xFFFFFFFE
        cap: int = await self.db.fetch_one(f"PRAGMA max_page_count={max(1, pages):d}", what="setting the size cap")
        return cap * self._page_size

    def _now_ms(self) -> int:
        return self.db.now_ms()

    # ---- devices -----------------------------------------------------------

    # ---- the parts' work, handed over (see the module docstring) -------------

    async def ingest(self, device_id: str, records: Sequence[Record], *, epoch: int = 0,
                     first_unacked: int | None = None, received_ms: int | None = None) -> int | None:
        """:meth:`Ingester.ingest <obdsync.ingest.Ingester.ingest>`, for callers that want the
        watermark to ack only (the pipeline takes the whole ``Ingested``)."""
        got = await self.ingester.ingest(device_id, records, epoch=epoch, first_unacked=first_unacked,
                                         received_ms=received_ms)
        return got.acked

    async def set_device_info(self, device_id: str, *, name: str | None = None,
                              address: str | None = None, vin: str | None = None) -> None:
        await self.ingester.set_device_info(device_id, name=name, address=address, vin=vin)

    async def put_event(self, event: Event, outbox: Sequence[tuple[str, bytes]] = ()) -> list[int]:
        return await self.derived.put_event(event, outbox)

    async def put_trip(self, trip: TripRecord) -> None:
        await self.derived.put_trip(trip)

    async def rules_state(self, device: str) -> tuple[int, str] | None:
        return await self.derived.rules_state(device)

    async def save_rules_state(self, device: str, seq: int, snapshot: str) -> None:
        await self.derived.save_rules_state(device, seq, snapshot)

    async def add_service(self, device: str, done_ms: int, odometer_km: float | None = None,
                          note: str = "") -> int:
        return await self.derived.add_service(device, done_ms, odometer_km, note)

    async def services(self, device: str) -> list[tuple[int, int, float | None, str]]:
        return await self.derived.services(device)

    async def put_freeze_frames(self, device: str, frames: dict[str, dict[str, Any]], read_ms: int) -> None:
        await self.derived.put_freeze_frames(device, frames, read_ms)

    async def samples(self, device: str, channel: int, *, since_ms: int | None = None,
                      until_ms: int | None = None, limit: int = 1000, newest: bool = False) -> list[SampleRow]:
        return await self.queries.samples(device, channel, since_ms=since_ms, until_ms=until_ms, limit=limit,
                                          newest=newest)

    def export(self, device: str, *, since_ms: int | None = None, until_ms: int | None = None,
               channels: Sequence[int] | None = None, chunk: int = 5000) -> AsyncIterator[SampleRow]:
        return self.queries.export(device, since_ms=since_ms, until_ms=until_ms, channels=channels, chunk=chunk)

    async def dtcs(self, device: str, *, limit: int = 20, with_ecus: bool = False) -> list[tuple[Any, ...]]:
        return await self.queries.dtcs(device, limit=limit, with_ecus=with_ecus)

    async def freeze_frames(self, device: str) -> dict[str, tuple[int, dict[str, Any]]]:
        return await self.queries.freeze_frames(device)

    async def device_events(self, device: str, *, limit: int = 50) -> list[tuple[int, int, int, bool]]:
        return await self.queries.device_events(device, limit=limit)

    async def epochs(self, device: str) -> list[EpochInfo]:
        return await self.queries.epochs(device)

    async def status(self, device: str | None = None) -> list[DeviceStatus]:
        return await self.queries.status(device)

    async def last_values(self, device: str) -> dict[int, tuple[int, float | None, str]]:
        return await self.queries.last_values(device)

    async def events(self, device: str | None = None, *, since_ms: int | None = None,
                     open_only: bool = False, limit: int = 100) -> list[Event]:
        return await self.queries.events(device, since_ms=since_ms, open_only=open_only, limit=limit)

    async def trips(self, device: str | None = None, *, since_ms: int | None = None,
                    limit: int = 100) -> list[Trip]:
        return await self.queries.trips(device, since_ms=since_ms, limit=limit)

    def replay_items(self, device: str, after_seq: int, upto_seq: int | None = None,
                     chunk: int = 2000) -> AsyncIterator[Held]:
        return self.queries.replay_items(device, after_seq, upto_seq, chunk)

    # ---- maintenance -------------------------------------------------------

    async def retain(self, days: float, *, now_ms: int | None = None) -> int:
        """Delete raw samples older than ``days``; events, trips, DTCs stay. Returns rows deleted.

        One transaction per (device, channel), so ingest is never blocked for long.
        """
        if days <= 0:
            return 0
        cutoff = (self._now_ms() if now_ms is None else now_ms) - int(days * 86_400_000)
        pairs = await self.db.fetch("SELECT device, channel FROM channels", ())
        deleted = 0
        for num, ch in pairs:
            async with self.db.lock:
                c = self.db.conn
                try:
                    cur = await c.execute("DELETE FROM sample_rows WHERE device=? AND channel=? AND time_ms<?",
                                          (num, ch, cutoff))
                    deleted += max(cur.rowcount, 0)
                except sqlite3.Error as e:
                    raise _map_error(e, "deleting old samples") from e
        if deleted:
            log.info("retention: deleted %d samples older than %s days", deleted, days)
        return deleted

    async def vacuum(self) -> None:
        """Give freed pages back to the file system (needs free space about the size of the file)."""
        async with self.db.lock:
            try:
                # Values no row refers to any more (retention): the cache may hold their
                # ids, so it starts afresh.
                await self.db.conn.execute("DELETE FROM sample_values WHERE id NOT IN (SELECT v FROM sample_rows)")
                self.ingester.forget_values()
                await self.db.conn.execute("VACUUM")
                await self.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:
                raise _map_error(e, "vacuum") from e
