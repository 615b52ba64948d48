"""The daemon's durable store: one SQLite file (WAL) behind aiosqlite.

Use::

    store = await Store.open(path)            # creates/migrates the file
    acked = await store.ingest(device_id, records)   # -> seq to ACK, or None
    ...
    await store.close()                       # or: async with await Store.open(p) as store:

Delivery contract (protocol/README.md): :meth:`Store.ingest` stores a batch of decoded
records in one transaction committed with ``synchronous=FULL`` (the WAL is fsynced at
commit), drops duplicates by ``(device, seq)`` and returns the device's *contiguous
watermark*: the highest seq such that every seq from the first one this store ever saw
for the device up to it is stored, or named by a GAP record. That is what the link ACKs.
When it raises a :class:`StoreError` (disk full, database locked, ...) nothing of the
batch is stored and the watermark is unchanged: don't ACK, the dongle keeps the data.

Time: samples carry ``(boot, t_ms since boot)``. A boot's ticks map to wall time through
its anchor: ``time_ms = wall_ms + (t_ms - t0)``. The anchor is the ANCHOR record of
lowest seq for that boot. Until one arrives, a provisional anchor (the receive time at the
batch's latest tick of that boot) is used and rows are flagged ``approx = 1``; when the
real anchor arrives they are re-mapped and the flag cleared.

The dongle's ticks wrap at 2**30 ms (12.4 days: dongle.clock, small ints on the ESP32), so a
longer boot starts its count again at 0. The store unwraps per boot: the first anchor a
boot gets (provisional or real) fixes its scale, and every later tick is placed on it by
seq, since a boot's records are sequential — a record at or after the anchor's seq is at
most TICKS_SLACK_MS before the anchor's tick and at most one period after it; one before
it the other way round (:func:`unwrap_tick`). ``t_ms`` and the anchors' ``t0`` are stored
unwrapped, so remapping stays ``time_ms = base + t_ms``. A boot that runs more than a
period on the far side of its anchor without a record is beyond this (the dongle writes
records and events far more often than every 12 days).

One :class:`Store` per database file per process; it serializes its own operations.
"""

from __future__ import annotations

import asyncio
import json
import logging
import operator
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import aiosqlite

# Record kinds as on the wire (protocol/README.md): the one definition both sides use.
from protocol.record import KIND_ANCHOR, KIND_DTC, KIND_EVENT, KIND_GAP, KIND_SAMPLES

from . import schema
from .db import (  # noqa: F401 - the store's errors, re-exported for its users
    Db,
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreMissingError,
)
from .db import map_error as _map_error
from .decode import Decoder, dtcs_with_ecus
from .paths import normalize_device_id, private_dir, private_file

log = logging.getLogger(__name__)

#: Column order of the sample row tuples handed to an ingest ``sink``. ``value_id`` is
#: the row's ``sample_values.id`` (value and raw bytes live there, see schema step 3).
SAMPLE_ROW = ("device_num", "channel", "time_ms", "seq", "n", "boot", "t_ms", "value", "value_id", "approx")

# ?8 (the value) is in the row for the sink, not in the table: it is bound, unused.
_INSERT_SAMPLE = (
    "INSERT INTO sample_rows (device, channel, time_ms, seq, n, boot, t_ms, v, approx)"
    " VALUES (?1,?2,?3,?4,?5,?6,?7,?9,?10)"
)
_INSERT_VALUE = "INSERT INTO sample_values (id, signal, value, raw) VALUES (?,?,?,?)"

#: Distinct (channel, raw bytes) kept with their value ids; past it the cache starts
#: afresh (and a pair seen again gets a new id: a few duplicate sample_values rows).
VALUE_CACHE_LIMIT = 1 << 16
_SIGNAL = operator.itemgetter(1)  # of a SAMPLE_ROW


def corrupt_advice(path: str | os.PathLike[str]) -> str:
    """What to do with a damaged database, in one sentence."""
    return (f"the file was not modified; recover what is readable with"
            f" `sqlite3 {path} .recover | sqlite3 {path}.recovered` and use that, or move {path} aside"
            f" to start a new one")


class Record(Protocol):
    """What :meth:`Store.ingest` reads from a ``protocol.record_decode.Record``."""

    kind: int
    seq: int
    boot: int
    t0: int


class SampleRow(NamedTuple):
    time_ms: int
    channel: int
    value: float | None
    raw: bytes
    approx: bool
    boot: int
    t_ms: int
    seq: int


@dataclass(frozen=True)
class Event:
    """A derived event (rules). ``id`` is stable: storing it again updates it."""

    id: str
    device: str
    type: str
    severity: str
    opened_ms: int
    cleared_ms: int | None = None
    values: dict[str, Any] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True)
class Trip:
    id: str
    device: str
    started_ms: int
    ended_ms: int | None = None
    distance_km: float | None = None
    fuel_l: float | None = None
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    target: str
    event_id: str | None
    payload: bytes
    created_ms: int
    attempts: int
    next_attempt: int
    last_error: str | None
    state: str


@dataclass(frozen=True)
class DeviceStatus:
    device: str
    name: str | None
    address: str | None
    vin: str | None
    first_seen: int | None
    last_seen: int | None
    first_seq: int | None
    contiguous: int | None
    records: int
    missing: int
    """seqs above the watermark not received yet (will be re-sent)."""
    gaps: int
    lost: int
    """records the dongle dropped (sum of its GAP records)."""
    last_values: dict[int, tuple[int, float | None, str]]
    """signal -> (time_ms, value, unit)."""
    epoch: int | None = None
    """the log epoch met last (``first_seq`` and ``contiguous`` are its wire seqs)."""
    epochs: int = 0
    """log epochs met: more than one means the dongle's log started over (wiped, reflashed, replaced)."""
    epoch_since: int | None = None
    """when the current epoch was first met (Unix ms)."""


