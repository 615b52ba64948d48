"""Telemetry records: the unit of delivery, storage on the dongle, and acks.

The dongle stages samples as they arrive and encodes a record when it seals one
(RecordWriter: every buffer preallocated, so the poll loop allocates nothing per
sample); Signer encodes the small kinds. The layout's numbers are defined here once.
Decoding is the daemon's (protocol.record_decode): the firmware never imports it, so
its code does not take the board's heap (a .mpy module's bytecode lives in RAM).
"""

import struct
from array import array

from protocol import MICROPYTHON

if MICROPYTHON:
    from micropython import const
else:  # CPython: the same names, without the compiler's folding
    def const(x: int) -> int:
        return x

from protocol.auth import Hmac
from protocol.channels import DATA_LEN, MAX_DATA
from protocol.errors import ProtocolError

# Annotations are for the type checks: MicroPython compiles them away and has no `typing`;
# CPython evaluates them, so names from the block below are quoted.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from protocol._types import Mac

VERSION = const(1)
KIND_SAMPLES = const(1)
KIND_GAP = const(2)
KIND_ANCHOR = const(3)
KIND_EVENT = const(4)
KIND_DTC = const(5)

HEADER_LEN = const(11)
MAC_LEN = const(4)
MIN_RECORD = const(15)  # header + MAC
MAX_RECORD = const(512)
# A group mask must stay a small int on 32-bit ports (31-bit signed): 28 bits.
MAX_TABLE = const(28)

EVENT_BOOT = const(1)
EVENT_ENGINE_ON = const(2)
EVENT_ENGINE_OFF = const(3)
EVENT_BATTERY_LOW = const(4)
EVENT_ADAPTER_RESET = const(5)
EVENT_ADAPTER_LOST = const(6)
EVENT_NAMES = {1: "boot", 2: "engine_on", 3: "engine_off", 4: "battery_low", 5: "adapter_reset",
               6: "adapter_lost"}

DTC_MODES = (0x03, 0x07, 0x0A)
DTC_ECUS = const(0x80)  # in a DTC record's mode byte: each code is preceded by its ECU's address

# Staging layout per group: t_ms u32, n u8, then n x (channel u8, len u8, data).
_GROUP_HEAD = const(5)
# Worst case a group adds to the encoded record: dod varint (5) + mask varint (4).
_GROUP_BOUND = const(9)


def _put_varint(out: bytearray, o: int, v: int) -> int:
    while v >= 0x80:
        out[o] = (v & 0x7F) | 0x80
        v >>= 7
        o += 1
    out[o] = v
    return o + 1


