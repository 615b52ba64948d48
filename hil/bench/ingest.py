"""Figure 5: daemon ingest — a synthetic 1-million-sample backlog into a real SQLite file.

The backlog: records as the dongle seals them (protocol.record.RecordWriter, one a
second, the default plan's driving rates: dongle.plan.DEFAULT), preceded by a time
anchor, each signed with the telemetry key. The path measured is the daemon's from
the radio on: decode_record with its MAC check (what DongleLink does per
notification), then batches of 512 records (DongleLink.BATCH_RECORDS: a backlog
arrives in full batches) into obdsync.pipeline.Pipeline.ingest — store + rules +
event storage — when that module exists, else Store.ingest (decode + store: obdsync.ingest). Both
are measured when the pipeline exists, each on a fresh file; median of several runs.

Baseline, same data, same durability (WAL, synchronous=FULL): a naive daemon that
decodes each sample with python-OBD and INSERTs it with a COMMIT per sample. It is
measured on a sample of the rows and its rate extrapolated (at ~1 fsync per sample
the full million would take minutes).

Profile: a stage breakdown (wall time in decode_record, Ingester._plan, Ingester._commit_plan
and the rest of the pipeline, by wrapping those methods on the bench's own instances)
and cProfile's top functions of the event-loop thread. The rows' INSERTs run on the
loop's thread (Ingester._commit_plan in obdsync/ingest.py, see there why), BEGIN/COMMIT on aiosqlite's; with
the pipeline, derivation runs during those awaits, so it shows partly inside
_commit_plan's wall time.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import math
import pstats
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict

from hil.bench.common import Context, Row, fmt, median
from protocol.auth import Hmac, telemetry_key
from protocol.channels import CH_VOLTAGE
from protocol.record import RecordWriter, Signer
from protocol.record_decode import decode_record

if TYPE_CHECKING:
    from obdsync.pipeline import Pipeline

SECRET = bytes(range(32))
DEVICE = "be0c000000000001"
BATCH_RECORDS = 512
WALL_T0_MS = 1_732_500_000_000
GOAL_RATE = 200_000
GOAL_1M_S = 5.0


class Fed(TypedDict):
    """One run of the daemon's path over the backlog."""
    elapsed_s: float
    decode_record_s: float
    events: int | None  # events the rules stored (with the pipeline)


class Naive(TypedDict):
    rows: int
    elapsed_s: float
    rate: float
    extrapolated: bool


class Variant(TypedDict):
    runs_s: list[float]
    elapsed_s: float
    rate: float
    decode_record_s: float
    events: int | None
    seconds_per_1m: float


class Profile(TypedDict):
    wall_s: float
    stages_s: dict[str, float]
    top_functions: list[str]
    note: str


class IngestResult(TypedDict):
    samples: int
    records: int
    batch_records: int
    pipeline_available: bool
    parts: str
    store: Variant
    pipeline: NotRequired[Variant]
    naive: Naive
    headline: str  # "pipeline" or "store": the variant the figure is
    ratio_vs_naive: float
    profile: Profile

# dongle.plan.DEFAULT, driving column (100 ms units); the firmware's own table.
PLAN = ((0x0D, 2), (0x0C, 2), (0x04, 2), (0x11, 2), (0x05, 10), (0x0F, 10), (0x10, 10), (0x5E, 10),
        (0x2F, 100), (0x31, 100), (0xA6, 100), (0x01, 100), (0x42, 100), (CH_VOLTAGE, 50))


