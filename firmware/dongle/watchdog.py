"""The hardware watchdog, fed only while the dongle makes progress.

A hung UART read, a task that never yields or a poll loop stuck on an await stops the
feeding, and the chip resets: the flash log is power-cut safe, so a reset loses at most
its unflushed tail. The housekeeping task calls check() every HOUSEKEEPING_MS; it feeds
the watchdog when the poll loop has turned within `stuck_ms` (its `beat`, in real ticks:
a watchdog counts real time, whatever clock the records use). If the event loop itself
blocks, housekeeping never runs and the watchdog fires after its own timeout.

On the board `wdt` is machine.WDT(timeout=...) (it cannot be stopped once started, and
deep sleep stops it); on the unix port hil/mpy/simwdt.py stands in for it.
"""

import time

from micropython import const

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away
# and has no `typing`, so the names they use exist for the checker only.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from dongle._types import Wdt

STUCK_MS = const(60000)  # longer than the poll loop's slowest honest turn (adapter init, backoff)


class Watchdog:
    def __init__(self, wdt: Wdt, stuck_ms: int = STUCK_MS) -> None:
        self._wdt = wdt
        self._stuck_ms = stuck_ms
        self.fed = 0  # feeds so far (STATUS-style counter; tests watch it)

    def check(self, beat: int) -> bool:
        """Feed if the poll loop's last turn (time.ticks_ms() at `beat`) is recent."""
        if time.ticks_diff(time.ticks_ms(), beat) < self._stuck_ms:
            self._wdt.feed()
            self.fed += 1
            return True
        return False
