"""ELM327 driver: whitelisted OBD requests over an injected stream, replies parsed in place.

The driver is a small state machine so the hot path needs no coroutine per request:
`start_pids()` / `start_voltage()` write a request, `poll()` reads what is waiting and returns
PENDING until the `>` prompt (or the deadline) ends the reply, then a status code. The async
methods (`init`, `query_pids`, `read_dtcs`, `read_vin`, `clear_dtcs`, `recover`) wrap the same
machine for the slow paths. Nothing here raises on serial input: every reply becomes a status.

Results of a mode 01 (or ATRV) request are `res_n` entries `res_ch[i]`, `res_off[i]`, `res_len[i]`
pointing into `msg` (the reply's bytes, decoded from hex in place): read them before the next
request. ATRV lands there too, as channel 0xFF with 2 bytes of millivolts.

Settings: echo, linefeeds, spaces off (fewer bytes on a 38400 baud line), headers off (the
`0:`/`1:` frame format is parsed; a second ECU's answer to a PID is ignored), adaptive timing 1.
The response-count digit is sent only on single-PID requests, as `1`: a single PID is complete
with its first answer, which is all we keep, so the chip can skip its final wait. Multi-PID
replies are several frames (from one or two ECUs) and chips count them differently; the
emulator answers `?` there. A `?` to a request with the digit turns the digit off for good.
"""

try:
    from micropython import const
except ImportError:  # CPython: the daemon's direct mode runs this driver unchanged
    from obdsync.direct.mpcompat import asyncio, const, time
else:
    import asyncio
    import time

from protocol.channels import CH_VOLTAGE, DATA_LEN

# poll() and request statuses
PENDING = const(-1)
OK = const(0)
NO_DATA = const(1)
UNKNOWN = const(2)  # `?`: the chip did not understand the request
STOPPED = const(3)
CAN_ERROR = const(4)
BUS_INIT = const(5)
BUS_ERROR = const(6)
UNABLE = const(7)  # UNABLE TO CONNECT: no ECU answers (ignition off)
BUFFER_FULL = const(8)
TIMEOUT = const(9)  # no prompt by the deadline: the chip may still be busy (recover() first)
GARBAGE = const(10)  # a prompt, but nothing understood before it
RESET = const(11)  # the adapter printed its banner: it reset, run init() again
BUSY = const(12)  # refused: a request is outstanding
NOT_READY = const(13)  # refused: not initialised, or recover() needed
BAD_ARG = const(14)  # refused: the request is outside the whitelist / limits
OTHER_ERROR = const(15)  # DATA ERROR, FB ERROR, ERRxx, <RX ERROR ...

NAMES = ("OK", "NO_DATA", "UNKNOWN", "STOPPED", "CAN_ERROR", "BUS_INIT", "BUS_ERROR", "UNABLE",
         "BUFFER_FULL", "TIMEOUT", "GARBAGE", "RESET", "BUSY", "NOT_READY", "BAD_ARG", "OTHER_ERROR")

MAX_PIDS = const(6)  # ELM327: up to 6 PIDs in one mode 01 request, CAN only
RX_MAX = const(384)
MSG_MAX = const(192)
DTC_MAX = const(32)

_IDLE = const(0)
_BUSY = const(1)
_STUCK = const(2)  # timed out without a prompt: the chip's state is unknown

# request kinds: how a reply is parsed
_K_AT = const(0)
_K_RESET = const(1)  # ATZ / ATWS: the banner is expected
_K_PIDS = const(2)
_K_VOLT = const(3)
_K_DTC = const(4)
_K_VIN = const(5)
_K_CLEAR = const(6)

_CR = const(13)
_LF = const(10)
_PROMPT = const(62)
_SP = const(32)
_COLON = const(58)

_HEX = b"0123456789ABCDEF"