@dataclass(frozen=True)
class _Anchor:
    t0: int
    wall_ms: int
    seq: int | None
    approx: int


#: The dongle's ticks period (dongle.clock: time.ticks_ms on the ESP32, small ints).
TICKS_PERIOD = 1 << 30
#: How long before its anchor's tick a record of higher seq may start: the samples a
#: RecordWriter staged before the ANCHOR was logged (a record holds seconds to minutes).
TICKS_SLACK_MS = 1 << 26


def unwrap_tick(t: int, seq: int, a: _Anchor) -> int:
    """A wrapped tick ``t`` of the record ``seq`` on the scale of its boot's anchor ``a``."""
    if a.seq is None:  # a provisional anchor stored before they carried their seq: the nearest
        lo = a.t0 - TICKS_PERIOD // 2
    elif seq >= a.seq:
        lo = a.t0 - TICKS_SLACK_MS
    else:
        lo = a.t0 + TICKS_SLACK_MS - TICKS_PERIOD + 1
    return lo + (t - lo) % TICKS_PERIOD


#: Store numbering of a log epoch's seqs and boots (schema step 4): the epoch's index
#: (0, 1, ... in the order met) shifted above the wire's u32 seq and u16 boot.
EPOCH_SEQ_SHIFT = 32
EPOCH_BOOT_SHIFT = 16


@dataclass(frozen=True)
class EpochInfo:
    """One log epoch of a device, its seqs as on the wire."""

    idx: int
    epoch: int
    first_seen: int
    first_seq: int | None
    contiguous: int | None


@dataclass
class _Device:
    """One log epoch of a device: its watermark and bookkeeping, in store numbering."""

    num: int
    id: str
    idx: int
    epoch: int
    first_seq: int | None
    contiguous: int | None
    max_seq: int | None
    pending: set[int]
    """stored seqs above the watermark"""
    gaps: list[tuple[int, int]]
    """(first, last) of GAP ranges reaching above the watermark"""
    anchors: dict[int, _Anchor]

    @property
    def base(self) -> int:
        return self.idx << EPOCH_SEQ_SHIFT


