"""Robust judgement of noisy signals: the fuel gauge (slosh) and held conditions.

The tank gauge swings several percent on corners, hills and braking, so a level is
judged from samples taken standing still (after the slosh settled) where there are
recent ones, else from the median of a window of moving samples; never from two raw
consecutive values (Traccar's way, which fires on every corner).
"""

from __future__ import annotations

from typing import Any

STATIONARY_WINDOW_MS = 30_000
STATIONARY_TAKE = 3
MOVING_WINDOW_MS = 120_000
# Fewer moving samples than this are no judgement: a median of three sloshing readings
# can be several percent off.
MOVING_MIN = 6


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if not n:
        raise ValueError("median of nothing")
    m = n // 2
    return s[m] if n % 2 else (s[m - 1] + s[m]) / 2.0


def trim(window: list[list[Any]], t: int, keep_ms: int = MOVING_WINDOW_MS) -> None:
    """Drop ``[t, ...]`` entries older than ``keep_ms`` (in place; oldest first)."""
    k = 0
    while k < len(window) and t - window[k][0] > keep_ms:
        k += 1
    if k:
        del window[:k]


def judge_level(window: list[list[Any]], t: int) -> tuple[float, bool] | None:
    """``(level, from_stationary)`` from a window of ``[t, value, stationary]``, or None
    while there is too little to judge (right after the engine started moving)."""
    still = [v for (ts, v, s) in window if s and t - ts <= STATIONARY_WINDOW_MS]
    if still:
        return median(still[-STATIONARY_TAKE:]), True
    moving = [v for (ts, v, _s) in window if t - ts <= MOVING_WINDOW_MS]
    if len(moving) >= MOVING_MIN:
        return median(moving), False
    return None


def stable(points: list[list[Any]], span_ms: int, spread: float, n: int = 3) -> float | None:
    """The median of the recent ``[t, value]`` points covering ``span_ms`` (at least ``n``
    of them) when they lie within ``spread`` of each other; else None."""
    if len(points) < n:
        return None
    last_t = points[-1][0]
    k = len(points) - n
    while k > 0 and last_t - points[k][0] < span_ms:
        k -= 1
    if last_t - points[k][0] < span_ms:
        return None
    vals = [v for _t, v in points[k:]]
    if max(vals) - min(vals) > spread:
        return None
    return median(vals)


def held_since(since: int | None, last_ms: int | None, t: int, cond: bool, max_gap_ms: int) -> int | None:
    """When a condition that must hold without interruption started holding, given the
    previous value and sample time: None when it doesn't hold; restarts after a dropout
    longer than ``max_gap_ms`` (nothing is known about the gap)."""
    if not cond:
        return None
    if since is None or last_ms is None or t - last_ms > max_gap_ms:
        return t
    return since


# ---- robust pre-filter ----------------------------------------------------------------------

HAMPEL_N = 15
HAMPEL_K = 3.0
# The MAD of a steady, quantised gauge is 0: never call a reading an outlier for being
# less than ``floor`` from the median (1/255 steps and a little slosh are not spikes).
HAMPEL_FLOOR = 1.5
# This many outliers in a row on the same side are a level shift (a fill, a theft), not
# spikes: they are let through and the window restarts from them.
HAMPEL_SHIFT = 3


def hampel(state: dict[str, Any], x: float, floor: float = HAMPEL_FLOOR) -> float | None:
    """Hampel filter over the last HAMPEL_N readings: ``x`` if it is plausible, None
    if it is a spike (a cornering surge, a one-off glitch). ``state`` is plain JSON:
    ``{"w": [recent accepted], "out": [recent rejected, same side], "shifted": bool}``;
    ``shifted`` says the reading let through was the HAMPEL_SHIFT-th outlier in a row:
    the level moved."""
    w, out = state.setdefault("w", []), state.setdefault("out", [])
    if len(w) >= 3:
        med = median(w)
        mad = 1.4826 * median([abs(v - med) for v in w])
        limit = max(HAMPEL_K * mad, floor)
        dev = x - med
        if abs(dev) > limit:
            if out and (out[-1] - med) * dev < 0:
                out.clear()
            out.append(x)
            if len(out) < HAMPEL_SHIFT:
                return None
            # a level shift: start over from the new level (and tell the caller)
            w[:] = out
            out.clear()
            state["shifted"] = True
            return x
    out.clear()
    state["shifted"] = False
    w.append(x)
    del w[:-HAMPEL_N]
    return x


