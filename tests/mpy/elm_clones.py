"""The driver against clone and bus behaviour it must read by the bytes (one line per case).

The car holds P0133 in its engine ECU and U0123 in its transmission ECU; every case must read
both, attributed, or fail with a named status — never `OK` with fewer codes."""

# ruff: noqa: UP031 - %-formatting: MicroPython has no f-string format specs on every port

import asyncio

from elm_fake import Clock, FakeChip, can_lines, frames, legacy_line

from dongle import elm327 as E

BITMAP = "BE3FA813"


def can_chip(hdr_e, hdr_t, dpn=b"A6\r\r>"):
    """A CAN car whose adapter prints headers whatever ATH says (hdr_e/hdr_t: the ECUs' ids)."""

    def script(cmd):
        c = cmd.upper()
        if c == b"ATDPN":
            return dpn
        if c.startswith(b"0100"):
            return (can_lines(hdr_e, "4100" + BITMAP) + can_lines(hdr_t, "410080000000") + "\r>").encode()
        if c.startswith(b"010C0D"):
            return (can_lines(hdr_e, "410C1AF80D32") + "\r>").encode()
        if c.startswith(b"010C"):
            return (can_lines(hdr_e, "410C1AF8") + "\r>").encode()
        if c == b"03":
            return (can_lines(hdr_e, "43010133") + can_lines(hdr_t, "4301C123") + "\r>").encode()
        if c == b"0902":
            return (can_lines(hdr_e, "490201" + "".join("%02X" % ord(x) for x in "WVWZZZ1KZAW386754"))
                    + "\r>").encode()
        return None

    return script


def new(script):
    chip = FakeChip(script)
    elm = E.ELM327(chip, Clock())
    st = asyncio.run(elm.init())
    return elm, chip, st


def pids(elm, p):
    st = asyncio.run(elm.query_pids(p))
    return "%s %s" % (E.NAMES[st], " ".join("%02X@%02X=%s" % (elm.res_ch[i], elm.res_ecu[i],
                      bytes(elm.msg[elm.res_off[i]:elm.res_off[i] + elm.res_len[i]]).hex()) for i in range(elm.res_n)))


def dtcs(elm, mode=3):
    st = asyncio.run(elm.read_dtcs(mode))
    return "%s %s" % (E.NAMES[st], " ".join("%02X:%s" % (elm.dtc_ecu[i], bytes(elm.dtc[2 * i:2 * i + 2]).hex())
                                           for i in range(elm.dtc_n)))


def report(name, elm, chip, st):
    print(name, "init", E.NAMES[st], elm.protocol, elm.is_can, elm.is_legacy(), elm.shape,
          bytes(elm.supported[:4]).hex())
    print(name, "pids", pids(elm, b"\x0c\x0d" if elm.is_can else b"\x0c"))
    print(name, "dtc", dtcs(elm))
    st = asyncio.run(elm.read_vin())
    print(name, "vin", E.NAMES[st], bytes(elm.vin[:elm.vin_n]))


for name, he, ht in (("hdr11", "7E8", "7E9"), ("hdr11_spaces", "7E8 ", "7E9 "), ("hdr29", "18DAF110", "18DAF118")):
    s = can_chip(he, ht)
    if name.endswith("spaces"):
        s0 = s

        def s(cmd, s0=s0):  # spaces between every byte, as with ATS1
            r = s0(cmd)
            if r is None or not r.startswith(b"7E"):
                return r
            out = bytearray()
            for ln in r.split(b"\r"):
                if ln.startswith(b"7E"):
                    ln = ln[:4] + b" ".join(ln[4 + i:6 + i] for i in range(0, len(ln) - 4, 2))
                out += ln + b"\r"
            return bytes(out[:-1])
    report(name, *new(s))

# A "v2.1" clone: OK to every AT command (ATDPN, ATRV included), headers honoured.
V21 = [False]


