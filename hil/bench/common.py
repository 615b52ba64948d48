"""What every figure shares: the run context, a table row, medians, a line-reading
subprocess, the machine line."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, TypeVar

from hil import mpy
from hil.proc import LineProcess

if TYPE_CHECKING:
    from hil.bench.pids import ClientResult
    from obdsync.store import Store
    from protocol.record_decode import Record

T = TypeVar("T")

BAUD = 38400
LATENCY_S = 0.030
SCENARIO = "long_drive"  # 45 minutes of engine-on driving at real speed: the ECU always answers


class BenchError(RuntimeError):
    """A figure could not be measured (a process died, a deadline passed)."""


class StoreSink:
    """The Store alone as a DongleLink's sink (no rules), as obdsync.pipeline.Pipeline is in
    the daemon: Store.ingest answers None while nothing of the epoch is stored (a batch of
    duplicates above a hole), the link's Sink answers -1 then, which the link compares
    with what it acked."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def ingest(self, device: str, records: list[Record], *, epoch: int = 0,
                     first_unacked: int | None = None) -> int:
        got = await self.store.ingest(device, records, epoch=epoch, first_unacked=first_unacked)
        return -1 if got is None else got


@dataclass
class Context:
    quick: bool
    workdir: Path
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)
    # The firmware's poll run of figure pids, which figure heap reads instead of running its own.
    firmware_run: ClientResult | None = None

    def pick(self, quick: T, full: T) -> T:
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


def median(xs: Iterable[float | None]) -> float:
    got = [x for x in xs if x is not None]
    return statistics.median(got) if got else float("nan")


def fmt(x: float, digits: int = 1) -> str:
    if x != x:  # nan
        return "n/a"
    return f"{x:,.{digits}f}"


class LineProc(LineProcess):
    """A benchmark's subprocess (hil.proc.LineProcess): `expect` waits for a line,
    and as a context manager it is always stopped."""

    def __init__(self, argv: list[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                 on_line: Callable[[str], None] | None = None) -> None:
        super().__init__(argv, env=env, cwd=cwd, on_line=on_line, error=BenchError,
                         name=Path(argv[1] if len(argv) > 1 else argv[0]).name)

    def expect(self, prefix: str, timeout: float) -> str:
        return self.wait_line(prefix, timeout)

    def __enter__(self) -> LineProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def micropython_version() -> str:
    try:
        r = subprocess.run([mpy.interpreter(), "-c", "import sys; print(sys.version, sys.implementation.version)"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip()
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"


class MachineInfo(TypedDict):
    nproc: int | None
    cpu: str
    python: str
    micropython: str
    platform: str
    when: str


def machine() -> MachineInfo:
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
