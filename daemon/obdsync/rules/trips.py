"""Trips: from the engine running (or the car moving) to the engine off for
``trip.end_after_secs`` — a stop shorter than that (a fuel stop, start-stop at a light)
stays within the trip. The trip ends at the moment the engine stopped, not when the
wait ran out, so the summary does not depend on when the next input arrived.

Distance: odometer 0xA6 where the car has it (bridged with integrated speed before its
first and after its last reading), else integrated speed. Fuel: from the consumption
source (0x5E, else MAF) when there was one during the trip, else from the judged
level at start and end. Hard braking/acceleration: the smoothed acceleration
(smoothing.accel_ms2, the slope of the speed over 2 s) past ``trip.hard_brake_ms2`` /
``hard_accel_ms2`` (default 3.0 m/s², about 0.3 g) for at least a second (or once past
1.5 × it: a 2 s stop read at 1 Hz), counted once per episode (it must ease off to 70 % of the threshold before counting again), so 1 km/h
quantisation at 5 Hz and ±4 km/h of GPS-grade noise count nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .context import FUEL_LEVEL, MOVING_KMH, ODOMETER, SPEED, Context, Rule
from .events import INFO, TripSummary, event_id
from .fuel import FuelRule
from .score import DrivingRule
from .smoothing import accel_ms2

IDLE_GAP_MS = 10_000
REARM = 0.7
# The smoothed acceleration must stay past the threshold this long to count.
HARD_HOLD_MS = 1_000
# ... or reach this multiple of the threshold once (a 2 s stop read at 1 Hz shows on one
# 2 s slope only; ±4 km/h of noise on top of a brisk 2.5 m/s² stays below it).
HARD_STRONG = 1.5


def hard_episode(since: int | None, armed: bool, t: int, a: float, threshold: float) -> tuple[int | None, bool, int]:
    """One hard-driving episode counter: ``a`` (m/s², positive in the direction judged)
    held at or past ``threshold`` for HARD_HOLD_MS (or once past HARD_STRONG × it) counts
    once; it must fall back below REARM × threshold before another counts. Returns
    (since, armed, counted)."""
    if a >= threshold:
        since = t if since is None else since
        if armed and (t - since >= HARD_HOLD_MS or a >= threshold * HARD_STRONG):
            return since, False, 1
        return since, armed, 0
    return None, armed or a < threshold * REARM, 0


def _fmt_duration(s: float) -> str:
    m = int(round(s / 60.0))
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min"


class TripRule(Rule):
    CHANNELS = (SPEED, ODOMETER, FUEL_LEVEL)  # after FuelRule: its judgement is fresh
    STATE = ("trip",)

    def __init__(self, ctx: Context, fuel: FuelRule, driving: DrivingRule | None = None):
        super().__init__(ctx)
        self.fuel = fuel
        self.driving = driving  # evaluates each trip as it ends (rules/score.py)
        self.trip: dict[str, Any] | None = None  # the trip in progress (snapshotted as it is)

    def engine(self, on: bool, t: int) -> None:
        if on and self.trip is None:
            ctx = self.ctx
            self.trip = {
                "start": t, "km0": ctx.km_total, "l0": ctx.litres_total, "src": None,
                "level0": None, "odo": None,  # [first, km_total at first, last, km_total at last]
                "idle_ms": 0, "vmax": 0.0, "brakes": 0, "accels": 0, "brake_armed": True, "accel_armed": True,
                "recent": [], "prev": None, "brake_since": None, "accel_since": None,
            }

    def sample(self, t: int, channel: int, value: float) -> None:
        tr = self.trip
        if tr is None:
            return
        if channel == FUEL_LEVEL:
            if tr["level0"] is None and self.fuel.last is not None and self.fuel.last[0] == t:
                tr["level0"] = self.fuel.last[1]
            return
        if channel == ODOMETER:
            if tr["odo"] is None:
                tr["odo"] = [value, self.ctx.km_total, value, self.ctx.km_total]
            elif value >= tr["odo"][2]:
                tr["odo"][2:] = [value, self.ctx.km_total]
            return
        prev = tr["prev"]
        if prev is not None and 0 <= t - prev[0] <= IDLE_GAP_MS and self.ctx.on \
                and prev[1] <= MOVING_KMH and value <= MOVING_KMH:
            tr["idle_ms"] += t - prev[0]
        tr["prev"] = [t, value]
        tr["vmax"] = max(tr["vmax"], value)
        self._hard(tr, t, value)

    def _hard(self, tr: dict[str, Any], t: int, v: float) -> None:
        a = accel_ms2(tr["recent"], t, v)
        if a is None:
            tr["brake_since"] = tr["accel_since"] = None
            return
        tc = self.config.trip
        tr["brake_since"], tr["brake_armed"], n = hard_episode(tr["brake_since"], tr["brake_armed"], t,
                                                           -a, tc.hard_brake_ms2)
        tr["brakes"] += n
        tr["accel_since"], tr["accel_armed"], n = hard_episode(tr["accel_since"], tr["accel_armed"], t,
                                                           a, tc.hard_accel_ms2)
        tr["accels"] += n

    def consumption(self) -> None:
        """A consumption sample arrived during the trip (the engine forwards it)."""
        if self.trip is not None:
            self.trip["src"] = self.ctx.source

    def tick(self, t: int) -> None:
        ctx = self.ctx
        if self.trip is None or ctx.on or ctx.off_since is None:
            return
        if t - ctx.off_since >= self.config.trip.end_after_secs * 1000:
            self._end(ctx.off_since)

    def _end(self, end: int) -> None:
        tr, ctx = self.trip, self.ctx
        assert tr is not None  # tick ends only a trip in progress
        self.trip = None
        start = tr["start"]
        end = max(end, start)
        km = ctx.km_total - tr["km0"]
        dsrc = "speed"
        if tr["odo"] is not None and tr["odo"][2] > tr["odo"][0]:
            first, km_first, last, km_last = tr["odo"]
            km = (km_first - tr["km0"]) + (last - first) + (ctx.km_total - km_last)
            dsrc = "odometer"
        fuel: float | None = None
        fsrc = "none"
        if tr["src"] is not None:
            fuel, fsrc = ctx.litres_total - tr["l0"], tr["src"]
        else:
            lvl = self.fuel.level()
            if tr["level0"] is not None and lvl is not None and tr["level0"] >= lvl:
                fuel, fsrc = (tr["level0"] - lvl) / 100.0 * self.fuel.tank, "level"
        dur = (end - start) / 1000.0
        l100 = round(fuel / km * 100.0, 2) if fuel is not None and km >= 0.1 else None
        trip = TripSummary(
            id=event_id(ctx.device, "trip", "", start), device=ctx.device, started_ms=start, ended_ms=end,
            distance_km=round(km, 3), fuel_l=None if fuel is None else round(fuel, 3), duration_s=dur,
            idle_s=round(tr["idle_ms"] / 1000.0, 1), max_speed_kmh=tr["vmax"],
            avg_speed_kmh=round(km / (dur / 3600.0), 1) if dur > 0 else 0.0, l_per_100km=l100,
            hard_brakes=tr["brakes"], hard_accels=tr["accels"], fuel_source=fsrc, distance_source=dsrc,
            fuel_cost=round(fuel * self.fuel.price, 2) if fuel is not None and self.fuel.price > 0 else None)
        if self.driving is not None:
            trip = replace(trip, score=self.driving.finish(trip.distance_km, dur, trip.idle_s, trip.hard_brakes,
                                                           trip.hard_accels))
        msg = f"Trip: {trip.distance_km:.1f} km in {_fmt_duration(dur)}"
        if l100 is not None:
            msg += f", {trip.fuel_l:.1f} L ({l100:.1f} L/100 km)"
        if trip.fuel_cost is not None:
            msg += f", cost {trip.fuel_cost:.2f}"
        if trip.hard_brakes or trip.hard_accels:
            msg += f", {trip.hard_brakes} hard brakes, {trip.hard_accels} hard accelerations"
        ev = ctx.instant("trip", "", INFO, start, {k: v for k, v in trip.json().items()
                                                   if k not in ("id", "device")}, msg, trip=trip)
        assert ev.id == trip.id

    def current(self) -> dict[str, Any] | None:
        """The trip in progress (start, km and litres so far), or None."""
        tr = self.trip
        if tr is None:
            return None
        return {"started_ms": tr["start"], "distance_km": round(self.ctx.km_total - tr["km0"], 3),
                "fuel_l": round(self.ctx.litres_total - tr["l0"], 3) if tr["src"] else None}
