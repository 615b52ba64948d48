# What sealing a record costs on this interpreter: RecordWriter.seal (its MAC included) and
# FlashLog.append, for a full record (~500 B) and a one-group one, with the MAC protocol.auth
# selects (the C hashlib) and with protocol.sha256's bytecode HMAC (the fallback).
#
#   micropython seal_cost.py FLASH_DIR N
# Prints JSON lines ["seal", impl, kind, record_bytes, us_per_seal (best of N), alloc_bytes_per_record,
# us_per_append] (seal: encoding and MAC, bytecode and C the board runs too; append: the copy
# into the log's RAM buffer and, every flush_ms, the file write: the OS's I/O here),
# ["mac256", impl, us_per_mac] (best of N: the MAC alone of a 256-byte message), then ["end", null].

import gc
import json
import sys
import time

from micropython import const

from dongle.flashlog import FlashLog
from protocol import auth, sha256
from protocol.record import RecordWriter

# Annotations are for the type check (hil/mpy/mypy.ini): MicroPython compiles them away and
# has no `typing`, so the names they use exist for the checker only.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from protocol._types import Mac

KEY = bytes(range(32))
N = int(sys.argv[2])
SRC = bytearray(b"\x1a\xf8\x32\x40\x7f\x51")


class Clock:
    def ms(self) -> int:
        return time.ticks_ms()


def fill(w: RecordWriter, full: bool) -> None:
    t = 1000
    while True:
        if not w.fits(4, 6):
            return
        w.group(t)
        w.add(0x0C, SRC, 0, 2)
        w.add(0x0D, SRC, 2, 1)
        w.add(0x11, SRC, 3, 1)
        w.add(0x05, SRC, 4, 2)
        t += 200
        if not full:
            return


# Seal and MAC times are the fastest of N: each call is ~0.1-1 ms, and on a shared build
# machine a call that was preempted reads slower, never faster. The calibration factor they
# are scaled by is a best-of-k too (hil/bench/calibrate.py).
def measure(log: FlashLog, w: RecordWriter, full: bool) -> tuple[int, int, float, float]:
    us = 1 << 29
    us_append = 0
    alloc = 0
    size = 0
    for _ in range(N):
        fill(w, full)  # not measured: the sample path (0 B, figure "board" measures it apart)
        gc.collect()
        a = gc.mem_alloc()
        t = time.ticks_us()
        n = w.seal(log.next_seq, log.boot)
        t2 = time.ticks_us()
        log.append(w.out, n)
        us_append += time.ticks_diff(time.ticks_us(), t2)
        us = min(us, time.ticks_diff(t2, t))
        alloc += gc.mem_alloc() - a
        size = n
    return size, us, alloc / N, us_append / N


def mac256(h: Mac) -> int:
    msg = bytearray(256)
    out = bytearray(32)
    best = 1 << 29
    for _ in range(N):
        t = time.ticks_us()
        h.mac_into(msg, 256, out, 0, 16)
        best = min(best, time.ticks_diff(time.ticks_us(), t))
    return best


def main() -> None:
    print(json.dumps(["mac256", "c", mac256(auth.Hmac(KEY))]))
    print(json.dumps(["mac256", "bytecode", mac256(sha256.Hmac(KEY))]))
    log = FlashLog(sys.argv[1], KEY, 1 << 20, 65536, Clock())
    for impl in ("c", "bytecode"):
        w = RecordWriter(KEY)
        if impl == "bytecode":
            w._hmac = sha256.Hmac(KEY)  # the fallback, as a build without hashlib.sha256 runs
        for kind, full in (("full", True), ("one_group", False)):
            size, us, alloc, us_append = measure(log, w, full)
            print(json.dumps(["seal", impl, kind, size, us, alloc, us_append]))
    log.close()
    print(json.dumps(["end", None]))


main()
