"""The scheduler's poll cycle against the emulator (argv[1]): heap allocated per request in
steady state, printed as a figure (gc.mem_alloc before/after)."""

import asyncio
import gc
import sys

from dongle import elm327 as E
from dongle import plan as P
from dongle.scheduler import Scheduler
from dongle.uart import open_pty

WARM, MEASURE = 20, 100


async def main():
    elm = E.ELM327(open_pty(sys.argv[1]))
    print("init", E.NAMES[await elm.init()])
    seen = bytearray(256)

    def sink(t, n, ch, off, ln, data):
        for i in range(n):
            seen[ch[i]] = 1

    # Everything fast, so the cycle is all requests and no idle waits.
    rows = tuple((c, 1, 1, 1) for c in (0x0C, 0x0D, 0x04, 0x05, 0x11, 0x0F, 0x10, 0x2F, 0x31, 0x42, 0x01, 0xFF))
    s = Scheduler(elm, P.Plan(rows), sink)
    task = asyncio.create_task(s.run())
    while s.requests < WARM:
        await asyncio.sleep_ms(10)
    gc.collect()
    r0 = s.requests
    a0 = gc.mem_alloc()
    while s.requests < r0 + MEASURE:
        await asyncio.sleep_ms(10)
    a1 = gc.mem_alloc()
    n = s.requests - r0
    s.stop()
    await task
    print("channels", [hex(c) for c in range(256) if seen[c]])
    print("errors", elm.timeouts, elm.garbage, elm.truncated, "given_up", s.given_up)
    print("alloc_per_request", (a1 - a0) // n, "bytes over", n, "requests")


asyncio.run(main())
