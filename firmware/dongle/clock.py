"""Milliseconds since boot, as small ints (the dongle's `clock.ms()`).

The value is ticks: it wraps with the port's ticks period, 2**30 on the ESP32 (and on
the 32-bit unix rig), so it never leaves the small-int range and reading the clock
allocates nothing, ever. Every comparison of two clock values therefore goes through
time.ticks_diff, every sum through time.ticks_add (valid for spans under half the
period: 6.2 days on the board). Records carry the value as their u32 ms since boot: a
boot lasting longer than 12.4 days starts the count again at 0, and the daemon unwraps
it per boot by record order (obdsync.ingest.unwrap_tick).
"""

import time

from micropython import const

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away
# and has no `typing`, so the names they use exist for the checker only.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from collections.abc import Callable


class TicksClock:
    def __init__(self, ticks_ms: Callable[[], int] = time.ticks_ms) -> None:  # tests hand in ticks that wrap soon
        self._ticks = ticks_ms
        self._last = ticks_ms()
        self._ms = 0

    def ms(self) -> int:
        now = self._ticks()
        # Both ticks: the sum stays a small int (a plain `+` would pass 2**30 at the wrap).
        self._ms = time.ticks_add(self._ms, time.ticks_diff(now, self._last))
        self._last = now
        return self._ms
