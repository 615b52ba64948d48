"""The service schedule: several items (oil and filter, air filter, brake fluid, …),
each due by distance and/or by time since it was last done, whichever comes first.

Distance comes from the odometer 0xA6 where the car has it; else the user's baseline
(``obdsync service baseline KM``) plus what was driven since: deltas of 0x31
(distance since codes were cleared; a fall means the codes were cleared and it
restarted from 0), else integrated speed. ``state()["distance_source"]`` says which.

Events follow Traccar's rule, per item: ``service_due`` when ⌊(km − start) / interval⌋
grows (and likewise for whole periods of months), ``service_soon`` when the same count
taken ``warn_km`` / ``warn_days`` ahead grows. Each fires once per crossing.

An item counts from the last service that included it; an item never serviced counts
from the baseline (or the first service entered), so a new item in the config starts
where the others started.
"""

from __future__ import annotations

import calendar
import math
from datetime import UTC, datetime
from typing import Any

from ..config import ServiceItem
from ..i18n import N_
from .context import DIST_SINCE_CLEAR, ODOMETER, Context, Rule
from .events import INFO, WARNING

DAY_MS = 86_400_000
# A 0x31 step larger than this is a glitch, not driving (it is polled every 10 s).
MAX_D31_STEP_KM = 50.0
# An estimated odometer (0x31 deltas, integrated speed) drifts: a reading the user
# enters may differ from it by this share of the distance estimated, plus a margin.
ESTIMATE_TOLERANCE = 0.05
READING_MARGIN_KM = 1.0
# A service entered "in the future" by less than this is clock skew between hosts.
FUTURE_SLACK_MS = 300_000

#: What the user sees for the default items (others show their config name); marked for
#: the catalogue, translated where they are shown.
LABELS = {
    "oil": N_("oil and filter"), "air_filter": N_("air filter"), "cabin_filter": N_("cabin filter"),
    "brake_fluid": N_("brake fluid"), "spark_plugs": N_("spark plugs"), "coolant": N_("coolant"),
    "tyre_rotation": N_("tyre rotation"),
}
SOURCES = {
    "odometer": N_("the car's odometer (PID 0xA6)"),
    "distance_since_clear": N_("the baseline plus distance since codes cleared (PID 0x31)"),
    "speed": N_("the baseline plus integrated speed (PID 0x0D)"),
}


def add_months(ms: int, months: int) -> int:
    """``ms`` plus calendar months (UTC), the day clamped to the month's length."""
    d = datetime.fromtimestamp(ms // 1000, tz=UTC)
    m = d.month - 1 + months
    y, m = d.year + m // 12, m % 12 + 1
    day = min(d.day, calendar.monthrange(y, m)[1])
    return int(d.replace(year=y, month=m, day=day).timestamp()) * 1000 + ms % 1000


def label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " "))


_UNCHECKED = object()  # _check has not run since start, restore or a restart of the intervals


def _fresh(start_ms: int, start_km: float | None) -> dict[str, Any]:
    return {"start_ms": start_ms, "start_km": start_km, "due_km": 0, "due_t": 0, "soon_km": 0, "soon_t": 0}