def _raw(ch: int, t: float) -> bytes:
    """Plausible ECU bytes at t seconds into a drive (an urban cycle): enough distinct
    values that the decoder's memo sees what it would see in a car."""
    c = t % 90
    speed = 0 if c < 10 or c > 75 else 50 * min(1.0, (c - 10) / 15, (75 - c) / 15)
    rpm = max(780, speed * 60) + 15 * math.sin(t * 7)
    if ch == 0x0C:
        return round(rpm * 4).to_bytes(2, "big")
    if ch == 0x0D:
        return bytes([round(speed)])
    if ch in (0x04, 0x11):
        return bytes([round(40 + 30 * math.sin(t / 3)) & 0xFF])
    if ch == 0x05:
        return bytes([min(130, 60 + int(t / 4))])
    if ch == 0x0F:
        return bytes([65])
    if ch == 0x10:
        return round(rpm / 2).to_bytes(2, "big")
    if ch == 0x5E:
        return round(rpm / 1.5).to_bytes(2, "big")
    if ch == 0x2F:
        return bytes([max(0, 200 - int(t / 300))])
    if ch == 0x31:
        return (1000 + int(t / 60)).to_bytes(2, "big")
    if ch == 0xA6:
        return (1234560 + int(t / 6)).to_bytes(4, "big")
    if ch == 0x01:
        return bytes([0, 0x07, 0xE5, 0x00])
    if ch == 0x42:
        return (14100 + int(20 * math.sin(t))).to_bytes(2, "big")
    return (14050 + int(30 * math.sin(t / 5))).to_bytes(2, "big")  # ATRV, mV


def backlog(samples: int) -> tuple[list[bytes], int]:
    """(encoded records, samples in them): an anchor, then one SAMPLES record a second."""
    key = telemetry_key(SECRET)
    w = RecordWriter(key)
    out = []
    small = bytearray(64)
    n = Signer(key).anchor(small, 0, 1, 0, WALL_T0_MS)
    out.append(bytes(small[:n]))
    seq, total, t_ms = 1, 0, 0
    while total < samples:
        for _ in range(10):  # ten 100 ms ticks: one record
            tick = t_ms // 100
            due = [ch for ch, iv in PLAN if tick % iv == 0]
            mode01 = [ch for ch in due if ch != CH_VOLTAGE]
            reqs = [mode01[i:i + 6] for i in range(0, len(mode01), 6)] + ([[CH_VOLTAGE]] if CH_VOLTAGE in due else [])
            at = t_ms + 20
            for req in reqs:
                data = [(ch, _raw(ch, at / 1000)) for ch in req]
                if not w.fits(len(data), sum(len(d) for _, d in data)):
                    n = w.seal(seq, 1)
                    out.append(bytes(w.out[:n]))
                    seq += 1
                w.group(at)
                for ch, d in data:
                    w.add(ch, d, 0, len(d))
                total += len(data)
                at += 45
            t_ms += 100
        n = w.seal(seq, 1)
        out.append(bytes(w.out[:n]))
        seq += 1
    return out, total


class _Timed:
    """Wall time spent in some methods of one object (wrapped on the instance only)."""

    def __init__(self) -> None:
        self.s: dict[str, float] = {}

    def wrap(self, obj: object, name: str, label: str) -> None:
        s = self.s
        s.setdefault(label, 0.0)
        if asyncio.iscoroutinefunction(getattr(obj, name)):
            afn: Callable[..., Awaitable[object]] = getattr(obj, name)

            async def timed_async(*a: object, **k: object) -> object:
                t = time.perf_counter()
                try:
                    return await afn(*a, **k)
                finally:
                    s[label] += time.perf_counter() - t
            setattr(obj, name, timed_async)
        else:
            fn: Callable[..., object] = getattr(obj, name)

            def timed(*a: object, **k: object) -> object:
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    s[label] += time.perf_counter() - t
            setattr(obj, name, timed)


def _pipeline_cls() -> type[Pipeline] | None:
    try:
        from obdsync.pipeline import Pipeline
        return Pipeline
    except ImportError:
        return None


