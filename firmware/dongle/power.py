"""Power states: poll while the engine runs, let the car sleep when it doesn't.

A dongle that keeps querying a parked car keeps its ECUs awake and drains the
battery, so: engine off (the ECU stops answering or RPM is 0, and the supply is
below the charging level for a while) stops OBD polling and leaves only a slow
ATRV. Volts rising again (the alternator) or the ECU answering resumes.

Deep sleep (dongle.sleep: a reset, every wake a boot): parked for park_sleep_after_ms
with the link idle, or a battery below the floor for floor_after_ms (logged once per
episode: battery_low), the application flushes the log and sleeps for sleep_ms; what
these rules know rides across in RTC memory (carry/resume). A timer wake looks at the
supply only (stays_asleep) and sleeps again unless the engine started or battery_low
is due; a supply-rise wake starts in full.

Times are the clock's ticks (dongle.clock): compared with time.ticks_diff only, so a
timer running across the clock's wrap ends on time.
"""

from protocol import MICROPYTHON
from protocol.control import POWER_DRIVING, POWER_IDLE, POWER_PARKED, POWER_SLEEPING

if MICROPYTHON:
    import time

    from micropython import const
else:  # CPython: the daemon's direct mode applies the same power rules
    from obdsync.direct.mpcompat import const, time

# Annotations are for the type checks: MicroPython compiles them away and has no `typing`;
# CPython (the daemon's direct mode) evaluates them, so names from the block below are quoted.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from dongle._types import Clock

    from .sleep import Carried

NONE = const(0)
ENGINE_ON = const(2)  # the protocol.record EVENT codes
ENGINE_OFF = const(3)
BATTERY_LOW = const(4)


class PowerConfig:
    def __init__(self, running_mv: int = 13000, off_after_ms: int = 60000, floor_mv: int = 11800,
                 floor_after_ms: int = 300000, sleep_ms: int = 900000, rise_mv: int = 500,
                 park_sleep_after_ms: int = 600000) -> None:
        if floor_mv >= running_mv:
            raise ValueError("battery floor must be below the running voltage")
        self.running_mv = running_mv  # above: the alternator charges, the engine runs
        # A weak alternator (or a smart one) may never reach running_mv; a rise this
        # far above the lowest parked reading also means someone started the engine.
        self.rise_mv = rise_mv
        self.off_after_ms = off_after_ms
        self.floor_mv = floor_mv
        self.floor_after_ms = floor_after_ms
        self.sleep_ms = sleep_ms  # deep-sleep length before the timer wakes us to look again
        # Parked this long with the link idle (no central, or everything acked): deep sleep
        # (0: never). The window a daemon at home has to collect the trip before the dongle
        # goes quiet.
        self.park_sleep_after_ms = park_sleep_after_ms


