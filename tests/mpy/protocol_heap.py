# Heap use of the dongle's per-sample paths, measured on MicroPython (-X heapsize=64K).
#
# Prints JSON lines [what, bytes allocated]. Measured inside functions: a loop at
# module level allocates by itself (its variables are globals in a dict).

import gc
import json

from protocol.frames import Fragmenter, payload_size
from protocol.record import EVENT_ENGINE_ON, MAX_RECORD, RecordWriter, Signer

KEY = bytes(range(32))
SRC = bytearray(b"\x1a\xf8\x32\x40\x7f\x51\x0b\xb8\x01\x02\x03")


def fill_groups(w, t, limit):
    """The poll loop's calls for up to `limit` requests: 5 Hz PIDs, slower ones now and
    then, a length-prefixed channel, ATRV. Returns (bytes allocated, groups)."""
    gc.collect()
    before = gc.mem_alloc()
    n = 0
    while n < limit and w.fits(7, 14):
        w.group(t)
        w.add(0x0C, SRC, 0, 2)
        w.add(0x0D, SRC, 2, 1)
        w.add(0x11, SRC, 3, 1)
        w.add(0x04, SRC, 4, 1)
        if n % 5 == 0:
            w.add(0x05, SRC, 5, 1)
            w.add(0x10, SRC, 6, 2)
        if n % 7 == 3:
            w.add(0x64, SRC, 0, 5)
        if n % 11 == 0:
            w.group(t + 31)
            w.add(0xFF, SRC, 6, 2)
        t += 197 + (n & 7)
        n += 1
    return gc.mem_alloc() - before, n


def seal(w, seq):
    gc.collect()
    before = gc.mem_alloc()
    n = w.seal(seq, 1)
    return gc.mem_alloc() - before, n


def sign_all(s, out, seq):
    """One record of each small kind, as the dongle signs them (MAC included)."""
    gc.collect()
    before = gc.mem_alloc()
    s.gap(out, seq, 1, 1000, 7, 3)
    s.anchor(out, seq + 1, 1, 1000, 1_700_000_000_000)
    s.event(out, seq + 2, 1, 1000, EVENT_ENGINE_ON, 13800)
    s.dtc(out, seq + 3, 1, 1000, 0x03, SRC, 4)
    return gc.mem_alloc() - before


def notify_all(f, out, msg, length, mtu):
    """Every fragment of one record into the one notification buffer."""
    gc.collect()
    before = gc.mem_alloc()
    off = 0
    count = 0
    while True:
        k = f.fill(out, msg, length, off, mtu)
        off += k - 1
        count += 1
        if off >= length:
            break
    return gc.mem_alloc() - before, count


def main():
    w = RecordWriter(KEY, MAX_RECORD)
    signer = Signer(KEY)
    small = bytearray(MAX_RECORD)
    f = Fragmenter()
    out = bytearray(payload_size(517) + 1)
    worst_stage = 0
    worst_fill = 0
    seal_small = []
    seal_full = []
    signed = []
    for rnd in range(6):
        a, n = fill_groups(w, 1000 + 60000 * rnd, 1000)
        if rnd:  # the first round warms up (nothing to warm today, but it is not steady state)
            worst_stage = max(worst_stage, a)
        a, length = seal(w, 2 * rnd)
        seal_full.append(a)
        for mtu in (23, 247, 517):
            a, count = notify_all(f, out, w.out, length, mtu)
            worst_fill = max(worst_fill, a)
        fill_groups(w, 1000, 1)
        a, length = seal(w, 2 * rnd + 1)
        seal_small.append(a)
        signed.append(sign_all(signer, small, 100 + 4 * rnd))
    print(json.dumps(["groups_per_record", n]))
    print(json.dumps(["stage_alloc", worst_stage]))
    print(json.dumps(["fill_alloc", worst_fill]))
    # Every record, the first included: the MAC's state is made with the writer.
    print(json.dumps(["seal_alloc_full", seal_full]))
    print(json.dumps(["seal_alloc_one_group", seal_small]))
    print(json.dumps(["sign_alloc", signed]))
    gc.collect()
    print(json.dumps(["heap_free", gc.mem_free()]))
    print(json.dumps(["end", None]))


main()
