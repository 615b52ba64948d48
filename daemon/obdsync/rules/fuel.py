"""Fuel: low fuel with the range left, refuels, drops (theft, a leak) and a level that
falls faster than the engine burns while driving (``fuel_leak_suspected``).

The level is an *estimate*, never a threshold on raw readings: each reading of PID
0x2F goes through a Hampel filter (cornering surges, one-off glitches) into a Kalman
filter of the level (smoothing.LevelFilter) whose control is the fuel the engine
burnt since the last reading (0x5E, else MAF × fuel type, else the car's learnt
L/100 km times the distance). Standing still the gauge is trusted to about a step
(1/255) but may change fast (a pump); driving it sloshes by several percent (measured
from the readings' own spread and correlation) but the tank only drains: the filter's
noise differs accordingly. The trend (``fuel_leak_suspected``) is the least-squares
slope of the readings net of what was burnt, over a quarter of an hour of driving.
The raw readings stay in the store, so a replay re-derives exactly this.

A *reference* level is kept with the fuel burnt since it was taken; the level expected
now is ``reference - burnt``. An estimate well above that is a refuel, well below it
(by more than the consumption model's uncertainty and two standard errors) a drop.
Either is first a *candidate* and becomes one event once the estimate has settled
(flat for a minute driving, two standing, longer when noisy; a fill only once the car
drives off or after ten minutes standing, so a pump that pauses or a key-off in the
middle does not split it). A candidate that falls back below half its threshold was a
wobble (hysteresis). The reference is the level at engine-off across every stop and is
not moved while parked, so a theft is found whether the ECU sleeps through the stop or
keeps answering; while driving it moves to a settled estimate at most every ten
minutes (moving it every reading would absorb a drop a little at a time; what is
slower than that is the trend's job).
"""

from __future__ import annotations

import math
from typing import Any

from .context import FUEL_LEVEL, MAX_RATE_GAP_MS, RATE_FRESH_MS, Context, Rule
from .events import CRITICAL, INFO, WARNING, Event
from .smoothing import LevelFilter, hampel, held_since, robust_var, slope_per_h

# Reading noise (variance, %²) and process noise (%² per hour) of the level filter.
R_STILL = 0.3 ** 2          # a step of 1/255 and the sender's own wobble
R_MOVING = 3.0 ** 2         # slosh on corners, hills and braking (after the Hampel filter),
R_MOVING_MIN = 0.5 ** 2     # measured from the recent readings' spread within these bounds
R_MOVING_MAX = 10.0 ** 2
Q_STILL = 100.0             # standing, the level may change fast (a fill): follow the readings
Q_MOVING = 2.0              # driving, the tank drains as burnt: average the slosh over minutes
Q_BLIND = 30.0              # running with nothing telling what is burnt: the level must follow
BLIND_SIGMA = 1.5           # ... and a reference taken then is this unsure, at least
# Readings nearer the recent median than this are never spikes (smoothing.hampel):
# standing, a step or two; driving, the slosh itself (up to ±5 %), surges beyond it are.
HAMPEL_FLOOR_STILL = 1.5
HAMPEL_FLOOR_MOVING = 6.0
# A gap this long between readings is treated as standing (nothing known about it).
LONG_GAP_MS = 60_000

