"""Power states: poll while the engine runs, let the car sleep when it doesn't.

A dongle that keeps querying a parked car keeps its ECUs awake and drains the
battery, so: engine off (the ECU stops answering or RPM is 0, and the supply is
below the charging level for a while) stops OBD polling and leaves only a slow
ATRV. Volts rising again (the alternator) or the ECU answering resumes. A
battery below the floor for long enough sends the dongle to deep sleep with a
timer wake, after the application has logged it and flushed the log.

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

NONE = const(0)
ENGINE_ON = const(2)  # the protocol.record EVENT codes
ENGINE_OFF = const(3)
BATTERY_LOW = const(4)


class PowerConfig:
    def __init__(self, running_mv: int = 13000, off_after_ms: int = 60000, floor_mv: int = 11800,
                 floor_after_ms: int = 300000, sleep_ms: int = 900000, rise_mv: int = 500) -> None:
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
        self._rest_mv = 0  # lowest supply reading since the engine stopped (0: none yet)

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
            elif time.ticks_diff(now, self._low_since) >= c.floor_after_ms and self.state != POWER_SLEEPING:
                self.state = POWER_SLEEPING
                return BATTERY_LOW
        else:
            self._low_since = -1
        if self.polling:
            if millivolts < c.running_mv and self.rpm == 0:
                if self._quiet_since < 0:
                    self._quiet_since = now
                elif time.ticks_diff(now, self._quiet_since) >= c.off_after_ms:
                    self.state = POWER_PARKED
                    self.speed = 0
                    return ENGINE_OFF
            else:
                self._quiet_since = -1
        elif millivolts >= c.running_mv or (self._rest_mv and millivolts - self._rest_mv >= c.rise_mv):
            # The alternator charges: someone started the engine. (If it was a
            # blip, the ECU's silence sends us back to parked after off_after_ms.)
            self._quiet_since = -1
            self._low_since = -1
            self._rest_mv = 0
            self.state = POWER_IDLE
            return ENGINE_ON
        else:
            if not self._rest_mv or millivolts < self._rest_mv:
                self._rest_mv = millivolts
        return NONE

    def woke(self) -> None:
        """Back from a (simulated) deep sleep: judge the car afresh."""
        self.state = POWER_PARKED
        self._low_since = -1
