# Where sealing a full record's time goes on this interpreter: the whole seal (C MAC), the
# encoding alone (a MAC that does nothing), protocol.record's bytecode encoder (_encode_wide,
# forced by moving t0 past every group), and the MAC of the record's bytes alone. The bytecode
# and the viper parts translate to the board by different factors (hil/README.md, "CPU on
# the board"). Best of N microseconds each:
#
#   micropython seal_parts.py [N]
# Prints JSON lines [part, µs, record bytes], then ["end", null].

import json
import sys
import time

from protocol import auth
from protocol.record import RecordWriter

KEY = bytes(range(32))
SRC = bytearray(b"\x1a\xf8\x32\x40\x7f\x51")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200


class NoMac:
    """protocol._types.Mac that computes nothing: seal without its MAC."""

    def digest(self, a: bytes | bytearray | memoryview, b: bytes | bytearray | memoryview | None = None,
               c: bytes | bytearray | memoryview | None = None) -> bytes:
        return b""

    def mac_into(self, msg: bytes | bytearray | memoryview, length: int, out: bytearray | memoryview, offset: int,
                 n: int) -> None:
        pass


def fill(w: RecordWriter) -> None:
    # seal_cost.py's full record: groups of four samples, 200 ms apart.
    t = 1000
    while w.fits(4, 6):
        w.group(t)
        w.add(0x0C, SRC, 0, 2)
        w.add(0x0D, SRC, 2, 1)
        w.add(0x11, SRC, 3, 1)
        w.add(0x05, SRC, 4, 2)
        t += 200


def best_seal(w: RecordWriter, wide: bool) -> tuple[int, int]:
    best = 1 << 29
    n = 0
    for _ in range(N):
        fill(w)
        if wide:
            w.t0 += 0x10000000  # every group before t0: beyond the viper encoder's span
        t = time.ticks_us()
        n = w.seal(1, 1)
        best = min(best, time.ticks_diff(time.ticks_us(), t))
    return best, n


def best_mac(length: int) -> int:
    h = auth.Hmac(KEY)
    buf = bytearray(length + 4)
    best = 1 << 29
    for _ in range(N):
        t = time.ticks_us()
        h.mac_into(buf, length, buf, length, 4)
        best = min(best, time.ticks_diff(time.ticks_us(), t))
    return best


def main() -> None:
    w = RecordWriter(KEY)
    us, n = best_seal(w, False)
    print(json.dumps(["seal", us, n]))
    w._hmac = NoMac()
    us, n = best_seal(w, False)
    print(json.dumps(["encode", us, n]))
    us, n = best_seal(w, True)
    print(json.dumps(["encode_bytecode", us, n]))
    print(json.dumps(["mac", best_mac(273), 273]))
    print(json.dumps(["end", None]))


main()