class _Shifted:
    """A record of a later epoch as the store numbers it, or with its t0 unwrapped (the
    link's object untouched)."""

    __slots__ = ("kind", "seq", "boot", "t0", "samples", "first", "count", "wall_ms", "code", "millivolts",
                 "mode", "codes", "ecus")

    def __init__(self, r: Any, seq_base: int, boot_base: int) -> None:
        self.ecus = getattr(r, "ecus", ())  # a DTC record's ECU addresses (older records: none)
        self.kind, self.seq, self.boot, self.t0 = r.kind, r.seq + seq_base, r.boot + boot_base, r.t0
        self.samples, self.first, self.count = r.samples, r.first + seq_base, r.count
        self.wall_ms, self.code, self.millivolts, self.mode, self.codes = (r.wall_ms, r.code, r.millivolts,
                                                                           r.mode, r.codes)


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
        self.db = Db(conn, raw)  # the connection, its lock and transactions, shared with the outbox
        self.path = path
        self._clock = clock
        self._decoder = decoder
        self._outbox_max = outbox_max
        self._devices: dict[tuple[str, int], _Device] = {}  # (device id, epoch)
        self._page_size = 4096
        # channel -> raw bytes -> ((signal, value, value id), ...): one dict lookup per
        # sample, without building a key tuple.
        self._values: list[dict[bytes, tuple]] = [{} for _ in range(256)]
        self._values_n = 0
        self._raw_of: dict[int, bytes] = {}  # value id -> raw bytes, for the channels table
        self._next_vid: int | None = None  # None: read MAX(id) first

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
            async with conn.execute("PRAGMA page_size") as cur:
                store._page_size = (await cur.fetchone())[0]
            if max_bytes:
                await store.set_max_bytes(max_bytes)
        except sqlite3.Error as e:
            await conn.close()
            raise _map_error(e, f"opening {p}") from e
        return store

    async def close(self) -> None:
        """Close the connection; idempotent."""
        if self.db.conn is not None:
            conn, self.db.conn = self.db.conn, None
            await conn.close()

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
        async with self.db.lock:
            async with self.db.conn.execute(f"PRAGMA max_page_count={max(1, pages):d}") as cur:
                return (await cur.fetchone())[0] * self._page_size

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # ---- devices -----------------------------------------------------------

    async def _device_num(self, device_id: str) -> int:
        c = self.db.conn
        async with c.execute("SELECT num FROM devices WHERE id=?", (device_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            now = self._now_ms()
            try:
                await c.execute("INSERT INTO devices (id, first_seen, last_seen) VALUES (?,?,?)",
                                (device_id, now, now))
            except sqlite3.Error as e:
                raise _map_error(e, f"adding device {device_id}") from e
            async with c.execute("SELECT num FROM devices WHERE id=?", (device_id,)) as cur:
                row = await cur.fetchone()
        return row[0]

    async def _device(self, device_id: str, epoch: int = 0) -> _Device:
        dev = self._devices.get((device_id, epoch))
        if dev is not None:
            return dev
        c = self.db.conn
        num = await self._device_num(device_id)
        async with c.execute("SELECT idx, first_seq, contiguous FROM epochs WHERE device=? AND epoch=?",
                             (num, epoch)) as cur:
            row = await cur.fetchone()
        if row is None:
            async with c.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM epochs WHERE device=?", (num,)) as cur:
                idx = (await cur.fetchone())[0]
            try:
                await c.execute("INSERT INTO epochs (device, idx, epoch, first_seen) VALUES (?,?,?,?)",
                                (num, idx, epoch, self._now_ms()))
            except sqlite3.Error as e:
                raise _map_error(e, f"adding log epoch {epoch:08x} of device {device_id}") from e
            if idx:
                log.warning("device %s: its log started over (epoch %08x, the %d. log met): wiped, reflashed"
                            " or replaced; the records of the earlier logs are kept", device_id, epoch, idx + 1)
            row = (idx, None, None)
        idx, first_seq, contiguous = row
        lo, hi = idx << EPOCH_SEQ_SHIFT, ((idx + 1) << EPOCH_SEQ_SHIFT) - 1
        async with c.execute("SELECT MAX(seq) FROM records WHERE device=? AND seq BETWEEN ? AND ?",
                             (num, lo, hi)) as cur:
            max_seq = (await cur.fetchone())[0]
        pending: set[int] = set()
        gaps: list[tuple[int, int]] = []
        if contiguous is not None:
            async with c.execute("SELECT seq FROM records WHERE device=? AND seq>? AND seq<=?",
                                 (num, contiguous, hi)) as cur:
                pending = {r[0] for r in await cur.fetchall()}
            async with c.execute("SELECT first, first+count-1 FROM gaps WHERE device=? AND first+count-1>?"
                                 " AND seq BETWEEN ? AND ?", (num, contiguous, lo, hi)) as cur:
                gaps = [tuple(r) for r in await cur.fetchall()]
        blo, bhi = idx << EPOCH_BOOT_SHIFT, ((idx + 1) << EPOCH_BOOT_SHIFT) - 1
        async with c.execute("SELECT boot, t0, wall_ms, seq, approx FROM anchors WHERE device=?"
                             " AND boot BETWEEN ? AND ?", (num, blo, bhi)) as cur:
            anchors = {r[0]: _Anchor(r[1], r[2], r[3], r[4]) for r in await cur.fetchall()}
        dev = _Device(num, device_id, idx, epoch, first_seq, contiguous, max_seq, pending, gaps, anchors)
        self._devices[(device_id, epoch)] = dev
        return dev

    async def epochs(self, device: str) -> list[EpochInfo]:
        """The log epochs met for a device, oldest first, seqs as on the wire."""
        num = await self._num(device)
        if num is None:
            return []
        rows = await self.db.fetch("SELECT idx, epoch, first_seen, first_seq, contiguous FROM epochs WHERE device=?"
                                   " ORDER BY idx", (num,))
        out = []
        for idx, epoch, seen, first, contiguous in rows:
            base = idx << EPOCH_SEQ_SHIFT
            out.append(EpochInfo(idx, epoch, seen, None if first is None else first - base,
                                 None if contiguous is None else contiguous - base))
        return out

    def seq_base(self, device_id: str, epoch: int) -> int | None:
        """What the store adds to a wire seq of this epoch (call after ingest: it reads what
        ingest cached); None for an epoch not met."""
        dev = self._devices.get((normalize_device_id(device_id), epoch))
        return None if dev is None else dev.base

    async def set_device_info(self, device_id: str, *, name: str | None = None,
                              address: str | None = None, vin: str | None = None) -> None:
        """Record what the link learnt about a dongle; None leaves a field as it is."""
        device_id = normalize_device_id(device_id)
        async with self.db.lock:
            await self._device_num(device_id)
            await self.db.write(
                f"updating device {device_id}",
                [("UPDATE devices SET name=COALESCE(?,name), address=COALESCE(?,address),"
                  " vin=COALESCE(?,vin), last_seen=? WHERE id=?",
                  (name, address, vin, self._now_ms(), device_id))],
                locked=True,
            )

    # ---- ingest ------------------------------------------------------------

    async def ingest(self, device_id: str, records: Sequence[Any], *, epoch: int = 0,
                     first_unacked: int | None = None, received_ms: int | None = None,
                     sink: Callable[[str, list[Any], list[tuple]], None] | None = None) -> int | None:
        """Store ``records`` (``protocol.record_decode.Record`` objects) of one log epoch of a device
        durably.

        Returns the epoch's contiguous watermark after the batch, as a wire seq (the seq to
        ACK), or None while nothing of the epoch is stored. Records already stored (same
        ``(device, epoch, seq)``) are dropped; so are repeats within the batch.
        ``first_unacked`` (the dongle's STREAM reply) is where an epoch met for the first
        time starts: a record below it lost on the air is then waited for, not skipped.
        ``sink``, if given, is called after the commit with ``(device_id, new_records,
        sample_rows)`` (rows as in :data:`SAMPLE_ROW`, records and rows in store numbering,
        see :data:`EPOCH_SEQ_SHIFT`): each record reaches it exactly once.

        Raises :class:`StoreFullError`, :class:`StoreBusyError` or :class:`StoreError`;
        then nothing of the batch is stored.
        """
        device_id = normalize_device_id(device_id)
        async with self.db.lock:
            dev = await self._device(device_id, epoch)
            base = dev.base
            if base:
                records = [_Shifted(r, base, dev.idx << EPOCH_BOOT_SHIFT) for r in records]
            now = self._now_ms() if received_ms is None else received_ms
            batch = await self._new_records(dev, records)
            if not batch:
                return None if dev.contiguous is None else dev.contiguous - base
            if self._next_vid is None:
                async with self.db.conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM sample_values") as cur:
                    self._next_vid = (await cur.fetchone())[0]
            floor = None if first_unacked is None else base + first_unacked
            plan = self._plan(dev, batch, now, floor)
            try:
                await self._commit_plan(dev, plan)
            except BaseException:
                # The ids given out for this batch's new values were not stored.
                self._forget_values()
                raise
            dev.first_seq, dev.contiguous = plan.first_seq, plan.contiguous
            dev.pending, dev.gaps = plan.pending, plan.gaps
            dev.anchors.update(plan.anchors)
            dev.max_seq = plan.max_seq if dev.max_seq is None else max(dev.max_seq, plan.max_seq)
        if sink is not None:
            try:
                sink(device_id, batch, plan.samples)
            except Exception:  # the batch is durable and must be ACKed whatever the consumer does
                log.exception("ingest sink failed for device %s", device_id)
        return dev.contiguous - base

    async def _new_records(self, dev: _Device, records: Sequence[Any]) -> list[Any]:
        seen: set[int] = set()
        batch = []
        for r in records:
            if r.seq not in seen:
                seen.add(r.seq)
                batch.append(r)
        if batch and dev.max_seq is not None and min(seen) <= dev.max_seq:
            async with self.db.conn.execute(
                "SELECT seq FROM records WHERE device=? AND seq BETWEEN ? AND ?",
                (dev.num, min(seen), max(seen)),
            ) as cur:
                stored = {r[0] for r in await cur.fetchall()}
            if stored:
                log.debug("device %s: dropped %d duplicate records", dev.id, len(stored & seen))
                batch = [r for r in batch if r.seq not in stored]
        return batch

    def _plan(self, dev: _Device, batch: list[Any], now: int, floor: int | None = None) -> _Plan:
        """Everything the batch changes, computed before touching the database."""
        num = dev.num
        plan = _Plan(idx=dev.idx)
        staged = plan.anchors

        def anchor(boot: int) -> _Anchor | None:
            a = staged.get(boot)
            return a if a is not None else dev.anchors.get(boot)

        # Anchors first, so the batch's own samples already map with them.
        latest: dict[int, Any] = {}  # boot -> its record of highest seq in the batch (not an anchor)
        for r in batch:
            if r.kind == KIND_ANCHOR:
                cur = anchor(r.boot)
                if cur is None or cur.approx or r.seq < cur.seq:
                    # On the boot's scale (unwrap_tick), so the rows mapped so far keep their t_ms.
                    t0 = r.t0 if cur is None else unwrap_tick(r.t0, r.seq, cur)
                    new = _Anchor(t0, r.wall_ms, r.seq, 0)
                    staged[r.boot] = new
                    plan.anchor_rows.append((num, r.boot, t0, r.wall_ms, r.seq, 0))
                    if cur is not None:
                        plan.remaps.append((r.boot, new, bool(cur.approx)))
            else:
                top = latest.get(r.boot)
                if top is None or r.seq > top.seq:
                    latest[r.boot] = r
        for boot, r in latest.items():
            if anchor(boot) is None:
                # No clock for this boot yet: pretend its latest tick is "now" (the last
                # sample of its last record, which may have wrapped past the record's t0).
                t = r.t0
                if r.kind == KIND_SAMPLES and r.samples:
                    t += (r.samples[-1][0] - r.t0) % TICKS_PERIOD
                staged[boot] = a = _Anchor(t, now, r.seq, 1)
                plan.anchor_rows.append((num, boot, a.t0, a.wall_ms, a.seq, 1))

        rows = plan.samples
        append = rows.append
        values = self._values
        new_value = self._new_value
        value_rows = plan.value_rows
        if self._values_n >= VALUE_CACHE_LIMIT:
            # Only between batches: the rows of a plan keep finding their raw bytes.
            self._forget_values(ids_unsure=False)
        for i, r in enumerate(batch):
            kind = r.kind
            seq, boot = r.seq, r.boot
            plan.records.append((num, seq, boot, kind, now))
            if kind == KIND_SAMPLES or kind == KIND_EVENT or kind == KIND_DTC:
                a = anchor(boot)
                wire_t0 = r.t0
                t0 = unwrap_tick(wire_t0, seq, a)
                if t0 != wire_t0:
                    # A boot past the ticks' wrap: the sink (the pipeline) reads t0 on the
                    # boot's scale too. A copy: the link's record stays as it came.
                    batch[i] = r = _Shifted(r, 0, 0)
                    r.t0 = t0
            if kind == KIND_SAMPLES:
                base = a.wall_ms - a.t0
                approx = a.approx
                shift = t0 - wire_t0  # a multiple of the period: 0 but past a wrap
                # The ingest's hot loop: a sample's readings are cached by its raw bytes,
                # a single reading (all but PID 0x01) as the bare (signal, value, id).
                for n, (t, ch, data) in enumerate(r.samples):
                    if shift or t < wire_t0:
                        # The samples follow their record's t0; below it, the ticks wrapped
                        # inside the record.
                        t += shift if t >= wire_t0 else shift + TICKS_PERIOD
                    e = values[ch].get(data) or new_value(ch, data, value_rows)
                    if len(e) == 3:
                        append((num, e[0], base + t, seq, n, boot, t, e[1], e[2], approx))
                    else:
                        for sig, value, vid in e[3]:
                            append((num, sig, base + t, seq, n, boot, t, value, vid, approx))
            elif kind == KIND_GAP:
                plan.gap_rows.append((num, seq, r.first, r.count, now))
            elif kind == KIND_EVENT:
                plan.event_rows.append((num, seq, boot, t0, a.wall_ms - a.t0 + t0, a.approx,
                                        r.code, r.millivolts))
            elif kind == KIND_DTC:
                codes, ecus = dtcs_with_ecus(r.codes, getattr(r, "ecus", ()))  # records older than ECU addresses: none
                plan.dtc_rows.append((num, seq, boot, t0, a.wall_ms - a.t0 + t0, a.approx, r.mode,
                                      json.dumps(codes), json.dumps(ecus)))
        units = self._decoder.units
        raw_of = self._raw_of
        last = dict(zip(map(_SIGNAL, rows), rows, strict=True))  # each signal's last row in batch order
        plan.channel_rows = [(num, sig, units.get(sig, ""), row[2], row[7], raw_of[row[8]])
                             for sig, row in last.items()]

        # Watermark: advance over stored seqs and GAP ranges.
        seqs = [r.seq for r in batch]
        plan.max_seq = max(seqs)
        first_seq = dev.first_seq
        if first_seq is None:
            first_seq = min(seqs) if floor is None else min(floor, min(seqs))
        c = dev.contiguous if dev.contiguous is not None else first_seq - 1
        pending = set(dev.pending)
        pending.update(s for s in seqs if s > c)
        gaps = list(dev.gaps) + [(r.first, r.first + r.count - 1) for r in batch
                                 if r.kind == KIND_GAP and r.count > 0]
        while True:
            if c + 1 in pending:
                pending.discard(c + 1)
                c += 1
                continue
            reach = max((last_ for first, last_ in gaps if first <= c + 1 <= last_), default=None)
            if reach is None:
                break
            c = reach
            pending = {s for s in pending if s > c}
        plan.first_seq, plan.contiguous = first_seq, c
        plan.pending = pending
        plan.gaps = [g for g in gaps if g[1] > c]
        return plan

    def _new_value(self, ch: int, data: bytes, value_rows: list[tuple]) -> tuple:
        """Decode a (channel, raw) pair not in the cache and give its readings value ids."""
        data = bytes(data)
        vid = self._next_vid
        out = []
        for rd in self._decoder.decode(ch, data):
            out.append((rd[0], rd[1], vid))
            value_rows.append((vid, rd[0], rd[1], data))
            self._raw_of[vid] = data
            vid += 1
        self._next_vid = vid
        # (signal, value, id), or for several readings (None, None, None, readings).
        entry = out[0] if len(out) == 1 else (None, None, None, tuple(out))
        self._values[ch][data] = entry
        self._values_n += 1
        return entry

    def _forget_values(self, *, ids_unsure: bool = True) -> None:
        """Empty the value cache; ``ids_unsure``: also re-read the next free id (after a
        failed batch, or values deleted)."""
        for d in self._values:
            d.clear()
        self._values_n = 0
        self._raw_of.clear()
        if ids_unsure:
            self._next_vid = None

    async def _commit_plan(self, dev: _Device, plan: _Plan) -> None:
        async with self.db.transaction(f"storing {len(plan.records)} records of device {dev.id}", locked=True):
            # The rows go in on this thread, not aiosqlite's: executemany drops and
            # retakes the GIL for every row, and with the event loop busy beside it
            # (derivation of the previous batch) each retake waits out the switch
            # interval; ingest ran at half speed. Here nothing competes: the loop is
            # held for the batch (~2 us a sample). The connection is idle on
            # aiosqlite's thread meanwhile (we hold the lock and awaited BEGIN).
            # COMMIT (the fsync), on leaving, waits without the GIL: derivation runs beside it.
            _apply_plan(self.db.raw, dev.num, plan)

    # ---- derived data: events, trips, service, outbox -----------------------

    async def put_event(self, event: Event, outbox: Sequence[tuple[str, bytes]] = ()) -> list[int]:
        """Insert or update ``event`` (by id) and queue ``(target, payload)`` entries for it,
        in one transaction, so an event is never stored without its deliveries.

        Returns the outbox ids. When more than ``outbox_max`` entries are pending, the
        oldest are marked ``dropped`` (counted in :meth:`outbox_counts`, logged).
        """
        now = self._now_ms()
        device = normalize_device_id(event.device)
        ids = []
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
                ids.append(cur.lastrowid)
            dropped = 0
            if outbox:
                cur = await c.execute(
                    "UPDATE outbox SET state='dropped', last_error='outbox full' WHERE id IN"
                    " (SELECT id FROM outbox WHERE state='pending' ORDER BY id DESC LIMIT -1 OFFSET ?)",
                    (self._outbox_max,))
                dropped = cur.rowcount
        if dropped > 0:
            log.warning("outbox full (%d pending max): dropped the %d oldest entries", self._outbox_max, dropped)
        return ids

    async def events(self, device: str | None = None, *, since_ms: int | None = None,
                     open_only: bool = False, limit: int = 100) -> list[Event]:
        """Events, newest first."""
        where, args = ["1"], []
        if device is not None:
            where.append("device=?")
            args.append(normalize_device_id(device))
        if since_ms is not None:
            where.append("opened_ms>=?")
            args.append(since_ms)
        if open_only:
            where.append("cleared_ms IS NULL")
        sql = ("SELECT id, device, type, severity, opened_ms, cleared_ms, values_json, message FROM events"
               " WHERE {} ORDER BY opened_ms DESC, id LIMIT ?".format(" AND ".join(where)))
        rows = await self.db.fetch(sql, (*args, limit))
        return [Event(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7]) for r in rows]

    def anchor_base(self, device_id: str, boot: int) -> tuple[int, bool] | None:
        """(wall_ms - t_ms offset, approximate?) of a boot, as ingest mapped it; None
        for a boot not seen (call after ingest: it reads what ingest cached)."""
        device_id = normalize_device_id(device_id)
        idx = boot >> EPOCH_BOOT_SHIFT
        a = None
        for dev in self._devices.values():
            if dev.id == device_id and dev.idx == idx:
                a = dev.anchors.get(boot)
                break
        if a is None:
            return None
        return a.wall_ms - a.t0, bool(a.approx)

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
                (normalize_device_id(device), seq, snapshot, self._now_ms()))], locked=True)

    async def replay_items(self, device: str, after_seq: int, upto_seq: int | None = None,
                           chunk: int = 2000) -> AsyncIterator[tuple]:
        """Stored records of a device with seq in (after_seq, upto_seq], in seq order,
        as the rules engine takes them: ("samples", seq, [(wall_ms, signal, value)]),
        ("dtc", seq, wall_ms, mode, codes, ecus) or ("event", seq, wall_ms, code)."""
        num = await self._num(device)
        if num is None:
            return
        hi = (1 << 62) if upto_seq is None else upto_seq
        lo = after_seq
        while True:
            recs = await self.db.fetch("SELECT seq, kind FROM records WHERE device=? AND seq>? AND seq<=?"
                                       " ORDER BY seq LIMIT ?", (num, lo, hi, chunk))
            if not recs:
                return
            first, last = recs[0][0], recs[-1][0]
            rows = await self.db.fetch("SELECT seq, time_ms, channel, value FROM samples WHERE device=?"
                                       " AND seq BETWEEN ? AND ? ORDER BY seq, n, channel", (num, first, last))
            dtcs = {r[0]: r[1:] for r in await self.db.fetch(
                "SELECT seq, time_ms, mode, codes, ecus FROM dtcs WHERE device=? AND seq BETWEEN ? AND ?",
                (num, first, last))}
            evs = {r[0]: r[1:] for r in await self.db.fetch(
                "SELECT seq, time_ms, code FROM device_events WHERE device=? AND seq BETWEEN ? AND ?",
                (num, first, last))}
            by_seq: dict[int, list] = {}
            for seq, t, ch, v in rows:
                # Undecodable values too: the engine advances its clock on them, live
                # and in replay alike.
                by_seq.setdefault(seq, []).append((t, ch, v))
            for seq, kind in recs:
                if kind == KIND_SAMPLES:
                    yield ("samples", seq, by_seq.get(seq, []))
                elif kind == KIND_DTC and seq in dtcs:
                    t, mode, codes, ecus = dtcs[seq]
                    yield ("dtc", seq, t, mode, json.loads(codes), json.loads(ecus))
                elif kind == KIND_EVENT and seq in evs:
                    t, code = evs[seq]
                    yield ("event", seq, t, code)
            lo = last

    async def put_trip(self, trip: Trip) -> None:
        """Insert or update ``trip`` (by id)."""
        device = normalize_device_id(trip.device)
        async with self.db.lock:
            await self.db.write(f"storing trip {trip.id}", [(
                "INSERT INTO trips (id, device, started_ms, ended_ms, distance_km, fuel_l, values_json)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET ended_ms=excluded.ended_ms,"
                " distance_km=excluded.distance_km, fuel_l=excluded.fuel_l, values_json=excluded.values_json",
                (trip.id, device, trip.started_ms, trip.ended_ms, trip.distance_km, trip.fuel_l,
                 json.dumps(trip.values, sort_keys=True)))], locked=True)

    async def trips(self, device: str | None = None, *, since_ms: int | None = None,
                    limit: int = 100) -> list[Trip]:
        """Trips, newest first."""
        where, args = ["1"], []
        if device is not None:
            where.append("device=?")
            args.append(normalize_device_id(device))
        if since_ms is not None:
            where.append("started_ms>=?")
            args.append(since_ms)
        rows = await self.db.fetch(
            "SELECT id, device, started_ms, ended_ms, distance_km, fuel_l, values_json FROM trips"
            " WHERE {} ORDER BY started_ms DESC LIMIT ?".format(" AND ".join(where)), (*args, limit))
        return [Trip(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    async def add_service(self, device: str, done_ms: int, odometer_km: float | None = None,
                          note: str = "") -> int:
        """Record a service (resets the service reminder); returns its id."""
        device = normalize_device_id(device)
        async with self.db.lock:
            c = self.db.conn
            try:
                cur = await c.execute("INSERT INTO service_records (device, done_ms, odometer_km, note)"
                                      " VALUES (?,?,?,?)", (device, done_ms, odometer_km, note))
                return cur.lastrowid
            except sqlite3.Error as e:
                raise _map_error(e, "storing service record") from e

    async def services(self, device: str) -> list[tuple[int, int, float | None, str]]:
        """``(id, done_ms, odometer_km, note)`` of a device's services, newest first."""
        return [tuple(r) for r in await self.db.fetch(
            "SELECT id, done_ms, odometer_km, note FROM service_records WHERE device=?"
            " ORDER BY done_ms DESC", (normalize_device_id(device),))]

    async def outbox_due(self, target: str, *, now_ms: int | None = None, limit: int = 100) -> list[OutboxEntry]:
        """Pending entries of ``target`` whose next attempt is due, oldest first."""
        now = self._now_ms() if now_ms is None else now_ms
        rows = await self.db.fetch(
            "SELECT id, target, event_id, payload, created_ms, attempts, next_attempt, last_error, state"
            " FROM outbox WHERE target=? AND state='pending' AND next_attempt<=? ORDER BY id LIMIT ?",
            (target, now, limit))
        return [OutboxEntry(*r) for r in rows]

    async def outbox_sent(self, entry_id: int) -> None:
        """Mark an entry delivered."""
        async with self.db.lock:
            await self.db.write(f"marking outbox entry {entry_id} sent", [
                ("UPDATE outbox SET state='sent', attempts=attempts+1, last_error=NULL WHERE id=?", (entry_id,))],
                locked=True)

    async def outbox_failed(self, entry_id: int, error: str, next_attempt_ms: int) -> None:
        """Count a failed attempt and schedule the next one."""
        async with self.db.lock:
            await self.db.write(f"marking outbox entry {entry_id} failed", [
                ("UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt=? WHERE id=?",
                 (error, next_attempt_ms, entry_id))], locked=True)

    async def outbox_counts(self) -> dict[tuple[str, str], int]:
        """``(target, state) -> entries``."""
        rows = await self.db.fetch("SELECT target, state, COUNT(*) FROM outbox GROUP BY target, state", ())
        return {(r[0], r[1]): r[2] for r in rows}

    # ---- queries -----------------------------------------------------------

    async def _num(self, device: str) -> int | None:
        rows = await self.db.fetch("SELECT num FROM devices WHERE id=?", (normalize_device_id(device),))
        return rows[0][0] if rows else None

    async def samples(self, device: str, channel: int, *, since_ms: int | None = None,
                      until_ms: int | None = None, limit: int = 1000, newest: bool = False) -> list[SampleRow]:
        """Samples of one signal (a decode signal id) in ``[since, until)``, oldest first:
        the oldest ``limit`` of them, or with ``newest`` the newest ``limit``."""
        num = await self._num(device)
        if num is None:
            return []
        order = "time_ms DESC, seq DESC, n DESC" if newest else "time_ms, seq, n"
        rows = await self.db.fetch(
            "SELECT time_ms, channel, value, raw, approx, boot, t_ms, seq FROM samples"
            f" WHERE device=? AND channel=? AND time_ms>=? AND time_ms<? ORDER BY {order} LIMIT ?",
            (num, channel, -(1 << 62) if since_ms is None else since_ms,
             1 << 62 if until_ms is None else until_ms, limit))
        out = [SampleRow(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7]) for r in rows]
        return out[::-1] if newest else out

    async def export(self, device: str, *, since_ms: int | None = None, until_ms: int | None = None,
                     channels: Sequence[int] | None = None, chunk: int = 5000) -> AsyncIterator[SampleRow]:
        """All samples of a device, by channel then time, fetched ``chunk`` rows at a time
        (ingest can run between chunks)."""
        num = await self._num(device)
        if num is None:
            return
        if channels is None:
            channels = [r[0] for r in await self.db.fetch(
                "SELECT channel FROM channels WHERE device=? ORDER BY channel", (num,))]
        lo = -(1 << 62) if since_ms is None else since_ms
        hi = 1 << 62 if until_ms is None else until_ms
        for ch in channels:
            key = (lo, -1, -1)
            while True:
                rows = await self.db.fetch(
                    "SELECT time_ms, channel, value, raw, approx, boot, t_ms, seq, n FROM samples"
                    " WHERE device=? AND channel=? AND (time_ms, seq, n) > (?,?,?) AND time_ms<?"
                    " ORDER BY time_ms, seq, n LIMIT ?", (num, ch, key[0], key[1], key[2], hi, chunk))
                for r in rows:
                    if r[0] >= lo:
                        yield SampleRow(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7])
                if len(rows) < chunk:
                    break
                key = (rows[-1][0], rows[-1][7], rows[-1][8])

    async def dtcs(self, device: str, *, limit: int = 20, with_ecus: bool = False) -> list[tuple]:
        """``(time_ms, mode, codes, approx)`` of a device's DTC records, newest first; with_ecus:
        ``(time_ms, mode, codes, approx, ecus)``, ecus beside each code its ECU's name ("" unknown)."""
        num = await self._num(device)
        if num is None:
            return []
        rows = await self.db.fetch("SELECT time_ms, mode, codes, approx, ecus FROM dtcs WHERE device=?"
                                   " ORDER BY time_ms DESC LIMIT ?", (num, limit))
        if with_ecus:
            return [(r[0], r[1], json.loads(r[2]), bool(r[3]), json.loads(r[4]) or [""] * len(json.loads(r[2])))
                    for r in rows]
        return [(r[0], r[1], json.loads(r[2]), bool(r[3])) for r in rows]

    async def put_freeze_frames(self, device: str, frames: dict[str, dict], read_ms: int) -> None:
        """Keep the freeze frames just read (code -> decoded frame), each replacing the code's last."""
        num = await self._num(device)
        if num is None:
            raise ValueError(f"no device {device} in the store")
        async with self.db.lock:
            await self.db.write("storing freeze frames", [(
                "INSERT INTO freeze_frames (device, code, read_ms, frame) VALUES (?,?,?,?) ON CONFLICT"
                " (device, code) DO UPDATE SET read_ms=excluded.read_ms, frame=excluded.frame",
                (num, code, read_ms, json.dumps(frame, sort_keys=True))) for code, frame in frames.items()],
                locked=True)

    async def freeze_frames(self, device: str) -> dict[str, tuple[int, dict]]:
        """code -> (read_ms, frame) of the freeze frames kept for a device."""
        num = await self._num(device)
        if num is None:
            return {}
        rows = await self.db.fetch("SELECT code, read_ms, frame FROM freeze_frames WHERE device=?", (num,))
        return {r[0]: (r[1], json.loads(r[2])) for r in rows}

    async def device_events(self, device: str, *, limit: int = 50) -> list[tuple[int, int, int, bool]]:
        """``(time_ms, code, millivolts, approx)`` of the dongle's EVENT records, newest first."""
        num = await self._num(device)
        if num is None:
            return []
        rows = await self.db.fetch("SELECT time_ms, code, millivolts, approx FROM device_events WHERE device=?"
                                   " ORDER BY time_ms DESC LIMIT ?", (num, limit))
        return [(r[0], r[1], r[2], bool(r[3])) for r in rows]

    async def status(self, device: str | None = None) -> list[DeviceStatus]:
        """Per-device bookkeeping: watermark, missing and lost records, latest values."""
        where, args = "", ()
        if device is not None:
            where, args = " WHERE id=?", (normalize_device_id(device),)
        devs = await self.db.fetch("SELECT num, id, name, address, vin, first_seen, last_seen, first_seq, contiguous"
                                   " FROM devices" + where + " ORDER BY id", args)
        out = []
        for num, dev_id, name, address, vin, first_seen, last_seen, first_seq, contiguous in devs:
            (records,), = await self.db.fetch("SELECT COUNT(*) FROM records WHERE device=?", (num,))
            (gaps, lost), = await self.db.fetch("SELECT COUNT(*), COALESCE(SUM(count),0) FROM gaps WHERE device=?",
                                                (num,))
            (top,), = await self.db.fetch("SELECT MAX(seq) FROM records WHERE device=?", (num,))
            missing = 0
            if contiguous is not None and top is not None and top > contiguous:
                (above,), = await self.db.fetch("SELECT COUNT(*) FROM records WHERE device=? AND seq>?",
                                                (num, contiguous))
                missing = top - contiguous - above
            last = {r[0]: (r[1], r[2], r[3]) for r in await self.db.fetch(
                "SELECT channel, last_ms, last_value, unit FROM channels WHERE device=?", (num,))}
            eps = await self.db.fetch("SELECT idx, epoch, first_seen FROM epochs WHERE device=? ORDER BY idx",
                                      (num,))
            epoch = since = None
            if eps:
                # The epoch the watermark columns follow: the one the newest record belongs to.
                cur_idx = (top >> EPOCH_SEQ_SHIFT) if top is not None else eps[-1][0]
                _idx, epoch, since = next((e for e in eps if e[0] == cur_idx), eps[-1])
                base = cur_idx << EPOCH_SEQ_SHIFT
                if contiguous is not None and contiguous >= base:
                    contiguous -= base
                if first_seq is not None and first_seq >= base:
                    first_seq -= base
            out.append(DeviceStatus(dev_id, name, address, vin, first_seen, last_seen, first_seq, contiguous,
                                    records, missing, gaps, lost, last, epoch, len(eps), since))
        return out

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
                self._forget_values()
                await self.db.conn.execute("VACUUM")
                await self.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:
                raise _map_error(e, "vacuum") from e


