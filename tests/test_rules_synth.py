"""Synthetic dongle traces for the rule tests (``Car``), and checks that the generator
makes what it claims. Other ``test_rules_*`` modules import ``Car`` and ``run`` from here.

A trace is what the pipeline hands the engine, in order: ``("s", rows)`` (one record's
decoded samples), ``("d", wall_ms, mode, codes)``, ``("e", wall_ms, code)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from obdsync.config import Config, VehicleConfig
from obdsync.rules import EventChange, RuleEngine

EPOCH_MS = 1_700_000_000_000
DEVICE = "a1b2c3d4e5f60718"
SPEED, RPM, COOLANT, LEVEL, RATE, MAF, ODO, D31, MODV, ATRV, MIL, DTCN = (
    0x0D, 0x0C, 0x05, 0x2F, 0x5E, 0x10, 0xA6, 0x31, 0x42, 0xFF, 0x001, 0x101)


def q_level(pct: float) -> float:
    """What PID 0x2F can say: A × 100 / 255."""
    return round(max(0.0, min(100.0, pct)) * 255 / 100) * 100 / 255


class Car:
    """A simple car and an idealised dongle. Times in seconds from EPOCH_MS."""

    def __init__(self, *, level: float = 50.0, tank: float = 50.0, rate: bool = True, maf: bool = False,
                 odometer: float | None = 42000.0, d31: float | None = None, coolant: float = 90.0,
                 seed: int = 0):
        self.t = 0.0
        self.level = level
        self.tank = tank
        self.rate, self.maf = rate, maf
        self.odo, self.d31 = odometer, d31
        self.km = 0.0
        self.coolant = coolant
        self.rng = random.Random(seed)
        self.items: list = []
        self.on = False
        self.burnt = 0.0

    def wall(self, t: float | None = None) -> int:
        return EPOCH_MS + int(round((self.t if t is None else t) * 1000))

    def event(self, code: int) -> Car:
        self.items.append(("e", self.wall(), code))
        return self

    def dtcs(self, mode: int, codes: list[str], ecus: list[str] | None = None) -> Car:
        self.items.append(("d", self.wall(), mode, codes, ecus))
        return self

    def drive(self, secs: float, speed: float | Callable[[float], float] = 50.0, *, slosh: float = 0.0,
              lph: float | None = None, volts: float = 14.2, coolant: float | Callable[[float], float] | None = None,
              leak_lph: float = 0.0, refuel_lph: float = 0.0, mil: int | None = None,
              level_every: float = 10.0, dropout: tuple[float, float] | None = None) -> Car:
        """Engine on for ``secs``, one record a second; ``speed`` and ``coolant`` may be
        functions of seconds into the segment. ``dropout=(a, b)``: NO DATA from a to b."""
        if not self.on:
            self.on = True
            self.event(2)
        t0 = self.t
        for k in range(int(secs)):
            tau = float(k)
            self.t = t0 + tau
            v = speed(tau) if callable(speed) else speed
            use = lph if lph is not None else 0.8 + 0.06 * v
            self.burnt += use / 3600.0
            self.level -= (use + leak_lph - refuel_lph) / 3600.0 / self.tank * 100.0
            self.km += v / 3600.0
            if self.odo is not None:
                self.odo += v / 3600.0
            if self.d31 is not None:
                self.d31 += v / 3600.0
            if coolant is not None:
                self.coolant = coolant(tau) if callable(coolant) else coolant
            if dropout and dropout[0] <= tau < dropout[1]:
                self.items.append(("s", [(self.wall(), ATRV, volts)]))
                continue
            w = self.wall()
            rows = [(w, SPEED, float(round(v))), (w, RPM, 800.0 + 30 * v), (w, COOLANT, float(round(self.coolant)))]
            if self.rate:
                rows.append((w, RATE, round(use / 0.05) * 0.05))
            if self.maf:
                rows.append((w, MAF, use * 14.7 * 740.0 / 3600.0))
            if k % int(level_every) == 0:
                noise = self.rng.uniform(-slosh, slosh) if v > 3 else 0.0
                rows.append((w, LEVEL, q_level(self.level + noise)))
                if self.odo is not None:
                    rows.append((w, ODO, math.floor(self.odo * 10) / 10))
                if self.d31 is not None:
                    rows.append((w, D31, float(math.floor(self.d31))))
                if mil is not None:
                    rows += [(w, MIL, float(mil)), (w, DTCN, float(mil))]
                rows.append((w, MODV, volts))
            if k % 5 == 0:
                rows.append((w, ATRV, volts))
            self.items.append(("s", rows))
        self.t = t0 + int(secs)
        return self

    def idle(self, secs: float, **kw) -> Car:
        return self.drive(secs, 0.0, **kw)

    def park(self, secs: float, *, volts: float | Callable[[float], float] = 12.6, lost_l: float = 0.0,
             added_l: float = 0.0, every: float = 60.0) -> Car:
        """Engine off: the dongle says so after its 60 s quiet period, then reads ATRV every
        ``every`` s. ``lost_l``/``added_l`` change the tank evenly over the stop."""
        t0 = self.t
        if self.on:
            self.on = False
        k = 0
        while k * every < secs:
            self.t = t0 + k * every
            v = volts(k * every) if callable(volts) else volts
            self.items.append(("s", [(self.wall(), ATRV, v)]))
            if k * every < 60 <= (k + 1) * every:
                self.t = t0 + 60
                self.event(3)
            k += 1
        self.t = t0 + secs
        self.level += (added_l - lost_l) / self.tank * 100.0
        return self


def config(tank: float = 50.0, **sections) -> Config:
    return Config(vehicle=VehicleConfig(tank_litres=tank), **sections)


def run(items: list, cfg: Config | None = None, engine: RuleEngine | None = None) -> list[EventChange]:
    eng = engine or RuleEngine(cfg or config(), DEVICE)
    out: list[EventChange] = []
    for it in items:
        if it[0] == "s":
            eng.samples(it[1])
        elif it[0] == "d":
            eng.dtcs(it[1], it[2], it[3], it[4])
        else:
            eng.dongle_event(it[1], it[2])
        out += eng.drain()
    return out


def types(changes: list[EventChange], change: str | None = None) -> list[str]:
    return [c.event.type for c in changes if change is None or c.change == change]


# ---- the generator itself -------------------------------------------------------------------------

def test_car_burns_what_it_reports_and_time_only_moves_forward():
    car = Car(level=50).drive(600, 60.0).park(300)
    walls = []
    for it in car.items:
        walls += [r[0] for r in it[1]] if it[0] == "s" else [it[1]]
    assert walls == sorted(walls)
    assert car.burnt == pytest.approx((0.8 + 0.06 * 60) * 600 / 3600)
    assert car.burnt == pytest.approx((50 - car.level) / 100 * 50)
    assert car.items.count(("e", EPOCH_MS, 2)) == 1 and ("e", EPOCH_MS + 660_000, 3) in car.items


def test_slosh_is_only_added_while_moving():
    car = Car(level=40, seed=3).idle(60, slosh=4.0)
    levels = {r[2] for it in car.items if it[0] == "s" for r in it[1] if r[1] == LEVEL}
    assert len(levels) <= 2  # the steady fall of idling, no noise
