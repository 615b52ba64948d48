# A dongle-shaped program under the (simulated) watchdog: a poll task that beats and appends
# records to the flash log, a housekeeping task that ticks the log and feeds the watchdog
# through dongle.watchdog.Watchdog, as firmware/dongle/app.py does.
#
#   micropython wdt_hang.py DIR MODE TIMEOUT_MS
# MODE: healthy (runs 1.5 timeouts, then exits) | resume (3 records, then exits) | stuck (after
# 20 records the poll task stops turning but the event loop runs) | spin (after 20 records a
# task never yields).
# Prints "appended SEQ" per record, "flushed SEQ" after each flush, then "exit" if it was not
# reset; simwdt prints "wdt reset" and kills the process.

import asyncio
import sys
import time

from simwdt import WDT

from dongle.flashlog import FlashLog
from dongle.watchdog import Watchdog
from protocol.record import RecordWriter

KEY = bytes(range(32))
root, mode, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3])


class Clock:
    def ms(self):
        return time.ticks_ms()


log = FlashLog(root, KEY, 200000, 16384, Clock(), flush_ms=50, buffer_bytes=1024)
w = RecordWriter(KEY)
src = bytearray(b"\x1a\xf8")
state = {"beat": time.ticks_ms(), "n": 0, "shown": log.flushed_seq}
# stuck_ms well below the timeout so a stuck loop is noticed quickly here
dog = Watchdog(WDT(timeout=timeout), stuck_ms=timeout // 2)


def report_flush():
    # Either task can see a flush: tick() flushes after flush_ms, append() when the buffer
    # fills (on a slow machine the last records' flush can come from either).
    if log.flushed_seq != state["shown"]:
        state["shown"] = log.flushed_seq
        print("flushed", log.flushed_seq - 1)


async def poll():
    while True:
        state["beat"] = time.ticks_ms()
        w.group(time.ticks_ms())
        w.add(0x0D, src, 0, 1)
        seq = log.append(w.out, w.seal(log.next_seq, log.boot))
        print("appended", seq)
        report_flush()
        state["n"] += 1
        if state["n"] == 3 and mode == "resume":
            log.close()
            print("exit")
            sys.exit(0)
        if state["n"] == 20 and mode == "stuck":
            await asyncio.Event().wait()  # never set: the loop runs, this task never turns again
        if state["n"] == 20 and mode == "spin":
            log.flush()
            print("flushed", log.flushed_seq - 1)
            while True:  # a task that never yields: housekeeping never runs again
                pass
        await asyncio.sleep_ms(10)


async def housekeeping():
    while True:
        await asyncio.sleep_ms(10)
        dog.check(state["beat"])
        log.tick()
        report_flush()


async def main():
    asyncio.create_task(poll())
    asyncio.create_task(housekeeping())
    await asyncio.sleep_ms(timeout * 3 // 2 if mode == "healthy" else 60000)
    log.close()
    print("exit")


asyncio.run(main())