class RecordWriter:
    """Collects the samples of one record and encodes it when sealed.

    Usage on the dongle, per request answered by the ECU:
        if not w.fits(n, nbytes): seal and store the record first
        w.group(t_ms); w.add(ch, buf, start, n) ...
    and `seal(seq, boot)` encodes into `w.out` (returns the length).
    Nothing here allocates on the heap after construction, seal()'s MAC included
    (on MicroPython: protocol.sha256).
    """

    def __init__(self, key: bytes | bytearray, capacity: int = MAX_RECORD) -> None:
        self.out = bytearray(capacity)
        self._cap = capacity
        self._hmac: Mac = Hmac(key)  # any HMAC class: the board benchmark swaps in protocol.sha256's
        self._stage = bytearray(capacity * 2)
        self._counts = bytearray(256)  # samples per channel in this record
        self._index = bytearray(256)  # channel -> table position (valid at seal)
        self._table = bytearray(MAX_TABLE)  # the record's channels (in order only after _sort_table)
        self._ntab = 0
        self._pos = array("H", [0] * MAX_TABLE)  # seal: table position -> staging offset
        self.samples = 0
        self.t0 = 0
        self._s = 0  # staging fill
        self._g = -1  # staging offset of the open group
        self._bound = MIN_RECORD + 1  # worst-case encoded size so far

    def empty(self) -> bool:
        return self.samples == 0

    def fits(self, n: int, nbytes: int) -> bool:
        """Whether a group of n samples carrying nbytes data bytes surely fits."""
        extra = _GROUP_BOUND + nbytes + 3 * n
        return (self._bound + extra <= self._cap and self._ntab + n <= MAX_TABLE
                and self._s + _GROUP_HEAD + 2 * n + nbytes <= len(self._stage))

    def group(self, t_ms: int) -> None:
        """Open a group: the samples of one request, taken at t_ms (ms since boot)."""
        if self.samples == 0:
            self.t0 = t_ms
        g = self._g
        if g < 0 or self._stage[g + 4]:
            g = self._s
            self._bound += _GROUP_BOUND
        # else the previous request got no answer (NO DATA): reuse its slot, since
        # the decoder rightly refuses a group without samples.
        struct.pack_into(">IB", self._stage, g, t_ms, 0)
        self._g = g
        self._s = g + _GROUP_HEAD

    def add(self, channel: int, src: bytes | bytearray | memoryview, start: int, n: int) -> bool:
        """Add one sample to the open group: src[start:start+n] are its data bytes.
        A channel already in this group is ignored (a second ECU's answer)."""
        st = self._stage
        g = self._g
        if g < 0 or n > MAX_DATA:
            return False
        p = g + _GROUP_HEAD
        for _ in range(st[g + 4]):
            if st[p] == channel:
                return False
            p += 2 + st[p + 1]
        if self._counts[channel] == 0 and self._ntab >= MAX_TABLE:
            return False  # fits() said no: the caller seals first
        s = self._s
        st[s] = channel
        st[s + 1] = n
        for i in range(n):
            st[s + 2 + i] = src[start + i]
        self._s = s + 2 + n
        st[g + 4] += 1
        if self._counts[channel] == 0:
            self._table[self._ntab] = channel
            self._ntab += 1
            self._bound += 1
        if self._counts[channel] < 255:
            self._counts[channel] += 1
        self._bound += n + (0 if DATA_LEN[channel] else 1)
        self.samples += 1
        return True

    def _sort_table(self) -> int:
        # Most frequent channels first so that frequent group masks stay one byte; ties
        # in channel order. Insertion sort of the record's own channels (add() listed
        # them): seal's cost follows the record, not the 256 possible channels.
        counts = self._counts
        table = self._table
        n = self._ntab
        for k in range(1, n):
            ch = table[k]
            c = counts[ch]
            i = k
            while i > 0 and (counts[table[i - 1]] < c or (counts[table[i - 1]] == c and table[i - 1] > ch)):
                table[i] = table[i - 1]
                i -= 1
            table[i] = ch
        index = self._index
        for i in range(n):
            index[table[i]] = i
        return n

    def seal(self, seq: int, boot: int) -> int:
        """Encode the staged samples as a SAMPLES record into self.out; return its
        length and start an empty record."""
        # The board runs this once a record in bytecode (~100x slower than this machine):
        # every per-group and per-sample step below is kept to locals, byte indexing
        # and small ints, and nothing allocates.
        if self.samples == 0:
            raise ProtocolError("no samples to seal")
        out = self.out
        st = self._stage
        if st[self._g + 4] == 0:
            self._s = self._g  # the last request got no answer
        ntab = self._sort_table()
        struct.pack_into(">BIHI", out, 0, (VERSION << 4) | KIND_SAMPLES, seq, boot, self.t0)
        table = self._table
        out[HEADER_LEN] = ntab
        o = HEADER_LEN + 1
        for i in range(ntab):
            out[o + i] = table[i]
        o += ntab
        t0 = self.t0
        prev_off = 0
        prev_delta = 0
        g = 0
        end = self._s
        index = self._index
        pos = self._pos
        while g < end:
            # By hand: unpack_from would allocate a tuple per group.
            off = ((st[g] << 24) | (st[g + 1] << 16) | (st[g + 2] << 8) | st[g + 3]) - t0
            count = st[g + 4]
            delta = off - prev_off
            z = delta - prev_delta
            z = (z << 1) if z >= 0 else ((-z) << 1) - 1  # zigzag
            if z < 0x80:
                out[o] = z
                o += 1
            else:
                o = _put_varint(out, o, z)
            prev_off = off
            prev_delta = delta
            mask = 0
            p = g + _GROUP_HEAD
            for _ in range(count):
                i = index[st[p]]
                mask |= 1 << i
                pos[i] = p
                p += 2 + st[p + 1]
            g = p  # the next group
            if mask < 0x80:
                out[o] = mask
                o += 1
            else:
                o = _put_varint(out, o, mask)
            # Samples in table order, as the decoder expects them.
            i = 0
            m = mask
            while m:
                if m & 1:
                    p = pos[i]
                    n = st[p + 1]
                    if not DATA_LEN[st[p]]:
                        out[o] = n
                        o += 1
                    p += 2
                    for k in range(n):
                        out[o + k] = st[p + k]
                    o += n
                m >>= 1
                i += 1
        n = _finish(out, o, self._hmac)
        self._reset()
        return n

    def _reset(self) -> None:
        counts = self._counts
        for i in range(self._ntab):
            counts[self._table[i]] = 0
        self._ntab = 0
        self.samples = 0
        self._s = 0
        self._g = -1
        self._bound = MIN_RECORD + 1


