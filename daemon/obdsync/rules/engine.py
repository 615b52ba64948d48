"""Engine and battery: overheating, a low battery while parked, a charging fault
while running.

Each condition must hold without interruption for its configured time; a dropout
longer than the condition's gap allowance restarts the count (nothing is known about
the gap). Clearing needs the value back past a margin (hysteresis), so a value
hovering at the threshold opens once and clears once.
"""

from __future__ import annotations

from .context import ADAPTER_VOLTS, COOLANT, MODULE_VOLTS, Context, Rule
from .events import CRITICAL, WARNING, Event
from .smoothing import held_since

COOLANT_GAP_MS = 120_000
# Parked, the dongle reads ATRV once a minute and may sleep for a quarter of an hour.
PARKED_GAP_MS = 1_800_000
RUNNING_GAP_MS = 60_000
BATTERY_CLEAR_MARGIN_V = 0.3
BATTERY_CLEAR_MS = 60_000
CHARGING_CLEAR_MARGIN_V = 0.2
CHARGING_CLEAR_MS = 30_000
# The ECU's module voltage (0x42) stands in for ATRV only when ATRV has been silent this long.
ATRV_FRESH_MS = 300_000


class OverheatRule(Rule):
    CHANNELS = (COOLANT,)
    STATE = ("since", "last_ms", "open", "peak")

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.since: int | None = None
        self.last_ms: int | None = None
        self.open: Event | None = None
        self.peak = 0.0

    def sample(self, t: int, channel: int, value: float) -> None:
        ec = self.config.engine
        self.since = held_since(self.since, self.last_ms, t, value >= ec.overheat_open_c, COOLANT_GAP_MS)
        self.last_ms = t
        if self.open is None:
            if self.since is not None and t - self.since >= ec.overheat_secs * 1000:
                self.peak = value
                self.open = self.ctx.open(
                    "overheat", "", CRITICAL, t,
                    {"coolant_c": value, "threshold_c": ec.overheat_open_c,
                     "for_s": round((t - self.since) / 1000.0, 1)},
                    f"Engine overheating: coolant {value:.0f} °C — stop safely and let it cool")
        else:
            self.peak = max(self.peak, value)
            if value < ec.overheat_clear_c:
                self.ctx.clear(self.open, t, coolant_c_at_clear=value, peak_c=self.peak)
                self.open = None


class BatteryRule(Rule):
    """battery_low (parked; warning, escalated to critical) and charging_fault (running)."""

    CHANNELS = (ADAPTER_VOLTS, MODULE_VOLTS)
    STATE = ("atrv_ms", "last_ms", "volts", "warn_since", "crit_since", "ok_since", "low",
             "cf_since", "cf_ok_since", "fault")

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.atrv_ms: int | None = None
        self.last_ms: int | None = None
        self.volts: float | None = None
        self.warn_since: int | None = None
        self.crit_since: int | None = None
        self.ok_since: int | None = None
        self.low: Event | None = None
        self.cf_since: int | None = None
        self.cf_ok_since: int | None = None
        self.fault: Event | None = None

    def sample(self, t: int, channel: int, value: float) -> None:
        if channel == ADAPTER_VOLTS:
            self.atrv_ms = t
        elif self.atrv_ms is not None and t - self.atrv_ms <= ATRV_FRESH_MS:
            return
        if not 0.0 < value < 40.0:
            return
        bc = self.config.battery
        on = self.ctx.on
        last = self.last_ms
        self.volts = value
        self.last_ms = t
        self.warn_since = held_since(self.warn_since, last, t, not on and value < bc.parked_warn_v, PARKED_GAP_MS)
        self.crit_since = held_since(self.crit_since, last, t, not on and value < bc.parked_crit_v, PARKED_GAP_MS)
        self.ok_since = held_since(self.ok_since, last, t, value >= bc.parked_warn_v + BATTERY_CLEAR_MARGIN_V,
                                   RUNNING_GAP_MS)
        self.cf_since = held_since(self.cf_since, last, t, on and value < bc.running_min_v, RUNNING_GAP_MS)
        self.cf_ok_since = held_since(self.cf_ok_since, last, t,
                                      on and value >= bc.running_min_v + CHARGING_CLEAR_MARGIN_V, RUNNING_GAP_MS)
        need = bc.parked_secs * 1000
        if self.crit_since is not None and t - self.crit_since >= need:
            self._low(t, CRITICAL, value)
        elif self.warn_since is not None and t - self.warn_since >= need:
            self._low(t, WARNING, value)
        elif self.low is not None and self.ok_since is not None and t - self.ok_since >= BATTERY_CLEAR_MS:
            self.ctx.clear(self.low, t, volts_at_clear=value)
            self.low = None
        if self.fault is None and self.cf_since is not None and t - self.cf_since >= bc.running_secs * 1000:
            self.fault = self.ctx.open(
                "charging_fault", "", CRITICAL, t,
                {"volts": value, "threshold_v": bc.running_min_v, "for_s": round((t - self.cf_since) / 1000.0, 1)},
                f"Battery not charging: {value:.1f} V with the engine running — check the alternator")
        elif self.fault is not None and self.cf_ok_since is not None and t - self.cf_ok_since >= CHARGING_CLEAR_MS:
            self.ctx.clear(self.fault, t, volts_at_clear=value)
            self.fault = None

    def dongle_low(self, t: int) -> None:
        """The dongle saw the battery below its floor and goes to sleep to spare it."""
        self._low(t, CRITICAL, self.volts, by_dongle=True)

    def _low(self, t: int, severity: str, volts: float | None, by_dongle: bool = False) -> None:
        if self.low is not None and (self.low.severity == CRITICAL or severity == WARNING):
            return
        bc = self.config.battery
        limit = bc.parked_crit_v if severity == CRITICAL else bc.parked_warn_v
        values = {"volts": volts, "threshold_v": limit}
        if by_dongle:
            values["dongle_sleeping"] = True
        v = f"{volts:.1f} V" if volts is not None else "below its floor"
        msg = (f"Battery low: {v} parked" + (" — the car may not start" if severity == CRITICAL else "")
               + (" (dongle sleeping to save it)" if by_dongle else ""))
        if self.low is None:
            self.low = self.ctx.open("battery_low", "", severity, t, values, msg)
        else:
            self.low = self.ctx.update(self.low, severity, {**self.low.values, **values,
                                                            "escalated_ms": t}, msg)
