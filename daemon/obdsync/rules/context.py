"""The car as the rules see it, shared by all of them: the clock, whether the engine
runs, the speed, and the running totals of distance and fuel burnt.

Everything here is derived from the inputs alone (never from the host's clock), and
all state is plain JSON values so that a snapshot restores it exactly.
"""

from __future__ import annotations

from typing import Any

from protocol.channels import (
    CH_VOLTAGE,
    PID_COOLANT,
    PID_DISTANCE_SINCE_CLEAR,
    PID_FUEL_LEVEL,
    PID_FUEL_RATE,
    PID_MAF,
    PID_MODULE_VOLTAGE,
    PID_ODOMETER,
    PID_RPM,
    PID_SPEED,
)
from protocol.record import EVENT_BATTERY_LOW, EVENT_BOOT, EVENT_ENGINE_OFF, EVENT_ENGINE_ON

from ..config import Config
from ..decode import SIG_DTC_COUNT, SIG_MIL
from .events import Event, EventChange, TripSummary, event_id

# Signal ids (decode.py): the wire's channels (mode 01 PIDs, the adapter's voltage); the
# status PID splits into MIL and DTC count, which only the daemon has.
SPEED, RPM, COOLANT, FUEL_LEVEL = PID_SPEED, PID_RPM, PID_COOLANT, PID_FUEL_LEVEL
FUEL_RATE, MAF, ODOMETER, DIST_SINCE_CLEAR = PID_FUEL_RATE, PID_MAF, PID_ODOMETER, PID_DISTANCE_SINCE_CLEAR
MODULE_VOLTS, ADAPTER_VOLTS = PID_MODULE_VOLTAGE, CH_VOLTAGE
MIL, DTC_COUNT = SIG_MIL, SIG_DTC_COUNT

# Dongle EVENT codes, as the wire defines them.
EV_BOOT, EV_ENGINE_ON, EV_ENGINE_OFF, EV_BATTERY_LOW = EVENT_BOOT, EVENT_ENGINE_ON, EVENT_ENGINE_OFF, EVENT_BATTERY_LOW

MOVING_KMH = 2.0
# No sign of life (rpm > 0, moving) for this long means the engine stopped: the dongle
# reports engine-off only after its own quiet period, and the ECU goes silent at once.
QUIET_MS = 30_000
# Integrate rates and speeds only across gaps this short; a longer gap is a dropout
# (NO DATA, a sleeping dongle) and nothing is assumed about what happened in it.
MAX_SPEED_GAP_MS = 10_000
MAX_RATE_GAP_MS = 30_000
# A fuel-rate sample this recent makes 0x5E the consumption source; MAF otherwise.
RATE_FRESH_MS = 60_000
# The car must stand still this long before the fuel gauge is trusted (slosh settles).
SETTLE_MS = 3_000

# (stoichiometric AFR, density g/L) by fuel type: fuel g/s = MAF / AFR, L/h = g/s × 3600 / density.
FUELS = {"petrol": (14.7, 740.0), "diesel": (14.5, 830.0)}


