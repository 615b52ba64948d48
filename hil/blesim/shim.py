"""The dongle side's `bluetooth` module, precompiled, and what it costs on the MicroPython heap.

On the board `bluetooth` is C: it costs the firmware's heap only its value buffers. The shim is
Python, so in simulation it sits in the same heap. Compiling it from source at import peaks at
~125 KB (more than a 64 KB board heap); from .mpy it keeps ~22 KB once active. So run the
firmware with `module_dir()` first on MICROPYPATH and `heapsize()` instead of the board's figure:
the firmware then has the board's budget to itself.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from hil.build_firmware import mpy_cross

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "hil" / "mpy" / "bluetooth.py"
SOURCES = (SOURCE, ROOT / "hil" / "mpy" / "blewire.py")  # the shim and the wire it imports
SHIM_HEAP_KB = 32  # the shim's retained heap (measured 22 KB after active(True)) plus ~1 KB a connection


def module_dir(build: Path | None = None) -> Path:
    """A directory holding bluetooth.mpy and blewire.mpy compiled from the current sources
    (rebuilt when either changes)."""
    digest = hashlib.sha256(b"".join(src.read_bytes() for src in SOURCES)).hexdigest()[:16]
    out_dir = (build or ROOT / "build" / "blesim") / digest
    for src in SOURCES:
        target = out_dir / (src.stem + ".mpy")
        if not target.exists():
            out_dir.mkdir(parents=True, exist_ok=True)
            partial = out_dir / f"{src.stem}.{os.getpid()}.tmp"
            subprocess.run([mpy_cross(), "-o", str(partial), str(src)], check=True, capture_output=True)
            partial.replace(target)  # atomic: parallel runs never see half a file
    return out_dir


_FOOTPRINT = """
import gc
import asyncio  # the firmware's own cost (frozen on the board), not the radio's
gc.collect()
before = gc.mem_alloc()
import bluetooth
ble = bluetooth.BLE()
ble.active(True)
gc.collect()
print(gc.mem_alloc() - before)
"""


def heap_bytes(exe: str | None = None) -> int:
    """What the shim keeps on this interpreter's heap once active (no connection): on the
    board `bluetooth` is C, so the firmware's figures leave this out. Measured once per
    interpreter and shim source."""
    import tempfile

    from hil import mpy

    exe = exe or mpy.interpreter()
    out = module_dir()
    cache = out / f"heap.{hashlib.sha256(exe.encode()).hexdigest()[:8]}"
    if cache.exists():
        return int(cache.read_text())
    with tempfile.TemporaryDirectory() as air:
        probe = Path(air) / "footprint.py"
        probe.write_text(_FOOTPRINT)
        r = subprocess.run(mpy.argv(probe, heapsize="1M", exe=exe), capture_output=True, text=True, timeout=60,
                           env=mpy.env(simulated_ble=False, extra=[out], sources=False, OBDSYNC_SIM_AIR=air))
    if r.returncode:
        raise RuntimeError("could not measure the bluetooth shim:\n" + r.stdout + r.stderr)
    n = int(r.stdout.split()[-1])
    part = out / f"heap.{os.getpid()}.tmp"
    part.write_text(str(n))
    part.replace(cache)
    return n


def heapsize(board: str = "64K") -> str:
    """The -X heapsize that leaves the firmware `board` bytes beside the shim."""
    units = {"K": 1, "M": 1024}
    kb = int(board[:-1]) * units[board[-1].upper()] if board[-1].isalpha() else int(board) // 1024
    return f"{kb + SHIM_HEAP_KB}K"
