# protocol/sha256.py on MicroPython: SHA-256 and HMAC-SHA256 over every message length
# up to MAX_LEN, and records sealed and signed with them.
#
# Prints JSON lines [check, ...]. tests/test_protocol_sha256.py holds them against
# CPython's hashlib and hmac and protocol.record_decode.decode_record, and imports pattern()
# and records() from here, so both interpreters build the very same inputs.

import json

from protocol_canon import hx

from protocol.channels import MAX_DATA
from protocol.record import EVENT_ENGINE_OFF, RecordWriter, Signer

MAX_LEN = 300
# Around the 64-byte block; past it HMAC hashes the key first.
KEY_LENS = (0, 1, 20, 32, 55, 56, 63, 64, 65, 100, 200)
KEY = bytes(range(32))
SRC = b"\x1a\xf8\x32\x40\x7f\x51\x0b\xb8\x01\x02\x03" + bytes(range(100, 120))


def pattern(n, seed):
    return bytes([(i * 167 + seed * 29 + n) & 0xFF for i in range(n)])


def records():
    """(name, record bytes): samples records of 1 group up to a full one (a MAC over 2
    to 8 blocks, the key's pad not counted), then one record of each small kind."""
    w = RecordWriter(KEY)
    seq = 1
    for groups in (1, 2, 3, 5, 1000):
        t = 5000
        g = 0
        while g < groups:
            k = 1 + g * 7 % MAX_DATA
            if not w.fits(4, 3 + k + MAX_DATA):
                break
            w.group(t)
            w.add(0x0C, SRC, 0, 2)
            w.add(0x0D, SRC, 2, 1)
            w.add(0x64, SRC, 0, k)  # length-prefixed channels: long records in few groups
            w.add(0x65, SRC, 0, MAX_DATA)
            t += 200 + (g & 7)
            g += 1
        n = w.seal(seq, 3)
        yield "samples/%d" % g, bytes(w.out[:n])
        seq += 1
    s = Signer(KEY)
    out = bytearray(64)
    yield "gap", bytes(out[:s.gap(out, seq, 3, 100, 40, 7)])
    yield "anchor", bytes(out[:s.anchor(out, seq + 1, 3, 100, 1700000000123)])
    yield "event", bytes(out[:s.event(out, seq + 2, 3, 100, EVENT_ENGINE_OFF, 12400)])
    yield "dtc", bytes(out[:s.dtc(out, seq + 3, 3, 100, 0x03, SRC, 5)])


def main():
    from protocol import auth, sha256

    # C first: the bytecode HMAC only on a build without hashlib.sha256
    print(json.dumps(["selected", "bytecode" if auth.Hmac is sha256.Hmac else "hashlib"]))
    for n in range(MAX_LEN + 1):
        print(json.dumps(["sha256", n, hx(sha256.sha256(pattern(n, 0)))]))
    for what, cls in (("hmac", auth.Hmac), ("hmac_bytecode", sha256.Hmac)):
        for klen in KEY_LENS:
            h = cls(pattern(klen, 1))  # one instance for every length: its midstates are reused
            for n in range(MAX_LEN + 1):
                buf = bytearray(pattern(n, 2) + bytes(32))
                h.mac_into(buf, n, buf, n, 32)  # in place, past the message, as a record's MAC goes
                print(json.dumps([what, klen, n, hx(buf[n:])]))
    h = auth.Hmac(KEY)
    out = bytearray(b"\xee" * 12)
    h.mac_into(pattern(100, 3), 77, out, 5, 4)
    print(json.dumps(["mac_into_part", hx(out)]))
    print(json.dumps(["digest_parts", hx(h.digest(b"obdsync/session", pattern(16, 4), pattern(16, 5)))]))
    for name, rec in records():
        print(json.dumps(["record", name, hx(rec)]))
    print(json.dumps(["end", None]))


if __name__ == "__main__":
    main()