async def _feed(db: Path, raws: list[bytes], with_rules: bool, profile: cProfile.Profile | None = None,
                stages: _Timed | None = None) -> Fed:
    from obdsync.daemon import tune_runtime
    from obdsync.store import Store

    tune_runtime()  # as the daemon's process runs
    _remove(db)
    store = await Store.open(db)
    pipe = None
    if with_rules:
        from obdsync.config import Config
        cls = _pipeline_cls()
        if cls is None:
            raise RuntimeError("with_rules asked, but obdsync.pipeline is missing")
        pipe = cls(store, Config())
    sink: Store | Pipeline = pipe or store
    hmac = Hmac(telemetry_key(SECRET))
    if stages is not None:
        part = store.ingester  # obdsync.ingest: the store's ingest part
        stages.wrap(part, "_plan", "Ingester._plan (decode values, build rows, watermark)")
        stages.wrap(part, "_commit_plan", "Ingester._commit_plan (SQLite; derivation runs beside its awaits)")
        stages.wrap(part, "_new_records", "Ingester._new_records (duplicate check)")
        stages.wrap(sink, "ingest", "ingest total")
    t_decode = 0.0
    acked: int | None = -1
    try:
        t0 = time.perf_counter()
        if profile is not None:
            profile.enable()
        for i in range(0, len(raws), BATCH_RECORDS):
            td = time.perf_counter()
            recs = [decode_record(r, hmac) for r in raws[i:i + BATCH_RECORDS]]
            t_decode += time.perf_counter() - td
            acked = await sink.ingest(DEVICE, recs)
        if pipe is not None:
            await pipe.flush()  # derivation runs beside the commits: count it to the end
        if profile is not None:
            profile.disable()
        elapsed = time.perf_counter() - t0
        events = pipe.events_stored if pipe is not None else None
        if pipe is not None:
            await pipe.close()
    finally:
        await store.close()
    if acked != len(raws) - 1:
        raise RuntimeError(f"ingest acked {acked}, expected {len(raws) - 1}")
    if stages is not None:
        stages.s["decode_record (MAC + parse)"] = t_decode
    return {"elapsed_s": elapsed, "decode_record_s": t_decode, "events": events}


def _remove(db: Path) -> None:
    for p in db.parent.glob(db.name + "*"):
        p.unlink()


