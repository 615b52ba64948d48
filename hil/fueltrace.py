"""Fuel-level traces with known truth and families of real-world noise, independent of
the vehicle model in ``vehicle.py`` (whose gauge the rules were first written against).

A trace is what the pipeline hands the rules engine, in order: ``("s", rows)`` (one
record's decoded samples ``(wall_ms, signal, value)``) and ``("e", wall_ms, code)``
(dongle EVENT: 2 engine on, 3 engine off). :attr:`FuelTrace.truth` lists what was
planted: ``Planted(kind, litres, start_ms, end_ms)`` with kind ``refuel``, ``fuel_drop``
or ``leak``.

Noise families (:class:`Noise`), each a parameter so tests can draw them:

- slosh: correlated (AR(1)) gauge swing while moving, amplitude in %;
- dropouts: a share of level readings missing (NO DATA);
- quantisation: the ECU's 1/255 steps (PID 0x2F is ``A × 100/255``) or a finer sender;
- cornering spikes: a share of moving readings off by 8–25 % either way;
- damped gauge: a first-order lag of 30–120 s between the tank and the reported level
  (it keeps catching up while the ECU is silent, as the sender physically settles);
- parked ECU silent (the usual) or answering (ignition in accessory, an ECU that stays
  awake, a dongle that keeps polling): readings continue, RPM 0, speed 0;
- fuel rate 0x5E present or absent, MAF present or absent (the car's consumption as
  the rules can know it), with the true consumption off the reported one by a factor;
- a speed PID or none; GPS-grade speed noise (uniform ± km/h);
- key-off in the middle of a fill.

Everything is drawn from ``random.Random(seed)``: the same arguments give the same
trace. Times are integer seconds from :data:`EPOCH_MS`; one record a second while the
engine runs or the ECU answers.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

EPOCH_MS = 1_700_000_000_000
SPEED, RPM, LEVEL, RATE, MAF, ATRV = 0x0D, 0x0C, 0x2F, 0x5E, 0x10, 0xFF
EV_ON, EV_OFF = 2, 3
Row = tuple[int, int, float]  # (wall_ms, signal, value)
# ("s", one record's rows) or ("e", wall_ms, dongle EVENT code)
Item = tuple[Literal["s"], list[Row]] | tuple[Literal["e"], int, int]
AFR, DENSITY = 14.7, 740.0  # petrol: MAF g/s -> L/h as the rules compute it


@dataclass(frozen=True)
class Noise:
    """One family member. Defaults: a clean car."""

    slosh_pct: float = 0.0          # AR(1) slosh amplitude (≈ 2 sigma), %
    slosh_corr: float = 0.5         # correlation of successive readings' slosh
    dropout: float = 0.0            # share of level readings missing
    quantise: bool = True           # 1/255 steps, else 0.1 %
    spikes: float = 0.0             # share of moving readings that are cornering spikes
    gauge_tau_s: float = 0.0        # damped gauge lag, s (0: none)
    parked_answering: bool = False  # ECU answers while parked (else silent)
    fuel_rate: bool = True          # PID 0x5E
    maf: bool = False               # PID 0x10
    speed_pid: bool = True          # PID 0x0D
    speed_noise_kmh: float = 0.0    # uniform ± on reported speed
    level_every_s: int = 10         # level poll interval
    consumption_err: float = 0.0    # true burn = reported × (1 + this)


@dataclass(frozen=True)
class Planted:
    kind: str            # "refuel", "fuel_drop" or "leak"
    litres: float
    start_ms: int
    end_ms: int


@dataclass
class FuelTrace:
    noise: Noise = field(default_factory=Noise)
    seed: int = 0
    tank: float = 50.0
    level: float = 50.0  # true level, %

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.t = 0                      # s
        self.gauge = self.level         # what a damped sender shows
        self.slosh = 0.0
        self.on = False
        self.items: list[Item] = []
        self.truth: list[Planted] = []
        self.burnt = 0.0                # true litres burnt by the engine
        self.km = 0.0
        self.levels: dict[int, tuple[float, float]] = {}  # wall ms of a level reading -> (true, gauge)

    # ---- plumbing ------------------------------------------------------------------------

    def wall(self, t: float | None = None) -> int:
        return EPOCH_MS + int(round((self.t if t is None else t) * 1000))

    def _tank(self, d_litres: float) -> None:
        self.level = min(100.0, max(0.0, self.level + d_litres / self.tank * 100.0))

    def _gauge_step(self, secs: float) -> None:
        tau = self.noise.gauge_tau_s
        self.gauge = self.level if tau <= 0 else self.level + (self.gauge - self.level) * math.exp(-secs / tau)

    def _quant(self, pct: float) -> float:
        pct = min(100.0, max(0.0, pct))
        return round(pct * 255 / 100) * 100 / 255 if self.noise.quantise else round(pct, 1)

    def _level_row(self, w: int, moving: bool) -> Row | None:
        n, rng = self.noise, self.rng
        if n.dropout and rng.random() < n.dropout:
            return None
        x = self.gauge
        self.levels[w] = (self.level, self.gauge)
        if moving:
            sd = n.slosh_pct / 2.0
            self.slosh = n.slosh_corr * self.slosh + math.sqrt(1 - n.slosh_corr ** 2) * rng.gauss(0.0, sd)
            x += max(-1.5 * n.slosh_pct, min(1.5 * n.slosh_pct, self.slosh))
            if n.spikes and rng.random() < n.spikes:
                x += rng.choice((-1, 1)) * rng.uniform(8.0, 25.0)
        else:
            self.slosh = 0.0
        return (w, LEVEL, self._quant(x))

    def _engine(self, on: bool) -> None:
        if on and not self.on:
            self.items.append(("e", self.wall(), EV_ON))
        self.on = on

    # ---- segments ------------------------------------------------------------------------

    def drive(self, secs: int, speed: float | list[float] | None = None, *, leak_lph: float = 0.0,
              fill_lph: float = 0.0, idle: bool = False) -> FuelTrace:
        """Engine on for ``secs``: a random drive (``speed`` None), a constant speed, or
        one speed per second; ``idle`` stands still. ``leak_lph``/``fill_lph`` change the
        tank beyond consumption (a leak, a pump while idling)."""
        n, rng = self.noise, self.rng
        self._engine(True)
        if idle:
            speeds = [0.0] * secs
        elif speed is None:
            speeds = random_drive(rng, secs)
        elif isinstance(speed, list):
            speeds = speed
        else:
            speeds = [float(speed)] * secs
        t0 = self.t
        for k in range(secs):
            self.t = t0 + k
            v = speeds[k]
            nominal = 0.8 + 0.06 * v + (0.02 * v * v / 100.0)
            true = nominal * (1.0 + n.consumption_err)
            self.burnt += true / 3600.0
            self._tank((fill_lph - leak_lph - true) / 3600.0)
            self.km += v / 3600.0
            self._gauge_step(1.0)
            w = self.wall()
            rows: list[Row] = [(w, RPM, 800.0 + 30 * v + rng.uniform(-20, 20))]
            if n.speed_pid:
                vs = v + (rng.uniform(-n.speed_noise_kmh, n.speed_noise_kmh) if n.speed_noise_kmh and v > 0 else 0.0)
                rows.append((w, SPEED, float(max(0, round(vs)))))
            if n.fuel_rate:
                rows.append((w, RATE, round(nominal / 0.05) * 0.05))
            if n.maf:
                rows.append((w, MAF, round(nominal * AFR * DENSITY / 3600.0, 2)))
            if k % n.level_every_s == 0:
                r = self._level_row(w, v > 3)
                if r is not None:
                    rows.append(r)
            if k % 5 == 0:
                rows.append((w, ATRV, 14.1))
            self.items.append(("s", rows))
        self.t = t0 + secs
        return self

    def idle(self, secs: int, *, leak_lph: float = 0.0, fill_lph: float = 0.0) -> FuelTrace:
        return self.drive(secs, idle=True, leak_lph=leak_lph, fill_lph=fill_lph)

    def park(self, secs: int, *, lose_l: float = 0.0, add_l: float = 0.0, ignition: bool | None = None) -> FuelTrace:
        """Engine off for ``secs``; ``lose_l``/``add_l`` change the tank evenly over the
        stop (a theft, a fill with the engine off). With the ECU answering (the family's
        ``parked_answering`` or ``ignition=True``) the level is read on as standing."""
        answering = self.noise.parked_answering if ignition is None else ignition
        t0 = self.t
        if self.on:
            self.on = False
        step = 5 if answering else 60  # a parked dongle polls slower
        k = 0
        while k < secs:
            self.t = t0 + k
            dt = min(step, secs - k)
            w = self.wall()
            rows: list[Row] = []
            if answering:
                rows.append((w, RPM, 0.0))
                if self.noise.speed_pid:
                    rows.append((w, SPEED, 0.0))
                if k % max(step, self.noise.level_every_s) < step:
                    r = self._level_row(w, False)
                    if r is not None:
                        rows.append(r)
            if k % 60 == 0:
                rows.append((w, ATRV, 12.6))
            if rows:
                self.items.append(("s", rows))
            if k <= 60 < k + dt:
                self.items.append(("e", self.wall(t0 + 60), EV_OFF))
            self._tank((add_l - lose_l) * dt / secs)
            self._gauge_step(dt)
            k += dt
        self.t = t0 + secs
        return self

    # ---- planted events ----------------------------------------------------------------------

    def refuel(self, litres: float, *, secs: int = 150, engine: str = "off", key_off_mid: bool = False) -> FuelTrace:
        """Fill ``litres`` over ``secs``: ``engine`` "off" (ECU as the family says when
        parked), "ignition" (ECU answering, engine off) or "idle" (engine running at the
        pump). ``key_off_mid``: the key goes off for a while in the middle of the fill."""
        start, before, burnt = self.wall(), self.level, self.burnt
        parts = [(secs // 2, litres / 2), (secs - secs // 2, litres - litres / 2)] if key_off_mid else [(secs, litres)]
        for i, (s, li) in enumerate(parts):
            if i == 1:
                self.park(120)  # key off mid-fill: the pump waits (a payment, a second nozzle)
            if engine == "idle":
                self.idle(s, fill_lph=li / s * 3600.0)
            else:
                self.park(s, add_l=li, ignition=True if engine == "ignition" else None)
        # what went in: a full tank takes no more (the burn meanwhile is not the pump's)
        self.truth.append(Planted("refuel", round((self.level - before) / 100.0 * self.tank + self.burnt - burnt, 3),
                                  start, self.wall()))
        return self

    def theft(self, litres: float, *, secs: int = 600) -> FuelTrace:
        """``litres`` siphoned over ``secs`` while parked."""
        start = self.wall()
        self.park(secs, lose_l=litres)
        self.truth.append(Planted("fuel_drop", litres, start, self.wall()))
        return self

    def leak(self, lph: float, secs: int, speed: float | None = None) -> FuelTrace:
        """Drive ``secs`` losing ``lph`` beyond consumption."""
        start = self.wall()
        self.drive(secs, speed, leak_lph=lph)
        self.truth.append(Planted("leak", lph * secs / 3600.0, start, self.wall()))
        return self


def random_drive(rng: random.Random, secs: int) -> list[float]:
    """Speeds, km/h, one a second: cruises at random speeds joined by ramps of at most
    2.5 m/s² (9 km/h/s), with stops at lights now and then; it ends parking: slowing to
    a stop and standing for half a minute (as every drive ends)."""
    out: list[float] = []
    v = 0.0
    end = max(0, secs - 30 - 20)
    while len(out) < end:
        target = rng.choice((0.0, rng.uniform(20, 60), rng.uniform(50, 90), rng.uniform(80, 130)))
        rate = rng.uniform(3.0, 9.0)
        while abs(v - target) > 1e-9 and len(out) < secs:
            v = min(target, v + rate) if target > v else max(target, v - rate)
            out.append(v)
        hold = rng.randint(10, 40) if target == 0 else rng.randint(30, 300)
        out.extend([v] * min(hold, max(0, end - len(out))))
    out = out[:end]
    while v > 0 and len(out) < secs:
        v = max(0.0, v - 7.0)
        out.append(v)
    out.extend([0.0] * (secs - len(out)))
    return out[:secs]


def family(rng: random.Random) -> Noise:
    """A noise family member drawn at random (property tests draw through hypothesis;
    this is for soaks and the false-alarm figure)."""
    return Noise(
        slosh_pct=rng.choice((0.0, 2.0, 4.0, 6.0)), slosh_corr=rng.uniform(0.0, 0.8),
        dropout=rng.choice((0.0, 0.1, 0.4)), quantise=rng.random() < 0.8, spikes=rng.choice((0.0, 0.02, 0.08)),
        gauge_tau_s=rng.choice((0.0, 30.0, 60.0, 120.0)), parked_answering=rng.random() < 0.5,
        fuel_rate=rng.random() < 0.5, maf=rng.random() < 0.5, speed_pid=rng.random() < 0.9,
        speed_noise_kmh=rng.choice((0.0, 4.0)), consumption_err=rng.uniform(-0.05, 0.05))
