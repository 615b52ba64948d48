"""Figure 9 ("board"): the firmware as an ESP32 without PSRAM runs it, measured on the
32-bit unix build (`make mpy32`: the ESP32's word size) and translated to the board's speed.

- Heap per sample and per sealed record: figure 3's poll path (hil/bench/mpy/fw_poll.py:
  ELM327 driver, scheduler, RecordWriter, FlashLog against the emulator) on the 32-bit build.
- Live heap through the long drive (its phases sped up): the rig with a daemon attached, the
  firmware as .mpy files (a stock firmware image: bytecode in the GC heap) and frozen into
  the image (firmware/manifest.py); each `heap` report (after a collection) minus what the
  rig's stand-ins hold: the simulated radio's own heap, and a connected central's while one
  is (C in NimBLE on the board), and the simulated clock that replaces TicksClock when the
  rig speeds time up. Goals (hil/README, "The memory budget"): with .mpy <= 80 KB
  (>= 25 % of the ~112 KB heap free), frozen the firmware's data <= 40 KB.
- Code: .mpy bytes per module for -march=xtensawin, and the heap each module costs when
  imported from .mpy and when frozen, on the 32-bit build.
- CPU per ELM request (the poll path's process CPU per request in the same run, waiting
  for the reply included: the driver polls the UART) and per record sealed (seal,
  MAC included: the C hashlib that protocol.auth selects, and protocol.sha256's bytecode for
  comparison), times the calibration factor: MicroPython's tests/perf_bench run on the 32-bit
  build in this same run against the scores published for an ESP32 at 240 MHz
  (hil/bench/calibrate.py), so a loaded or faster build machine moves both sides.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from hil import mpy
from hil.bench import calibrate
from hil.bench.common import BenchError, Context, LineProc, Row, fmt
from hil.build_firmware import SOURCES, code_heap_kb, cross_compile, frozen_tree, sim_tree

if TYPE_CHECKING:
    from hil.rig import Rig
    from protocol.record_decode import Record

LIVE_MPY_KB = 80
FROZEN_DATA_KB = 40
SEAL_BOARD_MS = 5.0
STALL_MS = 20.0
CHURN_B_PER_S = 1024
# protocol/'s daemon side: the firmware never imports these (tests/test_protocol_split.py),
# so they are neither in its heap nor in its code size.
DAEMON_ONLY = ("protocol.record_decode", "protocol.info_decode", "protocol.control_central")
# Imported for a moment and unloaded (dongle.unload; tests/test_flashlog.py,
# tests/test_firmware_startup.py, tests/test_elm327.py): not in the firmware's heap while it runs.
TRANSIENT = ("dongle.flashlog_boot", "dongle.startup", "dongle.wake", "dongle.elm_rare", "protocol.info",
             "protocol.uuids")


class SamplePath(TypedDict):
    samples: int
    bytes_per_sample_besides_sealing: float
    bytes_per_record: float
    records: int
    windows_left_out: int
    churn_b_per_s: float
    cpu_ms_per_request_unix: float
    cpu_ms_per_request_board: float  # the unix figure times the calibration factor
    pids_per_s: float
    ms_per_request: float


class Seal(TypedDict):
    """One sealing measurement of hil/bench/mpy/seal_cost.py."""
    impl: str  # "c" (hashlib) or "bytecode" (protocol.sha256)
    kind: str
    bytes: int
    us_unix: float
    alloc: float
    append_us_unix: float
    ms_board: float


class SimClock(TypedDict):
    code: int  # bytes: hil/mpy/simclock.py imported
    object: int  # the SimClock built from the drive's OBDSYNC_SIM_CLOCK


class RadioConnection(TypedDict):
    connection: int  # bytes the simulated radio holds for one connected central
    left: int  # what it still holds after the disconnect (not taken out: see _radio_connection_bytes)


class Crc(TypedDict):
    """FlashLog's frame CRC over a full record, one implementation (seal_cost.py, crc_cost)."""
    impl: str  # "c" (binascii.crc32) or "bytecode" (CRC-32 on 16-bit halves)
    bytes: int
    us_unix: float  # best of N
    alloc: float  # bytes per record
    ms_board: float