def v21(cmd):
    c = cmd.upper()
    if c.startswith(b"AT") and c not in (b"ATZ", b"ATWS"):
        if c == b"ATH1":
            V21[0] = True
        elif c == b"ATH0":
            V21[0] = False
        return b"OK\r\r>"
    if V21[0]:
        return can_chip("7E8", "7E9")(cmd)
    if c.startswith(b"0100"):
        return b"4100BE3FA813\r410080000000\r\r>"
    if c == b"03":
        return b"43020133C123\r\r>"
    return None


elm, chip, st = new(v21)
print("v21", "init", E.NAMES[st], elm.protocol, elm.is_can, elm.mv, chip.sent[-3:])
print("v21", "dtc", dtcs(elm))
print("v21", "pids", pids(elm, b"\x0c\x0d"))

# Lower case, `searching...`, NULs around the prompt.


def lower(cmd):
    r = None
    c = cmd.upper()
    if c.startswith(b"0100"):
        r = b"searching...\r4100be3fa813\r\r>"
    elif c.startswith(b"010C"):
        r = b"\x00410c1af8\r\r\x00>"
    elif c.startswith(b"0105"):
        r = b"no data\r\r>"
    elif c == b"03":
        r = b"43 01 01 33\r\r>"
    return r


elm, chip, st = new(lower)
print("lower", "init", E.NAMES[st], bytes(elm.supported[:4]).hex(), elm.garbage)
print("lower", "pids", pids(elm, b"\x0c"), "|", pids(elm, b"\x05"), elm.garbage)
print("lower", "dtc", dtcs(elm))

# ISO 9141-2 and KWP with headers (check byte), codes three to a frame, no count; VIN in 5 lines.


def legacy(head_e, head_t, dpn):
    def script(cmd):
        c = cmd.upper()
        if c == b"ATDPN":
            return dpn
        if c.startswith(b"0100"):
            return (legacy_line(head_e, "4100" + BITMAP) + legacy_line(head_t, "410080000000") + "\r>").encode()
        if c.startswith(b"010C"):
            return (legacy_line(head_e, "410C1AF8") + "\r>").encode()
        if c == b"03":
            return (legacy_line(head_e, "43" + "0133" + "0000" * 2) + legacy_line(head_t, "43" + "C123" + "0000" * 2)
                    + "\r>").encode()
        if c == b"0902":
            vin = "".join("%02X" % ord(x) for x in "WVWZZZ1KZAW386754")
            vin = "000000" + vin
            return ("".join(legacy_line(head_e, "4902%02X" % (k + 1) + vin[8 * k:8 * k + 8]) for k in range(5))
                    + "\r>").encode()
        return None

    return script


report("iso9141", *new(legacy("486B10", "486B18", b"A3\r\r>")))
report("kwp", *new(legacy("86F110", "86F118", b"OK\r\r>")))  # KWP, and ATDPN not believable

# Malformed DTC replies: each a named error, never a short list.
elm, chip, st = new(None)
for name, r in (("count_mismatch", b"43030133C123\r\r>"),
                ("cut_line", b"43020133C12\r\r>"),
                ("frame_gap", b"00A\r0: 43040133C123\r2: 00000000000000\r\r>"),
                ("error_beside", b"43020133C123\rCAN ERROR\r\r>"),
                ("other_mode", b"470100\r\r>"),
                ("bad_check", (legacy_line("486B10", "43013300000000")[:-3] + "00\r\r>").encode())):
    chip.script = lambda cmd, r=r: r
    print("bad", name, dtcs(elm))
chip.script = lambda cmd: b"014\r0: 490201575657\r1: 5A5A5A314B5A41\r\r>"
print("bad", "vin_cut", E.NAMES[asyncio.run(elm.read_vin())])
chip.script = lambda cmd: b"BUFFER FULL\r\r>"
print("bad", "buffer_full", pids(elm, b"\x0c\x0d"))
chip.script = lambda cmd: frames("43020133C123") + b"\r>"
print("ok frames", dtcs(elm))

