"""The driving evaluation: a score from 0 to 100 per trip, its components, and tips.

The hard brakes and accelerations are the trip's own (rules/trips.py counts them
from the acceleration); this rule adds what the trip does not track, over the same
trip (it starts with the trip and ends when the trip rule closes it):

- speeding: time moving above ``driving.speed_limit_kmh``;
- idling: the trip's idle time as a share of its duration;
- cold revving: time above ``driving.cold_rpm`` while the coolant is below
  ``driving.cold_coolant_c`` (oil not yet flowing freely);
- over-revving: time above ``driving.over_rev_rpm``.

The score (documented in README "Driving evaluation")::

    score = 100 − Σ penalty, each penalty capped, the total clamped to 0..100
    hard brakes   5 per event per 10 km (a trip shorter than 10 km counts as 10)  ≤ 25
    hard accels   3 per event per 10 km (likewise)                               ≤ 15
    speeding      1 per 2 % of the moving time above the limit                     ≤ 20
    idling        1 per 2 % of the duration idling beyond the first 10 %           ≤ 10
    cold revving  1 per 10 s                                                       ≤ 15
    over-revving  1 per 5 s                                                        ≤ 15

Caps sum to 100, so one bad habit cannot hide the others. Integration is over
consecutive samples at most ``MAX_GAP_MS`` apart (a dropout is not counted).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from .context import COOLANT, MOVING_KMH, RPM, SPEED, Context, Rule

MAX_GAP_MS = 10_000
# (per unit, unit, cap) of each component's penalty; unit as described above.
WEIGHTS = {
    "hard_brakes": (5.0, 25.0),
    "hard_accels": (3.0, 15.0),
    "speeding": (0.5, 20.0),       # per % of the moving time
    "idling": (0.5, 10.0),         # per % of the duration beyond IDLE_FREE
    "cold_revving": (0.1, 15.0),   # per second
    "over_revving": (0.2, 15.0),   # per second
}
IDLE_FREE = 0.10
PER_KM = 10.0
CITY_KMH = 40.0  # an average speed below this is city traffic (the tips say so)
# Over-revving by fuel type when the config leaves it open.
OVER_REV_RPM = {"petrol": 6000, "diesel": 4500}


class DrivingRule(Rule):
    CHANNELS = (SPEED, RPM, COOLANT)
    STATE = ("acc", "coolant")

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.acc: dict[str, Any] | None = None  # this trip's sums; None between trips
        self.coolant: float | None = None       # the last coolant temperature, °C

    def engine(self, on: bool, t: int) -> None:
        if on and self.acc is None:
            self.acc = {"moving_ms": 0, "speeding_ms": 0, "cold_ms": 0, "over_ms": 0, "spd": None, "rpm": None}

    def sample(self, t: int, channel: int, value: float) -> None:
        if channel == COOLANT:
            self.coolant = value
            return
        acc = self.acc
        if acc is None:
            return
        dc = self.config.driving
        if channel == SPEED:
            prev = acc["spd"]
            acc["spd"] = [t, value]
            if prev is not None and 0 < t - prev[0] <= MAX_GAP_MS and prev[1] > MOVING_KMH:
                acc["moving_ms"] += t - prev[0]
                if prev[1] > dc.speed_limit_kmh:
                    acc["speeding_ms"] += t - prev[0]
            return
        prev = acc["rpm"]
        acc["rpm"] = [t, value, self.coolant]
        if prev is None or not 0 < t - prev[0] <= MAX_GAP_MS:
            return
        # The interval is judged by the sample that started it (held until the next).
        if prev[1] > over_rev_rpm(self.config):
            acc["over_ms"] += t - prev[0]
        if prev[1] > dc.cold_rpm and prev[2] is not None and prev[2] < dc.cold_coolant_c:
            acc["cold_ms"] += t - prev[0]

    def finish(self, distance_km: float, duration_s: float, idle_s: float, hard_brakes: int,
               hard_accels: int) -> dict[str, Any]:
        """The trip ended (the trip rule calls this): its evaluation; the sums restart."""
        acc = self.acc or {"moving_ms": 0, "speeding_ms": 0, "cold_ms": 0, "over_ms": 0}
        self.acc = None
        return evaluate(self.config, distance_km=distance_km, duration_s=duration_s, idle_s=idle_s,
                        hard_brakes=hard_brakes, hard_accels=hard_accels, moving_s=acc["moving_ms"] / 1000.0,
                        speeding_s=acc["speeding_ms"] / 1000.0, cold_revving_s=acc["cold_ms"] / 1000.0,
                        over_revving_s=acc["over_ms"] / 1000.0)


def over_rev_rpm(config: Any) -> float:
    dc = config.driving
    return dc.over_rev_rpm if dc.over_rev_rpm is not None else OVER_REV_RPM[config.vehicle.fuel_type]


def evaluate(config: Any, *, distance_km: float, duration_s: float, idle_s: float, hard_brakes: int,
             hard_accels: int, moving_s: float, speeding_s: float, cold_revving_s: float,
             over_revving_s: float) -> dict[str, Any]:
    """The score, each component's measure and penalty, and the tips (message ids with
    their numbers: the renderings word them in the user's language and units)."""
    per10 = PER_KM / max(distance_km, PER_KM)
    speeding_pct = 100.0 * speeding_s / moving_s if moving_s > 0 else 0.0
    idle_pct = 100.0 * idle_s / duration_s if duration_s > 0 else 0.0
    measures = {
        "hard_brakes": (hard_brakes, hard_brakes * per10),
        "hard_accels": (hard_accels, hard_accels * per10),
        "speeding": (round(speeding_pct, 1), speeding_pct),
        "idling": (round(idle_pct, 1), max(0.0, idle_pct - 100.0 * IDLE_FREE)),
        "cold_revving": (round(cold_revving_s, 1), cold_revving_s),
        "over_revving": (round(over_revving_s, 1), over_revving_s),
    }
    components = {}
    total = 0.0
    for name, (measure, units) in measures.items():
        per, cap = WEIGHTS[name]
        penalty = round(min(cap, per * units), 1)
        total += penalty
        components[name] = {"value": measure, "penalty": penalty, "max": cap}
    score = int(round(max(0.0, min(100.0, 100.0 - total))))
    city = duration_s > 0 and distance_km / (duration_s / 3600.0) < CITY_KMH
    return {"score": score, "components": components,
            "tips": tips(components, city, config.driving.speed_limit_kmh)}


