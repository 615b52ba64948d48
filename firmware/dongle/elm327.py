"""ELM327 driver: whitelisted OBD requests over an injected stream, replies parsed in place.

The driver is a small state machine so the hot path needs no coroutine per request:
`start_pids()` / `start_voltage()` write a request, `poll()` reads what is waiting and returns
PENDING until the `>` prompt (or the deadline) ends the reply, then a status code. The async
methods (`init`, `query_pids`, `read_dtcs`, `read_vin`, `read_freeze`, `clear_dtcs`, `recover`) wrap the same
machine for the slow paths. Nothing here raises on serial input: every reply becomes a status.

Results of a mode 01 (or ATRV) request are `res_n` entries `res_ch[i]`, `res_off[i]`, `res_len[i]`
pointing into `msg` (the reply's bytes, decoded from hex in place): read them before the next
request. ATRV lands there too, as channel 0xFF with 2 bytes of millivolts.

Settings: echo, linefeeds, spaces off (fewer bytes on a 38400 baud line), headers off, adaptive
timing 1. Replies are parsed by what their bytes say, not by what the driver asked for (clones
ignore ATH0, answer `OK` to ATDPN, print lower case, NULs): with or without spaces, in any case;
each line by its shape —
    `014` / `0: 49 02 ..`          CAN, headers off: ISO-TP length line and numbered frames
    `7E8 06 41 0C 1A F8`           CAN 11-bit header (odd digit count), then the PCI byte
    `18 DA F1 10 06 41 0C ..`      CAN 29-bit header (source address last)
    `48 6B 10 41 0C 1A F8 cs`      J1850 VPW / ISO 9141-2 (`41 6B`: J1850 PWM), check byte verified
    `84 F1 10 41 0C 1A F8 cs`      ISO 14230 KWP (format byte = 0x80 | length)
    `41 0C 1A F8`                  anything else: one message without a header.
A header's ECU address is kept with every PID result (res_ecu) and DTC (dtc_ecu); with headers,
multi-frame messages are reassembled per CAN id (two ECUs answering at once interleave their
frames: `_gather`). The shapes
seen set `shape`, which stands in for ATDPN when that is not believable (`is_can`,
`is_legacy()`). A second ECU's answer to a PID is ignored, except supported-PID bitmaps, which
are OR-ed (the car supports what any ECU answers).
The response-count digit is sent only on single-PID requests, as `1`: a single PID is complete
with its first answer, which is all we keep, so the chip can skip its final wait. Multi-PID
replies are several frames (from one or two ECUs) and chips count them differently; the
emulator answers `?` there. A `?` to a request with the digit turns the digit off for good.
"""

from dongle import unload
from protocol import MICROPYTHON
from protocol.channels import CH_VOLTAGE, DATA_LEN

if MICROPYTHON:
    import asyncio
    import time

    from micropython import const
else:  # CPython: the daemon's direct mode runs this driver unchanged
    from obdsync.direct.mpcompat import asyncio, const, time

# Annotations are for the type checks: MicroPython compiles them away and has no `typing`;
# CPython (the daemon's direct mode) evaluates them, so names from the block below are quoted.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from dongle._types import ElmStream

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
MALFORMED = const(16)  # a DTC list or VIN that came with a hole or a contradiction: never a short list

NAMES = ("OK", "NO_DATA", "UNKNOWN", "STOPPED", "CAN_ERROR", "BUS_INIT", "BUS_ERROR", "UNABLE",
         "BUFFER_FULL", "TIMEOUT", "GARBAGE", "RESET", "BUSY", "NOT_READY", "BAD_ARG", "OTHER_ERROR",
         "MALFORMED")

# What the replies' shape said about the bus (ELM327.shape, bits)
SHAPE_CAN = const(1)  # ISO-TP frames, a length line or a CAN header
SHAPE_29 = const(2)  # a 29-bit CAN header
SHAPE_LEGACY = const(4)  # a J1850 / ISO 9141 / KWP header with its check byte

MAX_PIDS = const(6)  # ELM327: up to 6 PIDs in one mode 01 request, CAN only
RX_MAX = const(384)
MSG_MAX = const(192)
DTC_MAX = const(32)
NIB_MAX = const(160)  # hex digits of one line (the longest legacy KWP message and more)

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
_K_FREEZE = const(7)

