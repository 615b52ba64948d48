"""Service reminders by distance and by time since the last service.

Distance comes from the odometer 0xA6 where the car has it; else the user's baseline
(``obdsync service baseline KM``) plus what was driven since: deltas of 0x31
(distance since codes were cleared; a fall means the codes were cleared and it
restarted from 0), else integrated speed.

Events follow Traccar's rule: ``service_due`` when ⌊(km − start) / interval⌋ grows
(and likewise for whole service periods of months), ``service_soon`` when the same
count taken ``warn_km`` / ``warn_days`` ahead grows. Each fires once per crossing.
"""

from __future__ import annotations

import calendar
import math
from datetime import UTC, datetime

from .context import DIST_SINCE_CLEAR, ODOMETER, Context, Rule
from .events import INFO, WARNING

DAY_MS = 86_400_000
# A 0x31 step larger than this is a glitch, not driving (it is polled every 10 s).
MAX_D31_STEP_KM = 50.0


def add_months(ms: int, months: int) -> int:
    """``ms`` plus calendar months (UTC), the day clamped to the month's length."""
    d = datetime.fromtimestamp(ms // 1000, tz=UTC)
    m = d.month - 1 + months
    y, m = d.year + m // 12, m % 12 + 1
    day = min(d.day, calendar.monthrange(y, m)[1])
    return int(d.replace(year=y, month=m, day=day).timestamp()) * 1000 + ms % 1000


_UNCHECKED = object()  # _check has not run since start, restore or a restart of the intervals


class ServiceRule(Rule):
    CHANNELS = (ODOMETER, DIST_SINCE_CLEAR)
    STATE = ("odo", "src", "d31", "spd_km", "baseline", "start_ms", "start_km", "history",
             "lvl", "next_due_ms", "next_soon_ms")

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.odo: float | None = None       # the odometer now, km (None: no baseline, no 0xA6)
        self.src = "speed"                  # "odometer", "distance_since_clear" or "speed"
        self.d31: float | None = None
        self.spd_km = 0.0                   # ctx.km_total already counted
        self.baseline: list | None = None   # [wall_ms, km] the user entered
        self.start_ms: int | None = None    # last service (or the baseline)
        self.start_km: float | None = None
        self.history: list[list] = []       # [wall_ms, km or None] of services done
        self.lvl = {"due_km": 0, "due_t": 0, "soon_km": 0, "soon_t": 0}
        self.next_due_ms: int | None = None
        self.next_soon_ms: int | None = None
        self._checked_odo: object = _UNCHECKED  # the odometer _check last judged (not in STATE)

    # ---- distance --------------------------------------------------------------------------

    def sample(self, t: int, channel: int, value: float) -> None:
        if value < 0:
            return
        if channel == ODOMETER:
            if value > 0:
                self.src, self.odo = "odometer", value
            return
        if self.src == "odometer":
            return
        self.src = "distance_since_clear"
        prev, self.d31 = self.d31, value
        if prev is None:
            return
        step = value - prev if value >= prev else value  # fell: codes cleared, counting from 0
        if step <= MAX_D31_STEP_KM and self.odo is not None:
            self.odo += step

    def tick(self, t: int) -> None:
        step = self.ctx.km_total - self.spd_km
        self.spd_km = self.ctx.km_total
        if self.src == "speed" and self.odo is not None and step > 0:
            self.odo += step
        # Per sample: nothing to judge unless the distance moved or a date was reached
        # (_check is idempotent then; skipping it halves the engine's cost per sample).
        if (self.odo == self._checked_odo and (self.next_soon_ms is None or t < self.next_soon_ms)
                and (self.next_due_ms is None or t < self.next_due_ms)):
            return
        self._checked_odo = self.odo
        self._check(t)

    # ---- user input ------------------------------------------------------------------------

    def set_baseline(self, odometer_km: float, wall_ms: int) -> None:
        if not (isinstance(odometer_km, (int, float)) and math.isfinite(odometer_km) and odometer_km >= 0):
            raise ValueError(f"baseline odometer must be a number of km >= 0, got {odometer_km!r}")
        self.baseline = [int(wall_ms), float(odometer_km)]
        if self.src != "odometer":
            self.odo = float(odometer_km)
        if not self.history:
            self._restart(int(wall_ms), float(odometer_km) if self.src != "odometer" else self.odo)

    def done(self, wall_ms: int, km: float | None = None) -> None:
        if km is not None and not (isinstance(km, (int, float)) and math.isfinite(km) and km >= 0):
            raise ValueError(f"service km must be a number >= 0, got {km!r}")
        at = float(km) if km is not None else self.odo
        self.history.append([int(wall_ms), at])
        self._restart(int(wall_ms), at)

    def _restart(self, wall_ms: int, km: float | None) -> None:
        self._checked_odo = _UNCHECKED
        sc = self.config.service
        self.start_ms, self.start_km = wall_ms, km
        self.lvl = {"due_km": 0, "due_t": 0, "soon_km": 0, "soon_t": 0}
        self.next_due_ms = add_months(wall_ms, sc.interval_months)
        self.next_soon_ms = self.next_due_ms - sc.warn_days * DAY_MS

    # ---- the rule ----------------------------------------------------------------------------

    def _check(self, t: int) -> None:
        if self.start_ms is None:
            return
        sc = self.config.service
        lvl = self.lvl
        due_km = soon_km = 0
        since = self.km_since()
        if since is not None:
            due_km = math.floor(since / sc.interval_km)
            soon_km = math.floor((since + sc.warn_km) / sc.interval_km)
        due_t, soon_t = lvl["due_t"], lvl["soon_t"]
        while self.next_soon_ms is not None and t >= self.next_soon_ms:
            soon_t += 1
            self.next_soon_ms = add_months(self.start_ms, (soon_t + 1) * sc.interval_months) - sc.warn_days * DAY_MS
        while self.next_due_ms is not None and t >= self.next_due_ms:
            due_t += 1
            self.next_due_ms = add_months(self.start_ms, (due_t + 1) * sc.interval_months)
        if due_km > lvl["due_km"] or due_t > lvl["due_t"]:
            by = "km" if due_km > lvl["due_km"] else "time"
            n = due_km if by == "km" else due_t
            self.ctx.instant("service_due", f"{self.start_ms}:{by}:{n}", WARNING, t, self._values(t, by),
                             "Service due: " + self._why(t, by))
        elif soon_km > lvl["soon_km"] or soon_t > lvl["soon_t"]:
            by = "km" if soon_km > lvl["soon_km"] else "time"
            n = soon_km if by == "km" else soon_t
            self.ctx.instant("service_soon", f"{self.start_ms}:{by}:{n}", INFO, t, self._values(t, by),
                             "Service soon: " + self._why(t, by))
        lvl.update(due_km=max(due_km, lvl["due_km"]), due_t=due_t, soon_km=max(soon_km, lvl["soon_km"]),
                   soon_t=soon_t)

    def km_since(self) -> float | None:
        if self.odo is None or self.start_km is None:
            return None
        return max(0.0, self.odo - self.start_km)

    def _values(self, t: int, by: str) -> dict:
        s = self.state(t)
        return {"by": by, "km_since_service": s["km_since_service"], "km_to_due": s["km_to_due"],
                "days_to_due": s["days_to_due"], "odometer_km": s["odometer_km"]}

    def _why(self, t: int, by: str) -> str:
        s = self.state(t)
        if by == "km":
            return f"{s['km_since_service']:,.0f} km since the last service".replace(",", " ")
        return f"{self.config.service.interval_months} months since the last service"

    def state(self, now_ms: int | None = None) -> dict:
        sc = self.config.service
        now = now_ms if now_ms is not None else self.ctx.now
        since = self.km_since()
        # negative once overdue
        km_to_due = None if since is None else round(sc.interval_km - since, 1)
        due_ms = add_months(self.start_ms, sc.interval_months) if self.start_ms is not None else None
        return {
            "odometer_km": None if self.odo is None else round(self.odo, 1),
            "distance_source": self.src,
            "baseline_km": self.baseline[1] if self.baseline else None,
            "baseline_ms": self.baseline[0] if self.baseline else None,
            "last_service_ms": self.start_ms if self.history else None,
            "last_service_km": self.start_km if self.history else None,
            "km_since_service": None if since is None else round(since, 1),
            "km_to_due": km_to_due,
            "due_ms": due_ms,
            "days_to_due": None if due_ms is None or now is None else math.floor((due_ms - now) / DAY_MS),
            "interval_km": sc.interval_km,
            "interval_months": sc.interval_months,
            "history": [list(h) for h in self.history],
        }
