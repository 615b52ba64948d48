"""Robust judgement of noisy signals: the fuel gauge (slosh) and held conditions.

The tank gauge swings several percent on corners, hills and braking, so a level is
judged from samples taken standing still (after the slosh settled) where there are
recent ones, else from the median of a window of moving samples; never from two raw
consecutive values (Traccar's way, which fires on every corner).
"""

from __future__ import annotations

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


def trim(window: list[list], t: int, keep_ms: int = MOVING_WINDOW_MS) -> None:
    """Drop ``[t, ...]`` entries older than ``keep_ms`` (in place; oldest first)."""
    k = 0
    while k < len(window) and t - window[k][0] > keep_ms:
        k += 1
    if k:
        del window[:k]


def judge_level(window: list[list], t: int) -> tuple[float, bool] | None:
    """``(level, from_stationary)`` from a window of ``[t, value, stationary]``, or None
    while there is too little to judge (right after the engine started moving)."""
    still = [v for (ts, v, s) in window if s and t - ts <= STATIONARY_WINDOW_MS]
    if still:
        return median(still[-STATIONARY_TAKE:]), True
    moving = [v for (ts, v, _s) in window if t - ts <= MOVING_WINDOW_MS]
    if len(moving) >= MOVING_MIN:
        return median(moving), False
    return None


def stable(points: list[list], span_ms: int, spread: float, n: int = 3) -> float | None:
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