def naive(db: Path, raws: list[bytes], rows_wanted: int) -> Naive:
    """Row per sample, COMMIT per sample, python-OBD decode per sample: the baseline."""
    from obdsync.decode import decode_with_obd

    _remove(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE samples (device TEXT, channel INTEGER, time_ms INTEGER, value REAL, raw BLOB)")
    hmac = Hmac(telemetry_key(SECRET))
    n = 0
    t0 = time.perf_counter()
    for raw in raws:
        rec = decode_record(raw, hmac)
        for t, ch, data in rec.samples:
            value: float | None
            if ch == CH_VOLTAGE:
                value = int.from_bytes(data, "big") / 1000
            else:
                try:
                    v = decode_with_obd(ch, data)
                except IndexError:  # beyond python-OBD's table (0xA6): kept raw, as a naive daemon would
                    v = None
                value = float(v.magnitude) if hasattr(v, "magnitude") else None
            conn.execute("BEGIN")
            conn.execute("INSERT INTO samples VALUES (?,?,?,?,?)", (DEVICE, ch, WALL_T0_MS + t, value, data))
            conn.execute("COMMIT")
            n += 1
            if n >= rows_wanted:
                break
        if n >= rows_wanted:
            break
    elapsed = time.perf_counter() - t0
    conn.close()
    return {"rows": n, "elapsed_s": elapsed, "rate": n / elapsed, "extrapolated": True}


def _profile_text(prof: cProfile.Profile, n: int = 14) -> list[str]:
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(n)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return lines[start:start + n + 1]


def run(ctx: Context) -> IngestResult:
    samples = ctx.pick(200_000, 1_000_000)
    repeats = ctx.pick(2, 3)
    naive_rows = ctx.pick(2_000, 10_000)
    t = time.perf_counter()
    raws, total = backlog(samples)
    ctx.log(f"ingest: built {len(raws):,} records, {total:,} samples in {time.perf_counter() - t:.1f} s")
    has_pipeline = _pipeline_cls() is not None
    variants = [("store", False)] + ([("pipeline", True)] if has_pipeline else [])
    measured: dict[str, Variant] = {}
    for name, rules in variants:
        runs = []
        for i in range(repeats):
            db = ctx.workdir / f"ingest-{name}-{i}.db"
            r = asyncio.run(_feed(db, raws, rules))
            runs.append(r)
            _remove(db)
            ctx.log(f"ingest: {name} run {i + 1}: {total / r['elapsed_s']:,.0f} samples/s")
        el = median(r["elapsed_s"] for r in runs)
        measured[name] = {"runs_s": [r["elapsed_s"] for r in runs], "elapsed_s": el, "rate": total / el,
                          "decode_record_s": median(r["decode_record_s"] for r in runs),
                          "events": runs[0]["events"], "seconds_per_1m": el * 1_000_000 / total}
    db = ctx.workdir / "ingest-naive.db"
    base = naive(db, raws, naive_rows)
    _remove(db)
    ctx.log(f"ingest: naive {base['rate']:,.0f} samples/s over {base['rows']:,} rows")
    head = "pipeline" if has_pipeline else "store"

    # Where the time goes: one more run of the headline path, stages timed and profiled.
    prof = cProfile.Profile()
    stages = _Timed()
    db = ctx.workdir / "ingest-profile.db"
    r = asyncio.run(_feed(db, raws, has_pipeline, prof, stages))
    _remove(db)
    total_s = stages.s.pop("ingest total") + stages.s["decode_record (MAC + parse)"]
    parts = dict(stages.s)
    inner = sum(v for k, v in parts.items() if k.startswith("Ingester."))
    parts["rest of ingest (pipeline: rules, held records, events)" if has_pipeline else "rest of Store.ingest"] = \
        total_s - parts["decode_record (MAC + parse)"] - inner
    res: IngestResult = {
        "samples": total, "records": len(raws), "batch_records": BATCH_RECORDS, "pipeline_available": has_pipeline,
        "parts": ("decode_record + Store.ingest (python-OBD decode, SQLite)"
                  + ("; and decode_record + Pipeline.ingest (store + rules + events)" if has_pipeline
                     else "; rules not yet: obdsync.pipeline is missing")),
        "store": measured["store"], "naive": base, "headline": head,
        "ratio_vs_naive": measured[head]["rate"] / base["rate"],
        "profile": {
            "wall_s": total_s,
            "stages_s": dict(sorted(parts.items(), key=lambda kv: -kv[1])),
            "top_functions": _profile_text(prof),
            "note": "profiled run (cProfile on): slower than the timed runs; shares are what matter",
        },
    }
    if "pipeline" in measured:
        res["pipeline"] = measured["pipeline"]
    return res


def rows(r: IngestResult) -> list[Row]:
    head = r["pipeline"] if r["headline"] == "pipeline" else r["store"]
    what = "decode + store + rules" if r["headline"] == "pipeline" else "decode + store (no rules yet)"
    out = [Row(f"Daemon ingest ({what}), {r['samples']:,} samples",
               f"{fmt(head['rate'], 0)} samples/s; 1 M in {fmt(head['seconds_per_1m'], 2)} s",
               f"naive row+commit per sample {fmt(r['naive']['rate'], 0)}/s (on {r['naive']['rows']:,} rows)",
               f"{fmt(r['ratio_vs_naive'], 0)}×", f"≥ {GOAL_RATE // 1000}k/s; 1 M < {GOAL_1M_S:g} s",
               head["rate"] >= GOAL_RATE and head["seconds_per_1m"] < GOAL_1M_S)]
    if r["headline"] == "pipeline":
        s = r["store"]
        out.append(Row("Daemon ingest, store only (no rules)", f"{fmt(s['rate'], 0)} samples/s", "—", "—",
                       "—", None))
    return out
