# Appends to the flash log until killed: the power-cut test SIGKILLs this process.
#
#   micropython flashlog_powercut.py DIR|lfs:IMAGE CAPACITY SEGMENT LIMIT
# Real clock, flush_ms 20, an ack now and then (state file rewrites, segment deletions).
# Prints "flushed S" whenever the records below S reach flash, "done" after LIMIT appends.

import sys
import time

import flashlog_lfs

from dongle.flashlog import FlashLog
from protocol.record import RecordWriter

KEY = bytes(range(32))


class Clock:
    def __init__(self):
        self._t0 = time.ticks_ms()

    def ms(self):
        return time.ticks_diff(time.ticks_ms(), self._t0)


def main():
    root = flashlog_lfs.root(sys.argv[1])
    log = FlashLog(root, KEY, int(sys.argv[2]), int(sys.argv[3]), Clock(), flush_ms=20, buffer_bytes=1024,
                   state_ms=50)
    limit = int(sys.argv[4])
    w = RecordWriter(KEY)
    src = bytearray(2)
    shown = log.flushed_seq
    print("boot", log.boot, "next", log.next_seq)
    for i in range(limit):
        seq = log.next_seq
        for g in range(1 + seq % 6):
            w.group(g * 10)
            src[0] = (seq >> 8) & 0xFF
            src[1] = seq & 0xFF
            w.add(0x0C, src, 0, 2)
        log.append(w.out, w.seal(seq, log.boot))
        log.tick()
        if i % 50 == 49 and log.flushed_seq > 30:
            log.ack(log.flushed_seq - 30)
        if log.flushed_seq != shown:
            shown = log.flushed_seq
            print("flushed", shown)
    log.flush()
    print("done", log.flushed_seq)


main()
