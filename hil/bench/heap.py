"""Figure 3: the firmware's heap in steady state.

The firmware's poll path (ELM327 driver, scheduler, RecordWriter, FlashLog) runs over
the link model under the heap the rig gives the firmware: the board's 64 KB data budget
plus the simulated radio plus the firmware's code. On the 64-bit unix port the code
costs ~95 KB of heap (bytecode loaded from .mpy lives in RAM, with 8-byte pointers; see
hil.build_firmware.code_heap_kb), which the ESP32 does not pay that way. Allocation is
the sum of gc.mem_alloc() rises between answered requests (hil/bench/mpy/fw_poll.py),
divided by the samples; the first window after start-up is warm-up and not counted.
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
from hil.bench.common import Context, Row, fmt


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
    peak_alloc: int
    heap_total: int | None
    heapsize: str
    code_heap_kb: int
    memory_error: bool
    note: str


def run(ctx: Context) -> HeapResult:
    fw = ctx.firmware_run
    if fw is None:
        ctx.log("heap: firmware poll path on the unix port …")
        fw = pids.run_firmware(ctx)
    ws = fw["windows"][1:] or fw["windows"]  # the first window still opens files, seals the first records
    samples = sum(w["values"] for w in ws)
    alloc = sum(w["alloc_bytes"] for w in ws)
    seal = sum(w.get("seal_alloc_bytes", 0) for w in ws)
    sealed = sum(w.get("records_sealed", 0) for w in ws)
    return {
        "seal_alloc_bytes": seal, "records_sealed": sealed,
        "seal_bytes_per_record": seal / max(1, sealed),
        "other_bytes_per_sample": (alloc - seal) / max(1, samples),
        "samples": samples, "alloc_bytes": alloc, "bytes_per_sample": alloc / max(1, samples),
        "per_window": [(w["values"], w["alloc_bytes"], w["collections"]) for w in fw["windows"]],
        "collections": sum(w["collections"] for w in ws),
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
                f"{fmt(r['other_bytes_per_sample'], 2)} B/sample besides); "
                f"peak {r['peak_alloc'] / 1024:.0f} KB of {r['heapsize']} (code ~{r['code_heap_kb']} KB)",
                "—", "—", "0 B/sample besides sealing, ≤ 1 KB per record, no MemoryError",
                r["other_bytes_per_sample"] < 0.5 and r["seal_bytes_per_record"] <= 1024
                and not r["memory_error"])]
