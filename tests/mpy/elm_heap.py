"""The driver's request/reply path under micropython.heap_lock(): start_pids / start_voltage
and poll() to the end of a canned reply, for every reply shape the parser routes (headers
off with ISO-TP frames, CAN 11-bit headers with two ECUs' frames interleaved, 29-bit, a
legacy line with its check byte, ATRV, NO DATA). The stream copies from preallocated
replies, so any allocation is the driver's. Prints `NAME STATUS RES_N LOCKED GATHERED` a
case (GATHERED: the interleaved frames went through _gather)."""

# ruff: noqa: UP031 - %-formatting: MicroPython has no f-string format specs on every port

import micropython
from elm_fake import Clock, can_lines, frames, legacy_line

from dongle import elm327 as E

ROUNDS = 20


class Canned:
    """A stream that answers every request with `reply` (bytes), copying it out without a
    slice: nothing it does allocates."""

    poll_ms = 1

    def __init__(self, reply):
        self.reply = reply
        self.pos = len(reply)

    def write(self, buf):
        self.pos = 0  # a request was sent: its reply is waiting

    def readinto(self, buf):
        r = self.reply
        n = len(r) - self.pos
        if n > len(buf):
            n = len(buf)
        p = self.pos
        for i in range(n):
            buf[i] = r[p + i]
        self.pos = p + n
        return n

    def drain(self):
        return 0


def rounds(elm, pids, n, out):
    for _ in range(ROUNDS):
        st = elm.start_pids(pids, n) if n else elm.start_voltage()
        while st == E.PENDING:
            st = elm.poll()
        out[0] = st
        out[1] = elm.res_n


def run(name, reply, pids=b"", is_can=True):
    elm = E.ELM327(Canned(reply), Clock())
    elm.ready = True
    elm.is_can = is_can
    elm.digit = False
    out = [0, 0]
    n = len(pids)
    rounds(elm, pids, n, out)  # once unlocked: what a first call may set up is not the figure
    micropython.heap_lock()
    try:
        rounds(elm, pids, n, out)
        locked = "ok"
    except MemoryError:
        locked = "alloc"
    micropython.heap_unlock()
    print(name, E.NAMES[out[0]], out[1], locked, "gathered" if elm._gathered else "-")


SIX = b"\x0c\x0d\x04\x05\x11\x0f"
BODY = "410C1AF80D320411050F117F0F44"
run("headers_off_frames", frames(BODY) + b"\r>", SIX)
run("headers_off_single", b"410C1AF8\r\r>", b"\x0c")
# Two ECUs answering at once with headers on: their frames interleave, _gather sorts them.
a = can_lines("7E8", BODY).split("\r")
b = can_lines("7E9", BODY).split("\r")
mixed = "\r".join(a[i // 2] if i % 2 == 0 else b[i // 2] for i in range(2 * len(a)))  # same length
run("can11_two_ecus_interleaved", mixed.encode() + b"\r>", SIX)
run("can29", can_lines("18DAF110", "410C1AF80D32").encode() + b"\r>", b"\x0c\x0d")
run("legacy", legacy_line("486B10", "410C1AF8").encode() + b"\r>", b"\x0c", is_can=False)
run("volts", b"12.6V\r\r>")
run("no_data", b"NO DATA\r\r>", b"\x0c")
print("end")
