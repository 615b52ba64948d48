"""Figure 8: idle cost — the daemon connected to one dongle streaming the default plan:
resident memory and CPU of the daemon's process over a window (60 s; quick: 10 s).

The daemon is `obdsync run` as a subprocess (paired first with `obdsync pair`), on the
simulated radio through `--ble-backend hil.blesim`, with its own XDG directories.
When that command is not usable, hil.bench.daemon_proc (DongleLink + Store, the same
link and store, no rules) stands in, and the result says so. RSS and CPU come from
/proc/PID; the window starts once the dongle printed `connected` and the daemon had
two seconds to sync what the dongle logged before.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from hil.bench.common import SCENARIO, BenchError, Context, LineProc, Row, fmt, rss_cpu

if TYPE_CHECKING:
    from hil.rig import Rig

GOAL_RSS_MB = 60
GOAL_CPU_PCT = 2.0


class IdleResult(TypedDict):
    daemon: str
    window_s: float
    samples_stored: int | None
    rss_mb: float
    rss_peak_mb: float
    cpu_pct: float
    cpu_s: float
    daemon_output_tail: list[str]


def _obdsync() -> Path:
    return Path(sys.executable).with_name("obdsync")


def _env(work: Path, air: Path) -> dict[str, str]:
    return dict(os.environ, XDG_CONFIG_HOME=str(work / "xdg-config"), XDG_DATA_HOME=str(work / "xdg-data"),
                OBDSYNC_SIM_AIR=str(air), OBDSYNC_BLE_BACKEND="hil.blesim")


def _daemon_argv(ctx: Context, rig: Rig, work: Path, env: dict[str, str]) -> tuple[list[str], str]:
    exe = _obdsync()
    if exe.exists():
        r = subprocess.run([str(exe), "pair", rig.dongle.mac], input=rig.dongle.label + "\n", env=env,
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            return [str(exe), "--db", str(work / "idle.db"), "run"], "obdsync run (store + rules + forwarding config)"
        ctx.log(f"idle: `obdsync pair` failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}; "
                "using hil.bench.daemon_proc")
    return ([sys.executable, "-m", "hil.bench.daemon_proc", rig.dongle.mac, rig.dongle.secret.hex(),
             str(work / "idle.db")], "hil.bench.daemon_proc (DongleLink + Store; `obdsync run` not usable)")


def _count(db: Path) -> int | None:
    """Samples the daemon stored: proof the dongle was streaming, not just connected."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
            n = c.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    except sqlite3.Error:
        return None
    return n if isinstance(n, int) else None


def run(ctx: Context) -> IdleResult:
    from hil.rig import Rig

    window = ctx.pick(10.0, 60.0)
    work = ctx.workdir / "idle"
    work.mkdir(parents=True, exist_ok=True)
    with Rig(SCENARIO, work) as rig:
        env = _env(work, rig.air)
        argv, what = _daemon_argv(ctx, rig, work, env)
        with LineProc(argv, env=env, cwd=work) as d:
            try:
                rig.dongle.wait_for("connected", timeout=30)
            except Exception as e:
                raise BenchError(f"the daemon did not connect ({e}); its output:\n" + d.tail()) from None
            time.sleep(2.0)  # a measurement window, not synchronisation: the backlog of boot is synced by now
            pid = d.proc.pid
            rss0, cpu0 = rss_cpu(pid)
            t0 = time.monotonic()
            peak = rss0
            while time.monotonic() - t0 < window:
                time.sleep(0.5)
                if d.proc.poll() is not None:
                    raise BenchError("the daemon exited during the window:\n" + d.tail())
                rss, _ = rss_cpu(pid)
                peak = max(peak, rss)
            rss1, cpu1 = rss_cpu(pid)
            wall = time.monotonic() - t0
            out = d.tail(10)
    samples = _count(work / "idle.db")
    return {"daemon": what, "window_s": wall, "samples_stored": samples, "rss_mb": rss1 / 2**20, "rss_peak_mb": peak / 2**20,
            "cpu_pct": 100 * (cpu1 - cpu0) / wall, "cpu_s": cpu1 - cpu0, "daemon_output_tail": out.splitlines()}


def rows(r: IdleResult) -> list[Row]:
    return [Row(f"Idle cost: daemon + 1 dongle streaming, {r['window_s']:.0f} s ({r['daemon'].split(' (')[0]})",
                f"RSS {fmt(r['rss_mb'])} MB (peak {fmt(r['rss_peak_mb'])}), CPU {fmt(r['cpu_pct'], 2)} %; "
                f"{r['samples_stored']} samples stored",
                "—", "—", f"RSS < {GOAL_RSS_MB} MB, CPU < {GOAL_CPU_PCT:g} %",
                r["rss_peak_mb"] < GOAL_RSS_MB and r["cpu_pct"] < GOAL_CPU_PCT)]
