"""Parser fuzz: seeded random, truncated and hostile replies. Never an exception, never a hang,
every result inside the request, a re-init after a banner. Prints a summary line; `FAIL` on a
broken invariant."""

# ruff: noqa: UP031 - %-formatting: MicroPython has no f-string format specs on every port

import asyncio
import random
import sys

from elm_fake import Clock, FakeChip, frames

from dongle import elm327 as E
from protocol.channels import DATA_LEN

CASES = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
random.seed(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
PIDS = b"\x01\x04\x05\x0c\x0d\x0f\x10\x11\x2f\x31\x42\xa6"
WORDS = (b"NO DATA", b"?", b"STOPPED", b"CAN ERROR", b"BUS INIT: ...ERROR", b"BUS ERROR",
         b"UNABLE TO CONNECT", b"BUFFER FULL", b"SEARCHING...", b"ELM327 v1.5", b"OK", b"DATA ERROR",
         b"<RX ERROR", b"ERR94", b"LV RESET", b"12.6V", b"A6", b"0:", b"00E", b">")


SOUP = b"0123456789ABCDEF: \r\n>?."


def rnd(n):
    return random.getrandbits(16) % n


def hexs(n):
    return "".join("%02X" % random.getrandbits(8) for _ in range(n))


def reply(pids):
    k = rnd(12)
    if k == 0:  # random bytes
        return bytes(random.getrandbits(8) for _ in range(rnd(80)))
    if k == 1:  # random printable soup
        return bytes(SOUP[rnd(len(SOUP))] for _ in range(rnd(120)))
    if k == 2:  # a chip message, maybe two
        return WORDS[rnd(len(WORDS))] + b"\r" + (WORDS[rnd(len(WORDS))] + b"\r" if rnd(2) else b"") + b"\r>"
    # a plausible answer, then damaged
    order = list(pids)
    for i in range(len(order) - 1, 0, -1):
        j = rnd(i + 1)
        order[i], order[j] = order[j], order[i]
    if rnd(4) == 0:
        order.append(PIDS[rnd(len(PIDS))])  # unasked or duplicate
    body = "41" + "".join("%02X" % p + hexs(DATA_LEN[p] if rnd(8) else rnd(5)) for p in order)
    out = frames(body, rnd(3) > 0)
    if rnd(3) == 0:  # a second ECU
        out += frames("41" + "".join("%02X" % p + hexs(DATA_LEN[p]) for p in order[: 1 + rnd(len(order))]))
    out += b"\r>"
    d = rnd(6)
    b = bytearray(out)
    if d == 0 and len(b) > 1:
        b = b[: rnd(len(b))]  # truncated: maybe no prompt at all
    elif d == 1 and b:
        for _ in range(1 + rnd(4)):
            b[rnd(len(b))] = random.getrandbits(8)  # bit rot
    elif d == 2:
        b = bytearray(b"SEARCHING...\r") + b
    elif d == 3 and rnd(4) == 0:
        b = bytearray(b"\r\rELM327 v1.5\r\r>")
    return bytes(b)


def check(elm, pids, n, st):
    if not (E.OK <= st <= E.OTHER_ERROR):
        return "status %d" % st
    if elm.res_n > n:
        return "res_n %d > %d" % (elm.res_n, n)
    for i in range(elm.res_n):
        ch, o, ln = elm.res_ch[i], elm.res_off[i], elm.res_len[i]
        if ch not in list(pids[:n]):
            return "result for unasked %02X" % ch
        if o + ln > elm.msg_n or ln != DATA_LEN[ch]:
            return "result %02X off %d len %d msg_n %d" % (ch, o, ln, elm.msg_n)
        for j in range(i):
            if elm.res_ch[j] == ch:
                return "two results for %02X" % ch
    if st == E.RESET and elm.ready:
        return "banner without re-init"
    return None


clk = Clock()
chip = FakeChip()
elm = E.ELM327(chip, clk)
asyncio.run(elm.init())
counts = {}
fails = 0
reinits = 0
polls_max = 0
pids = bytearray(6)
for c in range(CASES):
    n = 1 + rnd(6)
    picked = []
    while len(picked) < n:
        p = PIDS[rnd(len(PIDS))]
        if p not in picked:
            picked.append(p)
    for i, p in enumerate(picked):
        pids[i] = p
    r = reply(picked)
    chip.script = lambda cmd, r=r: r
    chip.chunk = 1 + rnd(64)
    try:
        st = elm.start_pids(pids, n)
        polls = 0
        while st == E.PENDING:
            st = elm.poll()
            polls += 1
            if polls > 10000:
                raise RuntimeError("hang")
        polls_max = max(polls_max, polls)
        why = check(elm, pids, n, st)
        chip.script = None
        if st == E.TIMEOUT:
            asyncio.run(elm.recover())
        if not elm.ready:
            reinits += 1
            s2 = asyncio.run(elm.init())
            if s2 != E.OK:
                why = "re-init failed: " + E.NAMES[s2]
    except Exception as e:  # noqa: BLE001 - the point of the test
        why = "raised %r" % e
        sys.print_exception(e)
    if why:
        fails += 1
        if fails <= 5:
            print("FAIL", c, r, why)
    counts[E.NAMES[st]] = counts.get(E.NAMES[st], 0) + 1
# every outcome class was reached, and the driver still works afterwards
chip.script = None
ok = elm.start_pids(b"\x0c\x0d", 2)
while ok == E.PENDING:
    ok = elm.poll()
print("cases", CASES, "fails", fails, "reinits", reinits > 0, "after", E.NAMES[ok])
print("statuses", sorted(counts))
print("counters", elm.garbage > 0, elm.unsolicited > 0, elm.truncated > 0, elm.timeouts > 0, elm.resets > 0)
