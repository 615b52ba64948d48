"""The central's half of the control payloads (protocol.control): the commands the
daemon packs and the replies it reads, with the names it shows. Apart from
protocol.control because the dongle never runs them and a module it imports from .mpy
keeps its bytecode in the board's RAM. Plain Python for both interpreters all the same
(the protocol tests act as a central on MicroPython too).
"""

import struct

from protocol.auth import NONCE_LEN, PROOF_LEN
from protocol.control import MAX_PLAN, STATUS_FIELDS, STATUS_FORMAT
from protocol.errors import ProtocolError

# Annotations are for the type checks: MicroPython compiles them away and has no `typing`;
# CPython evaluates them, so names from the block below are quoted. parse_dtcs's two shapes
# are overloads for the checker; at run time the last definition stands, as with typing's.
TYPE_CHECKING = False
if not TYPE_CHECKING:
    def overload(f):
        return f
else:
    from collections.abc import Sequence
    from typing import Any, Literal, overload

STATUS_NAMES = {0: "ok", 1: "bad request", 2: "not authenticated", 3: "refused: vehicle is moving",
                4: "busy", 5: "unsupported", 6: "rate limited", 7: "adapter error",
                8: "authentication failed"}
POWER_NAMES = {0: "driving", 1: "idle", 2: "parked", 3: "sleeping"}
STATUS_LEN = struct.calcsize(STATUS_FORMAT)


def parse_hello_reply(payload: bytes | bytearray | memoryview) -> tuple[bytes, bytes]:
    if len(payload) != 8 + NONCE_LEN:
        raise ProtocolError("hello reply must be a device id and a nonce")
    return bytes(payload[:8]), bytes(payload[8:])


def parse_proof(payload: bytes | bytearray | memoryview) -> bytes:
    if len(payload) != PROOF_LEN:
        raise ProtocolError("proof must be %d bytes" % PROOF_LEN)
    return bytes(payload)


def pack_u64(v: int) -> bytes:
    return struct.pack(">Q", v)


def pack_u32(v: int) -> bytes:
    return struct.pack(">I", v)


def parse_stream(payload: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(first_unacked, next_seq, epoch) of a STREAM reply."""
    if len(payload) != 12:
        raise ProtocolError("stream reply must be three u32")
    return struct.unpack(">III", payload)


def parse_pair(payload: bytes | bytearray | memoryview) -> tuple[int, int]:
    if len(payload) != 8:
        raise ProtocolError("expected two u32")
    return struct.unpack(">II", payload)


def pack_plan(entries: "Sequence[tuple[int, int, int, int]]") -> bytes:
    """entries: (channel, driving, idle, parked), intervals in 100 ms, 0 = off."""
    if len(entries) > MAX_PLAN:
        raise ProtocolError("a plan has at most %d entries" % MAX_PLAN)
    out = bytearray([len(entries)])
    for ch, d, i, p in entries:
        out += struct.pack(">BHHH", ch, d, i, p)
    return bytes(out)


@overload
def parse_dtcs(payload: bytes | bytearray | memoryview, with_ecus: "Literal[False]" = False
               ) -> tuple[int, list[bytes]]: ...
@overload
def parse_dtcs(payload: bytes | bytearray | memoryview, with_ecus: "Literal[True]"
               ) -> tuple[int, list[bytes], list[int]]: ...
def parse_dtcs(payload: bytes | bytearray | memoryview, with_ecus: bool = False
               ) -> tuple[int, list[bytes]] | tuple[int, list[bytes], list[int]]:
    """(mode, codes), or with_ecus (mode, codes, ecus): ecus empty when the reply has none."""
    if len(payload) < 1:
        raise ProtocolError("DTC list must be a mode and 2 bytes a code")
    mode = payload[0] & 0x7F
    if mode not in (0x03, 0x07, 0x0A):
        raise ProtocolError("DTC mode 0x%02X" % payload[0])
    size = 3 if payload[0] & 0x80 else 2
    if (len(payload) - 1) % size:
        raise ProtocolError("DTC list must be a mode and %d bytes a code" % size)
    codes = [bytes(payload[i + size - 2:i + size]) for i in range(1, len(payload), size)]
    if not with_ecus:
        return mode, codes
    return mode, codes, [payload[i] for i in range(1, len(payload), 3)] if size == 3 else []


def parse_freeze(payload: bytes | bytearray | memoryview) -> list[tuple[int, int, bytes]]:
    """[(ecu, pid, data), ...] of a READ_FREEZE reply. A reply without the code that stored
    the frame (PID 02), or with an entry cut short, is an error: never an empty frame."""
    out: list[tuple[int, int, bytes]] = []
    i = 0
    n = len(payload)
    while i < n:
        if n - i < 3 or n - i - 3 < payload[i + 2]:
            raise ProtocolError("freeze frame entry cut short")
        ln = payload[i + 2]
        out.append((payload[i], payload[i + 1], bytes(payload[i + 3:i + 3 + ln])))
        i += 3 + ln
    if not any(pid == 2 and len(d) == 2 for _e, pid, d in out):
        raise ProtocolError("freeze frame reply without its code (PID 02)")
    return out


def parse_status(payload: bytes | bytearray | memoryview) -> "dict[str, Any]":
    """A dict of STATUS_FIELDS plus `rates`: {channel: hertz}."""
    if len(payload) < STATUS_LEN:
        raise ProtocolError("status reply shorter than %d bytes" % STATUS_LEN)
    v = struct.unpack_from(STATUS_FORMAT, payload, 0)
    n = v[-1]
    if len(payload) != STATUS_LEN + 3 * n:
        raise ProtocolError("status reply length does not match its %d rates" % n)
    d: dict[str, Any] = {}
    for i in range(len(STATUS_FIELDS)):
        d[STATUS_FIELDS[i]] = v[i]
    rates: dict[int, float] = {}
    for k in range(n):
        ch, chz = struct.unpack_from(">BH", payload, STATUS_LEN + 3 * k)
        rates[ch] = chz / 100
    d["rates"] = rates
    return d