class ServiceRule(Rule):
    CHANNELS = (ODOMETER, DIST_SINCE_CLEAR)
    STATE = ("odo", "src", "d31", "spd_km", "baseline", "origin", "items", "history")

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.odo: float | None = None       # the odometer now, km (None: no baseline, no 0xA6)
        self.src = "speed"                  # "odometer", "distance_since_clear" or "speed"
        self.d31: float | None = None
        self.spd_km = 0.0                   # ctx.km_total already counted
        self.baseline: list[Any] | None = None   # [wall_ms, km] the user entered
        self.origin: list[Any] | None = None     # [wall_ms, km]: where items never serviced count from
        self.items: dict[str, dict[str, Any]] = {}  # name -> start and crossing counts
        self.history: list[list[Any]] = []       # [wall_ms, km or None, [item names]] of services done
        self._checked_odo: object = _UNCHECKED  # the odometer _check last judged (not in STATE)
        self._next_ms: int | None = None    # the earliest date a warning or due falls on (not in STATE)

    @property
    def schedule(self) -> tuple[ServiceItem, ...]:
        return self.config.service.schedule

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
        if self.odo == self._checked_odo and (self._next_ms is None or t < self._next_ms):
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
            self.origin = [int(wall_ms), float(odometer_km) if self.src != "odometer" else self.odo]
            self.items = {}
            self._changed()

    def done(self, wall_ms: int, km: float | None = None, items: list[str] | None = None) -> None:
        """A service at ``wall_ms`` (odometer ``km``, default: the estimate now) of
        ``items`` (default: every item of the schedule)."""
        if km is not None and not (isinstance(km, (int, float)) and math.isfinite(km) and km >= 0):
            raise ValueError(f"service km must be a number >= 0, got {km!r}")
        names = [i.name for i in self.schedule]
        if items:
            unknown = [n for n in items if n not in names]
            if unknown:
                raise ValueError(f"unknown service item {', '.join(unknown)} (the schedule has: {', '.join(names)})")
            names = list(dict.fromkeys(items))
        at = float(km) if km is not None else self.odo
        self.history.append([int(wall_ms), at, names])
        if self.origin is None:
            self.origin = [int(wall_ms), at]
        for n in names:
            self.items[n] = _fresh(int(wall_ms), at)
        self._changed()

    def check_entry(self, at_ms: int, km: float | None, now_ms: int) -> None:
        """Raise ValueError when a service or baseline the user is about to enter
        contradicts what is known: a date in the future, or an odometer reading below
        an earlier one (or above a later one), the current odometer included."""
        if at_ms > now_ms + FUTURE_SLACK_MS:
            when = datetime.fromtimestamp(at_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
            raise ValueError(f"the date {when} is in the future")
        if km is None:
            return
        known: list[tuple[int, float, str]] = []
        if self.baseline:
            known.append((self.baseline[0], self.baseline[1], "the baseline"))
        known += [(int(h[0]), h[1], "a service") for h in self.history if h[1] is not None]
        if self.odo is not None:
            slack = READING_MARGIN_KM
            if self.src != "odometer" and self.baseline:
                slack += ESTIMATE_TOLERANCE * max(0.0, self.odo - self.baseline[1])
            known.append((self.ctx.now if self.ctx.now is not None else now_ms, self.odo - slack,
                          f"the odometer ({self.odo:.0f} km, from {SOURCES[self.src]})"))
        for t, k, what in sorted(known, key=lambda r: -r[0]):  # the latest reading first
            day = datetime.fromtimestamp(t / 1000, tz=UTC).strftime("%Y-%m-%d")
            if t <= at_ms and km < k - READING_MARGIN_KM:
                raise ValueError(f"{km:g} km is below {what}: {k:.0f} km on {day}")
            if t > at_ms and km > k + READING_MARGIN_KM and what.startswith(("the baseline", "a service")):
                raise ValueError(f"{km:g} km is above {what} entered later: {k:.0f} km on {day}")

    def _changed(self) -> None:
        self._checked_odo = _UNCHECKED
        self._next_ms = None

    def _item(self, name: str) -> dict[str, Any] | None:
        st = self.items.get(name)
        if st is None and self.origin is not None:
            # An item added to the config later: from its last service, else the origin.
            last = next((h for h in reversed(self.history) if name in h[2]), None)
            st = self.items[name] = _fresh(*(last[:2] if last else self.origin))
        return st

    # ---- the rule ----------------------------------------------------------------------------

    def _check(self, t: int) -> None:
        sc = self.config.service
        nxt: int | None = None
        for item in self.schedule:
            st = self._item(item.name)
            if st is None:
                continue
            warn_km = sc.warn_km if item.warn_km is None else item.warn_km
            warn_days = sc.warn_days if item.warn_days is None else item.warn_days
            due_km = soon_km = 0
            since = self._km_since(st)
            if item.km is not None and since is not None:
                due_km = math.floor(since / item.km)
                soon_km = math.floor((since + warn_km) / item.km)
            due_t, soon_t = st["due_t"], st["soon_t"]
            if item.months is not None:
                # whole periods passed, counted on from the last check (dates only move on)
                start, warn_ms = st["start_ms"], warn_days * DAY_MS
                while add_months(start, (due_t + 1) * item.months) <= t:
                    due_t += 1
                while add_months(start, (soon_t + 1) * item.months) - warn_ms <= t:
                    soon_t += 1
                edge = min(add_months(start, (due_t + 1) * item.months),
                           add_months(start, (soon_t + 1) * item.months) - warn_ms)
                nxt = edge if nxt is None else min(nxt, edge)
            if due_km > st["due_km"] or due_t > st["due_t"]:
                by = "km" if due_km > st["due_km"] else "time"
                n = due_km if by == "km" else due_t
                self.ctx.instant("service_due", f"{item.name}:{st['start_ms']}:{by}:{n}", WARNING, t,
                                 self._values(item, st, t, by), f"Service due: {label(item.name)} — "
                                 + self._why(item, st, by))
            elif soon_km > st["soon_km"] or soon_t > st["soon_t"]:
                by = "km" if soon_km > st["soon_km"] else "time"
                n = soon_km if by == "km" else soon_t
                self.ctx.instant("service_soon", f"{item.name}:{st['start_ms']}:{by}:{n}", INFO, t,
                                 self._values(item, st, t, by), f"Service soon: {label(item.name)} — "
                                 + self._why(item, st, by, t))
            st.update(due_km=max(due_km, st["due_km"]), due_t=max(due_t, st["due_t"]),
                      soon_km=max(soon_km, st["soon_km"]), soon_t=max(soon_t, st["soon_t"]))
        self._next_ms = nxt

    def _km_since(self, st: dict[str, Any]) -> float | None:
        if self.odo is None or st["start_km"] is None:
            return None
        km: float = max(0.0, self.odo - st["start_km"])
        return km

    def km_since(self) -> float | None:
        """km since the last service of the first item (oil), None when unknown."""
        st = self._item(self.schedule[0].name) if self.schedule else None
        return None if st is None else self._km_since(st)

    def _values(self, item: ServiceItem, st: dict[str, Any], t: int, by: str) -> dict[str, Any]:
        s = self._item_state(item, st, t)
        return {"by": by, "item": item.name, "km_since_service": s["km_since_service"], "km_to_due": s["km_to_due"],
                "days_to_due": s["days_to_due"], "odometer_km": None if self.odo is None else round(self.odo, 1)}

    def _why(self, item: ServiceItem, st: dict[str, Any], by: str, t: int | None = None) -> str:
        if by == "km":
            since = self._km_since(st) or 0.0
            text = f"{since:,.0f} km since it was last done".replace(",", " ")
            if t is not None and item.km is not None:
                text += f", due in {max(0.0, item.km - since % item.km):,.0f} km".replace(",", " ")
            return text
        return f"every {item.months} months" + ("" if t is None else ", due soon")

    def _item_state(self, item: ServiceItem, st: dict[str, Any] | None, now: int | None) -> dict[str, Any]:
        since = None if st is None else self._km_since(st)
        due_ms = None
        if st is not None and item.months is not None:
            due_ms = add_months(st["start_ms"], item.months)
        km_to_due = None if since is None or item.km is None else round(item.km - since, 1)  # < 0: overdue
        days = None if due_ms is None or now is None else math.floor((due_ms - now) / DAY_MS)
        status = "unknown"
        if st is not None:
            sc = self.config.service
            warn_km = sc.warn_km if item.warn_km is None else item.warn_km
            warn_days = sc.warn_days if item.warn_days is None else item.warn_days
            if (km_to_due is not None and km_to_due <= 0) or (days is not None and due_ms is not None
                                                             and now is not None and due_ms <= now):
                status = "due"
            elif (km_to_due is not None and km_to_due <= warn_km) or (days is not None and days <= warn_days):
                status = "soon"
            elif km_to_due is not None or days is not None:
                status = "ok"
        return {
            "item": item.name, "label": label(item.name), "interval_km": item.km, "interval_months": item.months,
            "last_ms": None if st is None else st["start_ms"],
            "last_km": None if st is None or st["start_km"] is None else round(st["start_km"], 1),
            "km_since_service": None if since is None else round(since, 1),
            "km_to_due": km_to_due, "due_ms": due_ms, "days_to_due": days, "status": status,
            "serviced": any(item.name in h[2] for h in self.history),  # else counted from the baseline
        }

    def state(self, now_ms: int | None = None) -> dict[str, Any]:
        """The odometer and its source, every item's distance and days to due, history.
        The top-level ``km_*``/``days_to_due`` are those of the first item (oil)."""
        now = now_ms if now_ms is not None else self.ctx.now
        items = [self._item_state(i, self._item(i.name), now) for i in self.schedule]
        first = items[0] if items else {}
        serviced = self.history
        return {
            "odometer_km": None if self.odo is None else round(self.odo, 1),
            "distance_source": self.src if self.odo is not None else None,
            "baseline_km": self.baseline[1] if self.baseline else None,
            "baseline_ms": self.baseline[0] if self.baseline else None,
            "last_service_ms": serviced[-1][0] if serviced else None,
            "last_service_km": serviced[-1][1] if serviced else None,
            "km_since_service": first.get("km_since_service"),
            "km_to_due": first.get("km_to_due"),
            "due_ms": first.get("due_ms"),
            "days_to_due": first.get("days_to_due"),
            "interval_km": first.get("interval_km"),
            "interval_months": first.get("interval_months"),
            "items": items,
            "history": [list(h) for h in self.history],
        }
