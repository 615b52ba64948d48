# Fill a dongle's flash directory with SECONDS of driving, faster than real time:
# the records the firmware would have logged while no daemon was in reach.
#
# argv: flash_root secret_hex seconds
# Same FlashLog parameters as dongle.app (root/log, 16 KB segments; capacity from
# argv[4], default 1 MB), same record shape as the firmware's sink: the default plan's
# driving rates, batched 6 PIDs a request, one record sealed a second.
# Prints: filled RECORDS SAMPLES FIRST_SEQ NEXT_SEQ BOOT

import sys

from dongle.flashlog import FlashLog
from dongle.plan import DEFAULT, DRIVING
from protocol.auth import telemetry_key
from protocol.channels import CH_VOLTAGE, DATA_LEN
from protocol.record import RecordWriter

ROOT = sys.argv[1]
SECRET = bytes.fromhex(sys.argv[2])
SECONDS = int(sys.argv[3])
CAPACITY = int(sys.argv[4]) if len(sys.argv) > 4 else 1 << 20


class SimTime:
    def __init__(self) -> None:
        self.t = 0

    def ms(self) -> int:
        return self.t


clock = SimTime()
# As dongle.app: the log picks its epoch, the records take that epoch's key.
log = FlashLog(ROOT + "/log", lambda epoch: telemetry_key(SECRET, epoch), CAPACITY, 16384, clock)
w = RecordWriter(log.key)
rows = [(ch, row[1 + DRIVING]) for row in DEFAULT for ch in (row[0],) if row[1 + DRIVING]]
data = bytearray(8)
first = log.next_seq
records = 0
samples = 0
for tick in range(SECONDS * 10):
    t = tick * 100
    clock.t = t
    due = [ch for ch, iv in rows if tick % iv == 0]
    pids = [ch for ch in due if ch != CH_VOLTAGE]
    reqs = [pids[i:i + 6] for i in range(0, len(pids), 6)]
    if CH_VOLTAGE in due:
        reqs.append([CH_VOLTAGE])
    at = t + 20
    for req in reqs:
        w.group(at)
        for ch in req:
            n = DATA_LEN[ch] or 2
            for i in range(n):
                data[i] = (tick * (ch + 3) + i * 7) & 0xFF
            w.add(ch, data, 0, n)
            samples += 1
        at += 45
    if tick % 10 == 9:
        n = w.seal(log.next_seq, log.boot)
        log.append(w.out, n)
        records += 1
        log.tick()
log.flush()
print("filled", records, samples, first, log.next_seq, log.boot, log.dropped)
log.close()
