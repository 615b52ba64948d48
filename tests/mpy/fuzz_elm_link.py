# The ELM327 driver on the real pty path: emulator -> hil's link model injecting its
# fault kinds at a high rate (garbage, dropped, cut and replaced replies, adapter resets
# mid-reply) -> this driver. argv: pty, operations, seed. A caller's loop as the
# scheduler runs it: init when not ready, recover after a TIMEOUT. Prints JSON lines:
# ["op", name, status, ms] for every call, then ["end", null]. An exception is printed
# as ["FAIL", repr] and ends the run.

import asyncio
import json
import random
import sys
import time

from dongle import elm327 as E
from dongle.uart import open_pty

PIDS = (b"\x0c\x0d\x05\x04\x11\x0f", b"\x0d", b"\x0c\x0d", b"\x2f")


async def main(path, n, seed):
    random.seed(seed)
    elm = E.ELM327(open_pty(path))
    ops = (("pids", lambda: elm.query_pids(PIDS[random.getrandbits(2)])), ("volts", elm.read_voltage),
           ("dtc", lambda: elm.read_dtcs((3, 7, 10)[random.getrandbits(8) % 3])), ("vin", elm.read_vin))
    for _ in range(n):
        if not elm.ready:
            name, fn = "init", elm.init
        else:
            name, fn = ops[random.getrandbits(8) % len(ops)]
        t = time.ticks_ms()
        try:
            st = await fn()
        except Exception as e:  # noqa: BLE001 - the finding this fuzz is for
            print(json.dumps(["FAIL", name + ": " + repr(e)]))
            return
        ms = time.ticks_diff(time.ticks_ms(), t)
        if name == "volts":
            st = E.OK if st >= 0 else E.GARBAGE
        print(json.dumps(["op", name, E.NAMES[st], ms, elm.ready]))
        if st == E.TIMEOUT:
            t = time.ticks_ms()
            rs = await elm.recover()
            print(json.dumps(["op", "recover", E.NAMES[rs], time.ticks_diff(time.ticks_ms(), t), elm.ready]))
            if rs != E.OK:
                elm.ready = False
    print(json.dumps(["end", None]))


asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
