"""Scheduler on a virtual clock against the scripted chip: fairness on a slow bus, rates per power
state, never an unsupported PID, misses backing off, SET_PLAN, STATUS rates."""

import asyncio

from elm_fake import LEN, Clock, FakeChip, run_sync

from dongle import elm327 as E
from dongle import plan as P
from dongle.scheduler import Scheduler

asked = {}  # PID or "RV" -> requests carrying it


def bus(cmd):
    if cmd == b"ATRV":
        asked["RV"] = asked.get("RV", 0) + 1
        return 5
    if cmd.startswith(b"01"):
        h = cmd[2:]
        n = len(h) // 2
        for i in range(n):
            p = int(h[2 * i:2 * i + 2], 16)
            asked[p] = asked.get(p, 0) + 1
        return BUS_REQ + BUS_PID * n
    return 1


def setup(rows, is_can=True):
    clk = Clock(0)
    chip = FakeChip()
    elm = E.ELM327(chip, clk)
    asyncio.run(elm.init())
    elm.is_can = is_can
    chip.clock = clk
    chip.bus_ms = bus
    got = {}

    def sink(t, n, ch, off, ln, data):
        for i in range(n):
            got[ch[i]] = got.get(ch[i], 0) + 1

    s = Scheduler(elm, P.Plan(rows), sink, clk)
    asked.clear()
    return clk, chip, elm, s, got


def drive(clk, elm, s, ms):
    end = clk.t + ms
    while clk.t < end:
        w = s.begin(clk.t)
        if w != E.PENDING:
            clk.t += w
            continue
        s.end(clk.t, run_sync(elm, E.PENDING))


def share(got, rows, state, ms):
    """achieved / asked rate per channel, in percent"""
    out = {}
    for ch, *iv in rows:
        if iv[state]:
            out[ch] = got.get(ch, 0) * iv[state] * 100 * 100 // ms
    return out


# 1. fast bus: every channel at its asked rate
BUS_REQ, BUS_PID = 10, 2
rows = ((0x0C, 2, 10, 0), (0x0D, 2, 10, 0), (0x05, 10, 10, 0), (0x2F, 100, 100, 0), (0xFF, 50, 50, 600))
clk, chip, elm, s, got = setup(rows)
drive(clk, elm, s, 60000)
sh = share(got, rows, P.DRIVING, 60000)
print("fast", all(95 <= v <= 120 for v in sh.values()))  # +1 sample at t=0 on 6 for 0x2F

# 2. slow bus (a request costs 150 ms + 60 ms a PID): asked 5+5+1+0.1 PIDs/s, ~3 Hz possible
BUS_REQ, BUS_PID = 150, 60
clk, chip, elm, s, got = setup(rows)
drive(clk, elm, s, 120000)
sh = share(got, rows, P.DRIVING, 120000)
pid_sh = [v for k, v in sh.items() if k != 0xFF]
print("slow_fair", min(pid_sh) >= 50, abs(sh[0x0C] - sh[0x0D]) <= 2, "slow_not_starved", sh[0x2F] >= 95, "degraded", sh[0x0C] < 95)
s._roll(clk.t + 10000)
r = bytearray(3 * 8)
n = s.rates_into(r, 0)
print("status_rates", n, [(r[3 * i], (r[3 * i + 1] << 8) | r[3 * i + 2]) for i in range(n)][:2])

# 3. not CAN: one PID a request, still fair
clk, chip, elm, s, got = setup(rows, is_can=False)
drive(clk, elm, s, 120000)
sh = share(got, rows, P.DRIVING, 120000)
pid_sh = [v for k, v in sh.items() if k != 0xFF]
print("kline_fair", min(pid_sh) >= 30, sh[0x2F] >= sh[0x05] >= sh[0x0C], max(len(c) for c in chip.sent if c.startswith(b"01")))

# 4. power states
BUS_REQ, BUS_PID = 10, 2
clk, chip, elm, s, got = setup(P.DEFAULT)
s.set_power(P.PARKED)
drive(clk, elm, s, 600000)
print("parked", sorted(asked), asked.get("RV"))
asked.clear()
s.set_power(P.IDLE)
drive(clk, elm, s, 60000)
print("idle_speed", asked.get(0x0D), "idle_rv", asked.get("RV"))
asked.clear()
s.set_power(P.DRIVING)
drive(clk, elm, s, 60000)
print("driving_speed", asked.get(0x0D), "fuel_level", asked.get(0x2F))
print("never_unsupported", [hex(p) for p in asked if p != "RV" and not elm.pid_supported(p)])
print("unsupported_in_plan", [hex(c) for c, *_ in P.DEFAULT if c != 0xFF and not elm.pid_supported(c)])
s.set_power(P.SLEEPING)
asked.clear()
drive(clk, elm, s, 60000)
print("sleeping", asked)

# 5. a PID the ECU stops answering backs off and is dropped, the others carry on
clk, chip, elm, s, got = setup(rows)
del LEN[0x05]
drive(clk, elm, s, 600000)
LEN[0x05] = 1
print("dropped", s.dropped(0x05), "tries", asked.get(0x05), "others", got.get(0x0C, 0) > 2000)
s.set_power(P.IDLE)
s.set_power(P.DRIVING)
asked.clear()
drive(clk, elm, s, 10000)
print("revived", not s.dropped(0x05), asked.get(0x05, 0) > 0)