# Mode 02 (freeze frame) PIDs the driver asks: 02 (the code that stored the frame) and the engine
# state a mechanic reads from it (load, coolant, fuel trims, fuel pressure, MAP, RPM, speed,
# timing advance, intake air, MAF, throttle). Read-only like mode 01 (SECURITY.md whitelist).
FREEZE_PIDS = b"\x02\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11"

_CR = const(13)
_LF = const(10)
_PROMPT = const(62)
_SP = const(32)
_COLON = const(58)

_HEX = b"0123456789ABCDEF"

# The chip's messages, checked in this order before a line is read as hex: per message its
# length, its status, its text (upper case). One bytes object: as a tuple of (bytes, status)
# pairs it held ~1 KB more of a board's heap (a module's constants stay in RAM with it).
_ERRORS = (
    b"\x07\x01NO DATA"  # NO_DATA
    b"\x07\x03STOPPED"  # STOPPED
    b"\x09\x04CAN ERROR"  # CAN_ERROR
    b"\x08\x05BUS INIT"  # BUS_INIT
    b"\x09\x06BUS ERROR"  # BUS_ERROR
    b"\x08\x06BUS BUSY"  # BUS_ERROR
    b"\x11\x07UNABLE TO CONNECT"  # UNABLE
    b"\x0b\x08BUFFER FULL"  # BUFFER_FULL
    b"\x06\x0bELM327"  # RESET
    b"\x08\x0bLV RESET"  # RESET
    b"\x01\x02?"  # UNKNOWN
    b"\x0a\x0fDATA ERROR"  # OTHER_ERROR
    b"\x0b\x0f<DATA ERROR"  # OTHER_ERROR
    b"\x09\x0f<RX ERROR"  # OTHER_ERROR
    b"\x08\x0fFB ERROR"  # OTHER_ERROR
    b"\x03\x0fERR"  # OTHER_ERROR
    b"\x09\x0fACT ALERT"  # OTHER_ERROR
    b"\x08\x0fLP ALERT"  # OTHER_ERROR
)
_SEARCHING = b"SEARCHING"
_BUS_INIT = b"BUS INIT"
_OK = b"OK"

_T_AT = const(1000)
_T_RESET = const(2500)
_T_OBD = const(2000)
_T_SEARCH = const(15000)  # ATSP0's search through every protocol on the first request

_INIT = (b"ATE0", b"ATL0", b"ATS0", b"ATH0", b"ATSP0")


def _hx(c: int) -> int:
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    if 97 <= c <= 102:
        return c - 87
    return -1


