"""The scheduler through hil's vehicle emulator and link model (argv[1]: the link's pty), with
faults injected on the CPython side: it keeps polling, re-initialises after a reset, and the
samples keep coming. argv[2]: requests to run."""

import asyncio
import sys

from dongle import elm327 as E
from dongle import plan as P
from dongle.scheduler import Scheduler
from dongle.uart import open_pty

N = int(sys.argv[2])


async def main():
    elm = E.ELM327(open_pty(sys.argv[1]))
    print("init", E.NAMES[await elm.init()], elm.is_can)
    got = bytearray(256)
    resets = []

    def sink(t, n, ch, off, ln, data):
        for i in range(n):
            if got[ch[i]] < 255:
                got[ch[i]] += 1

    # a fast plan: the run is bounded by the link, not by the plan's intervals
    rows = tuple((c, 1, 1, 1) for c in (0x0C, 0x0D, 0x04, 0x11, 0x05, 0x0F, 0x10, 0xFF))
    s = Scheduler(elm, P.Plan(rows), sink, on_reset=resets.append)
    task = asyncio.create_task(s.run())
    while s.requests < N:
        await asyncio.sleep_ms(20)
    s.stop()
    await task
    if not elm.ready:
        # stopped right after a reset fault, before the loop's own re-init: the chip must
        # still come back (the loop's re-inits are counted by `resets` below)
        await elm.init()
    print("speed_samples", got[0x0D] > N // 4, "volt_samples", got[0xFF] > 0)
    print("reinit", len(resets) > 0, elm.resets > 0, "timeouts", elm.timeouts > 0, "ready", elm.ready)
    print("counts", s.requests, elm.resets, elm.timeouts, elm.errors, elm.garbage, elm.truncated, s.given_up)


asyncio.run(main())