class Context:
    """Shared state plus the output queue. Rules read it; only the engine updates it."""

    STATE = ("now", "on", "last_active_ms", "off_since", "speed", "speed_ms", "stopped_since",
             "km_total", "litres_total", "rate_ms", "rate_lph", "maf_ms", "maf_lph", "source_ms",
             "source", "rpm_seen", "out")

    def __init__(self, config: Config, device: str):
        self.config = config
        self.device = device
        self.afr, self.density = FUELS.get(config.vehicle.fuel_type, FUELS["petrol"])
        self.now: int | None = None
        self.on = False                      # engine running (or the car moving)
        self.last_active_ms: int | None = None
        self.off_since: int | None = None    # engine stopped at (the last sign of life)
        self.speed: float | None = None
        self.speed_ms: int | None = None
        self.stopped_since: int | None = None  # standing still since; None while moving
        self.km_total = 0.0                  # integrated speed, all time
        self.litres_total = 0.0              # burnt, from the best source, all time
        self.rate_ms: int | None = None
        self.rate_lph = 0.0
        self.maf_ms: int | None = None
        self.maf_lph = 0.0
        self.source_ms: int | None = None    # last consumption sample (0x5E or MAF)
        self.source = "none"
        self.rpm_seen = False
        self.out: list[EventChange] = []

    # ---- clock -------------------------------------------------------------------------

    def clock(self, wall_ms: int) -> int:
        """The input's time, never before the last one: the pipeline keeps order per boot,
        but a new boot's anchor or equal stamps may step back a little, and timers must
        not run backwards."""
        t = int(wall_ms)
        if self.now is not None and t < self.now:
            t = self.now
        self.now = t
        return t

    # ---- vehicle state -------------------------------------------------------------------

    @property
    def moving(self) -> bool:
        return self.speed is not None and self.speed > MOVING_KMH

    def stationary(self, t: int) -> bool:
        """Standing still long enough for the fuel gauge to have settled."""
        if not self.on:
            return True
        return self.stopped_since is not None and t - self.stopped_since >= SETTLE_MS

    def set_on(self, on: bool, t: int) -> bool:
        """Returns True when the state changed."""
        if on == self.on:
            if on:
                self.last_active_ms = t
            return False
        self.on = on
        if on:
            self.last_active_ms = t
            self.off_since = None
        else:
            self.off_since = self.last_active_ms if self.last_active_ms is not None else t
            # the car cannot move with the engine off: the gauge is stationary from now
            self.speed = 0.0
            self.speed_ms = None
            self.stopped_since = self.off_since
            self.rate_ms = self.maf_ms = None
        return True

    def quiet(self, t: int) -> bool:
        """Whether the engine has shown no sign of life for QUIET_MS (then it stopped)."""
        return self.on and self.last_active_ms is not None and t - self.last_active_ms > QUIET_MS

    def on_speed(self, t: int, v: float) -> None:
        if self.speed_ms is not None and 0 <= t - self.speed_ms <= MAX_SPEED_GAP_MS and self.speed is not None:
            self.km_total += (self.speed + v) / 2.0 * (t - self.speed_ms) / 3_600_000.0
        self.speed, self.speed_ms = v, t
        if v > MOVING_KMH:
            self.stopped_since = None
        elif self.stopped_since is None:
            self.stopped_since = t

    def on_fuel_rate(self, t: int, lph: float) -> None:
        if self.rate_ms is not None and t - self.rate_ms <= MAX_RATE_GAP_MS:
            self._burn(self.rate_lph * (t - self.rate_ms) / 3_600_000.0, "fuel_rate", t)
        self.rate_ms, self.rate_lph = t, lph
        self.source_ms = t

    def on_maf(self, t: int, gps: float) -> None:
        lph = gps * 3600.0 / (self.afr * self.density)
        fresh_rate = self.rate_ms is not None and t - self.rate_ms <= RATE_FRESH_MS
        if self.maf_ms is not None and t - self.maf_ms <= MAX_RATE_GAP_MS and not fresh_rate:
            self._burn(self.maf_lph * (t - self.maf_ms) / 3_600_000.0, "maf", t)
        self.maf_ms, self.maf_lph = t, lph
        if not fresh_rate:
            self.source_ms = t

    def _burn(self, litres: float, source: str, t: int) -> None:
        self.litres_total += max(0.0, litres)
        self.source = source

    def consumption_known(self, since_ms: int | None, t: int) -> bool:
        """Whether a consumption source (0x5E or MAF) has been seen since ``since_ms``."""
        return self.source_ms is not None and (since_ms is None or self.source_ms >= since_ms) \
            and t - self.source_ms <= MAX_RATE_GAP_MS * 4

    def reset_boot(self, t: int) -> None:
        """A new dongle boot: whatever was being integrated stops here."""
        self.set_on(False, t)
        self.speed_ms = self.rate_ms = self.maf_ms = None

    # ---- output --------------------------------------------------------------------------

    def make(self, type_: str, key: str, severity: str, opened_ms: int, values: dict[str, Any],
             message: str) -> Event:
        return Event(event_id(self.device, type_, key, opened_ms), self.device, type_, severity,
                     int(opened_ms), None, values, message)

    def open(self, type_: str, key: str, severity: str, t: int, values: dict[str, Any], message: str) -> Event:
        ev = self.make(type_, key, severity, t, values, message)
        self.out.append(EventChange("opened", ev))
        return ev

    def update(self, ev: Event, severity: str, values: dict[str, Any], message: str) -> Event:
        new = Event(ev.id, ev.device, ev.type, severity, ev.opened_ms, None, values, message)
        self.out.append(EventChange("updated", new))
        return new

    def clear(self, ev: Event, t: int, **values: Any) -> None:
        self.out.append(EventChange("cleared", ev.cleared(t, **values)))

    def instant(self, type_: str, key: str, severity: str, t: int, values: dict[str, Any], message: str,
                trip: TripSummary | None = None) -> Event:
        ev = self.make(type_, key, severity, t, values, message)
        self.out.append(EventChange("instant", ev, trip))
        return ev


class Rule:
    """A rule: ``STATE`` names the attributes a snapshot carries (plain JSON values,
    Events and Trips). Hooks the engine calls; each may emit through ``ctx``."""

    STATE: tuple[str, ...] = ()
    CHANNELS: tuple[int, ...] = ()

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.config = ctx.config

    def sample(self, t: int, channel: int, value: float) -> None:
        pass

    def tick(self, t: int) -> None:
        """Time passed (any input); called after the input's own hooks."""

    def engine(self, on: bool, t: int) -> None:
        """The engine started (``on``) or stopped; ``t`` is when."""

    def boot(self, t: int) -> None:
        """The dongle rebooted."""
