"""Reading the store back: samples, exports, codes, events, trips, device bookkeeping, and
the stored records in order as derivation takes them (:meth:`Queries.replay_items`).

Reads only, over the shared :class:`~obdsync.db.Db` (its lock, SQLite's errors as
``StoreError``). ``events()`` and ``trips()`` filter through one WHERE builder.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from protocol.record import KIND_DTC, KIND_EVENT, KIND_SAMPLES

from .db import Db, Params
from .ingest import EPOCH_SEQ_SHIFT
from .model import (
    DeviceStatus,
    EpochInfo,
    Event,
    Held,
    HeldDongleEvent,
    HeldDtc,
    HeldSamples,
    SampleRow,
    Trip,
)
from .paths import normalize_device_id

_NO_LOWER, _NO_UPPER = -(1 << 62), 1 << 62


async def device_num(db: Db, device: str) -> int | None:
    """The store's number of a device (None: never met)."""
    rows = await db.fetch("SELECT num FROM devices WHERE id=?", (normalize_device_id(device),))
    return rows[0][0] if rows else None


def where(device: str | None, since_col: str, since_ms: int | None, *extra: str) -> tuple[str, Params]:
    """``WHERE …`` and its parameters of a device's rows (any device: None) whose ``since_col``
    is at or after ``since_ms`` (None: any), with ``extra`` conditions."""
    conds: list[str] = []
    args: list[Any] = []
    if device is not None:
        conds.append("device=?")
        args.append(normalize_device_id(device))
    if since_ms is not None:
        conds.append(f"{since_col}>=?")
        args.append(since_ms)
    conds.extend(extra)
    return " WHERE " + (" AND ".join(conds) if conds else "1"), tuple(args)


