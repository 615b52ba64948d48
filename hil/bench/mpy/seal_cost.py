# What sealing a record costs on this interpreter: RecordWriter.seal (its MAC included) and
# FlashLog.append, for a full record (~500 B) and a one-group one, with the MAC protocol.auth
# selects (the C hashlib) and with protocol.sha256's bytecode HMAC (the fallback).
#
#   micropython seal_cost.py FLASH_DIR N
# Prints JSON lines ["seal", impl, kind, record_bytes, us_per_seal (best of N), alloc_bytes_per_record,
# us_per_append] (seal: encoding and MAC, bytecode and C the board runs too; append: the copy
# into the log's RAM buffer and, every flush_ms, the file write: the OS's I/O here),
# ["mac256", impl, us_per_mac] (best of N: the MAC alone of a 256-byte message), ["crc", impl,
# record_bytes, us (best of N), alloc_per_record] (FlashLog's frame CRC: see crc_cost), then
# ["end", null].

import binascii
import gc
import json
import struct
import sys
import time
from array import array

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


# FlashLog's frame CRC: binascii.crc32 (C) boxes its result when >= 2**30 on a 32-bit port
# (3 records in 4: 32 B each); the one allocation-free way is CRC-32 in bytecode on two
# 16-bit halves (byte tables, every int below 2**30), measured here against it so the
# choice is made by figures. It must give binascii's CRC, or the run fails.
_TL = array("H", bytes(512))
_TH = array("H", bytes(512))
for _i in range(256):
    _lo = _i
    _hi = 0
    for _ in range(8):
        _b = _lo & 1
        _lo = (_lo >> 1) | ((_hi & 1) << 15)
        _hi >>= 1
        if _b:
            _lo ^= 0x8320
            _hi ^= 0xEDB8
    _TL[_i] = _lo
    _TH[_i] = _hi


def crc_into(buf: bytearray, n: int, seed: int, out: bytearray) -> None:
    lo = (seed & 0xFFFF) ^ 0xFFFF
    hi = (seed >> 16) ^ 0xFFFF
    tl = _TL
    th = _TH
    for i in range(n):
        k = (lo ^ buf[i]) & 0xFF
        lo = ((lo >> 8) | ((hi & 0xFF) << 8)) ^ tl[k]
        hi = (hi >> 8) ^ th[k]
    lo ^= 0xFFFF
    hi ^= 0xFFFF
    out[0] = hi >> 8
    out[1] = hi & 0xFF
    out[2] = lo >> 8
    out[3] = lo & 0xFF


def crc_cost(w: RecordWriter) -> None:
    """["crc", impl, record_bytes, us (best of N), alloc_bytes_per_record] for a full record,
    its seq changed each time (another CRC each: 3 in 4 are >= 2**30), seeded with its length
    as FlashLog seeds it."""
    fill(w, True)
    n = w.seal(0, 1)
    rec = bytearray(w.out[:n])  # exactly the record, as FlashLog's scratch buffer holds it
    out = bytearray(4)
    ref = bytearray(4)
    for impl in ("c", "bytecode"):
        best = 1 << 29
        alloc = 0
        for k in range(N):
            rec[4] = k & 0xFF  # the seq's low byte
            gc.collect()
            a = gc.mem_alloc()
            t = time.ticks_us()
            if impl == "c":
                struct.pack_into(">I", out, 0, binascii.crc32(rec, n))
            else:
                crc_into(rec, n, n, out)
            best = min(best, time.ticks_diff(time.ticks_us(), t))
            alloc += gc.mem_alloc() - a
            struct.pack_into(">I", ref, 0, binascii.crc32(rec, n))
            if out != ref:
                raise SystemExit(impl + " CRC-32 differs from binascii.crc32")
        print(json.dumps(["crc", impl, n, best, alloc / N]))


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
    crc_cost(RecordWriter(KEY))
    print(json.dumps(["end", None]))


main()
