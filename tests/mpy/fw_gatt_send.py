# The dongle's notify path on a fragmented heap (firmware/dongle/gatt.py `send_record`):
# records of every length, so the tail fragments take every size up to MTU-3, sent while
# no free block on the heap is larger than one GC block. A table that grows as new sizes
# appear needs a large block at some point and raised MemoryError in the sender task
# mid-drive (the stream stopped while STATUS still answered); the notify path may only
# ever need one block at a time. Prints one JSON line per case; tests/test_firmware_gatt_send.py
# holds the expectations. Last line: ["end", null].

import asyncio
import gc
import json

from dongle.gatt import Gatt

_IRQ_CENTRAL_CONNECT = 1
_IRQ_MTU_EXCHANGED = 21


class FakeBLE:
    """What Gatt needs of bluetooth.BLE; gatts_notify only counts (counting allocates nothing)."""

    def __init__(self):
        self.sent = 0
        self.nbytes = 0

    def active(self, *a):
        return True

    def config(self, *a, **kw):
        return None

    def irq(self, handler):
        self.handler = handler

    def gatts_register_services(self, services):
        return ((1, 2, 3),)

    def gatts_set_buffer(self, *a):
        pass

    def gatts_write(self, *a):
        pass

    def gap_advertise(self, *a, **kw):
        pass

    def gap_disconnect(self, conn):
        pass

    def gatts_notify(self, conn, handle, data):
        self.sent += 1
        self.nbytes += len(data)


HOLE_WORDS = 64  # a freed tuple of 62 items: 256 B holes on 32-bit, 512 B on 64-bit


def fragment_heap():
    """Fill the heap with tuples of HOLE_WORDS words and free every other one: afterwards no
    free hole is larger than that (a coroutine's frame fits, a regrown table does not).
    Returns what holds the rest (keep it alive while the heap must stay fragmented)."""
    gc.collect()
    tmpl = [0] * (HOLE_WORDS - 2)
    held = [None] * (gc.mem_free() // (HOLE_WORDS * 4))
    i = 0
    try:
        while i < len(held):
            held[i] = tuple(tmpl)
            i += 1
    except MemoryError:
        pass
    for j in range(0, i, 2):
        held[j] = None
    gc.collect()
    return held


async def send_every_length(g, buf, fragmented):
    """Records of 1..len(buf) bytes; the first length whose send failed, else 0."""
    held = fragment_heap() if fragmented else None
    try:
        for n in range(1, len(buf) + 1):
            if not await g.send_record(buf, n):
                return n
        return 0
    finally:
        held = None  # noqa: F841 - the heap is whole again


ble = FakeBLE()
g = Gatt(ble, "obd-test", b"info", pairing=False)
g._irq(_IRQ_CENTRAL_CONNECT, (1, 0, memoryview(bytes(6))))
g._irq(_IRQ_MTU_EXCHANGED, (1, 247))
buf = bytearray(600)  # records up to 600 B: at MTU 247 the tails take every size
for case in ("fragmented", "whole"):
    ble.sent = ble.nbytes = 0
    try:
        stopped = asyncio.run(send_every_length(g, buf, case == "fragmented"))
        out = {"stopped_at": stopped, "notifications": ble.sent, "bytes": ble.nbytes}
    except MemoryError as e:
        out = {"error": "MemoryError: %s" % e}
    gc.collect()
    print(json.dumps([case, out]))

print(json.dumps(["end", None]))