class LiveHeap(TypedDict):
    peak_live: int
    ready_live: int
    code_kb: float
    peak_data: int
    sim_clock: SimClock
    reports: int
    records: int
    memory_error: bool
    speedup: int
    real_s: float


class Modules(TypedDict):
    xtensawin_bytes: dict[str, int]
    heap_mpy: dict[str, int]
    heap_frozen: dict[str, int]


class CalibrationResult(TypedDict):
    factor: float
    range: tuple[float, float]
    per_bench: dict[str, float]
    scores: dict[str, float]


class BoardResult(TypedDict):
    interpreter: str
    calibration: CalibrationResult
    sample_path: SamplePath
    mac256_us: dict[str, float]
    seal: list[Seal]
    crc: list[Crc]
    modules: Modules
    radio_connection: RadioConnection
    live_mpy: LiveHeap
    live_frozen: LiveHeap


@contextmanager
def _on_mpy32() -> Iterator[None]:
    old = os.environ.get(mpy.INTERPRETER_ENV)
    os.environ[mpy.INTERPRETER_ENV] = str(mpy.MPY32)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(mpy.INTERPRETER_ENV, None)
        else:
            os.environ[mpy.INTERPRETER_ENV] = old


def _sample_path(ctx: Context, factor: float) -> SamplePath:
    from hil.bench import heap, pids

    fw = pids.run_firmware(ctx)
    st = heap.steady(fw)  # figure heap's windows and sums, on this interpreter
    ws = st["windows"]
    samples, alloc, seal, sealed, secs = st["samples"], st["alloc"], st["seal"], st["sealed"], st["secs"]
    cpu = [w["cpu_s"] for w in ws if "cpu_s" in w]
    requests = sum(w["requests"] for w in ws if "cpu_s" in w)
    all_requests = sum(w["requests"] for w in ws)
    cpu_ms = 1000 * sum(cpu) / requests if requests else float("nan")
    return {"samples": samples, "bytes_per_sample_besides_sealing": (alloc - seal) / max(1, samples),
            "bytes_per_record": seal / max(1, sealed), "records": sealed, "windows_left_out": st["left_out"],
            "churn_b_per_s": alloc / secs if secs else float("nan"),
            "cpu_ms_per_request_unix": cpu_ms, "cpu_ms_per_request_board": cpu_ms * factor,
            "pids_per_s": fw["pids_per_s"], "ms_per_request": 1000 * secs / max(1, all_requests)}


