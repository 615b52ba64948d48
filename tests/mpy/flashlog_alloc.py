# Heap allocated by the flash log's steady-state append, flush, tick and replay paths.
#
#   micropython flashlog_alloc.py DIR
# Prints "append_bytes N", "append_locked ok|alloc", "read_bytes N", "read_locked ok|alloc",
# "read_total N", "word 32|64" (the interpreter's word size).

import gc
import sys

import micropython

from dongle.flashlog import FlashLog
from protocol.record import RecordWriter

KEY = bytes(range(32))


class FakeClock:
    def __init__(self):
        self.t = 0

    def ms(self):
        return self.t


def stamp(buf, seq):
    buf[1] = (seq >> 24) & 0xFF
    buf[2] = (seq >> 16) & 0xFF
    buf[3] = (seq >> 8) & 0xFF
    buf[4] = seq & 0xFF


def appends(log, clock, buf, n, count):
    # 100 ms a record with flush_ms 1000: a flush (write + sync) every 10 appends.
    for _ in range(count):
        stamp(buf, log.next_seq)
        log.append(buf, n)
        clock.t += 100
        log.tick()


def reads(cursor, buf):
    got = 0
    while cursor.read_into(buf):
        got += 1
    return got


# fn takes no arguments: a call with *args builds its argument array on the heap.
def measured(fn):
    gc.collect()
    before = gc.mem_alloc()
    fn()
    return gc.mem_alloc() - before


def locked(fn):
    micropython.heap_lock()
    try:
        fn()
        result = "ok"
    except MemoryError:
        result = "alloc"
    micropython.heap_unlock()
    return result


def main():
    clock = FakeClock()
    # One segment holds the whole run: rotation (a new file object) is not steady state.
    log = FlashLog(sys.argv[1], KEY, 200000, 65536, clock, flush_ms=1000, buffer_bytes=1024)
    w = RecordWriter(KEY)
    src = bytearray(b"\x1a\xf8")
    for g in range(4):
        w.group(g * 100)
        w.add(0x0C, src, 0, 2)
        w.add(0x0D, src, 0, 1)
    n = w.seal(0, log.boot)
    buf = w.out
    appends(log, clock, buf, n, 50)  # warm up: the first flush
    print("append_bytes", measured(lambda: appends(log, clock, buf, n, 200)))
    print("append_locked", locked(lambda: appends(log, clock, buf, n, 200)))
    log.flush()
    out = bytearray(512)
    # A reader opens its segment file on its first read (and reopens once per flush
    # when it has caught up): steady state is the records after that.
    c = log.cursor(0)
    c.read_into(out)
    print("read_bytes", measured(lambda: reads(c, out)))
    c2 = log.cursor(0)
    c2.read_into(out)
    print("read_locked", locked(lambda: reads(c2, out)))
    print("read_total", c2.seq)
    print("word", 64 if sys.maxsize > 2**31 else 32)
    log.close()


main()
