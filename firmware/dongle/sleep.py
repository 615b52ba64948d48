"""Deep sleep as the ESP32 does it: `machine.deepsleep(ms)` powers the chip down and never
returns; every wake is a boot (main.py runs from the top, RAM is gone, ticks start at 0).

So what a parked dongle must remember across a sleep rides in RTC memory
(`machine.RTC().memory()`, 2 KB on the ESP32: kept through deep sleep, lost when the
power goes), and the boot reads why it runs (`machine.reset_cause()` ==
DEEPSLEEP_RESET, then `machine.wake_reason()`):

    COLD    power-on, reset button, watchdog, a crash: start afresh (no carried state)
    TIMER   the sleep timer: a quick look at the supply, back to sleep if still parked
    SUPPLY  the supply-rise pin (EXT0: the engine started, hil/README.md "The board"): start

Hardware comes in through the constructor: the board's `machine` and `esp32` modules,
or on the unix port hil/mpy/simsleep.py, which models the sleep as the process exiting
and the rig starting it again with the reason and the RTC memory carried over.
"""

import struct

from micropython import const

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from types import ModuleType

COLD = const(0)
TIMER = const(1)
SUPPLY = const(2)
REASONS = ("cold", "timer", "supply")

_MAGIC = b"OBDs"
# magic, rest mV, ms below the floor so far (-1: not below), battery_low logged, sleeps so far
_FORMAT = "<4sHiBH"


class Carried:
    """The power rules' state that crosses a deep sleep (see power.Power.carry/resume)."""

    def __init__(self, rest_mv: int = 0, low_ms: int = -1, low_logged: bool = False, sleeps: int = 0) -> None:
        self.rest_mv = rest_mv  # lowest parked supply reading (an engine start is a rise above it)
        self.low_ms = low_ms
        self.low_logged = low_logged
        self.sleeps = sleeps

    def encode(self) -> bytes:
        return struct.pack(_FORMAT, _MAGIC, min(self.rest_mv, 0xFFFF), self.low_ms, 1 if self.low_logged else 0,
                           min(self.sleeps, 0xFFFF))

    @staticmethod
    def decode(data: bytes) -> "Carried | None":
        """The state in `data`, or None when it is not ours (empty after a power-on, or
        another firmware's)."""
        if len(data) != struct.calcsize(_FORMAT) or bytes(data[:4]) != _MAGIC:
            return None
        _, rest, low, logged, sleeps = struct.unpack(_FORMAT, data)
        return Carried(rest, low, logged != 0, sleeps)


class DeepSleep:
    """The board's sleep: `machine` and `esp32` (or the unix port's stand-in for both);
    `supply_pin`: the RTC GPIO the supply-rise comparator drives, or None (timer only)."""

    def __init__(self, machine: ModuleType, esp32: ModuleType, supply_pin: int | None = None,
                 level: int = 1) -> None:
        self._m = machine
        self._esp32 = esp32
        self.supply_pin = supply_pin
        self._level = level

    def reason(self) -> int:
        m = self._m
        if m.reset_cause() != m.DEEPSLEEP_RESET:
            return COLD
        w = m.wake_reason()
        if w == m.TIMER_WAKE:
            return TIMER
        if w == m.EXT0_WAKE or w == m.EXT1_WAKE:
            return SUPPLY
        return COLD  # a wake we did not arm (touch, ULP): start afresh

    def carried(self) -> Carried | None:
        return Carried.decode(self._m.RTC().memory())

    def sleep(self, ms: int, carried: Carried) -> None:
        """Keep `carried` in RTC memory, arm the wakes and power down: does not return."""
        m = self._m
        carried.sleeps += 1
        m.RTC().memory(carried.encode())
        if self.supply_pin is not None:
            pin = m.Pin(self.supply_pin, m.Pin.IN)
            self._esp32.wake_on_ext0(pin, self._esp32.WAKEUP_ANY_HIGH if self._level else self._esp32.WAKEUP_ALL_LOW)
        m.deepsleep(ms)