# Fewer readings than this say little about their spread: the caller's default holds.
ROBUST_MIN = 10


def robust_var(state: dict[str, Any], lo: float, hi: float, default: float) -> float:
    """The variance a reading in a Hampel window carries, for a filter that treats the
    readings as independent: their spread (the MAD about the window's trend line: slosh
    measured, not assumed),
    times (1 + rho)/(1 - rho) for their lag-one correlation rho (slosh persists from one
    reading to the next, so n of them are worth fewer), within ``[lo, hi]``;
    ``default`` while the window is short."""
    w = state.get("w", [])
    n = len(w)
    if n < ROBUST_MIN:
        return default
    # around the window's straight line, not its median: a level that climbs (a damped
    # gauge after a fill) or drains is not slosh
    mi = (n - 1) / 2.0
    mw = sum(w) / n
    b = sum((i - mi) * (v - mw) for i, v in enumerate(w)) / sum((i - mi) ** 2 for i in range(n))
    dev = [v - mw - b * (i - mi) for i, v in enumerate(w)]
    sd = 1.4826 * median([abs(d) for d in dev])
    return min(hi, max(lo, sd * sd * _corr_factor(dev)))


def _corr_factor(dev: list[float]) -> float:
    """(1 + rho)/(1 - rho) for the lag-one autocorrelation of ``dev``, rho in [0, 0.9]."""
    den = sum(d * d for d in dev)
    if den <= 0:
        return 1.0
    rho = sum(dev[i] * dev[i + 1] for i in range(len(dev) - 1)) / den
    rho = min(0.9, max(0.0, rho))
    return (1 + rho) / (1 - rho)


# ---- level and trend ---------------------------------------------------------------------

# The running mean of the normalised innovations (an EWMA of weight BIAS_ALPHA) beyond
# BIAS_K of its own standard deviation widens the filter by BIAS_BOOST readings' variance.
BIAS_ALPHA = 0.2
BIAS_K = 2.5
BIAS_BOOST = 0.25
UNKNOWN_VAR = 1e5


class LevelFilter:
    """A Kalman filter of the tank level (%) over a JSON state dict, so a rules snapshot
    carries it exactly. Its control is the fuel the engine burnt since the last step:
    the level falls by that, and what remains to follow is what consumption does not
    explain (a fill, a theft, a leak) as a random walk.

    Noise differs by situation: standing still the gauge is exact to a step or two but
    the level may change fast (a pump); driving the reading sloshes by several percent
    but the tank only drains as burnt. Those are the ``q`` (process, %² per hour) and
    ``r`` (reading variance, %²) the caller passes per step.
    """

    __slots__ = ("s",)

    def __init__(self, state: dict[str, Any]):
        # {"t": ms | None, "x": level, "P": variance, "out": outliers in a row, "bias": EWMA of innovations}
        self.s = state

    @staticmethod
    def new() -> dict[str, Any]:
        return {"t": None, "x": 0.0, "P": UNKNOWN_VAR, "out": [], "bias": 0.0}

    @property
    def ready(self) -> bool:
        return self.s["t"] is not None

    @property
    def level(self) -> float:
        x: float = self.s["x"]
        return x

    @property
    def sigma(self) -> float:
        sd: float = self.s["P"] ** 0.5
        return sd

    def predict(self, t: int, control_pct: float, q: float) -> None:
        """Advance to ``t``: the level falls by ``control_pct`` (consumption since the
        last step); the uncertainty grows with the time passed."""
        s = self.s
        if s["t"] is not None:
            s["x"] -= control_pct
            s["P"] += q * max(0.0, (t - s["t"]) / 3_600_000.0)
        s["t"] = t

    def restart(self, values: list[float], r: float) -> None:
        """The level moved (a fill, a theft): start over from these readings."""
        s = self.s
        s["x"], s["P"], s["bias"], s["out"] = median(values), r / len(values), 0.0, []

    def update(self, z: float, r: float, gate: float = 5.0, jump: bool = False) -> None:
        """Fold in reading ``z`` of variance ``r``. Readings ``gate`` sigmas away are a
        level shift once HAMPEL_SHIFT come in a row (at once with ``jump``: the caller
        knows the level may have moved unseen): the level restarts from the readings (a
        filter tuned for slosh would otherwise crawl after a fill)."""
        s = self.s
        if s["P"] >= UNKNOWN_VAR:  # the first reading: nothing to weigh it against
            s["x"], s["P"], s["bias"], s["out"] = z, r, 0.0, []
            return
        nu = z - s["x"]
        S = s["P"] + r
        if nu * nu > gate * gate * S and jump:
            self.restart([z], r)
            return
        if nu * nu > gate * gate * S:
            out = s.setdefault("out", [])
            if out and (out[-1] - s["x"]) * nu < 0:
                out.clear()
            out.append(z)
            if len(out) < HAMPEL_SHIFT:
                return
            # restart from the outliers' median, as sure of it as of their mean
            self.restart(out, r)
            return
        s.setdefault("out", []).clear()
        # Innovations that keep one sign mean the level moves in a way the model does not
        # expect (a leak, a slow fill, a gauge still catching up): let it follow faster.
        bias = s["bias"] * (1 - BIAS_ALPHA) + BIAS_ALPHA * nu / S ** 0.5
        s["bias"] = bias
        if bias * bias > BIAS_K * BIAS_K * BIAS_ALPHA / (2 - BIAS_ALPHA):
            s["P"] += r * BIAS_BOOST
            S = s["P"] + r
        k = s["P"] / S
        s["x"] += k * nu
        s["P"] *= 1 - k


