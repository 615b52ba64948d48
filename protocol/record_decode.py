"""Decoding telemetry records: the daemon's side of protocol.record.

decode_record is total: any byte string gives a Record or a ProtocolError. Apart from
protocol.record because the firmware only encodes: a module the dongle imports from
.mpy keeps its bytecode in the board's RAM, so the decoder would cost heap there for
nothing. Plain Python for both interpreters all the same (the protocol tests decode on
MicroPython too).
"""

import struct

from protocol.auth import Hmac
from protocol.channels import DATA_LEN, MAX_DATA
from protocol.errors import ProtocolError
from protocol.record import (
    DTC_ECUS,
    DTC_MODES,
    EVENT_NAMES,
    HEADER_LEN,
    KIND_ANCHOR,
    KIND_DTC,
    KIND_EVENT,
    KIND_GAP,
    KIND_SAMPLES,
    MAC_LEN,
    MAX_RECORD,
    MAX_TABLE,
    MIN_RECORD,
    VERSION,
)

KIND_NAMES = {1: "samples", 2: "gap", 3: "anchor", 4: "event", 5: "dtc"}


def peek_seq(data: bytes | bytearray | memoryview) -> int:
    """The sequence number of an encoded record, without decoding it."""
    if len(data) < HEADER_LEN:
        raise ProtocolError("record shorter than its header")
    seq: int = struct.unpack_from(">I", data, 1)[0]
    return seq



class Record:
    """A decoded record. Attributes by kind: samples [(t_ms, channel, bytes)];
    first, count (gap); wall_ms (anchor); code, millivolts (event); mode, codes
    (dtc: a list of 2-byte bytes), ecus (dtc: each code's ECU address, 0 unknown; empty when
    the record does not say)."""

    def __init__(self, kind: int, seq: int, boot: int, t0: int) -> None:
        self.kind = kind
        self.seq = seq
        self.boot = boot
        self.t0 = t0
        self.samples: list[tuple[int, int, bytes]] = []
        self.first = 0
        self.count = 0
        self.wall_ms = 0
        self.code = 0
        self.millivolts = 0
        self.mode = 0
        self.codes: list[bytes] = []
        self.ecus: list[int] = []

    def __repr__(self) -> str:
        return "Record(%s seq=%d boot=%d t0=%d)" % (KIND_NAMES.get(self.kind, "?"), self.seq, self.boot,
                                                   self.t0)


def _varint(data: bytes | bytearray | memoryview, o: int, end: int) -> tuple[int, int]:
    v = 0
    shift = 0
    while True:
        if o >= end:
            raise ProtocolError("varint runs past the end of the record")
        b = data[o]
        o += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, o
        shift += 7
        if shift > 28:
            raise ProtocolError("varint longer than 5 bytes")


def verify_mac(data: bytes | bytearray | memoryview, key: bytes | bytearray | Hmac) -> None:
    """Check a record's MAC; raise ProtocolError if it does not match."""
    if len(data) < MIN_RECORD:
        raise ProtocolError("record shorter than %d bytes" % MIN_RECORD)
    hmac = key if isinstance(key, Hmac) else Hmac(key)
    mac = hmac.digest(memoryview(data)[: len(data) - MAC_LEN])
    tail = data[len(data) - MAC_LEN:]
    diff = 0
    for i in range(MAC_LEN):
        diff |= mac[i] ^ tail[i]
    if diff:
        raise ProtocolError("record MAC mismatch (corrupt or forged)")