# Two ECUs answer at once with multi-frame messages, headers on: their frames interleave on the
# bus (7E8 10.., 7E9 10.., 7E8 21.., 7E9 21..). Each message is reassembled by its CAN id.


def interleave(a, b):
    la = a.split("\r")[:-1]
    lb = b.split("\r")[:-1]
    out = ""
    for k in range(max(len(la), len(lb))):
        out += (la[k] + "\r" if k < len(la) else "") + (lb[k] + "\r" if k < len(lb) else "")
    return out


for name, he, ht in (("ilv11", "7E8", "7E9"), ("ilv29", "18DAF110", "18DAF118")):
    base = can_chip(he, ht)

    def ilv(cmd, base=base, he=he, ht=ht):
        c = cmd.upper()
        if c == b"03":  # 3 codes each: 8 bytes, a first and a consecutive frame per ECU
            return (interleave(can_lines(he, "4303013301340135"), can_lines(ht, "4303C123C124C125"))
                    + "\r>").encode()
        if c == b"07":  # the second ECU's consecutive frame missing: a cut message, not fewer codes
            return (interleave(can_lines(he, "4703013301340135"), can_lines(ht, "4703C123C124C125").split("\r")[0]
                               + "\r") + "\r>").encode()
        if c == b"0A":  # the same ECU's frames out of order
            a = can_lines(he, "4A0401330134013501360137").split("\r")
            return (a[0] + "\r" + a[2] + "\r" + a[1] + "\r\r>").encode()
        return base(cmd)

    elm, chip, st = new(ilv)
    print(name, "dtc", dtcs(elm), "|", dtcs(elm, 7), "|", dtcs(elm, 0x0A))

# Freeze frame (mode 02, frame 0): per ECU, with and without headers, CAN and legacy buses.


def ff_chip(line):
    def script(cmd):
        c = cmd.upper()
        if c == b"020200":
            return (line("7E8", "18DAF110", "486B10", "42020001 33") + line("7E9", "18DAF118", "486B18", "42020007 30")
                    + "\r>").encode()
        if c == b"020C00":
            return (line("7E8", "18DAF110", "486B10", "420C001AF8") + "\r>").encode()
        if c == b"020D00":
            return (line("7E8", "18DAF110", "486B10", "420D001AF8") + "\r>").encode()  # 2 bytes: not speed's 1
        if c == b"020500":
            return b"NO DATA\r\r>"
        return None
    return script


def ff(elm, pid):
    st = asyncio.run(elm.read_freeze(pid))
    return "%s %s" % (E.NAMES[st], " ".join("%02X@%02X=%s" % (elm.res_ch[i], elm.res_ecu[i],
                      bytes(elm.msg[elm.res_off[i]:elm.res_off[i] + elm.res_len[i]]).hex()) for i in range(elm.res_n)))


for name, line in (("can11", lambda a, b, c, d: can_lines(a, d.replace(" ", ""))),
                   ("can29", lambda a, b, c, d: can_lines(b, d.replace(" ", ""))),
                   ("iso9141", lambda a, b, c, d: legacy_line(c, d.replace(" ", ""))),
                   ("plain", lambda a, b, c, d: d + "\r")):
    base = can_chip("7E8", "7E9") if name.startswith("can") else (
        legacy("486B10", "486B18", b"A3\r\r>") if name == "iso9141" else None)

    def script(cmd, base=base, line=line):
        r = ff_chip(line)(cmd)
        return r if r is not None or base is None else base(cmd)

    elm, chip, st = new(script)
    print("ff_" + name, "read", ff(elm, 2), "|", ff(elm, 0x0C), "|", ff(elm, 0x0D), "|", ff(elm, 5), "|",
          ff(elm, 0x01), "|", ff(elm, 0x20), chip.sent[-1])