def _apply_plan(c: sqlite3.Connection, num: int, plan: _Plan) -> None:
    """Write a plan's rows inside the open transaction."""
    for boot, a, was_approx in plan.remaps:
        base = a.wall_ms - a.t0
        if was_approx:
            c.execute("UPDATE sample_rows SET time_ms=?+t_ms, approx=0 WHERE device=? AND boot=? AND approx=1",
                      (base, num, boot))
        else:  # an anchor of lower seq arrived late: rare, and a scan
            c.execute("UPDATE sample_rows SET time_ms=?+t_ms, approx=0 WHERE device=? AND boot=?", (base, num, boot))
        for table in ("device_events", "dtcs"):
            c.execute(f"UPDATE {table} SET time_ms=?+t_ms, approx=0 WHERE device=? AND boot=?", (base, num, boot))
    c.executemany("INSERT INTO records (device, seq, boot, kind, received_ms) VALUES (?,?,?,?,?)", plan.records)
    if plan.value_rows:
        c.executemany(_INSERT_VALUE, plan.value_rows)
    if plan.samples:
        c.executemany(_INSERT_SAMPLE, plan.samples)
    if plan.anchor_rows:
        c.executemany("INSERT OR REPLACE INTO anchors (device, boot, t0, wall_ms, seq, approx) VALUES (?,?,?,?,?,?)",
                      plan.anchor_rows)
    if plan.gap_rows:
        c.executemany("INSERT INTO gaps (device, seq, first, count, noticed_ms) VALUES (?,?,?,?,?)", plan.gap_rows)
    if plan.event_rows:
        c.executemany("INSERT INTO device_events VALUES (?,?,?,?,?,?,?,?)", plan.event_rows)
    if plan.dtc_rows:
        c.executemany("INSERT INTO dtcs VALUES (?,?,?,?,?,?,?,?,?)", plan.dtc_rows)
    if plan.channel_rows:
        c.executemany(
            "INSERT INTO channels (device, channel, unit, last_ms, last_value, last_raw)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (device, channel) DO UPDATE SET"
            " unit=excluded.unit, last_ms=excluded.last_ms, last_value=excluded.last_value,"
            " last_raw=excluded.last_raw WHERE excluded.last_ms >= channels.last_ms",
            plan.channel_rows)
    c.execute("UPDATE devices SET last_seen=?, first_seq=?, contiguous=? WHERE num=?",
              (plan.records[-1][4], plan.first_seq, plan.contiguous, num))
    c.execute("UPDATE epochs SET first_seq=?, contiguous=? WHERE device=? AND idx=?",
              (plan.first_seq, plan.contiguous, num, plan.idx))


@dataclass
class _Plan:
    records: list[tuple] = field(default_factory=list)
    samples: list[tuple] = field(default_factory=list)
    value_rows: list[tuple] = field(default_factory=list)
    anchor_rows: list[tuple] = field(default_factory=list)
    gap_rows: list[tuple] = field(default_factory=list)
    event_rows: list[tuple] = field(default_factory=list)
    dtc_rows: list[tuple] = field(default_factory=list)
    channel_rows: list[tuple] = field(default_factory=list)
    remaps: list[tuple[int, _Anchor, bool]] = field(default_factory=list)
    anchors: dict[int, _Anchor] = field(default_factory=dict)
    idx: int = 0
    first_seq: int | None = None
    contiguous: int | None = None
    max_seq: int | None = None
    pending: set[int] = field(default_factory=set)
    gaps: list[tuple[int, int]] = field(default_factory=list)
