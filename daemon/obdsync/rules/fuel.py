"""Fuel: low fuel with the range left, refuels, and drops (theft or leak).

The level is judged robustly (smoothing.judge_level). A *reference* level is kept
together with the fuel burnt since it was taken (0x5E, else MAF); the level expected
now is ``reference - burnt``. A judged level well above that is a refuel, well below
it a drop. Either is first a *candidate*, and becomes an event only once the level is
stable again (three judgements within 1.5 % over 20 s or more; a refuel additionally
when the car drives off or after two stable minutes, so a pump that pauses does not
split one refuel into two). After an event the reference moves to the new level, so
wobbling around it cannot fire again.

Drops are judged across a stop (the reference was taken before the engine stopped:
theft overnight, a slow leak over days) and while driving only when a consumption
source explains the normal fall (else every drive would look like a leak).
"""

from __future__ import annotations

from .context import FUEL_LEVEL, Context, Rule
from .events import CRITICAL, INFO, WARNING, Event
from .smoothing import judge_level, stable, trim

SETTLE_SPAN_MS = 20_000
# A drop while driving is judged from moving readings only: confirm it over longer.
SETTLE_SPAN_DRIVING_MS = 60_000
SETTLE_SPREAD_PCT = 1.5
REFUEL_STABLE_MS = 120_000
# A reference taken while moving is refreshed at most this often: refreshing on every
# judgement would absorb a leak a little at a time.
REANCHOR_MOVING_MS = 600_000
# Range needs this much history to be more than a guess.
RANGE_MIN_KM = 1.0