class ELM327:
    def __init__(self, stream: "ElmStream", clock: "Callable[[], int]" = time.ticks_ms) -> None:
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
        self.res_ecu = bytearray(MAX_PIDS)  # the answering ECU's address where headers showed it, else 0
        self.res_n = 0
        self.supported = bytearray(32)  # the 0100/0120/... replies' bytes: bit 7 of byte 0 = PID 0x01
        self.dtc = bytearray(2 * DTC_MAX)
        self.dtc_ecu = bytearray(DTC_MAX)  # per code: its ECU's address (7E8 -> E8, 18DAF110 -> 10), 0 unknown
        self.dtc_n = 0
        self._dtc_mode = 0
        self._dtc_msgs = 0
        self.vin = bytearray(20)
        self.vin_n = 0
        self._vin_ecu = 0
        # dongle.elm_rare while a VIN or freeze-frame read runs, else None (see _rare_read)
        self._rare: ModuleType | None = None
        self._nib = bytearray(NIB_MAX)  # one line's hex digits
        self._mecu = 0  # ECU address of the message being assembled
        # ... and the rest of its state, set by every _finish. Every attribute is made here:
        # on MicroPython one first set later grows the instance's dict, a block of ~1.2 KB
        # that a fragmented heap may not have (MemoryError in the scheduler's task).
        self._m0 = 0
        self._mexp = -1
        self._mnext = -1
        self._mbad = False
        self._at = 0  # where the line after the one being parsed starts in rx
        self._ls = 0  # _line(): the line found is rx[_ls:_le]
        self._le = 0
        self._used = bytearray(RX_MAX >> 3)  # bit per rx offset: a line already taken by _gather
        self._gathered = False  # some bit of _used is set
        self.flaws = 0  # lines or messages of the last reply that could not be used whole
        self.shape = 0  # SHAPE_* bits seen since init()
        self.text_start = 0  # an AT reply's first line: rx[text_start:text_end]
        self.text_end = 0
        self.mv = 0  # last ATRV in millivolts
        self.has_volts = True  # ATRV gave a voltage at init ("v2.1" clones answer it `OK`)
        self.protocol = 0  # ATDPN digit: 6-C CAN, 1-5 J1850/K-line, 0 unknown (or not believable)
        self.is_can = False  # by ATDPN, else by the replies' shape: multi-PID requests allowed
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

    async def init(self) -> int:
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
        # A clone that answers ATRV `OK` has no voltage to give: ATRV is not asked again (each
        # GARBAGE would count as a bus error); the application reads PID 0x42 instead.
        self.has_volts = True  # asked once more at every init: a new adapter may have it
        self.has_volts = await self._voltage() != GARBAGE
        self.digit = True
        for i in range(32):
            self.supported[i] = 0
        self.shape = 0
        self.protocol = 0
        # The first request makes ATSP0 search (SEARCHING...), then ATDPN knows the protocol.
        st = await self._bitmap(0x00, _T_SEARCH)
        if await self._cmd(b"ATDPN", _K_AT, _T_AT) == OK:
            self.protocol = self._dpn()
        if not self.protocol and st == OK and not self.shape:
            # ATDPN said nothing believable (a "v2.1" clone answers OK to it) and the reply had
            # no header: ask once with headers on and read the bus from their shape.
            if await self._cmd(b"ATH1", _K_AT, _T_AT) == OK:
                await self._bitmap(0x00, _T_OBD)
                await self._cmd(b"ATH0", _K_AT, _T_AT)
        self.is_can = 6 <= self.protocol <= 12 or (not self.protocol and self.shape & SHAPE_CAN != 0)
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

    async def recover(self) -> int:
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

    async def query_pids(self, pids: bytes | bytearray | list[int], n: int = -1) -> int:
        """One mode 01 request (a list/bytes of up to 6 PIDs); results in res_*; returns a status."""
        st = self.start_pids(pids, len(pids) if n < 0 else n)
        while st == PENDING:
            await asyncio.sleep_ms(self.stream.poll_ms)
            st = self.poll()
        return st

    async def read_voltage(self) -> int:
        """ATRV; returns millivolts (also in self.mv), or -1."""
        return self.mv if await self._voltage() == OK else -1

    async def read_dtcs(self, mode: int) -> int:
        """Mode 03 (stored), 07 (pending) or 0x0A (permanent): raw 2-byte codes in dtc[:2*dtc_n]."""
        if mode not in (0x03, 0x07, 0x0A):
            return BAD_ARG
        self.dtc_n = 0
        self._dtc_mode = mode
        return await self._obd(b"03" if mode == 3 else (b"07" if mode == 7 else b"0A"), _K_DTC)

    async def read_vin(self) -> int:
        """Mode 09 PID 02: VIN bytes as sent, in vin[:vin_n]."""
        self.vin_n = 0
        self.tx[0:4] = b"0902"
        return await self._rare_read(4, _K_VIN)

    async def read_freeze(self, pid: int) -> int:
        """Mode 02 PID `pid` of frame 0 (`02 PP 00`): one result per answering ECU in res_*
        (channel = the PID, data after `42 PP 00`, the ECU where a header showed it). PID 02 is
        the code that stored the frame (2 bytes, 00 00: no frame). BAD_ARG outside FREEZE_PIDS;
        MALFORMED when an answer's length is not the PID's."""
        if pid not in FREEZE_PIDS:
            return BAD_ARG
        if self._state != _IDLE:
            return BUSY if self._state == _BUSY else NOT_READY
        self.req[0] = pid
        self.req_n = 1
        tx = self.tx
        tx[0] = 48
        tx[1] = 50
        tx[2] = _HEX[pid >> 4]
        tx[3] = _HEX[pid & 15]
        tx[4] = 48
        tx[5] = 48
        return await self._rare_read(6, _K_FREEZE)

    async def read_freeze_frame(self) -> tuple[int, list[tuple[int, int, bytes]] | None]:
        """The whole frame 0: (status, [(ecu, pid, data bytes), ...]). First PID 02 (the code
        that stored it, per ECU), then each FREEZE_PIDS PID the car lists in mode 01 (NO DATA:
        an ECU that keeps no such value, skipped). Any other failure is the status, never a
        shorter frame. Allocates (a slow path, one command)."""
        mine = self._load_rare()
        try:
            from dongle.elm_rare import read_freeze_frame  # loaded just above

            return await read_freeze_frame(self)
        finally:
            self._drop_rare(mine)

    async def clear_dtcs(self) -> int:
        """Mode 04. The caller checks authentication and that the car stands still."""
        return await self._obd(b"04", _K_CLEAR)

    # ---- public: the hot path (allocation-free) -------------------------------------------

    def is_legacy(self) -> bool:
        """J1850 / ISO 9141 / KWP: by ATDPN, else by a header's shape (one PID per request)."""
        return 1 <= self.protocol <= 5 or (not self.protocol and self.shape & SHAPE_LEGACY != 0)

    def pid_supported(self, pid: int) -> int:
        if pid == 0:
            return 1
        pid -= 1
        return (self.supported[pid >> 3] >> (7 - (pid & 7))) & 1

    def start_pids(self, pids: bytes | bytearray | list[int], n: int) -> int:
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

    def start_voltage(self) -> int:
        """Send ATRV; its result is channel 0xFF in res_* (2 bytes, mV). BAD_ARG: the adapter
        has no ATRV (see has_volts)."""
        if self._state != _IDLE:
            return BUSY if self._state == _BUSY else NOT_READY
        if not self.has_volts:
            return BAD_ARG
        self.tx[0:4] = b"ATRV"
        return self._start(4, _K_VOLT, _T_AT)

    def poll(self) -> int:
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

    def _start(self, k: int, kind: int, timeout: int) -> int:
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

    async def _wait(self) -> int:
        st = self.poll()
        while st == PENDING:
            await asyncio.sleep_ms(self.stream.poll_ms)
            st = self.poll()
        return st

    async def _cmd(self, text: bytes, kind: int, timeout: int) -> int:
        if self._state != _IDLE:
            return BUSY if self._state == _BUSY else NOT_READY
        n = len(text)
        self.tx[0:n] = text
        self._start(n, kind, timeout)
        return await self._wait()

    async def _obd(self, text: bytes, kind: int) -> int:
        if not self.ready:
            return NOT_READY
        return await self._cmd(text, kind, _T_OBD)

    async def _rare_read(self, n: int, kind: int) -> int:
        # tx[:n] is a VIN or freeze-frame request: dongle.elm_rare parses its reply, loaded
        # for the read and unloaded after (see that module).
        if not self.ready:
            return NOT_READY
        if self._state != _IDLE:
            return BUSY if self._state == _BUSY else NOT_READY
        mine = self._load_rare()
        try:
            self._start(n, kind, _T_OBD)
            return await self._wait()
        finally:
            self._drop_rare(mine)

    def _load_rare(self) -> bool:
        """Load dongle.elm_rare into _rare; True when this call did (it unloads it then)."""
        if self._rare is not None:
            return False  # read_freeze_frame's reads: loaded once for all of them
        from dongle import elm_rare

        self._rare = elm_rare
        return True

    def _drop_rare(self, mine: bool) -> None:
        if mine:
            self._rare = None
            unload("dongle.elm_rare")

    async def _voltage(self) -> int:
        st = self.start_voltage()
        if st == PENDING:
            st = await self._wait()
        return st

    async def _bitmap(self, base: int, timeout: int) -> int:
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

    def _is_echo(self, s: int, e: int) -> bool:
        n = self._txn
        if e - s != n:
            return False
        rx = self.rx
        tx = self.tx
        for i in range(n):
            if rx[s + i] != tx[i]:
                return False
        return True

    def _starts(self, s: int, e: int, lit: bytes, o: int = 0, n: int = -1) -> bool:
        """rx[s:e] starts with lit[o:o + n] (all of lit by default; upper case), in any case:
        clones print `no data`."""
        if n < 0:
            n = len(lit)
        if e - s < n:
            return False
        rx = self.rx
        for i in range(n):
            c = rx[s + i]
            if 97 <= c <= 122:
                c -= 32
            if c != lit[o + i]:
                return False
        return True

    def _dpn(self) -> int:
        """ATDPN's answer (`6`, `A6`: automatic) as a protocol number, 0 if not believable."""
        s = self.text_start
        e = self.text_end
        if e - s == 2 and self._starts(s, e, b"A"):
            s += 1
        if e - s != 1:
            return 0
        p = _hx(self.rx[s])
        return p if 1 <= p <= 12 else 0

    def _finish(self) -> int:
        """Parse rx[:rx_n] (the reply without its prompt) by the request's kind."""
        end = self.rx_n
        kind = self._kind
        err = OK
        data = False  # a hex line was understood
        text = False
        self._m0 = 0  # start of the message being assembled in msg
        self._mexp = -1  # its length from a length line, or -1
        self._mnext = -1  # next frame index expected, -1 outside a multi-frame message
        self._mbad = False
        self._mecu = 0
        self.flaws = 0
        self._dtc_msgs = 0
        if self._gathered:
            u = self._used
            for k in range(len(u)):
                u[k] = 0
            self._gathered = False
        i = 0
        while i < end:
            i = self._line(i, end)
            s = self._ls
            e = self._le
            if s == e or self._is_echo(s, e):
                continue
            if self._gathered and self._used[s >> 3] & (1 << (s & 7)):
                continue  # a consecutive frame already put into its message by _gather
            if self._starts(s, e, _SEARCHING):
                continue
            if self._starts(s, e, _BUS_INIT) and self._starts(e - 2, e, _OK):
                continue  # `BUS INIT: ...OK`: the slow init of ISO 9141 / KWP worked
            found = -1
            k = 0
            while k < len(_ERRORS):
                n = _ERRORS[k]
                if self._starts(s, e, _ERRORS, k + 2, n):
                    found = _ERRORS[k + 1]
                    break
                k += 2 + n
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
            self._at = i
            if self._hexline(s, e):
                data = True
            else:
                self.garbage += 1
                self.flaws += 1
        if kind >= _K_PIDS and kind != _K_VOLT:
            self._end_message()
        st = self._outcome(kind, err, data, text)
        if st != OK and st != NO_DATA:
            self.errors += 1
        if st == UNKNOWN and kind == _K_PIDS and self.req_n == 1 and self.digit:
            self.digit = False  # a chip without the count digit; the caller retries
        self.status = st
        return st

    def _outcome(self, kind: int, err: int, data: bool, text: bool) -> int:
        if kind == _K_AT or kind == _K_RESET:
            if err != OK:
                return err
            return OK if text else GARBAGE
        if kind == _K_VOLT:
            if err != OK:
                return err
            return self._parse_volts() if text else GARBAGE
        if kind == _K_PIDS:
            if err == BUFFER_FULL:
                return err  # the reply did not fit the chip: ask for fewer PIDs at once
            if self.res_n:
                return OK  # partial answers count: the missing PIDs are the caller's misses
            if err != OK:
                return err
            return NO_DATA if data else GARBAGE
        if kind == _K_FREEZE:
            if err != OK:
                return err
            if self.flaws:
                return MALFORMED  # a frame value with a hole is not the frame
            if self.res_n:
                return OK
            return MALFORMED if data else GARBAGE
        if kind == _K_DTC or kind == _K_VIN:
            # A list of codes is whole or it is an error: a cut, garbled or contradicting reply
            # (or an error line beside the data) must never read as "fewer codes".
            if err != OK:
                return err  # the chip's word first (BUFFER FULL cut the rest short)
            if self.flaws:
                return MALFORMED
            if kind == _K_DTC:
                return OK if self._dtc_msgs else (MALFORMED if data else GARBAGE)
            if self.vin_n == 17:
                return OK
            return MALFORMED if data else GARBAGE
        if err != OK and not data:
            return err
        return OK if data else GARBAGE

    def _parse_volts(self) -> int:
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

    def _line(self, i: int, end: int) -> int:
        """The line of rx that starts at i: its bytes without CR/LF and the spaces around
        them are rx[_ls:_le]; returns where the next line starts. (Two small ints in
        attributes rather than a returned tuple, which would be a heap object per line.)"""
        rx = self.rx
        s = i
        while i < end and rx[i] != _CR and rx[i] != _LF:
            i += 1
        e = i
        while s < e and rx[s] == _SP:
            s += 1
        while e > s and rx[e - 1] == _SP:
            e -= 1
        self._ls = s
        self._le = e
        return i + 1

    def _hexline(self, s: int, e: int) -> bool:
        """Decode one data line and route it by its shape (see module doc); False if not hex."""
        rx = self.rx
        nb = self._nib
        frame = -1
        if e - s >= 2 and rx[s + 1] == _COLON:
            frame = _hx(rx[s])
            if frame < 0:
                return False
            s += 2
        h = self._nibs(s, e)
        if h < 0:
            return False
        if h > NIB_MAX:
            self.overflow += 1
            return self._flaw()
        if frame >= 0 or h == 3:
            self.shape |= SHAPE_CAN  # ISO-TP as a CAN ELM327 prints it with headers off
            if frame < 0:
                # the ISO-TP length line (`00A`) opens a multi-frame message
                self._end_message()
                self._mexp = (nb[0] << 8) | (nb[1] << 4) | nb[2]
                self._mnext = 0
                self._mecu = 0
                return True
            if h & 1:
                return self._cut()
            if frame == 0 and (self._mnext != 0 or self.msg_n > self._m0):
                # a second first frame: another message (another ECU) without a length line
                self._end_message()
                self._mnext = 0
                self._mecu = 0
            return self._consecutive(0, frame, 0, h >> 1)
        if h & 1:
            if h >= 5 and nb[0] == 7:
                # CAN 11-bit header `7E8`: ECU address E8 (7E8..7EF = ECUs 0..7)
                self.shape |= SHAPE_CAN
                return self._can_frame((nb[1] << 4) | nb[2], 3, h)
            return self._cut()
        n = h >> 1
        if n >= 5:
            b0 = self._byte(0)
            b1 = self._byte(1)
            if b0 == 0x18 and (b1 == 0xDA or b1 == 0xDB) and self._byte(2) == 0xF1:
                self.shape |= SHAPE_CAN | SHAPE_29
                return self._can_frame(self._byte(3), 8, h)  # 29-bit `18 DA F1 10`: ECU 10
            if (b1 == 0x6B or b1 == 0xF1) and 0x40 <= self._byte(3) <= 0x7F and self._legacy(b0, b1, n):
                return True
        self._single(0, 0, n)
        return True

    def _nibs(self, s: int, e: int) -> int:
        """rx[s:e]'s hex digits into _nib (spaces skipped); their count, -1 if not hex."""
        rx = self.rx
        nb = self._nib
        h = 0
        for i in range(s, e):
            c = rx[i]
            if c != _SP:
                v = _hx(c)
                if v < 0:
                    return -1
                if h < NIB_MAX:
                    nb[h] = v
                h += 1
        return h

    def _header_is(self, ecu: int, p: int, h: int) -> bool:
        """_nib holds a CAN line with the header of ECU `ecu` (p: 3 nibbles 11-bit, 8 29-bit)."""
        if h > NIB_MAX or h < p + 2:
            return False
        if p == 3:
            return h & 1 == 1 and self._nib[0] == 7 and (self._nib[1] << 4) | self._nib[2] == ecu
        return (h & 1 == 0 and self._byte(0) == 0x18 and (self._byte(1) == 0xDA or self._byte(1) == 0xDB)
                and self._byte(2) == 0xF1 and self._byte(3) == ecu)

    def _gather(self, ecu: int, p: int) -> None:
        """After a first frame with a header: take this ECU's consecutive frames from the rest
        of the reply now, over other ECUs' lines between them. Two ECUs answering at once with
        multi-frame messages interleave their frames on the bus (and so in the adapter's output);
        the CAN id says whose each frame is. Taken lines are marked in _used, left in rx."""
        rx = self.rx
        end = self.rx_n
        i = self._at
        while i < end and not self._mbad and self.msg_n - self._m0 < self._mexp:
            i = self._line(i, end)
            s = self._ls
            e = self._le
            if e - s < p + 2 or (e - s >= 2 and rx[s + 1] == _COLON):
                continue
            if self._used[s >> 3] & (1 << (s & 7)):
                continue
            h = self._nibs(s, e)
            if not self._header_is(ecu, p, h):
                continue  # another ECU's line, a message, noise: parsed in its turn
            if self._nib[p] != 2:
                break  # this ECU's next message began: the first one stays short (a cut)
            self._used[s >> 3] |= 1 << (s & 7)
            self._gathered = True
            self._consecutive(ecu, self._nib[p + 1], p + 2, (h - p - 2) >> 1)
        self._end_message()

    def _byte(self, k: int) -> int:
        nb = self._nib
        return (nb[2 * k] << 4) | nb[2 * k + 1]

    def _legacy(self, b0: int, b1: int, n: int) -> bool:
        """A J1850 / ISO 9141 / KWP line with its header and check byte (`48 6B 10 41 0C ..
        cs`): True when it is one (its check byte verified), its data taken as a message."""
        # Header forms: 48 6B (ISO 9141-2, J1850 VPW), 41 6B (J1850 PWM), 8x F1 (KWP, x = length).
        if b1 == 0x6B and b0 != 0x48 and b0 != 0x41 and b0 != 0x68:
            return False
        if b1 == 0xF1 and b0 & 0xC0 != 0x80:
            return False
        d = 3
        if b1 == 0xF1:
            ln = b0 & 0x3F
            if not ln:
                ln = self._byte(3)  # KWP length byte after the header
                d = 4
            if d + ln + 1 != n:
                return False
        sm = 0
        crc = 0xFF
        for k in range(n - 1):
            v = self._byte(k)
            sm += v
            crc ^= v
            for _ in range(8):
                crc = ((crc << 1) ^ 0x1D) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        cs = self._byte(n - 1)
        if (sm & 0xFF) != cs and (crc ^ 0xFF) != cs:
            if b0 == 0x41:
                return False  # `41 6B ..` without a J1850 CRC: PID 0x6B's answer, headers off
            self.truncated += 1  # a legacy frame whose check byte fails: not trusted
            self._flaw()
            return True
        self.shape |= SHAPE_LEGACY
        self._single(self._byte(2), 2 * d, n - d - 1)
        return True

    def _cut(self) -> bool:
        self.truncated += 1  # a cut line: its bytes cannot be trusted
        return self._flaw()

    def _flaw(self) -> bool:
        # Something of this reply was lost: a PID answer before it still stands (its length is
        # checked), a DTC list or a VIN with a hole in it does not.
        self.flaws += 1
        self._mbad = True
        return True

    def _can_frame(self, ecu: int, p: int, h: int) -> bool:
        """One CAN frame with its header: PCI nibbles at _nib[p], data after them."""
        if h - p < 2:
            return self._cut()
        t = self._nib[p]
        lo = self._nib[p + 1]
        avail = (h - p - 2) >> 1
        if t == 0:  # single frame: lo data bytes, the rest is padding
            if lo == 0 or lo > avail:
                return self._cut()
            self._end_message()
            self._single(ecu, p + 2, lo)
            return True
        if t == 1:  # first frame: 12-bit length, then data
            if avail < 2:
                return self._cut()
            self._end_message()
            self._mexp = (lo << 8) | (self._nib[p + 2] << 4) | self._nib[p + 3]
            self._mnext = 0
            self._mecu = ecu
            self._consecutive(ecu, 0, p + 4, avail - 1)
            self._gather(ecu, p)
            return True
        if t == 2:
            return self._consecutive(ecu, lo, p + 2, avail)
        if t == 3:
            return True  # flow control: not data
        return self._cut()

    def _consecutive(self, ecu: int, frame: int, p: int, nbytes: int) -> bool:
        """Frame `frame` of the multi-frame message being assembled (bytes at _nib[p])."""
        if frame != self._mnext or ecu != self._mecu:
            # out of order, or a frame of no open message (with headers, _gather took every
            # frame that belongs): keep what came before, drop the rest
            self.truncated += 1
            return self._flaw()
        if self._mbad:
            return True
        self._put(p, nbytes)
        self._mnext = (frame + 1) & 15
        return True

    def _single(self, ecu: int, p: int, nbytes: int) -> None:
        self._end_message()
        self._mecu = ecu
        self._put(p, nbytes)
        self._end_message()

    def _put(self, p: int, nbytes: int) -> None:
        m = self.msg
        nb = self._nib
        n = self.msg_n
        for _ in range(nbytes):
            if n < MSG_MAX:
                m[n] = (nb[p] << 4) | nb[p + 1]
                n += 1
            else:
                self.overflow += 1
                self._flaw()
            p += 2
        self.msg_n = n

    def _end_message(self) -> None:
        m0 = self._m0
        n = self.msg_n - m0
        if self._mexp >= 0:
            if n > self._mexp:
                n = self._mexp  # padding after the announced length
                self.msg_n = m0 + n
            elif n < self._mexp:
                self.truncated += 1
                self._flaw()
        if n > 0:
            k = self._kind
            if k == _K_PIDS:
                self._take_pids(m0, n)  # a cut message's first PIDs are whole (lengths checked)
            elif self._mbad:
                pass  # a DTC list or VIN with a hole: the read fails (_bad)
            elif k == _K_DTC:
                self._take_dtcs(m0, n)
            elif k == _K_VIN or k == _K_FREEZE:
                r = self._rare
                if r is None:
                    self.unsolicited += 1  # not a rare read's reply (cannot be: its kind is)
                elif k == _K_VIN:
                    r.take_vin(self, m0, n)
                else:
                    r.take_freeze(self, m0, n)
            elif k == _K_CLEAR:
                if self.msg[m0] != 0x44:
                    self.unsolicited += 1
        self._m0 = self.msg_n
        self._mexp = -1
        self._mnext = -1
        self._mbad = False

    def _take_pids(self, o: int, n: int) -> None:
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
            r = self._result(p)
            if ln > 255 or i + 1 + ln > end:
                if r < 0:
                    self.truncated += 1
                return
            if r >= 0:
                if p & 0x1F == 0 and ln == 4:
                    # a supported-PID bitmap from another ECU: the car supports the union
                    ro = self.res_off[r]
                    for k in range(4):
                        m[ro + k] |= m[i + 1 + k]
            elif i + 1 <= 255 and self.res_n < MAX_PIDS:
                r = self.res_n
                self.res_ch[r] = p
                self.res_off[r] = i + 1
                self.res_len[r] = ln
                self.res_ecu[r] = self._mecu
                self.res_n = r + 1
            i += 1 + ln

    def _result(self, p: int) -> int:
        for j in range(self.res_n):
            if self.res_ch[j] == p:
                return j
        return -1

    def _take_dtcs(self, o: int, n: int) -> None:
        m = self.msg
        if m[o] != self._dtc_mode | 0x40:
            self.unsolicited += 1  # another mode's answer: not a code list
            return
        # By the message's shape, not by what ATDPN said (a clone may answer it `OK`): on CAN
        # a count byte follows the mode byte, then 2 bytes a code (an odd number of bytes after
        # the mode); ISO 9141 / KWP / J1850 frames hold 3 codes, `00 00` padded, no count (6
        # bytes). A CAN ECU that leaves the count out (the emulator's `car`) has an even number.
        body = n - 1
        i = o + 1
        if body & 1:
            if self.is_legacy() or 2 * m[o + 1] != body - 1:
                self._flaw()  # a count that does not match its codes: nothing can be trusted
                return
            i += 1
        elif self.is_legacy() and body != 6:
            self._flaw()
            return
        self._dtc_msgs += 1
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
                self.dtc_ecu[k] = self._mecu
                self.dtc_n = k + 1
            else:
                self.overflow += 1
                self._flaw()  # more codes than fit: a partial list is not the list
