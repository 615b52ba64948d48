"""ELM327 driver against scripted replies: one line of output per case (compared by pytest)."""

# ruff: noqa: UP031 - %-formatting: MicroPython has no f-string format specs on every port

import asyncio
import sys

from elm_fake import Clock, FakeChip, frames, run_sync

import dongle
from dongle import elm327 as E


def new(script=None, chunk=64):
    clk = Clock()
    chip = FakeChip(script, chunk)
    elm = E.ELM327(chip, clk)
    st = asyncio.run(elm.init())
    assert st == E.OK, E.NAMES[st]
    chip.script = script
    return elm, chip


def res(elm):
    return " ".join("%02X=%s" % (elm.res_ch[i], bytes(elm.msg[elm.res_off[i]:elm.res_off[i] + elm.res_len[i]]).hex())
                    for i in range(elm.res_n))


def case(name, reply, pids=b"\x0c\x0d", chunk=64):
    elm, chip = new(None, chunk)
    left = [1]

    def once(cmd):  # the hostile reply to the request under test, a good chip afterwards
        if left[0]:
            left[0] = 0
            return reply
        return None

    chip.script = once
    st = run_sync(elm, elm.start_pids(pids, len(pids)))
    print(name, E.NAMES[st], res(elm), "uns=%d tr=%d gb=%d" % (elm.unsolicited, elm.truncated, elm.garbage))
    return elm


elm, chip = new()
print("init", elm.protocol, elm.is_can, elm.mv, bytes(elm.supported[:24]).hex(), chip.sent[:3])
print("supported", [hex(p) for p in (0x0C, 0x0D, 0x5E, 0xA6, 0xA7) if elm.pid_supported(p)])

case("single", b"410C1AF80D32\r\r>")
case("spaces", b"41 0C 1A F8 0D 32 \r\r>")
case("reordered", b"410D32410C1AF8\r\r>".replace(b"410C", b"0C"))
case("multi", frames("410C1AF80D320411050F117F0F44") + b"\r>", b"\x0c\x0d\x04\x05\x11\x0f")
case("multi_nolen", frames("410C1AF80D320411050F117F0F44", False) + b"\r>", b"\x0c\x0d\x04\x05\x11\x0f")
case("two_ecus", b"410C1AF80D32\r410C00000D00\r\r>")
case("two_ecus_multi", frames("410C1AF80D320411050F117F0F44") + frames("410C0000") + b"\r>", b"\x0c\x0d\x04\x05\x11\x0f")
case("partial", b"410C1AF8\r\r>")
case("no_data", b"NO DATA\r\r>")
case("searching", b"SEARCHING...\r410C1AF80D32\r\r>")
case("unasked", b"41051E0C1AF8\r\r>")
case("truncated_pid", b"410C1AF80D\r\r>")
case("odd_line", b"410C1AF80D3\r\r>")
case("garbage", b"\x01\xffzz#\r\r>")
case("can_error", b"CAN ERROR\r\r>")
case("bus_init", b"BUS INIT: ...ERROR\r\r>")
case("unable", b"UNABLE TO CONNECT\r\r>")
case("buffer_full", b"BUFFER FULL\r\r>")
case("stopped", b"STOPPED\r\r>")
case("mode61", b"61A60000EA5C\r\r>", b"\xa6")
case("slow_line", frames("410C1AF80D320411050F117F0F44") + b"\r>", b"\x0c\x0d\x04\x05\x11\x0f", chunk=1)
e = case("frame_gap", b"00E\r0: 410C1AF80D32\r2: 0411050F117F0F\r\r>", b"\x0c\x0d\x04\x05\x11\x0f")
e = case("reset", b"\r\rELM327 v1.5\r\r>")
print("reset_ready", e.ready, e.resets)
e = case("no_prompt", b"410C1AF80D32\r")
print("stuck_refuses", E.NAMES[e.start_pids(b"\x0c", 1)], E.NAMES[asyncio.run(e.recover())], e.start_pids(b"\x0c", 1) == E.PENDING)

# the count digit: sent on single PIDs until a `?` says the chip lacks it
elm, chip = new()
chip.script = lambda cmd: b"?\r\r>" if cmd == b"010D1" else None
st1 = run_sync(elm, elm.start_pids(b"\x0d", 1))
st2 = run_sync(elm, elm.start_pids(b"\x0d", 1))
print("digit", E.NAMES[st1], E.NAMES[st2], chip.sent[-2:], elm.digit)
chip.script = None
run_sync(elm, elm.start_pids(b"\x0c\x0d", 2))
print("multi_no_digit", chip.sent[-1])

# busy: never send while a request is outstanding
elm, chip = new()
chip.script = lambda cmd: b""
print("busy", elm.start_pids(b"\x0c", 1) == E.PENDING, E.NAMES[elm.start_pids(b"\x0d", 1)], chip.sent[-1])
print("bad_args", E.NAMES[new()[0].start_pids(b"\x0c\x0c", 2)], E.NAMES[new()[0].start_pids(b"\x01\x02\x03\x04\x05\x06\x07", 7)])

elm, chip = new()
print("vin", E.NAMES[asyncio.run(elm.read_vin())], bytes(elm.vin[:elm.vin_n]))
chip.script = lambda cmd: b"49020100000057\r49020250304C53\r4902035A5A5A39\r49020439395A54\r49020553333930\r\r>"
print("vin_kline", E.NAMES[asyncio.run(elm.read_vin())], bytes(elm.vin[:elm.vin_n]))
# The rare reads' code (dongle.elm_rare) is loaded for the read and gone after it: a board
# running .mpy would keep its bytecode in the heap for the whole drive.
st, frame = asyncio.run(elm.read_freeze_frame())
print("rare_unloaded", "dongle.elm_rare" not in sys.modules, not hasattr(dongle, "elm_rare"), elm._rare is None,
      E.NAMES[st])
chip.script = None
print("dtc03", E.NAMES[asyncio.run(elm.read_dtcs(3))], bytes(elm.dtc[:2 * elm.dtc_n]).hex())
chip.script = lambda cmd: b"43013300000000\r\r>"
print("dtc_nocount", E.NAMES[asyncio.run(elm.read_dtcs(3))], bytes(elm.dtc[:2 * elm.dtc_n]).hex())
chip.script = None
print("dtc07", E.NAMES[asyncio.run(elm.read_dtcs(7))], elm.dtc_n)
print("dtc_bad_mode", E.NAMES[asyncio.run(elm.read_dtcs(4))])
print("clear", E.NAMES[asyncio.run(elm.clear_dtcs())], chip.sent[-1])
print("volts", E.NAMES[run_sync(elm, elm.start_voltage())], elm.mv, res(elm))
for r in (b"13V\r\r>", b"12.45V\r\r>", b"V\r\r>", b"1.2.3V\r\r>", b"99999V\r\r>"):
    chip.script = lambda cmd, r=r: r
    st = run_sync(elm, elm.start_voltage())
    print("volts", r, E.NAMES[st], elm.mv)
print("methods", sorted(m for m in dir(elm) if not m.startswith("_") and callable(getattr(elm, m))))