# Settling: the estimates of the last DWELL lie within SPREAD (or 2 sigma) of each other;
# a fill standing at the pump waits REFUEL_STANDING_MS; without a speed PID, running for
# BLIND_DRIVING_MS counts as driving.
DWELL_STILL_MS = 120_000
DWELL_MOVING_MS = 60_000
REFUEL_STANDING_MS = 600_000
BLIND_DRIVING_MS = 300_000
SPREAD_PCT = 1.0
# ... and their trend, plus its standard error, is within this (%/h): a gauge damped by
# 2 min rising 0.5 % a minute has 1 % left to climb; noisy estimates take longer.
FLAT_PCT_PER_H = 30.0
SETTLE_MIN_N = 5
STILL_SPREAD = 0.5
# A drop is reported only once the sigma of its size (estimate against reference) is
# within SIGMA_DECIDE or PRECISION of it: a 3 % drop is decided at 4 sigma, a 20 % one
# at 10. (A fill is reported whatever its precision, with it: ``litres_sd``.) A drop
# must pass its threshold by DROP_SIGMAS standard errors (more for sloshing estimates).
SIGMA_DECIDE = 0.75
DROP_SIGMAS = 2.0
DROP_SIGMAS_MOVING = 3.0
PRECISION = 0.1
# The reference is refined only from an estimate at least this precise.
ANCHOR_SIGMA = 0.75
REANCHOR_MOVING_MS = 600_000
HIST_MS = 600_000
# Consumption model uncertainty: what the expected level may be off by, as a share
# of the fuel it assumes burnt (0x5E/MAF are measurements; a learnt L/100 km is not).
SLACK_MEASURED = 0.08
SLACK_LEARNT = 0.35
# More fuel than this assumed from the learnt L/100 km since the reference: no drop is
# judged while driving (see _judged).
LEARNT_UNSURE_L = 0.5
# Learnt consumption: the configured L/100 km counts as this many km of history.
PRIOR_KM = 50.0
LEARN_MIN_KM = 2.0
# fuel_leak_suspected: the slope of the readings net of consumption, over the last
# LEAK_WINDOW_MS of driving, below -leak_lph by LEAK_SIGMAS standard errors, held this long.
LEAK_WINDOW_MS = 900_000
LEAK_SIGMAS = 3.0
LEAK_HOLD_MS = 180_000
LEAK_GAP_MS = 120_000


