# The firmware's timers across the wrap of the clock (dongle.clock: ticks, 2**30 on the
# ESP32 and the 32-bit rig, 2**62 on the 64-bit unix port), on the unix port. Every clock
# starts just below the port's wrap, so a timer set there ends after it; a `now - then`
# comparison would wait a whole period instead. Prints one JSON line per case; last line
# ["end", null]. tests/test_firmware_wrap.py holds the expectations.
#
#   micropython fw_wrap.py DIR     (DIR: an empty directory for the flash log)

import json
import sys
import time

import micropython

from dongle.clock import TicksClock
from dongle.flashlog import FlashLog
from dongle.power import BATTERY_LOW, ENGINE_OFF, NONE, Power, PowerConfig
from protocol.record import RecordWriter

KEY = bytes(range(32))
NEAR_WRAP = time.ticks_add(0, -300)  # 300 ms before the port's ticks wrap


def emit(name, obs):
    print(json.dumps([name, obs]))


class FakeClock:
    def __init__(self, t):
        self.t = t

    def ms(self):
        return self.t

    def at(self, start, delta):
        self.t = time.ticks_add(start, delta)


def case_ticks_clock():
    # The clock's own count passes its wrap (here: 5 quarter periods of uptime), with the
    # underlying ticks starting just below theirs, and reading it never allocates.
    ticks = [NEAR_WRAP]
    clock = TicksClock(lambda: ticks[0])
    quarter = time.ticks_add(0, -1) // 4
    diffs = []
    values = []
    prev = clock.ms()
    for _ in range(5):
        ticks[0] = time.ticks_add(ticks[0], quarter)
        now = clock.ms()
        diffs.append(time.ticks_diff(now, prev) == quarter)
        values.append(now)
        prev = now
    micropython.heap_lock()
    try:
        for _ in range(100):
            ticks[0] = time.ticks_add(ticks[0], 7)
            clock.ms()
        locked = "ok"
    except MemoryError:
        locked = "alloc"
    micropython.heap_unlock()
    emit("ticks_clock", {"diffs": diffs, "wrapped": min(values) < max(values[:2]), "nonneg": min(values) >= 0,
                         "locked": locked})


def case_power_off_timer():
    c = FakeClock(NEAR_WRAP)
    p = Power(c, PowerConfig(off_after_ms=1000, floor_after_ms=100000))
    first = p.volts(12400)  # engine looks off from here (below running_mv, no RPM)
    c.at(NEAR_WRAP, 999)
    early = p.volts(12400)
    c.at(NEAR_WRAP, 1000)
    emit("power_off", {"first": first == NONE, "early": early == NONE, "at_end": p.volts(12400) == ENGINE_OFF})


def case_power_floor_timer():
    c = FakeClock(NEAR_WRAP)
    p = Power(c, PowerConfig(off_after_ms=100000, floor_after_ms=1000))
    first = p.volts(11000)  # below the floor from here
    c.at(NEAR_WRAP, 999)
    early = p.volts(11000)
    c.at(NEAR_WRAP, 1000)
    emit("power_floor", {"first": first == NONE, "early": early == NONE,
                         "at_end": p.volts(11000) == BATTERY_LOW})


def case_flashlog_timed_flush():
    c = FakeClock(NEAR_WRAP)
    log = FlashLog(sys.argv[1], KEY, 200000, 65536, c, flush_ms=1000, buffer_bytes=2048)
    w = RecordWriter(KEY)
    w.group(c.t)
    w.add(0x0D, b"\x2a", 0, 1)
    n = w.seal(log.next_seq, log.boot)
    seq = log.append(w.out, n)
    c.at(NEAR_WRAP, 999)
    log.tick()
    early = log.flushed_seq > seq  # flushed_seq: the next seq after the last one on flash
    c.at(NEAR_WRAP, 1000)
    log.tick()
    emit("flashlog_flush", {"early": early, "at_end": log.flushed_seq > seq})
    log.close()


for case in (case_ticks_clock, case_power_off_timer, case_power_floor_timer, case_flashlog_timed_flush):
    case()
print(json.dumps(["end", None]))
