# The shim's frames to the central while an IRQ sends in the middle of one (MicroPython only;
# driven by tests/test_blesim.py, which parses what the central received).
#
# A notification is written to a stream that takes `step` bytes a write (and, when `stall`, nothing
# every other call: a full non-blocking stream). At its write number `at`, a WRITE from the central
# is handled, as the reader thread hands it over:
#   eintr     inside the write, as the unix port runs scheduled callbacks when a signal interrupts
#             the syscall (EINTR; the GC signals every thread)
#   schedule  through micropython.schedule, so it runs at the next jump in the bytecode
# The firmware's handler answers that write with a notification of its own (IRQ 3), the shim with
# a WRITE_RSP. Prints the handles, then per case: mode step stall at handled <hex written>.
import time

import bluetooth
import micropython
from micropython import const

_IRQ_GATTS_WRITE = const(3)
_MSG_WRITE = const(0x06)

ble = bluetooth.BLE()
ble.active(True)
((h_tel, h_ctl),) = ble.gatts_register_services((
    (bluetooth.UUID(0x180F), (
        (bluetooth.UUID(0x2A19), bluetooth.FLAG_NOTIFY),
        (bluetooth.UUID(0x2A1A), bluetooth.FLAG_WRITE | bluetooth.FLAG_NOTIFY),
    )),
))

TELEMETRY = bytes(range(0x40, 0x40 + 20))  # fills a notification at MTU 23
COMMAND = b"ack 7"


def on_irq(event, data):
    if event == _IRQ_GATTS_WRITE and data[1] == h_ctl:
        ble.gatts_notify(data[0], h_ctl, b"re:" + ble.gatts_read(h_ctl))


ble.irq(on_irq)
print("handles", h_tel, h_ctl)


class Stream:
    """The central's end of the socket, as the shim's writes see it."""

    def __init__(self, step, stall, at, mode):
        self.step, self.stall, self.at, self.mode = step, stall, at, mode
        self.out = bytearray()
        self.calls = 0
        self.conn = None
        self.handled = False

    def write(self, buf, off=None, n=None):
        if n is None:  # write(buf) or write(buf, n)
            off, n = 0, len(buf) if off is None else off
        self.calls += 1
        if self.calls == self.at:
            self.hand_over()
        if self.stall and self.calls % 2:
            return None
        take = min(n, self.step)
        self.out.extend(bytes(buf[off:off + take]))
        return take

    def hand_over(self):
        conn = self.conn
        conn.rx[0] = h_ctl & 0xFF
        conn.rx[1] = h_ctl >> 8
        conn.rx[2:2 + len(COMMAND)] = COMMAND
        conn.rx_len = 2 + len(COMMAND)
        conn.rx_type = _MSG_WRITE
        self.handled = True
        if self.mode == "eintr":
            ble._dispatch(conn)
        else:
            micropython.schedule(ble._dispatch_cb, conn)


def run(step, stall, at, mode):
    stream = Stream(step, stall, at, mode)
    conn = bluetooth._Conn(stream)
    stream.conn = conn
    conn.handle = 1
    conn.credits = 100
    conn.refilled = time.ticks_ms()
    ble._conns[1] = conn
    try:
        ble.gatts_notify(1, h_tel, TELEMETRY)
        for _ in range(3):
            pass  # jumps: a callback scheduled by the last write runs here at the latest
    finally:
        del ble._conns[1]
    return stream


for mode in ("eintr", "schedule"):
    for step in (1, 2, 3, 4, 7, 64):
        for stall in (0, 1):
            calls = run(step, stall, 0, mode).calls  # how many writes the notification takes alone
            for at in range(1, calls + 1):
                s = run(step, stall, at, mode)
                print(mode, step, stall, at, int(s.handled), s.out.hex())
print("done")
