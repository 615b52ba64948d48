"""The simulated clock shared by the vehicle, the firmware and the scenario runner.

A scenario runs its phases at different speeds: a city drive at 1 sim second per real
second, a night parked at 600. Everyone who needs "now" in sim time maps the real clock
through one `Schedule`: the real epoch (Unix time at which sim time 0 happens) plus the
phases' (sim duration, speedup) list. sim time is the piecewise-linear map of real time;
before the epoch it runs at speedup 1 (so it is negative there), after the last phase
it keeps the last phase's speedup.

The firmware on the MicroPython unix port gets the same schedule as one environment
string, `OBDSYNC_SIM_CLOCK`, parsed by `hil/mpy/simclock.py` with the same integer
algorithm, so both sides compute the same millisecond:

    v1;<epoch_us>;<sim_ms>@<speedup_milli>,<sim_ms>@<speedup_milli>,...

- `epoch_us`: Unix time of sim 0 in integer microseconds;
- each segment: its sim duration in integer ms and its speedup in thousandths
  (sim seconds per real second × 1000, at least 1).

Example: `v1;1718000000000000;60000@1000,43200000@600000` is one minute at real speed
then twelve hours at 600×. The map is integer arithmetic on microseconds
(`sim_ms = start_sim_ms + elapsed_us * speedup_milli // 1_000_000`) so no float rounding
makes the two interpreters disagree.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

ENV = "OBDSYNC_SIM_CLOCK"
VERSION = "v1"


class ClockSpecError(ValueError):
    """A malformed `OBDSYNC_SIM_CLOCK` string or segment list."""


class Schedule:
    """Real time ↔ sim time for one scenario run.

    `segments` are (sim_seconds, speedup) pairs in phase order; `epoch` is the Unix time
    (seconds, float) at which sim time 0 happens.
    """

    def __init__(self, epoch: float, segments: Iterable[tuple[float, float]]):
        self.epoch_us = int(round(epoch * 1_000_000))
        self._sim_ms: list[int] = []
        self._milli: list[int] = []
        for sim_s, speedup in segments:
            sim_ms = int(round(float(sim_s) * 1000))
            milli = int(round(float(speedup) * 1000))
            if sim_ms < 0:
                raise ClockSpecError(f"segment duration must be >= 0 s, got {sim_s!r}")
            if milli < 1:
                raise ClockSpecError(f"speedup must be >= 0.001, got {speedup!r}")
            self._sim_ms.append(sim_ms)
            self._milli.append(milli)
        if not self._sim_ms:
            raise ClockSpecError("a schedule needs at least one segment")
        self._build()

    def _build(self) -> None:
        # Segment starts on both time axes, in integers: the sim start is exact, the real
        # start is the floor of the real duration, so the map is monotonic across a boundary.
        self._start_sim = [0]
        self._start_real_us = [0]
        for sim_ms, milli in zip(self._sim_ms, self._milli, strict=True):
            self._start_sim.append(self._start_sim[-1] + sim_ms)
            self._start_real_us.append(self._start_real_us[-1] + sim_ms * 1_000_000 // milli)

    # -- the map ------------------------------------------------------------------------

    def sim_ms_at_us(self, real_us: int) -> int:
        """Sim ms for a real Unix time in integer microseconds (the shared algorithm)."""
        e = real_us - self.epoch_us
        if e < 0:
            return e // 1000  # before the epoch time runs at speedup 1
        n = len(self._sim_ms)
        i = 0
        while i < n - 1 and e >= self._start_real_us[i + 1]:
            i += 1
        return self._start_sim[i] + (e - self._start_real_us[i]) * self._milli[i] // 1_000_000

    def sim_ms(self, real_now: float | None = None) -> int:
        """Sim ms since sim 0 at real Unix time `real_now` (default: now)."""
        if real_now is None:
            return self.sim_ms_at_us(time.time_ns() // 1000)
        return self.sim_ms_at_us(int(round(real_now * 1_000_000)))

    def sim_s(self, real_now: float | None = None) -> float:
        return self.sim_ms(real_now) / 1000.0

    def real_at(self, sim_s: float) -> float:
        """Unix time at which sim time reaches `sim_s` (for waiting on a phase)."""
        sim_ms = int(round(sim_s * 1000))
        if sim_ms < 0:
            return (self.epoch_us + sim_ms * 1000) / 1e6
        n = len(self._sim_ms)
        i = 0
        while i < n - 1 and sim_ms >= self._start_sim[i + 1]:
            i += 1
        # ceil, so that sim_ms(real_at(t)) >= t
        d_us = -(-(sim_ms - self._start_sim[i]) * 1_000_000 // self._milli[i])
        return (self.epoch_us + self._start_real_us[i] + d_us) / 1e6

    def speedup(self, real_now: float | None = None) -> float:
        """Sim seconds per real second in force at `real_now`."""
        now_us = time.time_ns() // 1000 if real_now is None else int(round(real_now * 1e6))
        e = now_us - self.epoch_us
        if e < 0:
            return 1.0
        i = 0
        while i < len(self._sim_ms) - 1 and e >= self._start_real_us[i + 1]:
            i += 1
        return self._milli[i] / 1000.0

    @property
    def total_sim_s(self) -> float:
        return self._start_sim[-1] / 1000.0

    @property
    def total_real_s(self) -> float:
        return self._start_real_us[-1] / 1e6

    @property
    def epoch(self) -> float:
        return self.epoch_us / 1e6

    @property
    def end(self) -> float:
        """Unix time at which the last segment ends."""
        return (self.epoch_us + self._start_real_us[-1]) / 1e6

    # -- the environment string -----------------------------------------------------------

    def encode(self) -> str:
        segs = ",".join(f"{s}@{m}" for s, m in zip(self._sim_ms, self._milli, strict=True))
        return f"{VERSION};{self.epoch_us};{segs}"

    @classmethod
    def decode(cls, spec: str) -> Schedule:
        parts = (spec or "").strip().split(";")
        if len(parts) != 3 or parts[0] != VERSION:
            raise ClockSpecError(f"{ENV} must look like 'v1;EPOCH_US;SIM_MS@SPEEDUP_MILLI,...', got {spec!r}")
        try:
            epoch_us = int(parts[1])
            segs = []
            for item in parts[2].split(","):
                a, b = item.split("@")
                segs.append((int(a), int(b)))
        except ValueError:
            raise ClockSpecError(f"{ENV}: not integers in {spec!r}") from None
        obj = cls.__new__(cls)
        obj.epoch_us = epoch_us
        obj._sim_ms = [s for s, _ in segs]
        obj._milli = [m for _, m in segs]
        if any(s < 0 for s in obj._sim_ms) or any(m < 1 for m in obj._milli):
            raise ClockSpecError(f"{ENV}: negative duration or speedup < 1 in {spec!r}")
        obj._build()
        return obj

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Schedule | None:
        spec = (os.environ if environ is None else environ).get(ENV)
        return cls.decode(spec) if spec else None

    def __repr__(self) -> str:
        return f"Schedule({self.encode()!r})"


class SimClock:
    """The object the firmware is handed on the unix port, CPython flavour: `ms()` is sim
    ms since this object was made (the firmware's boot). Same contract as hil/mpy/simclock.py."""

    def __init__(self, schedule: Schedule, now_us: int | None = None):
        self.schedule = schedule
        boot_us = time.time_ns() // 1000 if now_us is None else now_us
        self._boot = schedule.sim_ms_at_us(boot_us)

    def ms(self) -> int:
        return self.schedule.sim_ms_at_us(time.time_ns() // 1000) - self._boot

    def speedup_milli(self) -> int:
        return int(round(self.schedule.speedup() * 1000))
