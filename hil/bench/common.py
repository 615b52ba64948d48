"""What every figure shares: the run context, a table row, medians, a line-reading
subprocess, the machine line."""

from __future__ import annotations

import os
import platform
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hil import mpy

BAUD = 38400
LATENCY_S = 0.030
SCENARIO = "long_drive"  # 45 minutes of engine-on driving at real speed: the ECU always answers


class BenchError(RuntimeError):
    """A figure could not be measured (a process died, a deadline passed)."""


@dataclass
class Context:
    quick: bool
    workdir: Path
    results: dict = field(default_factory=dict)  # figures already measured in this invocation
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)

    def pick(self, quick, full):
        return quick if self.quick else full


@dataclass
class Row:
    figure: str
    measured: str
    baseline: str = "—"
    ratio: str = "—"
    goal: str = "—"
    met: bool | None = None

    def cells(self) -> list[str]:
        met = {True: "yes", False: "**no**", None: "—"}[self.met]
        return [self.figure, self.measured, self.baseline, self.ratio, self.goal, met]


def median(xs) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def fmt(x: float, digits: int = 1) -> str:
    if x != x:  # nan
        return "n/a"
    return f"{x:,.{digits}f}"


class LineProc:
    """A subprocess whose stdout lines are read by a thread; `on_line(line)` runs in that
    thread the moment a line arrives (to snapshot counters beside it), `expect` waits for a
    line with a deadline. Always used as a context manager: the process is stopped on exit."""

    def __init__(self, argv: list[str], *, env: dict | None = None, cwd: str | Path | None = None,
                 on_line: Callable[[str], None] | None = None, stdin=subprocess.DEVNULL) -> None:
        self.argv = argv
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._on_line = on_line
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if self._on_line is not None:
                try:
                    self._on_line(line)
                except Exception as e:  # noqa: BLE001 - surfaced through the queue
                    self._q.put(f"on_line failed: {e!r}")
            self._q.put(line)
        self._q.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{Path(self.argv[1 if len(self.argv) > 1 else 0]).name}: no {prefix!r} "
                                 f"within {timeout:.0f} s; output:\n" + self.tail())
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(5)
                raise BenchError(f"process exited ({self.proc.returncode}) before {prefix!r}; output:\n"
                                 + self.tail())
            if line.startswith(prefix):
                return line

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._t.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> LineProc:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def micropython_version() -> str:
    try:
        r = subprocess.run([mpy.interpreter(), "-c", "import sys; print(sys.version, sys.implementation.version)"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip()
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"


def machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "micropython": micropython_version(), "platform": platform.platform(),
            "when": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def rss_cpu(pid: int) -> tuple[int, float]:
    """(resident set in bytes, CPU seconds used so far) of a process, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return rss, cpu