# (prefix, status) for the chip's messages; checked before a line is read as hex
_ERRORS = (
    (b"NO DATA", NO_DATA),
    (b"STOPPED", STOPPED),
    (b"CAN ERROR", CAN_ERROR),
    (b"BUS INIT", BUS_INIT),
    (b"BUS ERROR", BUS_ERROR),
    (b"BUS BUSY", BUS_ERROR),
    (b"UNABLE TO CONNECT", UNABLE),
    (b"BUFFER FULL", BUFFER_FULL),
    (b"ELM327", RESET),
    (b"LV RESET", RESET),
    (b"?", UNKNOWN),
    (b"DATA ERROR", OTHER_ERROR),
    (b"<DATA ERROR", OTHER_ERROR),
    (b"<RX ERROR", OTHER_ERROR),
    (b"FB ERROR", OTHER_ERROR),
    (b"ERR", OTHER_ERROR),
    (b"ACT ALERT", OTHER_ERROR),
    (b"LP ALERT", OTHER_ERROR),
)
_SEARCHING = b"SEARCHING"
_OK = b"OK"

_T_AT = const(1000)
_T_RESET = const(2500)
_T_OBD = const(2000)
_T_SEARCH = const(15000)  # ATSP0's search through every protocol on the first request

_INIT = (b"ATE0", b"ATL0", b"ATS0", b"ATH0", b"ATSP0")


def _hx(c):
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    if 97 <= c <= 102:
        return c - 87
    return -1