class Queries:
    """See the module docstring."""

    def __init__(self, db: Db) -> None:
        self.db = db

    async def samples(self, device: str, channel: int, *, since_ms: int | None = None,
                      until_ms: int | None = None, limit: int = 1000, newest: bool = False) -> list[SampleRow]:
        """Samples of one signal (a decode signal id) in ``[since, until)``, oldest first:
        the oldest ``limit`` of them, or with ``newest`` the newest ``limit``."""
        num = await device_num(self.db, device)
        if num is None:
            return []
        order = "time_ms DESC, seq DESC, n DESC" if newest else "time_ms, seq, n"
        rows = await self.db.fetch(
            "SELECT time_ms, channel, value, raw, approx, boot, t_ms, seq FROM samples"
            f" WHERE device=? AND channel=? AND time_ms>=? AND time_ms<? ORDER BY {order} LIMIT ?",
            (num, channel, _NO_LOWER if since_ms is None else since_ms,
             _NO_UPPER if until_ms is None else until_ms, limit))
        out = [SampleRow(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7]) for r in rows]
        return out[::-1] if newest else out

    async def export(self, device: str, *, since_ms: int | None = None, until_ms: int | None = None,
                     channels: Sequence[int] | None = None, chunk: int = 5000) -> AsyncIterator[SampleRow]:
        """All samples of a device, by channel then time, fetched ``chunk`` rows at a time
        (ingest can run between chunks)."""
        num = await device_num(self.db, device)
        if num is None:
            return
        if channels is None:
            channels = [r[0] for r in await self.db.fetch(
                "SELECT channel FROM channels WHERE device=? ORDER BY channel", (num,))]
        lo = _NO_LOWER if since_ms is None else since_ms
        hi = _NO_UPPER if until_ms is None else until_ms
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

    async def dtcs(self, device: str, *, limit: int = 20, with_ecus: bool = False) -> list[tuple[Any, ...]]:
        """``(time_ms, mode, codes, approx)`` of a device's DTC records, newest first; with_ecus:
        ``(time_ms, mode, codes, approx, ecus)``, ecus beside each code its ECU's name ("" unknown)."""
        num = await device_num(self.db, device)
        if num is None:
            return []
        rows = await self.db.fetch("SELECT time_ms, mode, codes, approx, ecus FROM dtcs WHERE device=?"
                                   " ORDER BY time_ms DESC LIMIT ?", (num, limit))
        if with_ecus:
            return [(r[0], r[1], json.loads(r[2]), bool(r[3]), json.loads(r[4]) or [""] * len(json.loads(r[2])))
                    for r in rows]
        return [(r[0], r[1], json.loads(r[2]), bool(r[3])) for r in rows]

    async def freeze_frames(self, device: str) -> dict[str, tuple[int, dict[str, Any]]]:
        """code -> (read_ms, frame) of the freeze frames kept for a device."""
        num = await device_num(self.db, device)
        if num is None:
            return {}
        rows = await self.db.fetch("SELECT code, read_ms, frame FROM freeze_frames WHERE device=?", (num,))
        return {r[0]: (r[1], json.loads(r[2])) for r in rows}

    async def device_events(self, device: str, *, limit: int = 50) -> list[tuple[int, int, int, bool]]:
        """``(time_ms, code, millivolts, approx)`` of the dongle's EVENT records, newest first."""
        num = await device_num(self.db, device)
        if num is None:
            return []
        rows = await self.db.fetch("SELECT time_ms, code, millivolts, approx FROM device_events WHERE device=?"
                                   " ORDER BY time_ms DESC LIMIT ?", (num, limit))
        return [(r[0], r[1], r[2], bool(r[3])) for r in rows]

    async def epochs(self, device: str) -> list[EpochInfo]:
        """The log epochs met for a device, oldest first, seqs as on the wire."""
        num = await device_num(self.db, device)
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

    async def status(self, device: str | None = None) -> list[DeviceStatus]:
        """Per-device bookkeeping: watermark, missing and lost records, latest values."""
        cond, args = ("", ()) if device is None else (" WHERE id=?", (normalize_device_id(device),))
        devs = await self.db.fetch("SELECT num, id, name, address, vin, first_seen, last_seen, first_seq, contiguous"
                                   " FROM devices" + cond + " ORDER BY id", args)
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
            last = await self._last_values(num)
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

    async def last_values(self, device: str) -> dict[int, tuple[int, float | None, str]]:
        """signal -> (time_ms, value, unit) of a device's latest sample of each signal."""
        num = await device_num(self.db, device)
        return {} if num is None else await self._last_values(num)

    async def _last_values(self, num: int) -> dict[int, tuple[int, float | None, str]]:
        return {r[0]: (r[1], r[2], r[3]) for r in await self.db.fetch(
            "SELECT channel, last_ms, last_value, unit FROM channels WHERE device=?", (num,))}

    async def events(self, device: str | None = None, *, since_ms: int | None = None,
                     open_only: bool = False, limit: int = 100) -> list[Event]:
        """Events, newest first."""
        cond, args = where(device, "opened_ms", since_ms, *(["cleared_ms IS NULL"] if open_only else []))
        rows = await self.db.fetch(
            "SELECT id, device, type, severity, opened_ms, cleared_ms, values_json, message FROM events"
            f"{cond} ORDER BY opened_ms DESC, id LIMIT ?", (*args, limit))
        return [Event(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7]) for r in rows]

    async def trips(self, device: str | None = None, *, since_ms: int | None = None,
                    limit: int = 100) -> list[Trip]:
        """Trips, newest first."""
        cond, args = where(device, "started_ms", since_ms)
        rows = await self.db.fetch(
            "SELECT id, device, started_ms, ended_ms, distance_km, fuel_l, values_json FROM trips"
            f"{cond} ORDER BY started_ms DESC LIMIT ?", (*args, limit))
        return [Trip(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    async def replay_items(self, device: str, after_seq: int, upto_seq: int | None = None,
                           chunk: int = 2000) -> AsyncIterator[Held]:
        """Stored records of a device with seq in (after_seq, upto_seq], in seq order, as
        derivation takes them (``model.Held``, on wall time: ``boot`` None)."""
        num = await device_num(self.db, device)
        if num is None:
            return
        hi = _NO_UPPER if upto_seq is None else upto_seq
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
            by_seq: dict[int, list[tuple[int, int, float | None]]] = {}
            for seq, t, ch, v in rows:
                # Undecodable values too: the engine advances its clock on them, live
                # and in replay alike.
                by_seq.setdefault(seq, []).append((t, ch, v))
            for seq, kind in recs:
                if kind == KIND_SAMPLES:
                    yield HeldSamples(seq, None, by_seq.get(seq, []))
                elif kind == KIND_DTC and seq in dtcs:
                    t, mode, codes, ecus = dtcs[seq]
                    yield HeldDtc(seq, None, t, mode, json.loads(codes), json.loads(ecus))
                elif kind == KIND_EVENT and seq in evs:
                    t, code = evs[seq]
                    yield HeldDongleEvent(seq, None, t, code)
            lo = last
