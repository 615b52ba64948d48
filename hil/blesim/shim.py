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
SHIM_HEAP_KB = 32  # the shim's retained heap (measured 22 KB after active(True)) plus ~1 KB a connection


def module_dir(build: Path | None = None) -> Path:
    """A directory holding bluetooth.mpy compiled from the current source (rebuilt when it changes)."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    out_dir = (build or ROOT / "build" / "blesim") / digest
    target = out_dir / "bluetooth.mpy"
    if not target.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = out_dir / f"bluetooth.{os.getpid()}.tmp"
        subprocess.run([mpy_cross(), "-o", str(partial), str(SOURCE)], check=True, capture_output=True)
        partial.replace(target)  # atomic: parallel runs never see half a file
    return out_dir


def heapsize(board: str = "64K") -> str:
    """The -X heapsize that leaves the firmware `board` bytes beside the shim."""
    units = {"K": 1, "M": 1024}
    kb = int(board[:-1]) * units[board[-1].upper()] if board[-1].isalpha() else int(board) // 1024
    return f"{kb + SHIM_HEAP_KB}K"
