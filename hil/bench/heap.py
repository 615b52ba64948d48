"""Figure 3: the firmware's heap in steady state.

The firmware's poll path (ELM327 driver, scheduler, RecordWriter, FlashLog) runs over
the link model under the heap the rig gives the firmware: the board's 64 KB data budget
plus the simulated radio plus the firmware's code. On the 64-bit unix port the code
costs ~95 KB of heap (bytecode loaded from .mpy lives in RAM, with 8-byte pointers; see
hil.build_firmware.code_heap_kb), which the ESP32 does not pay that way. Allocation is
the rise of gc.mem_alloc() over each window, which starts on a collected heap with
automatic collection off (hil/bench/mpy/fw_poll.py says why that reading cannot go below
zero), divided by the window's samples; the first window after start-up is warm-up and
not counted, nor a window in which a collection ran all the same.
What sealing records costs (RecordWriter.seal, its MAC included, and FlashLog.append)
is also reported apart, per record: the C hashlib's objects and digests of the MAC
(~0.5 KB; protocol.auth says why C and not the allocation-free bytecode SHA-256), plus
on 32-bit ports the frame CRC when it is >= 2**30 (dongle.flashlog). Figure "board"
has the same on the 32-bit interpreter.
Measured in the same firmware run as figure 1 when both are asked for.
"""

from __future__ import annotations

from typing import TypedDict

from hil.bench import pids
from hil.bench.common import BenchError, Context, Row, fmt


class HeapResult(TypedDict):
    seal_alloc_bytes: int
    records_sealed: int
    seal_bytes_per_record: float
    other_bytes_per_sample: float
    samples: int
    alloc_bytes: int
    bytes_per_sample: float
    per_window: list[tuple[int, int, int]]  # (values, bytes allocated, collections)
    collections: int
    windows_left_out: int  # steady windows in which a collection ran (not in the figures)
    peak_alloc: int
    heap_total: int | None
    heapsize: str
    code_heap_kb: int
    memory_error: bool
    note: str


class Steady(TypedDict):
    windows: list[pids.Window]
    samples: int
    alloc: int  # bytes allocated over these windows, sealing included
    seal: int  # of which sealing and storing records
    sealed: int
    secs: float
    left_out: int


def steady(fw: pids.ClientResult) -> Steady:
    """A firmware run's steady state: its windows after the first (which still opens files
    and seals the first records) in which no collection ran, summed."""
    ws = [w for w in fw["windows"][1:] if not w.get("collections", 0)]
    if not ws:
        raise BenchError("no steady window without a collection: " + repr(fw["windows"]))
    alloc = sum(w.get("alloc_bytes", 0) for w in ws)
    seal = sum(w.get("seal_alloc_bytes", 0) for w in ws)
    if alloc < seal:  # the seal's bytes are a part of the window's rise: a broken reading
        raise BenchError(f"windows read {alloc} B allocated, less than their sealing's {seal} B")
    return {"windows": ws, "samples": sum(w["values"] for w in ws), "alloc": alloc, "seal": seal,
            "sealed": sum(w.get("records_sealed", 0) for w in ws), "secs": sum(w["ms"] for w in ws) / 1000,
            "left_out": len(fw["windows"]) - 1 - len(ws)}


def run(ctx: Context) -> HeapResult:
    fw = ctx.firmware_run
    if fw is None:
        ctx.log("heap: firmware poll path on the unix port …")
        fw = pids.run_firmware(ctx)
    st = steady(fw)
    samples, alloc, seal, sealed = st["samples"], st["alloc"], st["seal"], st["sealed"]
    return {
        "seal_alloc_bytes": seal, "records_sealed": sealed,
        "seal_bytes_per_record": seal / max(1, sealed),
        "other_bytes_per_sample": (alloc - seal) / max(1, samples),
        "samples": samples, "alloc_bytes": alloc, "bytes_per_sample": alloc / max(1, samples),
        "per_window": [(w["values"], w["alloc_bytes"], w["collections"]) for w in fw["windows"]],
        "collections": sum(w.get("collections", 0) for w in fw["windows"][1:]),
        "windows_left_out": st["left_out"],
        "peak_alloc": max(w["peak_alloc"] for w in fw["windows"]),
        "heap_total": fw.get("heap_total"), "heapsize": fw["heapsize"], "code_heap_kb": fw["code_heap_kb"],
        "memory_error": any("MemoryError" in ln for ln in fw.get("output_tail", [])),
        "note": (f"64-bit unix port: the firmware's code costs ~{fw['code_heap_kb']} KB of heap (bytecode from"
                 f" .mpy lives in RAM), so the simulated heap {fw['heapsize']} is 64K of data + the radio shim"
                 " + code"),
    }


def rows(r: HeapResult) -> list[Row]:
    return [Row("Firmware heap per sample (steady state)",
                f"{fmt(r['bytes_per_sample'], 2)} B/sample over {r['samples']:,} samples "
                f"({fmt(r['seal_bytes_per_record'], 0)} B per sealed record, "
                f"{fmt(r['other_bytes_per_sample'], 2)} B/sample besides"
                + (f"; {r['windows_left_out']} window(s) with a collection left out" if r["windows_left_out"] else "")
                + "); "
                f"peak {r['peak_alloc'] / 1024:.0f} KB of {r['heapsize']} (code ~{r['code_heap_kb']} KB)",
                "—", "—", "0 B/sample besides sealing, ≤ 1 KB per record, no MemoryError",
                r["other_bytes_per_sample"] < 0.5 and r["seal_bytes_per_record"] <= 1024
                and not r["memory_error"])]
