"""The one SQLite connection the store's parts share: the connection, the lock that
serialises its use, write transactions and reads, with SQLite's errors as `StoreError`s
that say what was being done. (python-can's BusABC is the model: the shared work lives
once, and the parts — ingest, events, the outbox — use it instead of repeating it.)
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiosqlite


class StoreError(Exception):
    """The store could not do what was asked; nothing was half-done."""


class StoreFullError(StoreError):
    """The disk (or the configured maximum database size) is full. Free space, then retry."""


class StoreBusyError(StoreError):
    """Another process holds the database lock longer than the busy timeout."""


class StoreCorruptError(StoreError):
    """The database file is damaged. Nothing here writes to it again: recover it by hand."""


class StoreMissingError(StoreError):
    """A reader was pointed at a database file that does not exist (a typo in --db?)."""


def map_error(e: sqlite3.Error, what: str) -> StoreError:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StoreCorruptError(f"{what}: the database is corrupt ({e})")
    if code is not None and code & 0xFF == sqlite3.SQLITE_IOERR:
        # A write refused by the system: ENOSPC past SQLite's own check, a quota or file-size
        # limit (EFBIG), a failing drive. What was being written is rolled back.
        return StoreError(f"{what}: could not write to the disk ({e}): it may be full or failing; nothing of"
                          " this was kept, free space and try again")
    if code == sqlite3.SQLITE_FULL:
        return StoreFullError(f"{what}: database or disk is full; free disk space or raise [store] max_size_mb")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreBusyError(f"{what}: database is locked by another process ({e})")
    return StoreError(f"{what}: {e}")


#: SQL parameters, as sqlite3 takes them.
Params = tuple[Any, ...]


class Db:
    """`conn` (aiosqlite) and `raw`, the same connection for bulk writes on the loop's
    thread (ingest's plan); `lock` serialises every use of it; `clock` (Unix seconds) is
    the one every part stamps its rows with (receive times, outbox attempts, retention)."""

    def __init__(self, conn: aiosqlite.Connection, raw: sqlite3.Connection | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.conn = conn
        self.raw = raw
        self.lock = asyncio.Lock()
        self.clock = clock
        self.closed = False

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def close(self) -> None:
        """Close the connection; idempotent."""
        if not self.closed:
            self.closed = True
            await self.conn.close()

    async def fetch_one(self, sql: str, args: Params = (), what: str = "query") -> Any:
        """The first column of the first row of a read that always gives one (COUNT, MAX, a PRAGMA)."""
        rows = await self.fetch(sql, args, what)
        return rows[0][0]

    @contextlib.asynccontextmanager
    async def transaction(self, what: str, *, locked: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction, BEGIN IMMEDIATE … COMMIT; any failure inside rolls it
        back, and SQLite's errors come out as StoreError naming `what`. Takes the lock
        unless the caller already holds it (`locked`)."""
        if not locked:
            async with self.lock:
                async with self.transaction(what, locked=True) as c:
                    yield c
            return
        c = self.conn
        try:
            await c.execute("BEGIN IMMEDIATE")
            try:
                yield c
                await c.execute("COMMIT")
            except BaseException:
                await self.rollback()
                raise
        except sqlite3.Error as e:
            raise map_error(e, what) from e

    async def rollback(self) -> None:
        try:
            if self.conn.in_transaction:
                await self.conn.execute("ROLLBACK")
        except sqlite3.Error:  # SQLite may already have rolled back (SQLITE_FULL can do that)
            pass

    async def write(self, what: str, statements: Iterable[tuple[str, Params]], *, locked: bool = False) -> int:
        """Run `statements` in one transaction; the rows the last one changed."""
        n = 0
        async with self.transaction(what, locked=locked) as c:
            for sql, params in statements:
                cur = await c.execute(sql, params)
                n = cur.rowcount
        return n

    async def fetch(self, sql: str, args: Params = (), what: str = "query") -> list[Any]:
        """The rows of one read (sqlite3.Row-free tuples: index them)."""
        async with self.lock:
            try:
                async with self.conn.execute(sql, args) as cur:
                    return list(await cur.fetchall())
            except sqlite3.Error as e:
                raise map_error(e, what) from e
