"""Server-side SVG charts: a time series with axes, units and markers.

Written here rather than taken from a charting library: a line with labelled axes and
a few markers is ~100 lines, the daemon stays offline with no JS on the page, and a
2-hour trip (7,200 samples a signal) renders in milliseconds because the series is first
reduced to min/max per pixel column (`plot.resample` keeps means, which would hide a
hard brake's dip).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape

W, H = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 48, 10, 22, 26


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """Round tick values spanning [lo, hi] (1, 2, 5 × 10^k steps)."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    out, v = [start], start
    while v < hi - step * 1e-9:  # the last tick at or above hi: nothing drawn outside the plot
        v += step
        out.append(round(v, 10))
    return out if len(out) > 1 else [start, start + step]


def _envelope(points: Sequence[tuple[int, float]], t0: int, t1: int, cols: int) -> list[tuple[int, float, float]]:
    """(column, min, max) of the values falling in each pixel column."""
    span = max(1, t1 - t0)
    acc: dict[int, list[float]] = {}
    for t, v in points:
        c = min(cols - 1, max(0, (t - t0) * cols // span))
        m = acc.get(c)
        if m is None:
            acc[c] = [v, v]
        elif v < m[0]:
            m[0] = v
        elif v > m[1]:
            m[1] = v
    return [(c, m[0], m[1]) for c, m in sorted(acc.items())]


def line_chart(points: Sequence[tuple[int, float]], *, title: str, unit: str, color: str = "#1f6fd0",
               markers: Sequence[tuple[int, str, str]] = (), tz: dt.tzinfo | None = None,
               y_min: float | None = None, y_max: float | None = None, chart_id: str = "") -> str:
    """An SVG of ``points`` ((time_ms, value), in time order) with a time axis (local
    clock), a value axis in ``unit`` and vertical ``markers`` ((time_ms, label, colour))."""
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {W} {H}" role="img"'
            f' aria-label="{escape(title)}"' + (f' id="{escape(chart_id)}"' if chart_id else "") + ">"
            f"<title>{escape(title)}</title>")
    if not points:
        return (head + f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" class="muted">'
                f"{escape(title)}: no data</text></svg>")
    t0, t1 = points[0][0], points[-1][0]
    t1 = max(t1, t0 + 1)
    vals = [v for _, v in points]
    lo = min(vals) if y_min is None else min(y_min, min(vals))
    hi = max(vals) if y_max is None else max(y_max, max(vals))
    ticks = nice_ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1] if ticks[-1] > ticks[0] else ticks[0] + 1

    def x(t: float) -> float:
        return LEFT + (t - t0) * pw / (t1 - t0)

    def y(v: float) -> float:
        return TOP + ph - (v - lo) * ph / (hi - lo)

    out = [head, f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" class="plot"/>']
    for v in ticks:
        yy = y(v)
        label = f"{v:g}"
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
                   f'<text x="{LEFT - 4}" y="{yy + 4:.1f}" text-anchor="end" class="tick">{label}</text>')
    out.append(f'<text x="{LEFT}" y="{TOP - 8}" class="unit">{escape(unit)}</text>')
    # Time ticks: 5 evenly spaced, local clock (HH:MM, with seconds for short spans).
    fmt = "%H:%M:%S" if t1 - t0 < 10 * 60_000 else "%H:%M"
    for i in range(5):
        t = t0 + (t1 - t0) * i / 4
        label = dt.datetime.fromtimestamp(t / 1000, tz).strftime(fmt)
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        out.append(f'<text x="{x(t):.1f}" y="{H - 8}" text-anchor="{anchor}" class="tick">{label}</text>')
    env = _envelope(points, t0, t1, pw)
    path: list[str] = []
    for c, vmin, vmax in env:
        xx = LEFT + c + 0.5
        path.append(f"{'M' if not path else 'L'}{xx:.1f},{y(vmax):.1f}")
        if vmin != vmax:
            path.append(f"L{xx:.1f},{y(vmin):.1f}")
    out.append(f'<path d="{"".join(path)}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    if len(points) <= 40:  # a few points (one a trip): dots, a line alone would hide them
        out.extend(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" fill="{color}"/>' for t, v in points)
    for t, label, mcolor in markers:
        if t0 <= t <= t1:
            xx = x(t)
            out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{TOP}" y2="{TOP + ph}" stroke="{mcolor}"'
                       f' stroke-dasharray="3,2" class="marker"><title>{escape(label)}</title></line>'
                       f'<circle cx="{xx:.1f}" cy="{TOP + 4}" r="3" fill="{mcolor}"><title>{escape(label)}</title>'
                       "</circle>")
    out.append("</svg>")
    return "".join(out)


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str, unit: str, color: str = "#1f6fd0") -> str:
    """Labelled bars (a month's cost), value axis in ``unit``."""
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {W} {H}" role="img"'
            f' aria-label="{escape(title)}"><title>{escape(title)}</title>')
    if not bars:
        return head + f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" class="muted">{escape(title)}: no data</text></svg>'
    ticks = nice_ticks(0, max(v for _, v in bars) or 1)
    hi = ticks[-1] or 1
    out = [head, f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" class="plot"/>']
    for v in ticks:
        yy = TOP + ph - v * ph / hi
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
                   f'<text x="{LEFT - 4}" y="{yy + 4:.1f}" text-anchor="end" class="tick">{v:g}</text>')
    out.append(f'<text x="{LEFT}" y="{TOP - 8}" class="unit">{escape(unit)}</text>')
    bw = pw / len(bars)
    for i, (label, v) in enumerate(bars):
        h = v * ph / hi
        xx = LEFT + i * bw
        out.append(f'<rect x="{xx + bw * 0.15:.1f}" y="{TOP + ph - h:.1f}" width="{bw * 0.7:.1f}" height="{h:.1f}"'
                   f' fill="{color}"><title>{escape(label)}: {v:g} {escape(unit)}</title></rect>'
                   f'<text x="{xx + bw / 2:.1f}" y="{H - 8}" text-anchor="middle" class="tick">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)