def _seal_cost(ctx: Context, factor: float) -> tuple[list[Seal], dict[str, float], list[Crc]]:
    """seal_cost.py's measurements: each sealing (its board time: the unix time scaled by
    `factor`), the MAC's µs per implementation, and the frame CRC's per implementation."""
    tree = sim_tree()
    flash = ctx.workdir / "seal_cost"
    flash.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(mpy.argv(mpy.ROOT / "hil" / "bench" / "mpy" / "seal_cost.py", str(flash),
                                str(ctx.pick(20, 100)), heapsize="256K"),
                       capture_output=True, text=True, timeout=600, env=mpy.env(simulated_ble=False, extra=[tree]))
    if r.returncode:
        raise BenchError("seal_cost.py failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("[")]
    seals: list[Seal] = [{"impl": str(i), "kind": str(k), "bytes": int(b), "us_unix": float(us), "alloc": float(a),
                          "append_us_unix": float(ap), "ms_board": float(us) * factor / 1000}
                         for _tag, i, k, b, us, a, ap in (x for x in lines if x[0] == "seal")]
    crcs: list[Crc] = [{"impl": str(i), "bytes": int(b), "us_unix": float(us), "alloc": float(a),
                        "ms_board": float(us) * factor / 1000}
                       for _tag, i, b, us, a in (x for x in lines if x[0] == "crc")]
    return seals, {str(x[1]): float(x[2]) for x in lines if x[0] == "mac256"}, crcs


class _Sink:
    def __init__(self) -> None:
        self.seqs: set[int] = set()
        self.top = -1

    async def ingest(self, device: str, records: list[Record], *, epoch: int = 0,
                     first_unacked: int | None = None) -> int:
        # The link passes the log's epoch and more (Store.ingest's keywords); one epoch here.
        self.seqs.update(r.seq for r in records)
        while self.top + 1 in self.seqs:
            self.top += 1
        return self.top


def _live_heap(ctx: Context, frozen: bool, connection: int) -> LiveHeap:
    """Drive the (sped-up) long drive with a daemon attached; heap reports minus the rig's
    stand-ins for what the board does in C or in hardware: the radio (its footprint, and
    `connection` bytes in the reports taken while a central is connected) and the simulated
    clock."""
    import asyncio

    from hil.blesim import SimClient, shim
    from hil.rig import Rig
    from hil.scenario import load
    from obdsync.link import DongleLink

    k = ctx.pick(240, 80)  # the long drive in ~15 s (quick) or ~45 s of real time
    sc = load("long_drive")
    sc = replace(sc, phases=tuple(replace(p, speedup=p.speedup * k) for p in sc.phases))
    work = ctx.workdir / ("live_frozen" if frozen else "live_mpy")
    old = os.environ.get("OBDSYNC_HEAP_REPORT_MS")
    os.environ["OBDSYNC_HEAP_REPORT_MS"] = str(500 * k)  # every half second of real driving

    async def drive(rig: Rig) -> int:
        link = DongleLink(rig.dongle.mac, rig.dongle.secret, _Sink(), backend=SimClient,
                          backend_kwargs={"air": str(rig.air)})
        task = asyncio.create_task(link.session())
        try:
            end = time.monotonic() + sc.total_real_s
            while time.monotonic() < end:
                if not rig.dongle.alive:
                    raise BenchError("the dongle died:\n" + rig.dongle.output())
                await asyncio.sleep(0.5)
        finally:
            link.stop()
            await asyncio.wait_for(task, 15)
        return link.stats.records

    try:
        with Rig(sc, work, frozen=frozen) as rig:
            ready = int(next(x for x in rig.dongle.lines if x.startswith("ready")).split()[3])
            records = asyncio.run(drive(rig))
            out = list(rig.dongle.lines)
            tree = frozen_tree() if frozen else sim_tree()
            clock = _sim_clock_bytes(ctx, tree, rig.dongle.clock.encode() if rig.dongle.clock else None, frozen)
    finally:
        if old is None:
            os.environ.pop("OBDSYNC_HEAP_REPORT_MS", None)
        else:
            os.environ["OBDSYNC_HEAP_REPORT_MS"] = old
    radio = shim.heap_bytes(str(mpy.MPY32))
    stand_ins = radio + clock["code"] + clock["object"]
    reports = []  # the firmware's own: each report minus the rig's stand-ins then
    connected = False
    for x in out:
        if x in ("connected", "disconnected"):
            connected = x == "connected"
        elif x.startswith("heap "):
            reports.append(int(x.split()[1]) - stand_ins - (connection if connected else 0))
    if not reports:
        raise BenchError("no heap reports:\n" + "\n".join(out[-30:]))
    # code_heap_kb imports simclock with the firmware: its code is not the firmware's either
    code = (code_heap_kb(tree, frozen=True) if frozen else code_heap_kb(tree)) * 1024 - clock["code"]
    peak = max(reports)
    return {"peak_live": peak, "ready_live": ready - stand_ins, "code_kb": round(code / 1024, 1),
            "peak_data": peak - code, "sim_clock": clock, "reports": len(reports), "records": records,
            "memory_error": any("MemoryError" in x for x in out), "speedup": k,
            "real_s": sc.total_real_s}


_SIM_CLOCK_PROBE = """
import gc
import os
gc.collect()
a = gc.mem_alloc()
from simclock import SimClock
gc.collect()
b = gc.mem_alloc()
c = SimClock() if os.getenv("OBDSYNC_SIM_CLOCK") else None
if c is not None:
    c.ms()
gc.collect()
print(b - a, gc.mem_alloc() - b)
"""


def _sim_clock_bytes(ctx: Context, tree: Path, spec: str | None, frozen: bool) -> SimClock:
    """The heap of the rig's simulated clock (hil/mpy/simclock.py: its module, and the object
    built from the drive's OBDSYNC_SIM_CLOCK), which main.py uses in place of the board's
    TicksClock when the rig speeds time up: a stand-in, like the radio, not the firmware's."""
    probe = ctx.workdir / "sim_clock_probe.py"
    probe.write_text(_SIM_CLOCK_PROBE)
    env = mpy.env(simulated_ble=False, extra=[tree], sources=not frozen)
    if spec:
        env["OBDSYNC_SIM_CLOCK"] = spec
    else:
        env.pop("OBDSYNC_SIM_CLOCK", None)
    r = subprocess.run(mpy.argv(probe, heapsize="1M", exe=str(mpy.MPY32)), capture_output=True, text=True,
                       timeout=60, env=env)
    if r.returncode:
        raise BenchError("sim clock probe failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
    code, obj = (int(x) for x in r.stdout.split())
    return {"code": code, "object": obj}


def _radio_connection_bytes(ctx: Context) -> RadioConnection:
    """What a connected central keeps on the simulated radio's heap (hil/bench/mpy/radio_conn.py):
    the live-heap reports taken while the daemon is connected leave it out, as the board keeps
    a connection in NimBLE, not in the GC heap."""
    import asyncio

    from bleak import BleakClient

    from hil.blesim import SimClient, shim

    air = ctx.workdir / "air_conn"
    air.mkdir(exist_ok=True)
    mac = "0B:D5:00:00:C0:01"
    env = mpy.env(simulated_ble=False, extra=[shim.module_dir(), mpy.ROOT], OBDSYNC_SIM_AIR=str(air),
                  OBDSYNC_SIM_MAC=mac)
    argv = mpy.argv(mpy.ROOT / "hil" / "bench" / "mpy" / "radio_conn.py", heapsize="1M", exe=str(mpy.MPY32))
    with LineProc(argv, env=env) as p:
        idle = int(p.expect("idle ", 30).split()[1])

        async def connect() -> None:
            async with BleakClient(mac, backend=SimClient, air=str(air)):
                await asyncio.to_thread(p.expect, "connected ", 30)

        asyncio.run(connect())
        gone = int(p.expect("gone ", 30).split()[1])
    conn = int(next(ln for ln in p.lines if ln.startswith("connected ")).split()[1])
    if conn <= idle:
        raise BenchError(f"radio connection probe: idle {idle} B, connected {conn} B")
    # "left" (after the disconnect) is what the shim keeps of connections had: not a connection's
    # own, so not taken out of the firmware's figure.
    return {"connection": conn - idle, "left": gone - idle}


def _code_sizes(ctx: Context) -> dict[str, int]:
    out = ctx.workdir / "xtensawin"
    sizes = {}
    for src_dir, pkg in SOURCES:
        for py in sorted((mpy.ROOT / src_dir).glob("*.py")):
            dst = out / pkg / (py.stem + ".mpy")
            dst.parent.mkdir(parents=True, exist_ok=True)
            cross_compile(py, dst, name=f"{pkg}/{py.name}", arch="xtensawin")
            sizes[f"{pkg}.{py.stem}"] = dst.stat().st_size
    return sizes


_PER_MODULE = """
import gc
import bluetooth
import asyncio
def m():
    gc.collect()
    return gc.mem_alloc()
for name in NAMES:
    a = m()
    __import__(name)
    print(name, m() - a)
"""


def _module_heap(ctx: Context, names: list[str], frozen: bool) -> dict[str, int]:
    from hil.blesim import shim

    tree = frozen_tree() if frozen else sim_tree()
    probe = ctx.workdir / f"per_module_{int(frozen)}.py"
    probe.write_text(_PER_MODULE.replace("NAMES", repr(names)))
    air = ctx.workdir / "air_probe"
    air.mkdir(exist_ok=True)
    r = subprocess.run(mpy.argv(probe, heapsize="1M", exe=str(mpy.MPY32)), capture_output=True, text=True,
                       timeout=120, env=mpy.env(simulated_ble=False, extra=[shim.module_dir(), tree],
                                                sources=not frozen, OBDSYNC_SIM_AIR=str(air)))
    if r.returncode:
        raise BenchError("per-module heap probe failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
    return {ln.split()[0]: int(ln.split()[1]) for ln in r.stdout.splitlines()}


def run(ctx: Context) -> BoardResult:
    why = mpy.frozen_unavailable()
    if why:
        raise BenchError(why)
    ctx.log("board: calibration, MicroPython's perf_bench on the 32-bit build …")
    cal = calibrate.measure(ctx.workdir / "perf_bench")
    calibration: CalibrationResult = {"factor": cal.factor, "range": (cal.low, cal.high), "per_bench": cal.per_bench,
                                      "scores": cal.scores}
    with _on_mpy32():
        ctx.log("board: the poll path on the 32-bit build …")
        sample_path = _sample_path(ctx, cal.factor)
        ctx.log("board: sealing cost, C hashlib and bytecode MAC …")
        # ms_board: seal's bytecode (the MAC too) scaled. The append is apart and not
        # scaled: most of it is the file write at flush, the OS's I/O here (LittleFS's
        # on the board), which the bytecode factor does not describe.
        seals, macs, crcs = _seal_cost(ctx, cal.factor)
        ctx.log("board: code size per module (xtensawin) and its heap …")
        sizes = _code_sizes(ctx)
        # Dependencies first, so each figure is the module's own; protocol.sha256 is not
        # loaded where hashlib.sha256 exists (protocol.auth).
        first = ["protocol.errors", "protocol.channels", "protocol.uuids", "protocol.auth", "protocol.record",
                 "protocol.control", "protocol.info", "protocol.frames", "dongle.persist", "dongle.clock",
                 "dongle.power", "dongle.plan", "dongle.elm327", "dongle.scheduler", "dongle.flashlog"]
        rest = [n for n in sizes if n not in first and n not in DAEMON_ONLY and n not in TRANSIENT
                and not n.endswith(("__init__", ".app", ".sha256"))]
        names = [n for n in first if n in sizes and n not in TRANSIENT] + rest + ["dongle.app"]
        modules: Modules = {"xtensawin_bytes": sizes, "heap_mpy": _module_heap(ctx, names, False),
                            "heap_frozen": _module_heap(ctx, names, True)}
        ctx.log("board: what a connection keeps on the simulated radio's heap …")
        radio_connection = _radio_connection_bytes(ctx)
        ctx.log("board: live heap through the long drive, .mpy …")
        live_mpy = _live_heap(ctx, False, radio_connection["connection"])
        ctx.log("board: live heap through the long drive, frozen …")
        live_frozen = _live_heap(ctx, True, radio_connection["connection"])
    return {"interpreter": str(mpy.MPY32), "calibration": calibration, "sample_path": sample_path,
            "mac256_us": macs, "seal": seals, "crc": crcs, "modules": modules, "radio_connection": radio_connection,
            "live_mpy": live_mpy, "live_frozen": live_frozen}


def rows(r: BoardResult) -> list[Row]:
    sp, lm, lf, cal = r["sample_path"], r["live_mpy"], r["live_frozen"], r["calibration"]
    seal = {(s["impl"], s["kind"]): s for s in r["seal"]}
    c_full, b_full = seal[("c", "full")], seal[("bytecode", "full")]
    crc = {c["impl"]: c for c in r["crc"]}
    hm, hf = r["modules"]["heap_mpy"], r["modules"]["heap_frozen"]
    sizes = {n: b for n, b in r["modules"]["xtensawin_bytes"].items() if n not in DAEMON_ONLY}
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:4]
    cal_note = (f"×{cal['factor']:.0f} ({cal['range'][0]:.0f}–{cal['range'][1]:.0f} over "
                f"{len(cal['per_bench'])} perf_bench benchmarks, this run, against published ESP32 240 MHz scores)")
    return [
        Row("32-bit: heap per sample (poll path) / per sealed record",
            f"{fmt(sp['bytes_per_sample_besides_sealing'], 2)} B/sample over {sp['samples']:,} samples; "
            f"{fmt(sp['bytes_per_record'], 0)} B/record; churn {fmt(sp['churn_b_per_s'], 0)} B/s",
            "—", "—", "0 B/sample, churn ≤ 1 KB/s",
            sp["bytes_per_sample_besides_sealing"] < 0.5 and sp["churn_b_per_s"] <= CHURN_B_PER_S),
        Row("32-bit: live heap through the long drive, .mpy (the rig's radio and clock left out)",
            f"peak {lm['peak_live'] / 1024:.1f} KB (code {lm['code_kb']} KB + data {lm['peak_data'] / 1024:.1f} KB), "
            f"{lm['reports']} reports, ×{lm['speedup']}",
            "board heap ≈ 112 KB", "—", f"≤ {LIVE_MPY_KB} KB", lm["peak_live"] <= LIVE_MPY_KB * 1024
            and not lm["memory_error"]),
        Row("32-bit: live heap through the long drive, frozen (the rig's radio and clock left out)",
            f"peak {lf['peak_live'] / 1024:.1f} KB (module objects {lf['code_kb']} KB + data "
            f"{lf['peak_data'] / 1024:.1f} KB)", "—", "—", f"data ≤ {FROZEN_DATA_KB} KB",
            lf["peak_data"] <= FROZEN_DATA_KB * 1024 and not lf["memory_error"]),
        Row("ESP32 CPU per record sealed (RecordWriter.seal, MAC in C hashlib)",
            f"{fmt(c_full['ms_board'], 2)} ms ({fmt(c_full['us_unix'], 0)} µs unix, {c_full['bytes']} B record, "
            f"{fmt(c_full['alloc'], 0)} B garbage); then FlashLog.append {fmt(c_full['append_us_unix'], 0)} µs unix "
            f"(not scaled: mostly the file write at flush, OS I/O); bytecode SHA-256: {fmt(b_full['ms_board'], 0)} ms, "
            f"{fmt(b_full['alloc'], 0)} B", cal_note, "—", f"≤ {SEAL_BOARD_MS:g} ms, no stall > {STALL_MS:g} ms",
            c_full["ms_board"] <= SEAL_BOARD_MS),
        Row("FlashLog frame CRC per record (binascii.crc32 kept; the allocation-free alternative beside it)",
            f"C: {fmt(crc['c']['us_unix'], 1)} µs unix, {fmt(crc['c']['alloc'], 0)} B/record (a boxed int when "
            f"≥ 2**30); bytecode on 16-bit halves: {fmt(crc['bytecode']['ms_board'], 1)} ms board "
            f"({fmt(crc['bytecode']['us_unix'], 0)} µs unix), {fmt(crc['bytecode']['alloc'], 0)} B, "
            f"for a {crc['c']['bytes']} B record", cal_note, "—", "—", None),
        Row("ESP32 CPU per ELM request (poll path all in, the wait for the reply included)",
            f"{fmt(sp['cpu_ms_per_request_board'], 1)} ms ({fmt(sp['cpu_ms_per_request_unix'], 3)} ms unix); "
            f"a request takes {fmt(sp['ms_per_request'], 1)} ms on the line", cal_note, "—", "—", None),
        Row("code size, -march=xtensawin .mpy (the firmware's modules; protocol's daemon side apart)",
            f"{sum(sizes.values()) / 1024:.1f} KB in {len(sizes)} modules; largest "
            + ", ".join(f"{n} {b / 1024:.1f}" for n, b in top), "—", "—", "—", None),
        Row("32-bit: heap each module holds once imported, .mpy / frozen (where the live heap's code goes)",
            f"{sum(hm.values()) / 1024:.1f} KB / {sum(hf.values()) / 1024:.1f} KB in {len(hm)} modules; largest "
            + ", ".join(f"{n} {b / 1024:.1f}/{hf.get(n, 0) / 1024:.1f}"
                        for n, b in sorted(hm.items(), key=lambda kv: -kv[1])[:5]), "—", "—", "—", None),
    ]