class FuelRule(Rule):
    CHANNELS = (FUEL_LEVEL,)
    STATE = ("kf", "hf", "hs", "trend", "hist", "ref", "ref_ms", "ref_sigma", "ref_km", "ok_ms", "ref_before_stop",
             "cand", "low", "last", "ctl_l", "ctl_km", "burnt", "burnt_learnt", "ref_burnt", "ref_burnt_learnt",
             "learn_l", "learn_km", "blind", "on_ms", "fresh", "leak_since", "leak_ms", "leak_done", "price")

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        fc = ctx.config.fuel
        self.tank = ctx.config.vehicle.tank_litres
        self.kf = LevelFilter.new()          # the level filter's state
        self.trend: list[list[Any]] = []          # driving: [t, reading + all burnt so far, %]
        self.hf: dict[str, Any] = {}                   # the Hampel filter's state, moving readings
        self.hs: dict[str, Any] = {}                   # ... standing readings
        self.hist: list[list[Any]] = []           # recent estimates [t, level, sigma, level + burnt %, standing]
        self.ref: float | None = None        # reference level, %
        self.ref_ms: int | None = None
        self.ref_sigma = 0.0
        self.ref_km = 0.0                    # ctx.km_total at the reference
        self.ok_ms: int | None = None        # last estimate that agreed with the reference
        self.ref_before_stop = False         # the engine stopped since the reference was taken
        self.cand: dict[str, Any] | None = None
        self.low: Event | None = None
        self.last: list[Any] | None = None        # last estimate [t, level, stationary]
        self.ctl_l = 0.0                     # ctx.litres_total / km_total at the last control step
        self.ctl_km = 0.0
        self.burnt = 0.0                     # litres the control assumed burnt, all time
        self.burnt_learnt = 0.0              # ... of which from the learnt L/100 km
        self.ref_burnt = 0.0
        self.ref_burnt_learnt = 0.0
        self.learn_l = 0.0                   # consumption learnt from the level (no 0x5E/MAF)
        self.learn_km = 0.0
        self.blind = False                   # a running step since the reference burnt an unknown amount
        self.on_ms: int | None = None        # the engine runs since
        self.fresh = False                   # no reading yet since the engine started
        self.leak_since: int | None = None
        self.leak_ms: int | None = None
        self.leak_done = False
        self.price = fc.price_per_litre      # per litre; 0: unknown

    # ---- hooks -----------------------------------------------------------------------------

    def sample(self, t: int, channel: int, value: float) -> None:
        if not 0.0 <= value <= 100.0:
            return
        ctx = self.ctx
        # standing still (the gauge is exact); running without a speed PID, never known
        still = not ctx.on or (ctx.speed_ms is not None and ctx.stationary(t))
        # still and moving readings are filtered apart: slosh is measured on moving ones only
        if not still:
            self.hs = {}  # each standing spell starts afresh: the level moved since the last
        hf = self.hs if still else self.hf
        z = hampel(hf, value, HAMPEL_FLOOR_STILL if still else HAMPEL_FLOOR_MOVING)
        # the fuel burnt since the last step is the filter's control, readings or not
        kf = LevelFilter(self.kf)
        gap = kf.ready and t - self.kf["t"] > LONG_GAP_MS
        burn_pct = self._control() / self.tank * 100.0
        if z is None:
            return
        # During a fill (and while a damped gauge catches up after it) the level rises
        # whatever the car does: the filter must follow, not average.
        filling = self.cand is not None and self.cand["kind"] == "refuel"
        kf.predict(t, burn_pct, Q_STILL if still or gap or filling else Q_BLIND if self.blind else Q_MOVING)
        r = R_STILL if still else robust_var(self.hf, R_MOVING_MIN, R_MOVING_MAX, R_MOVING)
        if hf.get("shifted"):
            kf.restart(hf["w"], r)  # the pre-filter saw the level move: no second vote
        else:
            # the first reading since the engine started may show a jump made while the
            # ECU slept (a fill, a theft): taken at once, not after three votes
            kf.update(z, r, jump=self.fresh)
        self.fresh = False
        level, sigma = kf.level, kf.sigma
        self.hist.append([t, level, sigma, level + self.burnt / self.tank * 100.0, still])
        k = 0
        while t - self.hist[k][0] > HIST_MS:
            k += 1
        del self.hist[:k]
        self.last = [t, level, still]
        self._judged(t, level, sigma, still)
        self._leak(t, z)

    def engine(self, on: bool, t: int) -> None:
        self.leak_since = None
        self.on_ms = t if on else None
        if on:
            # Readings from before the stop say nothing about spikes or slosh after it.
            self.hf, self.hs = {}, {}
            self.fresh = True
            self.leak_done = False
            return
        c = self.cand
        if c is not None and c["kind"] == "refuel" and c.get("drove") and self.last is not None:
            # the car drove since the fill and stops: report it now, on the estimate
            # (the next start may be tomorrow)
            self._decide(self.last[0], self.last[1], self._sigma(), self.last[0])
        if self.ref is not None and self.cand is None and self.last is not None:
            lt, lv, _s = self.last
            sigma = self._sigma()
            # the level at engine-off, unless the reference from before is the better one
            if abs(lv - self.expected()) < self._tolerance() and (sigma <= ANCHOR_SIGMA or sigma < self.ref_sigma):
                self._anchor(lt, lv, sigma)
        if self.ref is not None:
            self.ref_before_stop = True

    def boot(self, t: int) -> None:
        self.hf, self.hs = {}, {}

    def set_price(self, price: float) -> None:
        self.price = price

    # ---- consumption -------------------------------------------------------------------------

    def _control(self) -> float:
        """Litres burnt since the last step: measured (0x5E/MAF) where the engine says,
        else the learnt L/100 km times the distance."""
        ctx = self.ctx
        dl = ctx.litres_total - self.ctl_l
        dkm = ctx.km_total - self.ctl_km
        self.ctl_l, self.ctl_km = ctx.litres_total, ctx.km_total
        if dl > 0:
            burn = dl
        elif ctx.on and ctx.speed_ms is None and not ctx.consumption_known(None, ctx.now or 0):
            # running, and neither consumption nor distance known: no expectation at all
            self.blind = True
            burn = 0.0
        else:
            burn = max(0.0, dkm) * self.l_per_km()
            self.burnt_learnt += burn
        self.burnt += burn
        return burn

    def l_per_km(self) -> float:
        """The car's consumption: measured litres over km when 0x5E/MAF exist, else what
        the level taught, blended with the configured figure (PRIOR_KM of it)."""
        ctx = self.ctx
        if ctx.litres_total > 0 and ctx.km_total > 0:
            litres, km = ctx.litres_total, ctx.km_total
        else:
            litres, km = max(0.0, self.learn_l), self.learn_km
        prior = self.config.fuel.l_per_100km / 100.0
        return (prior * PRIOR_KM + litres) / (PRIOR_KM + km)

    def expected(self) -> float:
        """The level the reference and the fuel burnt since predict, %."""
        assert self.ref is not None
        return self.ref - (self.burnt - self.ref_burnt) / self.tank * 100.0

    def _slack(self) -> float:
        """How far, %, the expected level may be off from the consumption model alone."""
        learnt = self.burnt_learnt - self.ref_burnt_learnt
        measured = self.burnt - self.ref_burnt - learnt
        return (SLACK_LEARNT * learnt + SLACK_MEASURED * measured) / self.tank * 100.0

    def _drop_min(self) -> float:
        fc = self.config.fuel
        return fc.drop_min_litres / self.tank * 100.0 if fc.drop_min_litres > 0 else fc.drop_min_pct

    def _tolerance(self) -> float:
        return min(self.config.fuel.refuel_min_pct, self._drop_min()) / 2.0

    def _sigma(self) -> float:
        return LevelFilter(self.kf).sigma

    # ---- the judgement -----------------------------------------------------------------------

    def _anchor(self, t: int, level: float, sigma: float) -> None:
        ctx = self.ctx
        if self.ref is not None and ctx.litres_total <= 0:
            km = ctx.km_total - self.ref_km
            if km >= LEARN_MIN_KM and self.cand is None:
                self.learn_l += (self.ref - level) / 100.0 * self.tank
                self.learn_km += km
        if self.blind and self.last is not None and not self.last[2]:
            # taken while running with no idea of what was burnt: the filter lagged an
            # unknown amount behind the draining tank
            sigma = max(sigma, BLIND_SIGMA)
        self.ref, self.ref_ms, self.ref_sigma, self.ref_km = level, t, sigma, ctx.km_total
        self.ref_burnt, self.ref_burnt_learnt = self.burnt, self.burnt_learnt
        self.ok_ms = t
        self.ref_before_stop = False
        self.blind = False

    def _settled(self, t: int, dwell: int, since: int | None = None) -> int | None:
        """The start of the settled span when the estimates of the last ``dwell`` ms (or
        of two or four times that, for noisy ones), net of what was burnt meanwhile, lie
        within SPREAD_PCT (or two sigmas) of each other and surely no longer climb or fall
        (a damped gauge still catching up after a fill does); else None."""
        if self.hf.get("out") or self.hs.get("out") or self.kf["out"]:
            return None  # readings are being held back as outliers: the level may be moving
        h = self.hist
        span = dwell
        while span <= HIST_MS:
            if len(h) < 3 or t - h[0][0] < span or (since is not None and t - since < span):
                return None
            k = len(h) - 1
            while k > 0 and t - h[k - 1][0] <= span:
                k -= 1
            pts = h[k:]
            vals = [p[3] for p in pts]
            fit = slope_per_h([[p[0], p[3]] for p in pts], SETTLE_MIN_N)
            if max(vals) - min(vals) <= max(SPREAD_PCT, 2.0 * pts[-1][2]) and fit is not None \
                    and abs(fit[0]) + fit[1] <= FLAT_PCT_PER_H:
                start: int = pts[0][0]
                return start
            span *= 2
        return None

    def _judged(self, t: int, level: float, sigma: float, still: bool) -> None:
        self._low_fuel(t, level)
        if self.ref is None:
            if sigma <= ANCHOR_SIGMA * 2:
                self._anchor(t, level, sigma)
            return
        assert self.ref_ms is not None  # set with ref (_anchor)
        fc = self.config.fuel
        exp = self.expected()
        d = level - exp
        if self.cand is not None:
            self._candidate(t, level, sigma, d)
            return
        # A drop must exceed the threshold by DROP_SIGMAS standard errors of the difference
        # (many readings are judged: each is a chance for noise to look like one).
        # Sloshing readings are correlated in ways a window measures only roughly: ask more.
        k = DROP_SIGMAS if still else DROP_SIGMAS_MOVING
        unexplained = -d - self._slack() - k * (sigma ** 2 + self.ref_sigma ** 2) ** 0.5
        # Running on a learnt L/100 km (or on nothing), the expectation drifts with the
        # learning's error: no drop is judged against it (across a stop nothing is burnt,
        # so thefts are still found; a leak is the trend's job), and the reference follows.
        unsure = self.ctx.on and (self.blind or self.burnt_learnt - self.ref_burnt_learnt > LEARNT_UNSURE_L)
        if d >= fc.refuel_min_pct:
            self._start("refuel", t, exp)
        elif unexplained >= self._drop_min() and not unsure:
            self._start("fuel_drop", t, exp)
        elif unsure or abs(d) < self._tolerance() + self._slack() + 2.0 * self.ref_sigma:
            if abs(d) <= max(SIGMA_DECIDE, 2.0 * (sigma ** 2 + self.ref_sigma ** 2) ** 0.5):
                self.ok_ms = t  # the last estimate that agreed: where a drop's window opens
            ctx = self.ctx
            dwell = DWELL_STILL_MS if still else DWELL_MOVING_MS
            if sigma > ANCHOR_SIGMA or self._settled(t, dwell) is None:
                return
            if not ctx.on:
                # Parked, the reference stays the level at engine-off (a theft while the
                # ECU answers is a drop against it), unless that was a poor estimate.
                if self.ref_sigma > ANCHOR_SIGMA and sigma < self.ref_sigma:
                    self._anchor(t, level, sigma)
            elif self.ref_before_stop or still or t - self.ref_ms >= REANCHOR_MOVING_MS:
                self._anchor(t, level, sigma)

    def _start(self, kind: str, t: int, exp: float) -> None:
        self.cand = {"kind": kind, "t": t, "base": exp, "base_sigma": self.ref_sigma,
                     "parked": self.ref_before_stop or not self.ctx.on,
                     "from_ms": self.ok_ms if self.ok_ms is not None else self.ref_ms,
                     "jump": len(self.hist) < 2 or t - self.hist[-2][0] > LONG_GAP_MS}

    def _candidate(self, t: int, level: float, sigma: float, d: float) -> None:
        fc = self.config.fuel
        c = self.cand
        assert c is not None  # called only while a candidate is open
        refuel = c["kind"] == "refuel"
        # The change faded: a wobble or a sensor glitch, not a refuel or a drop (hysteresis).
        if (refuel and d < fc.refuel_min_pct / 2.0) or (not refuel and -d - self._slack() < self._drop_min() / 2.0):
            self.cand = None
            return
        ctx = self.ctx
        # The car may stand at the pump for minutes with the level steady (a pause, paying,
        # a key-off in the middle): a fill is over when the car drives off, or after
        # REFUEL_STANDING_MS without a change. Without a speed PID, running for
        # BLIND_DRIVING_MS is driving (nobody idles that long at a pump).
        driving = ctx.moving or (ctx.on and ctx.speed_ms is None and self.on_ms is not None
                                 and t - self.on_ms >= BLIND_DRIVING_MS)
        if driving:
            c["drove"] = True
        if refuel:
            # once the car has driven since, the fill is over: settle on whatever comes
            dwell = DWELL_MOVING_MS if driving else DWELL_STILL_MS if c.get("drove") else REFUEL_STANDING_MS
        else:
            dwell = DWELL_MOVING_MS if driving or c["jump"] else DWELL_STILL_MS
        settled_from = self._settled(t, dwell, c["t"])
        h = self.hist
        if settled_from is None and not refuel and c["jump"] and len(h) >= 2 and h[-2][0] >= c["t"] \
                and h[-2][4] and h[-1][4] and abs(h[-1][3] - h[-2][3]) <= STILL_SPREAD:
            # a drop while the ECU slept, then two exact standing readings that agree: known
            settled_from = h[-2][0]
        if settled_from is None:
            return
        self._decide(t, level, sigma, settled_from)

    def _decide(self, t: int, level: float, sigma: float, settled_from: int) -> None:
        """The candidate's level settled at ``level``: one event, or none if it is less
        than its threshold after all; the reference moves there."""
        fc = self.config.fuel
        c = self.cand
        assert c is not None
        refuel = c["kind"] == "refuel"
        delta = level - self.expected()  # what was burnt since the candidate began is not the pump's
        sd = (sigma ** 2 + c["base_sigma"] ** 2) ** 0.5
        if not refuel and sd > max(SIGMA_DECIDE, abs(delta) * PRECISION):
            return  # not known well enough yet to call it a theft: keep watching
        self.cand = None
        if (refuel and delta < fc.refuel_min_pct) or (not refuel and -delta - self._slack() < self._drop_min()):
            self._anchor(t, level, sigma)
            return
        litres = round(abs(delta) * self.tank / 100.0, 1)
        litres_sd = round(sd * self.tank / 100.0, 1)
        frm, to = round(c["base"], 1), round(level, 1)
        window = {"window_start_ms": c["from_ms"], "window_end_ms": max(c["t"], settled_from)}
        if refuel:
            values = {"litres": litres, "litres_sd": litres_sd, "from_pct": frm, "to_pct": to, **window}
            msg = f"Refuelled {litres:g} L ({frm:g} % → {to:g} %)"
            if self.price > 0:
                values.update(price_per_litre=self.price, cost=round(litres * self.price, 2))
                msg += f", {values['cost']:.2f} at {self.price:g}/L"
            self.ctx.instant("refuel", "", INFO, c["t"], values, msg)
        else:
            where = "parked" if c["parked"] else "driving"
            sev = CRITICAL if c["parked"] else WARNING
            why = "while parked" if c["parked"] else "faster than the engine burns it"
            self.ctx.instant("fuel_drop", "", sev, c["t"],
                             {"litres": litres, "litres_sd": litres_sd, "from_pct": frm, "to_pct": to,
                              "while": where, **window},
                             f"Fuel dropped {litres:g} L {why} ({frm:g} % → {to:g} %): theft or a leak?")
        self._anchor(t, level, sigma)

    # ---- a leak while driving ---------------------------------------------------------------

    def expected_lph(self, t: int) -> tuple[float, str]:
        """What the engine burns now, L/h, and from what."""
        ctx = self.ctx
        if ctx.rate_ms is not None and t - ctx.rate_ms <= RATE_FRESH_MS:
            return ctx.rate_lph, "fuel_rate"
        if ctx.maf_ms is not None and t - ctx.maf_ms <= MAX_RATE_GAP_MS:
            return ctx.maf_lph, "maf"
        return (ctx.speed or 0.0) * self.l_per_km(), "learnt"

    def _leak(self, t: int, z: float) -> None:
        """While driving, the trend of the readings corrected for what was burnt (the
        least-squares slope over LEAK_WINDOW_MS): ~0 on a healthy car, negative when
        the tank loses more than the engine burns."""
        ctx = self.ctx
        driving = ctx.on and ctx.moving
        if self.leak_done or not driving:
            self.leak_since = None
            self.trend.clear()
            return
        tr = self.trend
        if tr and t - tr[-1][0] > LEAK_GAP_MS:
            tr.clear()
        tr.append([t, z + self.burnt / self.tank * 100.0])
        k = 0
        while t - tr[k][0] > LEAK_WINDOW_MS:
            k += 1
        del tr[:k]
        fit = slope_per_h(tr) if t - tr[0][0] >= LEAK_WINDOW_MS // 2 else None
        exp_lph, source = self.expected_lph(t)
        limit = self.config.fuel.leak_lph + (SLACK_LEARNT * exp_lph if source == "learnt" else 0.0)
        excess_lph = sure_lph = 0.0
        if fit is not None:
            # beyond the limit with LEAK_SIGMAS to spare
            excess_lph = -fit[0] / 100.0 * self.tank
            sure_lph = -(fit[0] + LEAK_SIGMAS * fit[1]) / 100.0 * self.tank
        self.leak_since = held_since(self.leak_since, self.leak_ms, t, sure_lph >= limit, LEAK_GAP_MS)
        self.leak_ms = t
        if self.leak_since is not None and t - self.leak_since >= LEAK_HOLD_MS:
            self.leak_done = True
            start = tr[0][0]
            self.ctx.instant(
                "fuel_leak_suspected", "", WARNING, start,
                {"excess_lph": round(excess_lph, 1), "expected_lph": round(exp_lph, 1), "source": source,
                 "window_start_ms": start, "window_end_ms": t, "level_pct": round(self.kf["x"], 1)},
                f"Fuel level falling {excess_lph:.1f} L/h faster than the engine burns ({exp_lph:.1f} L/h"
                f" by {source.replace('_', ' ')}): a leak?")

    # ---- low fuel ------------------------------------------------------------------------------

    def range_km(self, level: float) -> float:
        """km left at the learnt consumption."""
        return round(level / 100.0 * self.tank / self.l_per_km())

    def _low_fuel(self, t: int, level: float) -> None:
        fc = self.config.fuel
        if self.low is None and level < fc.low_open_pct:
            rng = self.range_km(level)
            litres = round(level / 100.0 * self.tank, 1)
            self.low = self.ctx.open("low_fuel", "", WARNING, t,
                                     {"level_pct": math.floor(level * 10) / 10.0, "litres_left": litres, "range_km": rng,
                                      "l_per_100km": round(self.l_per_km() * 100.0, 1)},
                                     f"Fuel low: {level:.0f} % (≈ {rng:g} km left)")
        elif self.low is not None and level > fc.low_clear_pct:
            self.ctx.clear(self.low, t, cleared_level_pct=round(level, 1))
            self.low = None

    def level(self) -> float | None:
        """The last estimated level, % (trips use it when no consumption source exists)."""
        return None if self.last is None else self.last[1]