def decode_record(data: object, key: bytes | bytearray | Hmac | None = None) -> Record:
    """Decode one record. With `key` (the telemetry key, bytes or an Hmac) the MAC
    is checked first. Raises ProtocolError, and nothing else, on any bad input."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("record must be bytes")
    n = len(data)
    if n < MIN_RECORD:
        raise ProtocolError("record shorter than %d bytes" % MIN_RECORD)
    if n > MAX_RECORD:
        raise ProtocolError("record longer than %d bytes" % MAX_RECORD)
    if key is not None:
        verify_mac(data, key)
    vk, seq, boot, t0 = struct.unpack_from(">BIHI", data, 0)
    if vk >> 4 != VERSION:
        raise ProtocolError("record version %d, expected %d" % (vk >> 4, VERSION))
    kind = vk & 0x0F
    rec = Record(kind, seq, boot, t0)
    end = n - MAC_LEN
    o = HEADER_LEN
    body = end - o
    if kind == KIND_SAMPLES:
        _decode_samples(data, o, end, rec)
    elif kind == KIND_GAP:
        if body != 8:
            raise ProtocolError("gap record body is %d bytes, expected 8" % body)
        rec.first, rec.count = struct.unpack_from(">II", data, o)
        if rec.count == 0:
            raise ProtocolError("gap record of no records")
    elif kind == KIND_ANCHOR:
        if body != 8:
            raise ProtocolError("anchor record body is %d bytes, expected 8" % body)
        rec.wall_ms = struct.unpack_from(">Q", data, o)[0]
    elif kind == KIND_EVENT:
        if body != 3:
            raise ProtocolError("event record body is %d bytes, expected 3" % body)
        rec.code, rec.millivolts = struct.unpack_from(">BH", data, o)
        if rec.code not in EVENT_NAMES:
            raise ProtocolError("unknown event code %d" % rec.code)
    elif kind == KIND_DTC:
        if body < 1:
            raise ProtocolError("DTC record body must be a mode and 2 bytes a code")
        rec.mode = data[o] & ~DTC_ECUS
        if rec.mode not in DTC_MODES:
            raise ProtocolError("DTC record mode 0x%02X" % data[o])
        size = 3 if data[o] & DTC_ECUS else 2
        if (body - 1) % size:
            raise ProtocolError("DTC record body must be a mode and %d bytes a code" % size)
        rec.codes = [bytes(data[i + size - 2:i + size]) for i in range(o + 1, end, size)]
        if size == 3:
            rec.ecus = [data[i] for i in range(o + 1, end, 3)]
    else:
        raise ProtocolError("unknown record kind %d" % kind)
    return rec


def _decode_samples(data: bytes | bytearray | memoryview, o: int, end: int, rec: Record) -> None:
    # The daemon's hot path (a million samples a minute in a backlog): one-byte
    # varints inline, the mask walked bit by bit, slices of bytes taken as they are.
    # Checks and messages stay in the order of the wire spec's reading.
    if not isinstance(data, bytes):
        data = bytes(data)
    if o >= end:
        raise ProtocolError("samples record without a channel table")
    ntab = data[o]
    o += 1
    if ntab == 0 or ntab > MAX_TABLE:
        raise ProtocolError("channel table of %d entries" % ntab)
    if o + ntab > end:
        raise ProtocolError("channel table runs past the end of the record")
    table = data[o:o + ntab]
    if len(set(table)) != ntab:
        raise ProtocolError("channel table repeats a channel")
    lens = [DATA_LEN[ch] for ch in table]
    o += ntab
    if o >= end:
        raise ProtocolError("samples record without samples")
    full = (1 << ntab) - 1
    append = rec.samples.append
    t0 = rec.t0
    prev_off = 0
    prev_delta = 0
    seen = 0
    while o < end:
        z = data[o]
        if z < 0x80:
            o += 1
        else:
            z, o = _varint(data, o, end)
        delta = prev_delta + ((z >> 1) if not z & 1 else -((z + 1) >> 1))
        off = prev_off + delta
        prev_off = off
        prev_delta = delta
        t = t0 + off
        if t < 0 or t > 0xFFFFFFFF:
            raise ProtocolError("sample time out of range")
        if o < end and data[o] < 0x80:
            mask = data[o]
            o += 1
        else:
            mask, o = _varint(data, o, end)
        if mask == 0:
            raise ProtocolError("group without samples")
        if mask & ~full:
            raise ProtocolError("group mask names a channel beyond the table")
        seen |= mask
        i = 0
        while mask:
            if mask & 1:
                ln = lens[i]
                if not ln:
                    if o >= end:
                        raise ProtocolError("sample length runs past the end of the record")
                    ln = data[o]
                    o += 1
                    if ln > MAX_DATA:
                        raise ProtocolError("sample of %d data bytes" % ln)
                if o + ln > end:
                    raise ProtocolError("sample data runs past the end of the record")
                append((t, table[i], data[o:o + ln]))
                o += ln
            mask >>= 1
            i += 1
    if seen != full:
        raise ProtocolError("channel table lists a channel with no sample")
