"""Figure 7: event latency — a record reaching the daemon → its event PUBACKed by a local
Mosquitto, p50/p99.

The daemon's own parts, in process: Store (a real SQLite file, synchronous=FULL) +
Pipeline (rules) + Forwarder with one MQTT target, Mosquitto (/usr/sbin/mosquitto) on a
free loopback port. The records are what the dongle sends (protocol.record, signed,
decoded with decode_record like DongleLink does): a time anchor, then per event one
SAMPLES record of live data (not timed) and one DTC record (mode 03) that alternately
lists a trouble code (``dtc_new`` opens: one outbox entry) and none (it clears and a
``dtc_cleared`` instant follows: two entries).

t0: Pipeline.ingest called with the DTC record. Two ends, both reported: the PUBACK
(aiomqtt's publish(qos=1) returned, the headline: "event PUBACKed by Mosquitto") and
the entry marked sent in the outbox (one more fsync'd UPDATE); of the last entry the
record caused. Events go one at a time, at a live pace (a record every LIVE_GAP_S), so
the engine's periodic work (state, snapshots) falls between them as in a car. Median
and 99th percentile (nearest rank) over the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict

from hil.bench.common import BenchError, Context, Row
from hil.bench.ingest import SECRET, WALL_T0_MS, _raw
from protocol.auth import Hmac, telemetry_key
from protocol.record import RecordWriter, Signer
from protocol.record_decode import decode_record

if TYPE_CHECKING:
    from obdsync.forward.outbox import Delivery
    from obdsync.model import Event

GOAL_P99_MS = 50
DEVICE = "be0c000000000007"
LIVE_GAP_S = 0.05
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
LIVE_CHANNELS = (0x0D, 0x0C, 0x04, 0x11, 0x05)


class Measured(TypedDict):
    lat_ms: list[float]
    lat_sent_ms: list[float]
    stored: int
    stages: list[dict[str, float]]  # per event: stage -> ms after t0


class Percentiles(TypedDict):
    p50: float
    p99: float


# The functional form: "from" is a keyword.
LatencyResult = TypedDict("LatencyResult", {
    "measured": bool,
    "why": NotRequired[str],  # when not measured
    "events": NotRequired[int],
    "p50_ms": NotRequired[float],
    "p99_ms": NotRequired[float],
    "sent_p50_ms": NotRequired[float],
    "sent_p99_ms": NotRequired[float],
    "lat_sent_ms": NotRequired[list[float]],
    "max_ms": NotRequired[float],
    "mean_ms": NotRequired[float],
    "lat_ms": NotRequired[list[float]],
    "stages_ms": NotRequired[dict[str, Percentiles]],
    "slowest": NotRequired[list[dict[str, float]]],
    "until": NotRequired[str],
    "from": NotRequired[str],
})


@contextlib.contextmanager
def _broker(workdir: Path) -> Iterator[int]:
    """Mosquitto on a free loopback port (the few lines of tests/mosquitto.py we need)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
                    "persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n")
    log = open(workdir / "mosquitto.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    finally:
        log.close()
    try:
        end = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise BenchError(f"mosquitto exited ({proc.returncode}): "
                                 + (workdir / "mosquitto.log").read_text(errors="replace")[-500:])
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > end:
                    raise BenchError("mosquitto does not accept connections") from None
                time.sleep(0.02)  # polling a port
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _records(events: int) -> list[tuple[bytes, bytes]]:
    """(live SAMPLES record, DTC record adding one code) per event, after an anchor."""
    key = telemetry_key(SECRET)
    w = RecordWriter(key)
    sign = Signer(key)
    buf = bytearray(512)
    anchor = bytes(buf[:sign.anchor(buf, 0, 1, 0, WALL_T0_MS)])
    out = [(anchor, b"")]
    seq, t = 1, 1000
    for i in range(events):
        for k in range(5):
            w.group(t + 200 * k)
            for ch in LIVE_CHANNELS:
                d = _raw(ch, (t + 200 * k) / 1000)
                w.add(ch, d, 0, len(d))
        live = bytes(w.out[:w.seal(seq, 1)])
        codes = b"" if i % 2 else bytes((0x03, 0x01))  # P0301, then none
        dtc = bytes(buf[:sign.dtc(buf, seq + 1, 1, t + 1000, 0x03, codes, len(codes) // 2)])
        out.append((live, dtc))
        seq += 2
        t += 1000
    return out


async def _measure(workdir: Path, port: int, events: int) -> Measured:
    from obdsync.config import Config, ForwardConfig, MqttTarget
    from obdsync.forward import Forwarder
    from obdsync.pipeline import Pipeline
    from obdsync.store import Store

    hmac = Hmac(telemetry_key(SECRET))
    recs = _records(events)
    store = await Store.open(workdir / "latency.db")
    fwd = Forwarder(store, ForwardConfig(mqtt=(MqttTarget(host="127.0.0.1", port=port, name="bench"),)))
    sql = fwd.workers[0].sql
    sent_at: dict[int, float] = {}
    puback_at: dict[int, float] = {}
    expected: list[int] = []
    sent = asyncio.Event()
    orig_sent, orig_send, orig_put = sql.sent, fwd.workers[0].sender.send, store.put_event

    # Wrapped on these instances only.
    async def timed_sent(entry_id: int, now_ms: int) -> None:
        await orig_sent(entry_id, now_ms)
        sent_at[entry_id] = time.perf_counter()
        sent.set()

    async def timed_send(delivery: Delivery) -> None:
        await orig_send(delivery)
        if delivery.entry_id is not None:
            puback_at[delivery.entry_id] = time.perf_counter()

    async def counted_put(event: Event, outbox: Sequence[tuple[str, bytes]] = ()) -> list[int]:
        ids = await orig_put(event, outbox)
        expected.extend(ids)
        return ids

    setattr(sql, "sent", timed_sent)  # noqa: B010 - on this instance, not its class
    setattr(fwd.workers[0].sender, "send", timed_send)  # noqa: B010
    setattr(store, "put_event", counted_put)  # noqa: B010
    # Stage stamps of the event in flight, to say where a slow one spent its time.
    marks: dict[str, float] = {}

    def stamp(obj: object, name: str, label: str) -> None:
        fn: Callable[..., Awaitable[object]] = getattr(obj, name)

        async def wrapped(*a: object, **k: object) -> object:
            marks.setdefault(label + ">", time.perf_counter())
            try:
                return await fn(*a, **k)
            finally:
                marks.setdefault(label, time.perf_counter())
        setattr(obj, name, wrapped)

    stamp(store, "put_event", "event stored")
    stamp(sql, "dropped_runs", "forwarder woke")
    stamp(sql, "pending", "outbox read")
    stamp(store, "save_rules_state", "rules snapshot saved")
    stamp(fwd.workers[0].sender, "send", "PUBACK")
    stages: list[dict[str, float]] = []
    pipeline = Pipeline(store, Config(), fwd)
    lat: list[float] = []
    lat_sent: list[float] = []
    try:
        await fwd.start()
        await pipeline.ingest(DEVICE, [decode_record(recs[0][0], hmac)])
        for live, dtc in recs[1:]:
            await pipeline.ingest(DEVICE, [decode_record(live, hmac)])
            await asyncio.sleep(LIVE_GAP_S)
            sent.clear()
            marks.clear()
            expected.clear()
            t0 = time.perf_counter()
            await pipeline.ingest(DEVICE, [decode_record(dtc, hmac)])
            marks["ingest returned"] = time.perf_counter()
            await pipeline.flush()  # derivation done: every entry of this record is queued
            if not expected:
                raise BenchError("a DTC record gave no outbox entry")
            deadline = t0 + 10
            while not all(i in sent_at for i in expected):
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise BenchError(f"outbox entries {expected} not all sent within 10 s ({sorted(sent_at)[-5:]}); mosquitto log: "
                                     + (workdir / "mosquitto.log").read_text(errors="replace")[-500:])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sent.wait(), left)
                sent.clear()
            lat.append((max(puback_at[i] for i in expected) - t0) * 1000)
            lat_sent.append((max(sent_at[i] for i in expected) - t0) * 1000)
            stages.append({k: round((v - t0) * 1000, 2) for k, v in sorted(marks.items(), key=lambda kv: kv[1])})
            await asyncio.sleep(LIVE_GAP_S)
        await pipeline.flush()
    finally:
        await fwd.stop()
        await pipeline.close()
        await store.close()
    return {"lat_ms": lat, "lat_sent_ms": lat_sent, "stored": pipeline.events_stored, "stages": stages}


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]  # nearest rank


def run(ctx: Context) -> LatencyResult:
    if not Path(MOSQUITTO).exists():
        return {"measured": False, "why": f"{MOSQUITTO} not found (apt-get install mosquitto)"}
    events = ctx.pick(60, 200)
    workdir = ctx.workdir / "latency"
    workdir.mkdir(exist_ok=True)
    with _broker(workdir) as port:
        r = asyncio.run(_measure(workdir, port, events))
    lat = r["lat_ms"]
    ls = r["lat_sent_ms"]
    ctx.log(f"latency: {len(lat)} records, to PUBACK p50 {statistics.median(lat):.1f} ms, p99 {_pct(lat, 99):.1f} ms;"
            f" to marked sent p50 {statistics.median(ls):.1f} ms, p99 {_pct(ls, 99):.1f} ms")
    return {"measured": True, "events": len(lat), "p50_ms": statistics.median(lat), "p99_ms": _pct(lat, 99),
            "sent_p50_ms": statistics.median(ls), "sent_p99_ms": _pct(ls, 99), "lat_sent_ms": ls,
            "max_ms": max(lat), "mean_ms": statistics.fmean(lat), "lat_ms": lat,
            "stages_ms": {k: {"p50": statistics.median(st[k] for st in r["stages"] if k in st),
                              "p99": _pct([st[k] for st in r["stages"] if k in st], 99)}
                          for k in r["stages"][0]},
            "slowest": sorted(r["stages"], key=lambda st: -max(st.values()))[:3],
            "until": "PUBACK of the record's last outbox entry (QoS 1); sent_*: that entry marked sent",
            "from": "Pipeline.ingest called with the DTC record (decoded, signed)"}


def rows(r: LatencyResult) -> list[Row]:
    if not r.get("measured"):
        return [Row("Event latency (record in → PUBACK at Mosquitto)", f"not measured: {r.get('why', '?')}", "—",
                    "—", f"p99 < {GOAL_P99_MS} ms", None)]
    return [Row("Event latency (record in → PUBACK at Mosquitto)",
                f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms over {r['events']} records"
                f" (marked sent: p50 {r['sent_p50_ms']:.1f}, p99 {r['sent_p99_ms']:.1f})", "—", "—",
                f"p99 < {GOAL_P99_MS} ms", r["p99_ms"] < GOAL_P99_MS)]