def slope_per_h(points: list[list[Any]], min_n: int = 8) -> tuple[float, float] | None:
    """Least-squares slope of ``[t_ms, y]`` points, per hour, and its standard error
    (from the points' own scatter, widened for their lag-one correlation); None for
    fewer than ``min_n`` points."""
    n = len(points)
    if n < max(3, min_n):
        return None
    mt = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mt) ** 2 for p in points)
    if sxx <= 0:
        return None
    b = sum((p[0] - mt) * (p[1] - my) for p in points) / sxx
    dev = [p[1] - my - b * (p[0] - mt) for p in points]
    res = sum(d * d for d in dev) / (n - 2) * _corr_factor(dev)
    h = 3_600_000.0
    return b * h, (res / sxx) ** 0.5 * h


# ---- acceleration ------------------------------------------------------------------------

ACCEL_WINDOW_MS = 2_000
ACCEL_MIN_SPAN_MS = 1_000
ACCEL_MAX_GAP_MS = 3_000


def accel_ms2(recent: list[list[Any]], t: int, kmh: float) -> float | None:
    """Smoothed longitudinal acceleration, m/s²: the least-squares slope of the speed
    readings ``[t, km/h]`` of the last ACCEL_WINDOW_MS (``recent`` is updated in place,
    plain JSON). None until the window spans ACCEL_MIN_SPAN_MS with three readings, and
    again after a dropout. A slope over two seconds instead of a difference of two
    readings: ±4 km/h of noise on a difference over 1 s is ±2.2 m/s², on the slope of a
    2 s window at 1 Hz at most ±1.1 m/s² and much less at 5 Hz."""
    if recent and t - recent[-1][0] > ACCEL_MAX_GAP_MS:
        recent.clear()
    recent.append([t, kmh])
    k = 0
    while t - recent[k][0] > ACCEL_WINDOW_MS:
        k += 1
    if k:
        del recent[:k]
    n = len(recent)
    if n < 3 or t - recent[0][0] < ACCEL_MIN_SPAN_MS:
        return None
    mt = sum(p[0] for p in recent) / n
    mv = sum(p[1] for p in recent) / n
    sxx = sum((p[0] - mt) ** 2 for p in recent)
    if sxx <= 0:
        return None
    sxy = sum((p[0] - mt) * (p[1] - mv) for p in recent)
    a: float = sxy / sxx * 1000.0 / 3.6
    return a
