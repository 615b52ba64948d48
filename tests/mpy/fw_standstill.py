# The stationary rule before mode 04 (firmware/dongle/standstill.py) on the unix port, against a
# scripted ELM327 (elm_fake): the dongle asks the car for its speed right then and clears only on
# an answer of 0 km/h. Prints one JSON line per case, [name, {"status", "sent"}]: the status of
# the clear (None: refused as moving) and what the chip received after its set-up.
# tests/test_firmware_standstill.py holds the expectations. Last line: ["end", null].

import asyncio
import json

from elm_fake import Clock, FakeChip

from dongle import elm327 as E
from dongle.standstill import clear_if_still


def new(script=None):
    # 50 virtual ms per clock read: a request without a prompt times out after a few dozen polls.
    chip = FakeChip()
    elm = E.ELM327(chip, Clock(50))
    st = asyncio.run(elm.init())
    assert st == E.OK, E.NAMES[st]
    chip.script = script
    chip.sent = []
    return elm, chip


def emit(name, obs):
    print(json.dumps([name, obs]))


def case(name, replies, multi=True, stale=b"", can=True):
    """replies: request text -> reply bytes (others: the well-behaved chip)."""
    elm, chip = new(lambda cmd: replies.get(cmd))
    if not can:
        elm.is_can = False  # a K-line car: one PID per request
    chip.out += stale  # bytes waiting before the request: an earlier answer, late
    seen = []
    st = asyncio.run(clear_if_still(elm, lambda: seen.append(elm.res_n), multi))
    emit(name, {"status": None if st is None else E.NAMES[st], "sent": [c.decode() for c in chip.sent],
                "seen": seen, "ready": elm.ready})


case("still", {b"010D0C": b"410D000C0BB8\r\r>"})
case("still_reordered", {b"010D0C": b"410C0BB80D00\r\r>"})
case("moving", {b"010D0C": b"410D730C2EE0\r\r>"})
case("crawling", {b"010D0C": b"410D010C0BB8\r\r>"})
case("no_data", {b"010D0C": b"NO DATA\r\r>"})
case("rpm_only", {b"010D0C": b"410C0BB8\r\r>"})
case("cut_speed", {b"010D0C": b"410D\r\r>"})
case("odd_line", {b"010D0C": b"410D0\r\r>"})
case("garbage", {b"010D0C": b"\x01\xffzz#\r\r>"})
case("unable", {b"010D0C": b"UNABLE TO CONNECT\r\r>"})
case("can_error", {b"010D0C": b"CAN ERROR\r\r>"})
case("other_mode", {b"010D0C": b"7F0112\r\r>"})
case("banner", {b"010D0C": b"\r\rELM327 v1.5\r\r>"})
case("no_prompt", {b"010D0C": b"410D00"})
case("silent", {b"010D0C": b""})
case("stale_zero", {b"010D0C": b"410D73\r\r>"}, stale=b"410D00\r\r>")
case("no_multi", {b"010D0C": b"?\r\r>", b"010D1": b"410D00\r\r>"})
case("no_multi_moving", {b"010D0C": b"?\r\r>", b"010D1": b"410D50\r\r>"})
case("single_plan", {b"010D1": b"410D00\r\r>"}, multi=False)
case("kline", {b"010D1": b"410D00\r\r>"}, can=False)
case("no_digit", {b"010D1": b"?\r\r>", b"010D": b"410D00\r\r>"}, multi=False)
case("always_unknown", {b"010D0C": b"?\r\r>", b"010D1": b"?\r\r>", b"010D": b"?\r\r>"})
print(json.dumps(["end", None]))