class ELM327:
    def __init__(self, stream, clock=time.ticks_ms):
        self.stream = stream
        self.clock = clock
        self.rx = bytearray(RX_MAX)
        self.rx_n = 0
        self._chunk = bytearray(64)
        self.tx = bytearray(24)
        tv = memoryview(self.tx)
        self._txv = [tv[:i] for i in range(len(self.tx) + 1)]  # write(tx[:n]) without a slice per request
        self.msg = bytearray(MSG_MAX)
        self.msg_n = 0
        self.req = bytearray(MAX_PIDS)
        self.req_n = 0
        self.res_ch = bytearray(MAX_PIDS)
        self.res_off = bytearray(MAX_PIDS)  # MSG_MAX <= 255
        self.res_len = bytearray(MAX_PIDS)
        self.res_n = 0
        self.supported = bytearray(32)  # the 0100/0120/... replies' bytes: bit 7 of byte 0 = PID 0x01
        self.dtc = bytearray(2 * DTC_MAX)
        self.dtc_n = 0
        self.vin = bytearray(20)
        self.vin_n = 0
        self.text_start = 0  # an AT reply's first line: rx[text_start:text_end]
        self.text_end = 0
        self.mv = 0  # last ATRV in millivolts
        self.protocol = 0  # ATDPN digit: 6-9 CAN, 1-5 J1850/K-line, 0 unknown
        self.is_can = False
        self.ready = False  # the chip is configured (requests may be sent)
        self.ecu = False  # an ECU answered the supported-PID discovery
        self.digit = True  # response-count digit on single-PID requests (see module doc)
        self.status = OK  # status of the last finished request
        self._state = _IDLE
        self._kind = _K_AT
        self._t0 = 0
        self._timeout = _T_AT
        self._txn = 0
        self._got_prompt = False
        # counters: what went wrong, never silently
        self.timeouts = 0
        self.errors = 0  # requests that ended in a chip error message
        self.garbage = 0  # lines neither hex nor a known message
        self.unsolicited = 0  # answers for PIDs we did not ask, or for another mode
        self.truncated = 0  # replies that ended inside a PID's data or a frame
        self.overflow = 0  # reply bytes beyond RX_MAX (dropped)
        self.stale = 0  # bytes waiting before a request (late answers, noise): dropped
        self.resets = 0  # banners seen outside ATZ

    # ---- public: slow paths (allocate; not per sample) ------------------------------------

    async def init(self):
        """Reset and configure the chip, find the protocol, read ATRV and the supported PIDs.
        Returns OK, or the status that stopped it (UNABLE: no ECU; the chip is configured)."""
        self.ready = False
        self._state = _IDLE
        self.stream.drain()
        st = await self._cmd(b"ATZ", _K_RESET, _T_RESET)
        if st != OK:
            await self.recover()
            st = await self._cmd(b"ATWS", _K_RESET, _T_RESET)
            if st != OK:
                return st
        for c in _INIT:
            st = await self._cmd(c, _K_AT, _T_AT)
            if st != OK:
                return st
        # Aggressive adaptive timing where the chip knows it, else the default ATAT1.
        if await self._cmd(b"ATAT2", _K_AT, _T_AT) != OK:
            await self._cmd(b"ATAT1", _K_AT, _T_AT)
        await self._voltage()
        self.digit = True
        for i in range(32):
            self.supported[i] = 0
        # The first request makes ATSP0 search (SEARCHING...), then ATDPN knows the protocol.
        st = await self._bitmap(0x00, _T_SEARCH)
        if await self._cmd(b"ATDPN", _K_AT, _T_AT) == OK:
            p = self.rx[self.text_end - 1] if self.text_end > self.text_start else 0
            self.protocol = _hx(p) if _hx(p) > 0 else 0
        self.is_can = 6 <= self.protocol <= 9
        if st != OK:
            # The chip works but no ECU answers (ignition off): ATRV still can be polled;
            # the PIDs wait for init() again (the scheduler retries while not parked).
            self.ecu = False
            self.ready = st == UNABLE or st == NO_DATA
            return st
        self.ecu = True
        base = 0x00
        while base < 0xE0 and self.supported[(base >> 3) + 3] & 1:  # bit "next range supported"
            base += 0x20
            if await self._bitmap(base, _T_OBD) != OK:
                break
        self.ready = True
        return OK

    async def recover(self):
        """After TIMEOUT: get the chip back to a prompt without repeating the last command (a lone
        CR would). A character interrupts a busy chip (STOPPED) and ATE0 is harmless when idle.
        Returns OK when a prompt came back."""
        for _ in range(3):
            self._state = _IDLE
            self.stream.drain()
            st = await self._cmd(b"ATE0", _K_AT, _T_AT)
            if st != TIMEOUT:
                if st == RESET:
                    self.ready = False
                return OK
        self._state = _STUCK
        return TIMEOUT

    async def query_pids(self, pids, n=-1):
        """One mode 01 request (a list/bytes of up to 6 PIDs); results in res_*; returns a status."""
        st = self.start_pids(pids, len(pids) if n < 0 else n)
        while st == PENDING:
            await asyncio.sleep_ms(self.stream.poll_ms)
            st = self.poll()
        return st

    async def read_voltage(self):
        """ATRV; returns millivolts (also in self.mv), or -1."""
        return self.mv if await self._voltage() == OK else -1

    async def read_dtcs(self, mode):
        """Mode 03 (stored), 07 (pending) or 0x0A (permanent): raw 2-byte codes in dtc[:2*dtc_n]."""
        if mode not in (0x03, 0x07, 0x0A):
            return BAD_ARG
        self.dtc_n = 0
        return await self._obd(b"03" if mode == 3 else (b"07" if mode == 7 else b"0A"), _K_DTC)

    async def read_vin(self):
        """Mode 09 PID 02: VIN bytes as sent, in vin[:vin_n]."""
        self.vin_n = 0
        st = await self._obd(b"0902", _K_VIN)
        return st if st != OK or self.vin_n else NO_DATA

    async def clear_dtcs(self):
        """Mode 04. The caller checks authentication and that the car stands still."""
        return await self._obd(b"04", _K_CLEAR)

    # ---- public: the hot path (allocation-free) -------------------------------------------

    def pid_supported(self, pid):
        if pid == 0:
            return 1
        pid -= 1
        return (self.supported[pid >> 3] >> (7 - (pid & 7))) & 1

    def start_pids(self, pids, n):
        """Send one mode 01 request for pids[:n]; PENDING, or a refusal (BUSY, NOT_READY, BAD_ARG)."""
        if self._state != _IDLE:
            return BUSY if self._state == _BUSY else NOT_READY
        if n < 1 or n > (MAX_PIDS if self.is_can else 1):
            return BAD_ARG
        tx = self.tx
        tx[0] = 48
        tx[1] = 49
        k = 2
        for i in range(n):
            p = pids[i]
            for j in range(i):
                if self.req[j] == p:
                    return BAD_ARG  # a PID twice would shift the reply's parse
            self.req[i] = p
            tx[k] = _HEX[p >> 4]
            tx[k + 1] = _HEX[p & 15]
            k += 2
        self.req_n = n
        if n == 1 and self.digit:
            tx[k] = 49
            k += 1
        return self._start(k, _K_PIDS, _T_OBD)

    def start_voltage(self):
        """Send ATRV; its result is channel 0xFF in res_* (2 bytes, mV)."""
        if self._state != _IDLE:
            return BUSY if self._state == _BUSY else NOT_READY
        self.tx[0:4] = b"ATRV"
        return self._start(4, _K_VOLT, _T_AT)

    def poll(self):
        """Read what is waiting; PENDING until the reply is complete, then its status."""
        if self._state != _BUSY:
            return NOT_READY
        rx = self.rx
        ch = self._chunk
        s = self.stream
        while True:
            k = s.readinto(ch)
            if not k:
                break
            n = self.rx_n
            for i in range(k):
                c = ch[i]
                if c == _PROMPT:
                    if i + 1 < k:
                        self.stale += k - i - 1
                    self.rx_n = n
                    self._state = _IDLE
                    return self._finish()
                if c == 0:
                    continue  # some clones send NULs around the prompt
                if n < RX_MAX:
                    rx[n] = c
                    n += 1
                else:
                    self.overflow += 1
            self.rx_n = n
        if time.ticks_diff(self.clock(), self._t0) > self._timeout:
            self._state = _STUCK
            self.timeouts += 1
            self.status = TIMEOUT
            return TIMEOUT
        return PENDING

    # ---- internals --------------------------------------------------------------------------

    def _start(self, k, kind, timeout):
        self.stale += self.stream.drain()
        self.tx[k] = _CR
        self._txn = k
        self._kind = kind
        self._timeout = timeout
        self.rx_n = 0
        self.msg_n = 0
        self.res_n = 0
        self._state = _BUSY
        self._t0 = self.clock()
        self.stream.write(self._txv[k + 1])
        return PENDING

    async def _wait(self):
        st = self.poll()
        while st == PENDING:
            await asyncio.sleep_ms(self.stream.poll_ms)
            st = self.poll()
        return st

    async def _cmd(self, text, kind, timeout):
        if self._state != _IDLE:
            return BUSY if self._state == _BUSY else NOT_READY
        n = len(text)
        self.tx[0:n] = text
        self._start(n, kind, timeout)
        return await self._wait()

    async def _obd(self, text, kind):
        if not self.ready:
            return NOT_READY
        return await self._cmd(text, kind, _T_OBD)

    async def _voltage(self):
        st = self.start_voltage()
        if st == PENDING:
            st = await self._wait()
        return st

    async def _bitmap(self, base, timeout):
        self.req[0] = base
        self.req_n = 1
        self.tx[0] = 48
        self.tx[1] = 49
        self.tx[2] = _HEX[base >> 4]
        self.tx[3] = _HEX[base & 15]
        if self._state != _IDLE:
            return NOT_READY
        self._start(4, _K_PIDS, timeout)
        st = await self._wait()
        if st == OK:
            for i in range(self.res_n):
                if self.res_ch[i] == base and self.res_len[i] == 4:
                    o = self.res_off[i]
                    for j in range(4):
                        self.supported[(base >> 3) + j] = self.msg[o + j]
                    return OK
            return NO_DATA
        return st

    def _is_echo(self, s, e):
        n = self._txn
        if e - s != n:
            return False
        rx = self.rx
        tx = self.tx
        for i in range(n):
            if rx[s + i] != tx[i]:
                return False
        return True

    def _starts(self, s, e, lit):
        n = len(lit)
        if e - s < n:
            return False
        rx = self.rx
        for i in range(n):
            if rx[s + i] != lit[i]:
                return False
        return True

    def _finish(self):
        """Parse rx[:rx_n] (the reply without its prompt) by the request's kind."""
        rx = self.rx
        end = self.rx_n
        kind = self._kind
        err = OK
        data = False  # a hex line was understood
        text = False
        self._m0 = 0  # start of the message being assembled in msg
        self._mexp = -1  # its length from a length line, or -1
        self._mnext = -1  # next frame index expected, -1 outside a multi-frame message
        self._mbad = False
        i = 0
        while i < end:
            # one line: [s, e) without CR/LF and surrounding spaces
            s = i
            while i < end and rx[i] != _CR and rx[i] != _LF:
                i += 1
            e = i
            i += 1
            while s < e and rx[s] == _SP:
                s += 1
            while e > s and rx[e - 1] == _SP:
                e -= 1
            if s == e or self._is_echo(s, e):
                continue
            if self._starts(s, e, _SEARCHING):
                continue
            found = -1
            for lit, code in _ERRORS:
                if self._starts(s, e, lit):
                    found = code
                    break
            if found == RESET and kind == _K_RESET:
                text = True
                continue
            if found >= 0:
                if found == RESET:
                    self.resets += 1
                    self.ready = False
                    self.status = RESET
                    return RESET  # whatever else came with it is from a chip we no longer know
                if err == OK:
                    err = found
                continue
            if kind == _K_AT or kind == _K_RESET or kind == _K_VOLT:
                if not text:
                    self.text_start = s
                    self.text_end = e
                    text = True
                continue
            if self._hexline(s, e):
                data = True
            else:
                self.garbage += 1
        if kind >= _K_PIDS and kind != _K_VOLT:
            self._end_message()
        st = self._outcome(kind, err, data, text)
        if st != OK and st != NO_DATA:
            self.errors += 1
        if st == UNKNOWN and kind == _K_PIDS and self.req_n == 1 and self.digit:
            self.digit = False  # a chip without the count digit; the caller retries
        self.status = st
        return st

    def _outcome(self, kind, err, data, text):
        if kind == _K_AT or kind == _K_RESET:
            if err != OK:
                return err
            return OK if text else GARBAGE
        if kind == _K_VOLT:
            if err != OK:
                return err
            return self._parse_volts() if text else GARBAGE
        if kind == _K_PIDS:
            if self.res_n:
                return OK  # partial answers count: the missing PIDs are the caller's misses
            if err != OK:
                return err
            return NO_DATA if data else GARBAGE
        if err != OK and not data:
            return err
        return OK if data else GARBAGE

    def _parse_volts(self):
        # "12.6V" / "12.45V" / "13V" -> millivolts, without a float or a str
        rx = self.rx
        mv = 0
        scale = 0  # digits after the point, 0 before it
        digits = 0
        for i in range(self.text_start, self.text_end):
            c = rx[i]
            if 48 <= c <= 57:
                if scale < 3:
                    mv = mv * 10 + c - 48
                    digits += 1
                    if scale:
                        scale += 1
            elif c == 46 and not scale:
                scale = 1
            elif c == 86 or c == 118:
                break
            else:
                return GARBAGE
        if not digits or digits > 6:
            return GARBAGE
        f = scale - 1 if scale else 0
        while f < 3:
            mv *= 10
            f += 1
        if mv > 0xFFFF:
            return GARBAGE
        self.mv = mv
        self.msg[0] = mv >> 8
        self.msg[1] = mv & 0xFF
        self.res_ch[0] = CH_VOLTAGE
        self.res_off[0] = 0
        self.res_len[0] = 2
        self.res_n = 1
        return OK

    def _hexline(self, s, e):
        """Decode one data line into msg, tracking ISO-TP frames; False if it is not hex."""
        rx = self.rx
        frame = -1
        if e - s >= 2 and rx[s + 1] == _COLON:
            frame = _hx(rx[s])
            if frame < 0:
                return False
            s += 2
        h = 0
        for i in range(s, e):
            c = rx[i]
            if c != _SP:
                if _hx(c) < 0:
                    return False
                h += 1
        if frame < 0 and h == 3 and e - s == 3:
            # the ISO-TP length line (`00A`) opens a multi-frame message
            self._end_message()
            self._mexp = (_hx(rx[s]) << 8) | (_hx(rx[s + 1]) << 4) | _hx(rx[s + 2])
            self._mnext = 0
            return True
        if h & 1:
            self.truncated += 1  # a cut line: its bytes cannot be trusted
            self._mbad = True
            return True
        if frame < 0:
            self._end_message()
            self._append(s, e)
            self._end_message()
            return True
        if frame == 0 and (self._mnext != 0 or self.msg_n > self._m0):
            # a second first frame: another message (another ECU) without a length line
            self._end_message()
            self._mnext = 0
        if frame != self._mnext:
            # out of order or interleaved frames: keep what came before, drop the rest
            self.truncated += 1
            self._mbad = True
            return True
        if self._mbad:
            return True
        self._append(s, e)
        self._mnext = (frame + 1) & 15
        return True

    def _append(self, s, e):
        rx = self.rx
        m = self.msg
        n = self.msg_n
        hi = -1
        for i in range(s, e):
            v = _hx(rx[i])
            if v < 0:
                continue
            if hi < 0:
                hi = v
            else:
                if n < MSG_MAX:
                    m[n] = (hi << 4) | v
                    n += 1
                else:
                    self.overflow += 1
                hi = -1
        self.msg_n = n

    def _end_message(self):
        m0 = self._m0
        n = self.msg_n - m0
        if self._mexp >= 0:
            if n > self._mexp:
                n = self._mexp  # padding after the announced length
                self.msg_n = m0 + n
            elif n < self._mexp:
                self.truncated += 1
        if n > 0:
            k = self._kind
            if k == _K_PIDS:
                self._take_pids(m0, n)
            elif k == _K_DTC:
                self._take_dtcs(m0, n)
            elif k == _K_VIN:
                self._take_vin(m0, n)
            elif k == _K_CLEAR:
                if self.msg[m0] != 0x44:
                    self.unsolicited += 1
        self._m0 = self.msg_n
        self._mexp = -1
        self._mnext = -1
        self._mbad = False

    def _take_pids(self, o, n):
        m = self.msg
        end = o + n
        if m[o] != 0x41:
            self.unsolicited += 1  # another mode's answer (or the emulator's 0x61 for PID A6)
            return
        i = o + 1
        single = self.req_n == 1
        while i < end:
            p = m[i]
            asked = False
            for j in range(self.req_n):
                if self.req[j] == p:
                    asked = True
                    break
            if not asked:
                if p != 0 and p != 0x55 and p != 0xAA:  # not padding after the last PID
                    self.unsolicited += 1
                return
            ln = DATA_LEN[p]
            if ln == 0:
                if not single:
                    return  # unknown length inside a multi-PID reply: cannot find the next PID
                ln = end - i - 1
            if ln > 255 or i + 1 + ln > end:
                if not self._answered(p):
                    self.truncated += 1
                return
            if not self._answered(p) and i + 1 <= 255 and self.res_n < MAX_PIDS:
                r = self.res_n
                self.res_ch[r] = p
                self.res_off[r] = i + 1
                self.res_len[r] = ln
                self.res_n = r + 1
            i += 1 + ln

    def _answered(self, p):
        for j in range(self.res_n):
            if self.res_ch[j] == p:
                return True
        return False

    def _take_dtcs(self, o, n):
        m = self.msg
        mode = m[o]
        if mode != 0x43 and mode != 0x47 and mode != 0x4A:
            self.unsolicited += 1
            return
        i = o + 1
        # On CAN a count byte follows the mode byte (then 2 bytes a code): odd data length.
        # Some ECUs (the emulator's car) leave it out; K-line frames carry 3 codes and no count.
        if self.is_can and (n - 1) & 1:
            i += 1
        d = self.dtc
        while i + 1 < o + n:
            a = m[i]
            b = m[i + 1]
            i += 2
            if a == 0 and b == 0:
                continue  # padding code
            k = self.dtc_n
            if k < DTC_MAX:
                d[2 * k] = a
                d[2 * k + 1] = b
                self.dtc_n = k + 1
            else:
                self.overflow += 1

    def _take_vin(self, o, n):
        m = self.msg
        if n < 3 or m[o] != 0x49 or m[o + 1] != 0x02:
            self.unsolicited += 1
            return
        # CAN: 49 02 <count 01> + 17 bytes; K-line: 49 02 <frame no.> + 4 bytes, 5 messages
        v = self.vin
        for i in range(o + 3, o + n):
            b = m[i]
            if b == 0 and self.vin_n == 0:
                continue  # K-line's leading fill
            if self.vin_n < len(v):
                v[self.vin_n] = b
                self.vin_n += 1
