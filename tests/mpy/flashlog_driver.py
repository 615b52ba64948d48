# Drives one boot of the dongle's flash log, commands from argv; used by tests/test_flashlog.py.
#
#   micropython flashlog_driver.py DIR|lfs:IMAGE CAPACITY SEGMENT OP...
# OP: append:K (K sample records, sizes vary with seq) | event:K (small records) | flush |
#     tick:MS (advance the fake clock, then tick) | ack:SEQ | read:SEQ (a new cursor from SEQ
#     or "-" for first unacked: prints every record) | status | close |
#     wrongseq, short (bad appends) | live:K (append K, a reader keeping up, acking what it
#     read) | lagging:K (append K, a reader taking one record per 10, then draining)
# Prints one line per fact: "rec <hex>", "status k=v ...", "freed N", "err <msg>".

import sys

import flashlog_lfs

from dongle.flashlog import FlashLog
from protocol.record import RecordWriter, Signer

KEY = bytes(range(32))


class FakeClock:
    def __init__(self):
        self.t = 0

    def ms(self):
        return self.t


def sample_record(w, seq, boot, t):
    # 1..6 groups of RPM + speed: records of varied length, data derived from seq.
    src = bytearray(2)
    for g in range(1 + seq % 6):
        w.group(t + 10 * g)
        src[0] = (seq >> 8) & 0xFF
        src[1] = seq & 0xFF
        w.add(0x0C, src, 0, 2)
        src[0] = g
        w.add(0x0D, src, 0, 1)
    return w.seal(seq, boot)


def drain(c, buf, limit=1 << 30):
    while limit:
        n = c.read_into(buf)
        if not n:
            return
        print("rec", buf[:n].hex())
        limit -= 1


def status(log):
    print("status used=%d cap=%d first=%d next=%d flushed=%d dropped=%d boot=%d segs=%d epoch=%d"
          % (log.used, log.capacity, log.first_unacked, log.next_seq, log.flushed_seq, log.dropped,
             log.boot, log.segments, log.epoch))


def main():
    root = flashlog_lfs.root(sys.argv[1])
    cap = int(sys.argv[2])
    seg = int(sys.argv[3])
    clock = FakeClock()
    log = FlashLog(root, KEY, cap, seg, clock, flush_ms=1000, buffer_bytes=1024)
    w = RecordWriter(KEY)
    signer = Signer(KEY)
    ev = bytearray(32)
    buf = bytearray(512)
    for op in sys.argv[4:]:
        name, _, arg = op.partition(":")
        try:
            if name == "append":
                for _ in range(int(arg)):
                    n = sample_record(w, log.next_seq, log.boot, clock.t)
                    log.append(w.out, n)
            elif name == "event":
                for _ in range(int(arg)):
                    n = signer.event(ev, log.next_seq, log.boot, clock.t, 2, 13800)
                    log.append(ev, n)
            elif name == "flush":
                log.flush()
            elif name == "tick":
                clock.t += int(arg)
                log.tick()
            elif name == "ack":
                print("freed", log.ack(int(arg)))
            elif name == "read":
                c = log.cursor(None if arg == "-" else int(arg))
                drain(c, buf)
                c.close()
            elif name == "wrongseq":
                n = sample_record(w, log.next_seq + 1, log.boot, clock.t)
                log.append(w.out, n)
            elif name == "short":
                log.append(w.out, 5)
            elif name == "live":
                c = log.cursor()
                for i in range(int(arg)):
                    log.append(w.out, sample_record(w, log.next_seq, log.boot, clock.t))
                    if i % 7 == 6:
                        clock.t += 1000
                        log.tick()
                    drain(c, buf)
                    if i % 50 == 49 and c.seq > 0:
                        log.ack(c.seq - 1)
                log.flush()
                drain(c, buf)
                c.close()
            elif name == "lagging":
                c = log.cursor()
                for i in range(int(arg)):
                    log.append(w.out, sample_record(w, log.next_seq, log.boot, clock.t))
                    if i % 7 == 6:
                        clock.t += 1000
                        log.tick()
                    if i % 10 == 9:
                        drain(c, buf, 1)
                log.flush()
                drain(c, buf)
                c.close()
            elif name == "status":
                status(log)
            elif name == "close":
                log.close()
            else:
                print("err unknown op", op)
        except ValueError as e:
            print("err", e)


main()