# 6. the ECU silent (ignition off): a bus backoff, no PID dropped
clk, chip, elm, s, got = setup(rows)
chip.script = lambda cmd: b"NO DATA\r\r>" if cmd.startswith(b"01") else None
drive(clk, elm, s, 120000)
print("silent", [hex(c) for c, *_ in rows if s.dropped(c)], s.bus_errors > 0, asked.get(0x0C, 0) < 200)

# 7. a clone without multi-PID: `?` to a multi request -> one PID a request
clk, chip, elm, s, got = setup(rows)
chip.script = lambda cmd: b"?\r\r>" if cmd.startswith(b"01") and len(cmd) > 5 else None
drive(clk, elm, s, 5000)
print("no_multi", s.batch_max, got.get(0x0C, 0) > 10)

# 8. SET_PLAN
pl = P.Plan(())
pay = bytes([4, 0x0C, 0, 2, 0, 10, 0, 0, 0x5E, 0, 10, 0, 10, 0, 0, 0x20, 0, 1, 0, 1, 0, 1,
             0xFF, 0xFF, 0xFE, 0, 0, 0, 0])
print("set_plan", pl.apply(pay, elm.pid_supported), [pl.chans[i] for i in range(pl.n)], pl.interval(0xFF, P.DRIVING),
      pl.interval(0x0C, P.IDLE), pl.interval(0x0C, P.PARKED))
# 0xFFFF keeps that state's interval: the daemon overrides one column only
pl.apply(bytes([1, 0x0C, 0xFF, 0xFF, 0, 7, 0xFF, 0xFF]))
print("set_plan_keep", pl.interval(0x0C, P.DRIVING), pl.interval(0x0C, P.IDLE), pl.interval(0x0C, P.PARKED))
print("set_plan_off", pl.apply(bytes([1, 0x0C, 0, 0, 0, 0, 0, 0])), pl.n)
for bad in (b"", bytes([2, 0x0C, 0, 1, 0, 1, 0, 1]), bytes([1, 0x0C, 0, 1])):
    try:
        pl.apply(bad)
        print("set_plan_bad accepted", bad)
    except ValueError as e:
        print("set_plan_bad", e, pl.n)
print("set_plan_entries", pl.apply_entries([(0x0D, 2, 10, 0), (0x5E, 1, 1, 1), (0x40, 1, 1, 1)], elm.pid_supported),
      pl.interval(0x0D, P.DRIVING))

# 9. ignition off at boot: the chip is configured, no ECU; parked, ATRV is still polled and the
# adapter is not re-initialised over and over
chip = FakeChip(lambda cmd: b"UNABLE TO CONNECT\r\r>" if cmd.startswith(b"01") else None)
elm = E.ELM327(chip)
st = asyncio.run(elm.init())
print("no_ecu", E.NAMES[st], elm.ready, elm.ecu)
volts = []
s = Scheduler(elm, P.Plan(((0xFF, 1, 1, 1),)), lambda t, n, ch, off, ln, data: volts.append(ch[0]))
s.set_power(P.PARKED)


async def parked():
    t = asyncio.create_task(s.run())
    while len(volts) < 3:
        await asyncio.sleep_ms(10)
    s.stop()
    await t


asyncio.run(parked())
print("no_ecu_parked", volts[:3], chip.sent.count(b"ATZ"))

# 10. an ECU that answers NO DATA to every batch but each PID alone: all PIDs still arrive, one
# by one; batches are tried again later and taken up as soon as the ECU answers them
BUS_REQ, BUS_PID = 10, 2
REFUSE = [True]
clk, chip, elm, s, got = setup(rows)
chip.script = lambda cmd: b"NO DATA\r\r>" if REFUSE[0] and cmd.startswith(b"01") and len(cmd) > 5 else None
drive(clk, elm, s, 30000)
multi = [c for c in chip.sent if c.startswith(b"01") and len(c) > 5]
print("batch_refused", sorted(hex(c) for c, *_ in rows if c != 0xFF and got.get(c, 0) < 2),
      [hex(c) for c, *_ in rows if s.dropped(c)], s.given_up)
REFUSE[0] = False
chip.sent.clear()
drive(clk, elm, s, 60000)
print("batch_retried", any(c.startswith(b"01") and len(c) > 5 for c in chip.sent))

# 11. an ECU that answers only part of a batch (the emulator's `default`: RPM and speed) but
# every PID alone: the others are asked alone, none is dropped
clk, chip, elm, s, got = setup(rows)


def partial(cmd):
    if cmd.startswith(b"01") and len(cmd) > 5:
        r = chip_good(b"010C")  # only 0C of any batch
        return r
    return None


chip_good = __import__("elm_fake").good_reply
chip.script = partial
drive(clk, elm, s, 60000)
print("batch_partial", sorted(hex(c) for c, *_ in rows if c != 0xFF and got.get(c, 0) < 2),
      [hex(c) for c, *_ in rows if s.dropped(c)])