class Power:
    def __init__(self, clock: "Clock", config: PowerConfig | None = None) -> None:
        self._clock = clock
        self.config = config or PowerConfig()
        self.state = POWER_IDLE
        self.millivolts = 0
        self.speed = 0
        self.rpm = 0
        self._quiet_since = -1  # engine looks off since (ticks ms), -1 (never a tick): it doesn't
        self._low_since = -1
        self._low_logged = False  # battery_low is logged once per episode below the floor
        self._rest_mv = 0  # lowest supply reading since the engine stopped (0: none yet)
        self.parked_at = -1  # ticks when the state became parked (-1: not parked)

    @property
    def polling(self) -> bool:
        return self.state == POWER_DRIVING or self.state == POWER_IDLE

    def ecu(self, rpm: int, speed: int) -> int:
        """The ECU answered: its RPM and speed (-1 when not in this answer)."""
        if rpm >= 0:
            self.rpm = rpm
        if speed >= 0:
            self.speed = speed
        if self.state == POWER_PARKED or self.state == POWER_SLEEPING:
            if self.rpm > 0:
                self._quiet_since = -1
                self.parked_at = -1
                self.state = POWER_DRIVING if self.speed > 0 else POWER_IDLE
                return ENGINE_ON
            return NONE
        self.state = POWER_DRIVING if self.speed > 0 else POWER_IDLE
        if self.rpm > 0:
            self._quiet_since = -1
        return NONE

    def no_answer(self) -> None:
        """The ECU didn't answer a poll (NO DATA, UNABLE TO CONNECT)."""
        self.rpm = 0
        self.speed = 0

    def volts(self, millivolts: int) -> int:
        """A supply reading (ATRV). Returns an event code or NONE."""
        now = self._clock.ms()
        self.millivolts = millivolts
        c = self.config
        if millivolts < c.floor_mv and self.state != POWER_DRIVING:
            if self._low_since < 0:
                self._low_since = now
            elif (time.ticks_diff(now, self._low_since) >= c.floor_after_ms and self.state != POWER_SLEEPING
                  and not self._low_logged):
                self._low_logged = True
                self.state = POWER_SLEEPING
                return BATTERY_LOW
        else:
            self._low_since = -1
            self._low_logged = False
        if self.polling:
            if millivolts < c.running_mv and self.rpm == 0:
                if self._quiet_since < 0:
                    self._quiet_since = now
                elif time.ticks_diff(now, self._quiet_since) >= c.off_after_ms:
                    self.state = POWER_PARKED
                    self.parked_at = now
                    self.speed = 0
                    return ENGINE_OFF
            else:
                self._quiet_since = -1
        elif millivolts >= c.running_mv or (self._rest_mv and millivolts - self._rest_mv >= c.rise_mv):
            # The alternator charges: someone started the engine. (If it was a
            # blip, the ECU's silence sends us back to parked after off_after_ms.)
            self._quiet_since = -1
            self._low_since = -1
            self._low_logged = False
            self._rest_mv = 0
            self.parked_at = -1
            self.state = POWER_IDLE
            return ENGINE_ON
        else:
            if not self._rest_mv or millivolts < self._rest_mv:
                self._rest_mv = millivolts
        return NONE

    def woke(self) -> None:
        """After a pause that kept the program running (direct mode: the host stops polling
        for sleep_ms): judge the car afresh. The dongle's deep sleep is a boot (resume)."""
        self.state = POWER_PARKED
        self.parked_at = self._clock.ms()
        self._low_since = -1
        self._low_logged = False

    def stay_awake(self) -> None:
        """No deep sleep to go to: parked and awake; a battery_low stays logged."""
        self.state = POWER_PARKED
        self.parked_at = self._clock.ms()

    def parked_for(self, now: int) -> int:
        """ms parked so far (0 when not parked)."""
        if self.state != POWER_PARKED or self.parked_at < 0:
            return 0
        return time.ticks_diff(now, self.parked_at)

    def carry(self, carried: "Carried") -> "Carried":
        """Fill a dongle.sleep.Carried with what these rules know, before a deep sleep."""
        now = self._clock.ms()
        carried.rest_mv = self._rest_mv or self.millivolts
        carried.low_ms = -1 if self._low_since < 0 else time.ticks_diff(now, self._low_since)
        carried.low_logged = self._low_logged
        return carried

    def resume(self, carried: "Carried") -> None:
        """A full start after a deep sleep (the timer saw the supply rise, or the supply pin
        woke us): parked, judged from what was carried, so an engine start is a rise above
        the resting supply and a battery_low found asleep is logged at the first reading."""
        now = self._clock.ms()
        c = self.config
        self.state = POWER_PARKED
        self.parked_at = now
        self._rest_mv = carried.rest_mv
        self._low_logged = carried.low_logged
        self._low_since = -1
        if carried.low_ms >= 0:
            self._low_since = time.ticks_add(now, -min(carried.low_ms, c.floor_after_ms))


def stays_asleep(config: PowerConfig, carried: "Carried", mv: int, slept_ms: int, supply_pin: bool) -> bool:
    """At a timer wake, with the supply reading `mv` (-1: none): True to sleep again at once
    (`carried` updated), False to start in full (the engine started, or battery_low is due
    and must be logged). Without a reading only a supply pin can notice an engine start,
    so with none the dongle starts, where it can find out."""
    c = config
    if mv < 0:
        return supply_pin
    if mv >= c.running_mv or (carried.rest_mv and mv - carried.rest_mv >= c.rise_mv):
        return False  # the alternator charges
    if not carried.rest_mv or mv < carried.rest_mv:
        carried.rest_mv = mv
    if mv < c.floor_mv:
        low = 0 if carried.low_ms < 0 else carried.low_ms + slept_ms
        carried.low_ms = min(low, c.floor_after_ms)
        return carried.low_logged or low < c.floor_after_ms
    carried.low_ms = -1
    carried.low_logged = False
    return True
