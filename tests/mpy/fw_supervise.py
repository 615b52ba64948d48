# Dongle.run supervises its tasks (firmware/dongle/app.py): one that dies ends run() with
# its exception (on the board the unfed watchdog then resets the chip) instead of leaving
# a dongle that answers commands but no longer streams; stop() still ends run() quietly.
# The tasks are stand-ins on a Dongle built without its __init__ (no radio, UART or flash).
# Prints one JSON line per case; tests/test_firmware_sender.py holds the expectations.
# Last line: ["end", null].

import asyncio
import json

from dongle.app import Dongle


class Sched:
    beat = 0

    async def run(self):
        while True:
            await asyncio.sleep_ms(5)

    def stop(self):
        pass


async def idle():
    while True:
        await asyncio.sleep_ms(5)


async def dies():
    await asyncio.sleep_ms(20)
    raise MemoryError("memory allocation failed (the test's)")


async def returns():
    await asyncio.sleep_ms(20)


class Bare(Dongle):
    def __init__(self):  # no radio, UART or flash: run() is what is tested
        pass


def dongle(sender):
    d = Bare()
    d.running = True
    d.sched = Sched()
    d.housekeeping = d.control = d.connection = idle
    d.sender = sender
    d.shut = 0

    def shutdown():
        d.shut += 1

    d.shutdown = shutdown
    return d


async def stop_later(d):
    await asyncio.sleep_ms(300)
    d.stop()


for case, task in (("dies", dies), ("returns", returns), ("stopped", idle)):
    d = dongle(task)
    try:
        asyncio.run(asyncio.gather(d.run(), stop_later(d)))
        out = {"ended": "quietly", "shutdown": d.shut}
    except Exception as e:  # noqa: BLE001 - what ended run() is the result
        out = {"ended": "%s: %s" % (type(e).__name__, e), "shutdown": d.shut}
    print(json.dumps([case, out]))

print(json.dumps(["end", None]))