class FuelRule(Rule):
    CHANNELS = (FUEL_LEVEL,)
    STATE = ("window", "ref", "ref_ms", "ref_l", "ref_before_stop", "cand", "low", "last")

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.tank = ctx.config.vehicle.tank_litres
        self.window: list[list] = []        # [t, pct, stationary]
        self.ref: float | None = None       # reference level, %
        self.ref_ms: int | None = None
        self.ref_l = 0.0                    # ctx.litres_total when the reference was taken
        self.ref_before_stop = False        # the engine stopped since the reference was taken
        self.cand: dict | None = None       # {"kind", "t", "base", "parked", "js": [[t, J]]}
        self.low: Event | None = None
        self.last: list | None = None       # last judgement [t, J, stationary]

    # ---- hooks -----------------------------------------------------------------------------

    def sample(self, t: int, channel: int, value: float) -> None:
        if not 0.0 <= value <= 100.0:
            return
        self.window.append([t, value, self.ctx.stationary(t)])
        trim(self.window, t)
        j = judge_level(self.window, t)
        if j is not None:
            self._judged(t, j[0], j[1])

    def engine(self, on: bool, t: int) -> None:
        if on:
            # Readings from before the stop say nothing about the tank after it.
            self.window.clear()
            return
        if self.ref is not None and self.cand is None and self.last is not None:
            lt, lj, _ls = self.last
            if abs(lj - self.expected()) < self._tolerance():
                self._anchor(lt, lj)
        if self.ref is not None:
            self.ref_before_stop = True

    # ---- the judgement -----------------------------------------------------------------------

    def expected(self) -> float:
        """The level the reference and the fuel burnt since predict, %."""
        assert self.ref is not None
        return self.ref - (self.ctx.litres_total - self.ref_l) / self.tank * 100.0

    def _tolerance(self) -> float:
        return min(self.config.fuel.refuel_min_pct, self.config.fuel.drop_min_pct) / 2.0

    def _anchor(self, t: int, level: float) -> None:
        self.ref, self.ref_ms, self.ref_l = level, t, self.ctx.litres_total
        self.ref_before_stop = False

    def _judged(self, t: int, level: float, still: bool) -> None:
        self.last = [t, level, still]
        self._low_fuel(t, level)
        if self.ref is None:
            self._anchor(t, level)
            return
        fc = self.config.fuel
        exp = self.expected()
        d = level - exp
        if self.cand is not None:
            self._candidate(t, level, d)
            return
        can_drop = self.ref_before_stop or self.ctx.consumption_known(self.ref_ms, t)
        if d >= fc.refuel_min_pct:
            self.cand = {"kind": "refuel", "t": t, "base": exp, "parked": self.ref_before_stop, "js": [[t, level]]}
        elif can_drop and -d >= fc.drop_min_pct:
            self.cand = {"kind": "fuel_drop", "t": t, "base": exp, "parked": self.ref_before_stop,
                         "js": [[t, level]]}
        elif not can_drop or (abs(d) < self._tolerance()
                              and (still or self.ref_before_stop or t - self.ref_ms >= REANCHOR_MOVING_MS)):
            self._anchor(t, level)

    def _candidate(self, t: int, level: float, d: float) -> None:
        fc = self.config.fuel
        c = self.cand
        c["js"].append([t, level])
        del c["js"][:-24]
        refuel = c["kind"] == "refuel"
        # The change faded: it was a wobble (or a sensor glitch), not a refuel or a drop.
        if (refuel and d < fc.refuel_min_pct / 2.0) or (not refuel and -d < fc.drop_min_pct / 2.0):
            self.cand = None
            return
        span = SETTLE_SPAN_MS if refuel or c["parked"] else SETTLE_SPAN_DRIVING_MS
        settled = stable(c["js"], span, SETTLE_SPREAD_PCT)
        if settled is None:
            return
        if refuel and not (self.ctx.moving or not self.ctx.on
                           or c["js"][-1][0] - c["js"][-3][0] >= REFUEL_STABLE_MS):
            return
        delta = settled - c["base"]
        self.cand = None
        if (refuel and delta < fc.refuel_min_pct) or (not refuel and -delta < fc.drop_min_pct):
            return
        litres = round(abs(delta) * self.tank / 100.0, 1)
        frm, to = round(c["base"], 1), round(settled, 1)
        if refuel:
            self.ctx.instant("refuel", "", INFO, c["t"],
                             {"litres": litres, "from_pct": frm, "to_pct": to},
                             f"Refuelled {litres:g} L ({frm:g} % → {to:g} %)")
        else:
            where = "parked" if c["parked"] else "driving"
            sev = CRITICAL if c["parked"] else WARNING
            why = "while parked" if c["parked"] else "faster than the engine burns it"
            self.ctx.instant("fuel_drop", "", sev, c["t"],
                             {"litres": litres, "from_pct": frm, "to_pct": to, "while": where},
                             f"Fuel dropped {litres:g} L {why} ({frm:g} % → {to:g} %): theft or a leak?")
        self._anchor(t, settled)

    # ---- low fuel ------------------------------------------------------------------------------

    def range_km(self, level: float) -> float | None:
        ctx = self.ctx
        if ctx.km_total < RANGE_MIN_KM or ctx.litres_total <= 0:
            return None
        l_per_km = ctx.litres_total / ctx.km_total
        return round(level / 100.0 * self.tank / l_per_km)

    def _low_fuel(self, t: int, level: float) -> None:
        fc = self.config.fuel
        if self.low is None and level < fc.low_open_pct:
            rng = self.range_km(level)
            litres = round(level / 100.0 * self.tank, 1)
            msg = f"Fuel low: {level:.0f} %" + (f" (≈ {rng:g} km left)" if rng is not None else
                                                 f" (≈ {litres:g} L left)")
            self.low = self.ctx.open("low_fuel", "", WARNING, t,
                                     {"level_pct": round(level, 1), "litres_left": litres, "range_km": rng},
                                     msg)
        elif self.low is not None and level > fc.low_clear_pct:
            self.ctx.clear(self.low, t, cleared_level_pct=round(level, 1))
            self.low = None

    def level(self) -> float | None:
        """The last judged level, % (trips use it when no consumption source exists)."""
        return None if self.last is None else self.last[1]