def tips(components: dict[str, dict[str, Any]], city: bool, limit_kmh: float) -> list[dict[str, Any]]:
    """What to change, worst first: ``{"id": ..., numbers}`` for each component that cost points."""
    out = []
    for name, c in sorted(components.items(), key=lambda kv: -kv[1]["penalty"]):
        if c["penalty"] <= 0:
            continue
        tip: dict[str, Any] = {"id": name, "value": c["value"], "penalty": c["penalty"]}
        if name in ("hard_brakes", "hard_accels"):
            tip["city"] = city
        if name == "speeding":
            tip["limit_kmh"] = limit_kmh
        out.append(tip)
    return out


def weekly(trips: Iterable[Any]) -> list[dict[str, Any]]:
    """Trips (``model.Trip`` with ``values["score"]``) by ISO week, oldest first: the
    distance-weighted mean score, trips, km, and the change against the week before."""
    weeks: dict[tuple[int, int], dict[str, Any]] = {}
    for t in trips:
        ev = (t.values or {}).get("score")
        if not ev:
            continue
        day = dt.datetime.fromtimestamp(t.started_ms / 1000).astimezone().date()
        y, w, _ = day.isocalendar()
        wk = weeks.setdefault((y, w), {"week": f"{y}-W{w:02d}", "trips": 0, "km": 0.0, "_sum": 0.0, "_w": 0.0,
                                       "hard_brakes": 0, "hard_accels": 0})
        km = max(t.distance_km or 0.0, 0.1)
        wk["trips"] += 1
        wk["km"] += t.distance_km or 0.0
        wk["_sum"] += ev["score"] * km
        wk["_w"] += km
        wk["hard_brakes"] += ev["components"]["hard_brakes"]["value"]
        wk["hard_accels"] += ev["components"]["hard_accels"]["value"]
    out = []
    prev = None
    for key in sorted(weeks):
        wk = weeks[key]
        score = round(wk.pop("_sum") / wk.pop("_w"), 1)
        wk.update(score=score, km=round(wk["km"], 1), change=None if prev is None else round(score - prev, 1))
        out.append(wk)
        prev = score
    return out
