"""Ingest: a batch of the dongle's records into the database, durably, and what the
pipeline derives from next (:class:`Ingested`).

Delivery contract (protocol/README.md): :meth:`Ingester.ingest` stores a batch of decoded
records in one transaction committed with ``synchronous=FULL`` (the WAL is fsynced at
commit), drops duplicates by ``(device, seq)`` and returns the device's *contiguous
watermark*: the highest seq such that every seq from the first one this store ever saw
for the device up to it is stored, or named by a GAP record. That is what the link ACKs.
When it raises a :class:`~obdsync.db.StoreError` (disk full, database locked, ...) nothing
of the batch is stored and the watermark is unchanged: don't ACK, the dongle keeps the data.

The steps of one batch, each once: the duplicate check (:meth:`Ingester._new_records`),
the plan (:meth:`Ingester._plan`: the samples' values decoded through the value table, rows
mapped to wall time, the watermark moved by :func:`advance_watermark`, a pure function),
the commit (:meth:`Ingester._commit_plan`), and the result handed on: the watermark to
ack, the rows for the live gauges, the records as derivation takes them
(``model.Held``) and the anchors of the batch's boots, so nothing after ingest asks the
store again about what ingest just did.

Decoding happens here, in the plan's loop, because the value table (``sample_values``:
one row per distinct channel and raw bytes) is part of what is stored: a sample's raw
bytes are looked up once, giving its decoded readings and their stored ids together (a
separate decode pass before the store would walk every sample twice; this loop is the
ingest's hot path, ``make bench``'s ingest figure).

Time: samples carry ``(boot, t_ms since boot)``. A boot's ticks map to wall time through
its anchor: ``time_ms = wall_ms + (t_ms - t0)``. The anchor is the ANCHOR record of
lowest seq for that boot. Until one arrives, a provisional anchor (the receive time at the
batch's latest tick of that boot) is used and rows are flagged ``approx = 1``; when the
real anchor arrives they are re-mapped and the flag cleared.

The dongle's ticks wrap at 2**30 ms (12.4 days: dongle.clock, small ints on the ESP32), so a
longer boot starts its count again at 0. Ingest unwraps per boot: the first anchor a
boot gets (provisional or real) fixes its scale, and every later tick is placed on it by
seq, since a boot's records are sequential — a record at or after the anchor's seq is at
most TICKS_SLACK_MS before the anchor's tick and at most one period after it; one before
it the other way round (:func:`unwrap_tick`). ``t_ms`` and the anchors' ``t0`` are stored
unwrapped, so remapping stays ``time_ms = base + t_ms``. A boot that runs more than a
period on the far side of its anchor without a record is beyond this (the dongle writes
records and events far more often than every 12 days).
"""

from __future__ import annotations

import json
import logging
import operator
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Record kinds as on the wire (protocol/README.md): the one definition both sides use.
from protocol.record import KIND_ANCHOR, KIND_DTC, KIND_EVENT, KIND_GAP, KIND_SAMPLES

from .db import Db, map_error
from .decode import Decoder, dtcs_with_ecus
from .model import Held, HeldDongleEvent, HeldDtc, HeldMark, HeldSamples
from .paths import normalize_device_id

log = logging.getLogger("obdsync.store")

# ?8 (the value) is in the row for the live gauges and the rules, not in the table: it is bound, unused.
_INSERT_SAMPLE = (
    "INSERT INTO sample_rows (device, channel, time_ms, seq, n, boot, t_ms, v, approx)"
    " VALUES (?1,?2,?3,?4,?5,?6,?7,?9,?10)"
)
_INSERT_VALUE = "INSERT INTO sample_values (id, signal, value, raw) VALUES (?,?,?,?)"

#: Distinct (channel, raw bytes) kept with their value ids; past it the cache starts
#: afresh (and a pair seen again gets a new id: a few duplicate sample_values rows).
VALUE_CACHE_LIMIT = 1 << 16
_SIGNAL = operator.itemgetter(1)  # of a SAMPLE_ROW

#: The dongle's ticks period (dongle.clock: time.ticks_ms on the ESP32, small ints).
TICKS_PERIOD = 1 << 30
#: How long before its anchor's tick a record of higher seq may start: the samples a
#: RecordWriter staged before the ANCHOR was logged (a record holds seconds to minutes).
TICKS_SLACK_MS = 1 << 26

