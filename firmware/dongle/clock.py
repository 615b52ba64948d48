"""Milliseconds since boot that never wrap (the dongle's `clock.ms()`).

time.ticks_ms wraps (at 2**30 on the ESP32); records carry a u32 of ms since
boot, so we count ourselves: wrap-safe ticks_diff between readings, added up.
A boot lasting longer than 49 days wraps the u32 — the boot counter and the
daemon's anchors keep such samples apart.
"""

import time


class TicksClock:
    def __init__(self):
        self._last = time.ticks_ms()
        self._ms = 0

    def ms(self):
        now = time.ticks_ms()
        self._ms += time.ticks_diff(now, self._last)
        self._last = now
        return self._ms & 0xFFFFFFFF
