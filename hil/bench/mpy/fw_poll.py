# The firmware's poll path on the MicroPython unix port, measured in windows:
# ELM327 driver + Scheduler + RecordWriter + FlashLog, as dongle.app wires them.
#
# argv: pty flash_dir warp warm_ms windows window_ms pid,pid,... plan
# plan `flat`: every PID at the plan's shortest interval, all asked equally often, as
# python-OBD's loop asks them (the like-for-like throughput figure); `default`: the
# default plan's own rates for these PIDs (5 Hz, 1 Hz, 0.1 Hz), how the dongle polls a car.
# The scheduler's clock runs `warp` times faster than real time, so the plan asks
# more than the bus carries and the figure is the bus-bound throughput (the plan's
# 100 ms minimum interval would otherwise cap it). Serial timeouts stay real.
#
# Heap: each window starts on a collected heap with automatic collection off
# (gc.disable(): a window allocates a few KB, the heap has tens free; a heap that did fill
# would end the run with MemoryError, never give a figure), so every rise of
# gc.mem_alloc() is an allocation. The window's allocation is the rise from its start to
# its end, both read here in main() (not inside a call of the sink: MicroPython puts a
# call's frame on the heap when it is too big for the C stack, so a reading there would
# include that frame and one here would not), minus what main() itself allocates
# meanwhile (its prints and bookkeeping, measured where they happen). Sealing and
# storing a record is also counted apart (seal_alloc_bytes, a part of the window's
# figure): the MAC's hashlib objects (protocol.auth). The sink still reads gc.mem_alloc()
# per answered request for the peak, and counts a drop as a collection (none can run:
# a window that saw one is left out of the figures). Summing positive steps per request
# with collections running, as this did before, could read below zero: a seal's bytes
# counted apart while a collection hid them from the sum.

# Output lines (read by hil.bench.pids at the moment they arrive):
#   init STATUS is_can
#   win_start I
#   win I samples requests ms alloc_bytes collections peak_alloc seal_alloc_bytes records_sealed
#   end timeouts errors garbage truncated given_up heap_total records

import asyncio
import gc
import sys
import time

from dongle import elm327 as E
from dongle.clock import TicksClock
from dongle.flashlog import FlashLog
from dongle.plan import DEFAULT, MIN_INTERVAL, Plan
from dongle.scheduler import Scheduler
from dongle.uart import open_pty
from protocol.auth import telemetry_key
from protocol.record import RecordWriter

PTY = sys.argv[1]
FLASH = sys.argv[2]
WARP = int(sys.argv[3])
WARM_MS = int(sys.argv[4])
WINDOWS = int(sys.argv[5])
WINDOW_MS = int(sys.argv[6])
PIDS = [int(p, 16) for p in sys.argv[7].split(",")]
PLAN = sys.argv[8]

_T0 = time.ticks_ms()


def warped() -> int:
    return time.ticks_add(_T0, time.ticks_diff(time.ticks_ms(), _T0) * WARP)


clock = TicksClock()
log = FlashLog(FLASH, telemetry_key(bytes(32)), 1 << 20, 16384, clock)
writer = RecordWriter(telemetry_key(bytes(32)))
samples = 0
collections = 0
peak = 0
last_alloc = 0
rec_t = time.ticks_ms()
records = 0
seal_alloc = 0


def seal() -> None:
    global records
    if writer.empty():
        return
    n = writer.seal(log.next_seq, log.boot)
    log.append(writer.out, n)
    records += 1


def sink(t: int, n: int, ch: bytearray, off: bytearray, ln: bytearray, data: bytearray) -> None:
    global samples, collections, peak, last_alloc, rec_t, seal_alloc
    a = gc.mem_alloc()
    if a < last_alloc:
        collections += 1  # the heap only shrinks when a collection runs
    if a > peak:
        peak = a
    last_alloc = a
    nbytes = 0
    for i in range(n):
        nbytes += ln[i]
    if not writer.fits(n, nbytes) or time.ticks_diff(time.ticks_ms(), rec_t) >= 1000:
        b = gc.mem_alloc()
        seal()
        b = gc.mem_alloc() - b
        if b > 0:
            seal_alloc += b  # also in the window's figure: this says how much of it is sealing
        rec_t = time.ticks_ms()
    writer.group(t)
    for i in range(n):
        writer.add(ch[i], data, off[i], ln[i])
    samples += n


async def housekeeping(stop: list[bool]) -> None:
    while not stop[0]:
        await asyncio.sleep_ms(100)
        log.tick()
        if log.flushed_seq > log.first_unacked + 200:
            log.ack(log.flushed_seq - 1)  # a daemon acks: the log stays bounded


async def main() -> None:
    global last_alloc
    elm = E.ELM327(open_pty(PTY))
    st = await elm.init()
    print("init", E.NAMES[st], elm.is_can)
    if PLAN == "flat":
        plan = Plan(tuple((p, MIN_INTERVAL, MIN_INTERVAL, 0) for p in PIDS))
    else:
        plan = Plan(tuple(r for r in DEFAULT if r[0] in PIDS))
    s = Scheduler(elm, plan, sink, clock=warped)
    stop = [False]
    task = asyncio.create_task(s.run())
    hk = asyncio.create_task(housekeeping(stop))
    await asyncio.sleep_ms(WARM_MS)
    for w in range(WINDOWS):
        gc.collect()  # the garbage of before the window: no collection inside it
        gc.disable()
        start = gc.mem_alloc()
        last_alloc = start
        print("win_start", w)
        s0, r0, c0, e0, k0 = samples, s.requests, collections, seal_alloc, records
        t0 = time.ticks_ms()
        harness = gc.mem_alloc() - start  # main()'s own: the print and the snapshot
        await asyncio.sleep_ms(WINDOW_MS)
        alloc = gc.mem_alloc() - start - harness
        gc.enable()
        ms = time.ticks_diff(time.ticks_ms(), t0)
        print("win", w, samples - s0, s.requests - r0, ms, alloc, collections - c0, peak,
              seal_alloc - e0, records - k0)
    s.stop()
    stop[0] = True
    await task
    await hk
    seal()
    log.close()
    print("end", elm.timeouts, elm.errors, elm.garbage, elm.truncated, s.given_up,
          gc.mem_alloc() + gc.mem_free(), records)


asyncio.run(main())
