"""The dashboard: first page load (HTML + CSS + JS) in bytes and ms on loopback, the time
from a sample entering the pipeline to its live event reaching a subscriber (p50/p99), a
2-hour trip's page (3 charts) and one chart alone rendered, and the server's RSS with a page
and its live stream open.

The server is `hil/bench/web_child.py` (store + pipeline + dashboard in a process of its
own). The live latency is measured by an SSE client (what the page's EventSource gets;
the page then sets one text node), from the `feed` line written to the child's stdin
to the event read: it includes the ingest's SQLite commit."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import TypedDict

import httpx

from hil.bench.common import Context, Row, fmt, rss_cpu

GOAL_TRIP_MS = 300
GOAL_RSS_MB = 60 + 20  # the idle goal (hil/bench/idle.py) + 20 MB


class WebResult(TypedDict):
    first_load_bytes: int
    first_load_ms: float
    trip_page_2h_ms: float
    chart_36k_points_ms: float
    live_p50_ms: float
    live_p99_ms: float
    live_n: int
    rss_mb: float


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run(ctx: Context) -> WebResult:
    from obdsync.web import charts

    n_feeds = ctx.pick(30, 200)
    child = subprocess.Popen([sys.executable, "-m", "hil.bench.web_child", str(ctx.workdir / "web.db")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None  # both are PIPE
    try:
        ready = child.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise RuntimeError(f"the dashboard process did not start: {ready}")
        url, trip_id = ready[1], ready[2]
        with httpx.Client(base_url=url, timeout=60) as c:
            loads = []
            for _ in range(5):
                t = time.perf_counter()
                size = 0
                for path in ("/", "/static/app.css", "/static/app.js"):
                    r = c.get(path)
                    r.raise_for_status()
                    size += len(r.content)
                loads.append((time.perf_counter() - t) * 1000)
            trip_ms = []
            for _ in range(5):
                t = time.perf_counter()
                c.get(f"/trips/{trip_id}").raise_for_status()
                trip_ms.append((time.perf_counter() - t) * 1000)
            lat = []
            with c.stream("GET", "/api/v1/live") as s:
                lines = s.iter_lines()
                next(lines)  # ": hello"
                for i in range(n_feeds):
                    t = time.perf_counter()
                    child.stdin.write(f"feed {20 + i % 100}\n")
                    child.stdin.flush()
                    next(line for line in lines if line.startswith("data: "))
                    lat.append((time.perf_counter() - t) * 1000)
                rss, _cpu = rss_cpu(child.pid)
    finally:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    pts = [(i * 200, 60 + (i % 3000) / 50) for i in range(2 * 3600 * 5)]  # speed at 5 Hz for 2 hours
    chart = []
    for _ in range(5):
        t = time.perf_counter()
        charts.line_chart(pts, title="speed", unit="km/h")
        chart.append((time.perf_counter() - t) * 1000)
    return {"first_load_bytes": size, "first_load_ms": statistics.median(loads),
            "trip_page_2h_ms": statistics.median(trip_ms), "chart_36k_points_ms": statistics.median(chart),
            "live_p50_ms": _pct(lat, 50), "live_p99_ms": _pct(lat, 99), "live_n": len(lat),
            "rss_mb": rss / 2**20}


def rows(r: WebResult) -> list[Row]:
    return [
        Row("web first load", f"{r['first_load_bytes']} B (HTML+CSS+JS) in {fmt(r['first_load_ms'])} ms on loopback"),
        Row("web sample → live event", f"p50 {fmt(r['live_p50_ms'])} ms, p99 {fmt(r['live_p99_ms'])} ms"
            f" ({r['live_n']} samples)"),
        Row("web 2-hour trip page", f"{fmt(r['trip_page_2h_ms'])} ms (3 charts, 7,200 s at 1 Hz);"
            f" one chart of 36,000 points {fmt(r['chart_36k_points_ms'])} ms", goal=f"< {GOAL_TRIP_MS} ms",
            met=r["trip_page_2h_ms"] < GOAL_TRIP_MS),
        Row("web RSS, page + stream open", f"{fmt(r['rss_mb'])} MB (store + pipeline + dashboard)",
            goal=f"< {GOAL_RSS_MB} MB (idle goal + 20)", met=r["rss_mb"] < GOAL_RSS_MB),
    ]