#: Store numbering of a log epoch's seqs and boots (schema step 4): the epoch's index
#: (0, 1, ... in the order met) shifted above the wire's u32 seq and u16 boot.
EPOCH_SEQ_SHIFT = 32
EPOCH_BOOT_SHIFT = 16

#: A value table entry: (signal, value, value id), or for a sample of several readings
#: (PID 0x01) (None, None, None, ((signal, value, value id), ...)).
ValueEntry = tuple[Any, ...]
Row = tuple[Any, ...]


class Record(Protocol):
    """What ingest reads of a ``protocol.record_decode.Record`` (the fields of its kind)."""

    kind: int
    seq: int
    boot: int
    t0: int
    samples: list[tuple[int, int, bytes]]
    first: int
    count: int
    wall_ms: int
    code: int
    millivolts: int
    mode: int
    codes: list[bytes]


@dataclass(frozen=True)
class Anchor:
    """A boot's clock: its tick ``t0`` was ``wall_ms``; ``approx``: provisional."""

    t0: int
    wall_ms: int
    seq: int | None
    approx: int

    @property
    def base(self) -> int:
        """What a tick of the boot adds to be wall ms."""
        return self.wall_ms - self.t0


def unwrap_tick(t: int, seq: int, a: Anchor) -> int:
    """A wrapped tick ``t`` of the record ``seq`` on the scale of its boot's anchor ``a``."""
    if a.seq is None:  # a provisional anchor stored before they carried their seq: the nearest
        lo = a.t0 - TICKS_PERIOD // 2
    elif seq >= a.seq:
        lo = a.t0 - TICKS_SLACK_MS
    else:
        lo = a.t0 + TICKS_SLACK_MS - TICKS_PERIOD + 1
    return lo + (t - lo) % TICKS_PERIOD


def advance_watermark(contiguous: int, pending: set[int],
                      gaps: Sequence[tuple[int, int]]) -> tuple[int, set[int], list[tuple[int, int]]]:
    """The watermark moved over stored seqs and GAP ranges.

    ``contiguous``: every seq up to it is accounted for; ``pending``: stored seqs above it;
    ``gaps``: ``(first, last)`` ranges the dongle said it lost. Returns the new watermark,
    the stored seqs still above it and the gap ranges still reaching above it."""
    c = contiguous
    pending = set(pending)
    while True:
        if c + 1 in pending:
            pending.discard(c + 1)
            c += 1
            continue
        reach = max((last for first, last in gaps if first <= c + 1 <= last), default=None)
        if reach is None:
            break
        c = reach
        pending = {s for s in pending if s > c}
    return c, pending, [g for g in gaps if g[1] > c]


@dataclass
class DeviceLog:
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
    anchors: dict[int, Anchor]

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


@dataclass
class _Plan:
    records: list[Row] = field(default_factory=list)
    samples: list[Row] = field(default_factory=list)
    value_rows: list[Row] = field(default_factory=list)
    anchor_rows: list[Row] = field(default_factory=list)
    gap_rows: list[Row] = field(default_factory=list)
    event_rows: list[Row] = field(default_factory=list)
    dtc_rows: list[Row] = field(default_factory=list)
    channel_rows: list[Row] = field(default_factory=list)
    remaps: list[tuple[int, Anchor, bool]] = field(default_factory=list)
    anchors: dict[int, Anchor] = field(default_factory=dict)
    held: list[Held] = field(default_factory=list)
    idx: int = 0
    first_seq: int | None = None
    contiguous: int | None = None
    max_seq: int | None = None
    pending: set[int] = field(default_factory=set)
    gaps: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Ingested:
    """What one stored batch hands on (all in store numbering, :data:`EPOCH_SEQ_SHIFT`)."""

    acked: int | None
    """the epoch's watermark as a wire seq: what the link acks (None: nothing of the epoch stored)"""
    seq_base: int = 0
    """what the store adds to a wire seq of this epoch"""
    held: list[Held] = field(default_factory=list)
    """the new records (each exactly once, duplicates dropped), in seq order, as derivation takes them"""
    rows: list[Row] = field(default_factory=list)
    """their sample rows (:data:`obdsync.model.SAMPLE_ROW`): the live gauges' input"""
    anchors: dict[int, tuple[int, bool]] = field(default_factory=dict)
    """boot -> (what its ticks add to be wall ms, provisional?) of the batch's boots, after it"""
    last_values: dict[int, tuple[int, float | None, str]] = field(default_factory=dict)
    """signal -> (time_ms, value, unit) of the batch's latest sample per signal (the channels table)"""

    @property
    def contiguous(self) -> int | None:
        """The watermark in store numbering."""
        return None if self.acked is None else self.seq_base + self.acked