def _finish(out: bytearray, o: int, hmac: "Mac") -> int:
    # Straight into the record: no digest, no memoryview (nothing on the heap).
    hmac.mac_into(out, o, out, o, MAC_LEN)
    return o + MAC_LEN


def _head(out: bytearray, kind: int, seq: int, boot: int, t0: int) -> None:
    struct.pack_into(">BIHI", out, 0, (VERSION << 4) | kind, seq, boot, t0)


class Signer:
    """Encodes the small record kinds (gap, anchor, event, dtc) into a caller's
    buffer with the telemetry key."""

    def __init__(self, key: bytes | bytearray) -> None:
        self._hmac: Mac = Hmac(key)

    # Each refuses what decode_record would refuse: a signed record the daemon
    # cannot decode would be stored and acked, then lost.

    def gap(self, out: bytearray, seq: int, boot: int, t0: int, first: int, count: int) -> int:
        if count == 0:
            raise ProtocolError("gap record of no records")
        _head(out, KIND_GAP, seq, boot, t0)
        struct.pack_into(">II", out, HEADER_LEN, first, count)
        return _finish(out, HEADER_LEN + 8, self._hmac)

    def anchor(self, out: bytearray, seq: int, boot: int, t0: int, wall_ms: int) -> int:
        _head(out, KIND_ANCHOR, seq, boot, t0)
        struct.pack_into(">Q", out, HEADER_LEN, wall_ms)
        return _finish(out, HEADER_LEN + 8, self._hmac)

    def event(self, out: bytearray, seq: int, boot: int, t0: int, code: int, millivolts: int) -> int:
        if code not in EVENT_NAMES:
            raise ProtocolError("unknown event code %d" % code)
        _head(out, KIND_EVENT, seq, boot, t0)
        struct.pack_into(">BH", out, HEADER_LEN, code, millivolts)
        return _finish(out, HEADER_LEN + 3, self._hmac)

    def dtc(self, out: bytearray, seq: int, boot: int, t0: int, mode: int, codes: bytes | bytearray, ncodes: int,
            ecus: bytes | bytearray | None = None) -> int:
        """codes: raw bytes, 2 per code; ncodes of them are used. ecus (bytes, one a code:
        the answering ECU's address, 0 unknown), when given, goes with each code."""
        if mode not in DTC_MODES:
            raise ProtocolError("DTC mode must be 03, 07 or 0A")
        size = 2 if ecus is None else 3
        if HEADER_LEN + 1 + size * ncodes + MAC_LEN > min(len(out), MAX_RECORD):
            raise ProtocolError("%d DTCs do not fit the record buffer" % ncodes)
        _head(out, KIND_DTC, seq, boot, t0)
        out[HEADER_LEN] = mode if ecus is None else mode | DTC_ECUS
        o = HEADER_LEN + 1
        for i in range(ncodes):
            if ecus is not None:
                out[o] = ecus[i]
                o += 1
            out[o] = codes[2 * i]
            out[o + 1] = codes[2 * i + 1]
            o += 2
        return _finish(out, o, self._hmac)
