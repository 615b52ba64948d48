"""A scripted ELM327 on the MicroPython side: a stream with the driver's interface.

A request is answered the moment its CR is written (the reply waits in `out`); `script`, when
set, is a function(command bytes) -> reply bytes that overrides the well-behaved chip below.
The clock is virtual: `clock()` advances `step` ms per call, so deadlines pass without sleeping,
and `bus_ms(cmd)` (when set) charges the bus time of a request to it.
"""

# ruff: noqa: UP031 - %-formatting: MicroPython has no f-string format specs on every port


class Clock:
    def __init__(self, step=1):
        self.t = 0
        self.step = step

    def __call__(self):
        self.t += self.step
        return self.t


# The car: CAN 11/500, these PIDs supported (bitmaps as the emulator's `car` gives them).
BITMAPS = {0x00: "BE3FA813", 0x20: "901FF015", 0x40: "7A1C8021", 0x60: "00000001",
           0x80: "00000001", 0xA0: "04200000"}
LEN = {0x01: 4, 0x04: 1, 0x05: 1, 0x0C: 2, 0x0D: 1, 0x0F: 1, 0x10: 2, 0x11: 1, 0x2F: 1,
       0x31: 2, 0x42: 2, 0xA6: 4}


def value(pid, n):
    return "".join("%02X" % ((pid * 7 + i * 13) & 0xFF) for i in range(n))


def good_reply(cmd):
    c = cmd.upper().replace(b" ", b"")
    if c in (b"ATZ", b"ATWS"):
        return b"\r\rELM327 v1.5\r\r>"
    if c == b"ATRV":
        return b"12.6V\r\r>"
    if c == b"ATDPN":
        return b"A6\r\r>"
    if c.startswith(b"AT"):
        return b"OK\r\r>"
    if c == b"0902":
        return b"014\r0: 490201575030\r1: 5A5A5A39395A54\r2: 53333930303030\r\r>"
    if c == b"03":
        return b"43020133C123\r\r>"
    if c in (b"07", b"0A"):
        return bytes((c[0] + 4, c[1])) + b"00\r\r>"
    if c == b"04":
        return b"44\r\r>"
    if not c.startswith(b"01"):
        return b"?\r\r>"
    h = c[2:].decode()
    if len(h) & 1:
        h = h[:-1]  # the response-count digit
    pids = [int(h[i:i + 2], 16) for i in range(0, len(h), 2)]
    body = ""
    for p in pids:
        if p in BITMAPS:
            body += "%02X" % p + BITMAPS[p]
        elif p in LEN:
            body += "%02X" % p + value(p, LEN[p])
    if not body:
        return b"NO DATA\r\r>"
    return frames("41" + body) + b"\r>"


def frames(hexs, length_line=True):
    """ELM327 ATH0 ATS0 output of one ISO-TP message (hex string of its bytes)."""
    n = len(hexs) // 2
    if n <= 7:
        return hexs.encode() + b"\r"
    out = ("%03X\r" % n) if length_line else ""
    out += "0: " + hexs[:12] + "\r"
    rest = hexs[12:]
    i = 1
    while rest:
        part = rest[:14]
        rest = rest[14:]
        out += "%X: " % (i & 15) + part + "00" * ((14 - len(part)) // 2) + "\r"
        i += 1
    return out.encode()


class FakeChip:
    def __init__(self, script=None, chunk=64):
        self.script = script
        self.out = bytearray()
        self.line = bytearray()
        self.poll_ms = 1
        self.chunk = chunk  # bytes handed out per readinto at most (a slow line)
        self.sent = []  # commands seen
        self.bus_ms = None
        self.clock = None

    def write(self, buf):
        for b in bytes(buf):
            if b == 13:
                cmd = bytes(self.line)
                self.line = bytearray()
                self.sent.append(cmd)
                if len(self.sent) > 40:
                    self.sent = self.sent[-20:]
                if self.bus_ms and self.clock:
                    self.clock.t += self.bus_ms(cmd)
                r = self.script(cmd) if self.script else None
                self.out += good_reply(cmd) if r is None else r
            else:
                self.line.append(b)

    def readinto(self, buf):
        n = min(len(buf), len(self.out), self.chunk)
        buf[:n] = self.out[:n]
        self.out = self.out[n:]
        return n

    def drain(self):
        n = len(self.out)
        self.out = bytearray()
        return n


def run_sync(elm, st):
    """Poll a started request to its end without an event loop (the fake answers at once)."""
    while st == -1:
        st = elm.poll()
    return st


def can_lines(header, hexs):
    """One ISO-TP message as an ELM327 prints it with headers on (ATH1 ATS0): `header` then
    the PCI byte, padded frames (single, or first + consecutive)."""
    n = len(hexs) // 2
    if n <= 7:
        return header + "%02X" % n + hexs + "00" * (7 - n) + "\r"
    out = header + "1%03X" % n + hexs[:12] + "\r"
    rest = hexs[12:]
    i = 1
    while rest:
        part = rest[:14]
        rest = rest[14:]
        out += header + "2%X" % (i & 15) + part + "00" * ((14 - len(part)) // 2) + "\r"
        i += 1
    return out


def legacy_line(head, hexs):
    """A J1850 / ISO 9141 / KWP line with headers on: header, data, sum check byte (a KWP
    header's format byte `8x` gets the data length as x)."""
    if head[0] == "8":
        head = "%02X" % (0x80 | len(hexs) // 2) + head[2:]
    b = [int((head + hexs)[i:i + 2], 16) for i in range(0, len(head + hexs), 2)]
    return head + hexs + "%02X" % (sum(b) & 0xFF) + "\r"