class Ingester:
    """The ingest part of the store (see the module docstring): the devices' log
    bookkeeping and the value table's cache, over the shared :class:`~obdsync.db.Db`."""

    def __init__(self, db: Db, decoder: Decoder) -> None:
        self.db = db
        self.decoder = decoder
        self._devices: dict[tuple[str, int], DeviceLog] = {}  # (device id, epoch)
        # channel -> raw bytes -> ValueEntry: one dict lookup per sample, without
        # building a key tuple.
        self._values: list[dict[bytes, ValueEntry]] = [{} for _ in range(256)]
        self._values_n = 0
        self._raw_of: dict[int, bytes] = {}  # value id -> raw bytes, for the channels table
        self._next_vid: int | None = None  # None: read MAX(id) first

    # ---- devices -----------------------------------------------------------

    async def _device_num(self, device_id: str) -> int:
        c = self.db.conn
        async with c.execute("SELECT num FROM devices WHERE id=?", (device_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            now = self.db.now_ms()
            try:
                await c.execute("INSERT INTO devices (id, first_seen, last_seen) VALUES (?,?,?)",
                                (device_id, now, now))
            except sqlite3.Error as e:
                raise map_error(e, f"adding device {device_id}") from e
            async with c.execute("SELECT num FROM devices WHERE id=?", (device_id,)) as cur:
                row = await cur.fetchone()
        assert row is not None  # just inserted, under the lock
        num: int = row[0]
        return num

    async def _device(self, device_id: str, epoch: int = 0) -> DeviceLog:
        dev = self._devices.get((device_id, epoch))
        if dev is not None:
            return dev
        c = self.db.conn
        num = await self._device_num(device_id)
        async with c.execute("SELECT idx, first_seq, contiguous FROM epochs WHERE device=? AND epoch=?",
                             (num, epoch)) as cur:
            known = await cur.fetchone()
        if known is not None:
            idx, first_seq, contiguous = known
        else:
            async with c.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM epochs WHERE device=?", (num,)) as cur:
                got = await cur.fetchone()
            idx = got[0] if got is not None else 0
            try:
                await c.execute("INSERT INTO epochs (device, idx, epoch, first_seen) VALUES (?,?,?,?)",
                                (num, idx, epoch, self.db.now_ms()))
            except sqlite3.Error as e:
                raise map_error(e, f"adding log epoch {epoch:08x} of device {device_id}") from e
            if idx:
                log.warning("device %s: its log started over (epoch %08x, the %d. log met): wiped, reflashed"
                            " or replaced; the records of the earlier logs are kept", device_id, epoch, idx + 1)
            first_seq = contiguous = None
        lo, hi = idx << EPOCH_SEQ_SHIFT, ((idx + 1) << EPOCH_SEQ_SHIFT) - 1
        async with c.execute("SELECT MAX(seq) FROM records WHERE device=? AND seq BETWEEN ? AND ?",
                             (num, lo, hi)) as cur:
            top = await cur.fetchone()
        max_seq = top[0] if top is not None else None
        pending: set[int] = set()
        gaps: list[tuple[int, int]] = []
        if contiguous is not None:
            async with c.execute("SELECT seq FROM records WHERE device=? AND seq>? AND seq<=?",
                                 (num, contiguous, hi)) as cur:
                pending = {r[0] for r in await cur.fetchall()}
            async with c.execute("SELECT first, first+count-1 FROM gaps WHERE device=? AND first+count-1>?"
                                 " AND seq BETWEEN ? AND ?", (num, contiguous, lo, hi)) as cur:
                gaps = [(r[0], r[1]) for r in await cur.fetchall()]
        blo, bhi = idx << EPOCH_BOOT_SHIFT, ((idx + 1) << EPOCH_BOOT_SHIFT) - 1
        async with c.execute("SELECT boot, t0, wall_ms, seq, approx FROM anchors WHERE device=?"
                             " AND boot BETWEEN ? AND ?", (num, blo, bhi)) as cur:
            anchors = {r[0]: Anchor(r[1], r[2], r[3], r[4]) for r in await cur.fetchall()}
        dev = DeviceLog(num, device_id, idx, epoch, first_seq, contiguous, max_seq, pending, gaps, anchors)
        self._devices[(device_id, epoch)] = dev
        return dev

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
                  (name, address, vin, self.db.now_ms(), device_id))],
                locked=True,
            )

    # ---- ingest ------------------------------------------------------------

    async def ingest(self, device_id: str, records: Sequence[Record], *, epoch: int = 0,
                     first_unacked: int | None = None, received_ms: int | None = None) -> Ingested:
        """Store ``records`` (``protocol.record_decode.Record`` objects) of one log epoch of a device
        durably; see :class:`Ingested` for what comes back.

        Records already stored (same ``(device, epoch, seq)``) are dropped; so are repeats
        within the batch. ``first_unacked`` (the dongle's STREAM reply) is where an epoch
        met for the first time starts: a record below it lost on the air is then waited
        for, not skipped.

        Raises :class:`StoreFullError`, :class:`StoreBusyError` or :class:`StoreError`;
        then nothing of the batch is stored.
        """
        device_id = normalize_device_id(device_id)
        async with self.db.lock:
            dev = await self._device(device_id, epoch)
            base = dev.base
            if base:
                records = [_Shifted(r, base, dev.idx << EPOCH_BOOT_SHIFT) for r in records]
            now = self.db.now_ms() if received_ms is None else received_ms
            batch = await self._new_records(dev, records)
            if not batch:
                return Ingested(None if dev.contiguous is None else dev.contiguous - base, base)
            if self._next_vid is None:
                async with self.db.conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM sample_values") as cur:
                    got = await cur.fetchone()
                self._next_vid = got[0] if got is not None else 1
            floor = None if first_unacked is None else base + first_unacked
            plan = self._plan(dev, batch, now, floor)
            try:
                await self._commit_plan(dev, plan)
            except BaseException:
                # The ids given out for this batch's new values were not stored.
                self.forget_values()
                raise
            dev.first_seq, dev.contiguous = plan.first_seq, plan.contiguous
            dev.pending, dev.gaps = plan.pending, plan.gaps
            dev.anchors.update(plan.anchors)
            if plan.max_seq is not None:
                dev.max_seq = plan.max_seq if dev.max_seq is None else max(dev.max_seq, plan.max_seq)
            anchors = {b: (a.base, bool(a.approx)) for b in {h.boot for h in plan.held}
                       if b is not None and (a := dev.anchors.get(b)) is not None}
        assert dev.contiguous is not None  # a batch was stored
        last = {r[1]: (r[3], r[4], r[2]) for r in plan.channel_rows}
        return Ingested(dev.contiguous - base, base, plan.held, plan.samples, anchors, last)

    async def _new_records(self, dev: DeviceLog, records: Sequence[Record]) -> list[Record]:
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

    def _plan(self, dev: DeviceLog, batch: list[Record], now: int, floor: int | None = None) -> _Plan:
        """Everything the batch changes, computed before touching the database."""
        num = dev.num
        plan = _Plan(idx=dev.idx)
        staged = plan.anchors

        def anchor(boot: int) -> Anchor | None:
            a = staged.get(boot)
            return a if a is not None else dev.anchors.get(boot)

        # Anchors first, so the batch's own samples already map with them.
        latest: dict[int, Record] = {}  # boot -> its record of highest seq in the batch (not an anchor)
        for r in batch:
            if r.kind == KIND_ANCHOR:
                cur = anchor(r.boot)
                if cur is None or cur.approx or (cur.seq is not None and r.seq < cur.seq):
                    # On the boot's scale (unwrap_tick), so the rows mapped so far keep their t_ms.
                    t0 = r.t0 if cur is None else unwrap_tick(r.t0, r.seq, cur)
                    new = Anchor(t0, r.wall_ms, r.seq, 0)
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
                staged[boot] = Anchor(t, now, r.seq, 1)
                plan.anchor_rows.append((num, boot, t, now, r.seq, 1))

        rows = plan.samples
        append = rows.append
        held = plan.held
        values = self._values
        new_value = self._new_value
        value_rows = plan.value_rows
        if self._values_n >= VALUE_CACHE_LIMIT:
            # Only between batches: the rows of a plan keep finding their raw bytes.
            self.forget_values(ids_unsure=False)
        for r in batch:
            kind = r.kind
            seq, boot = r.seq, r.boot
            plan.records.append((num, seq, boot, kind, now))
            if kind == KIND_SAMPLES or kind == KIND_EVENT or kind == KIND_DTC:
                a = staged.get(boot) or dev.anchors[boot]  # every boot of the batch got one above
                wire_t0 = r.t0
                # A boot past the ticks' wrap: derivation reads t0 on the boot's scale.
                t0 = unwrap_tick(wire_t0, seq, a)
            if kind == KIND_SAMPLES:
                base = a.wall_ms - a.t0
                approx = a.approx
                shift = t0 - wire_t0  # a multiple of the period: 0 but past a wrap
                start = len(rows)
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
                held.append(HeldSamples(seq, boot, rows[start:]))
            elif kind == KIND_GAP:
                plan.gap_rows.append((num, seq, r.first, r.count, now))
                held.append(HeldMark(seq, boot))
            elif kind == KIND_EVENT:
                plan.event_rows.append((num, seq, boot, t0, a.wall_ms - a.t0 + t0, a.approx,
                                        r.code, r.millivolts))
                held.append(HeldDongleEvent(seq, boot, t0, r.code))
            elif kind == KIND_DTC:
                codes, ecus = dtcs_with_ecus(r.codes, getattr(r, "ecus", []))  # records older than ECU addresses: none
                plan.dtc_rows.append((num, seq, boot, t0, a.wall_ms - a.t0 + t0, a.approx, r.mode,
                                      json.dumps(codes), json.dumps(ecus)))
                held.append(HeldDtc(seq, boot, t0, r.mode, codes, ecus))
            else:
                held.append(HeldMark(seq, boot))  # an anchor: it moves the watermark only
        units = self.decoder.units
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
        pending = dev.pending | {s for s in seqs if s > c}
        gaps = list(dev.gaps) + [(r.first, r.first + r.count - 1) for r in batch
                                 if r.kind == KIND_GAP and r.count > 0]
        plan.first_seq = first_seq
        plan.contiguous, plan.pending, plan.gaps = advance_watermark(c, pending, gaps)
        return plan

    def _new_value(self, ch: int, data: bytes, value_rows: list[Row]) -> ValueEntry:
        """Decode a (channel, raw) pair not in the cache and give its readings value ids."""
        data = bytes(data)
        vid = self._next_vid
        assert vid is not None  # read before planning
        out = []
        for rd in self.decoder.decode(ch, data):
            out.append((rd[0], rd[1], vid))
            value_rows.append((vid, rd[0], rd[1], data))
            self._raw_of[vid] = data
            vid += 1
        self._next_vid = vid
        # (signal, value, id), or for several readings (None, None, None, readings).
        entry: ValueEntry = out[0] if len(out) == 1 else (None, None, None, tuple(out))
        self._values[ch][data] = entry
        self._values_n += 1
        return entry

    def forget_values(self, *, ids_unsure: bool = True) -> None:
        """Empty the value cache; ``ids_unsure``: also re-read the next free id (after a
        failed batch, or values deleted)."""
        for d in self._values:
            d.clear()
        self._values_n = 0
        self._raw_of.clear()
        if ids_unsure:
            self._next_vid = None

    async def _commit_plan(self, dev: DeviceLog, plan: _Plan) -> None:
        async with self.db.transaction(f"storing {len(plan.records)} records of device {dev.id}", locked=True):
            # The rows go in on this thread, not aiosqlite's: executemany drops and
            # retakes the GIL for every row, and with the event loop busy beside it
            # (derivation of the previous batch) each retake waits out the switch
            # interval; ingest ran at half speed. Here nothing competes: the loop is
            # held for the batch (~2 us a sample). The connection is idle on
            # aiosqlite's thread meanwhile (we hold the lock and awaited BEGIN).
            # COMMIT (the fsync), on leaving, waits without the GIL: derivation runs beside it.
            assert self.db.raw is not None  # Store.open gives it
            _apply_plan(self.db.raw, dev.num, plan)


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
