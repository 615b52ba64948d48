"""Control commands (daemon -> dongle) and replies (dongle -> daemon).

    command  type | req | ctr u32 | payload | mac[8]
    reply    type|0x80 | req | ctr u32 | status | payload | mac[8]

HELLO and AUTH travel before a session exists: ctr 0 and no MAC. Everything
else is MACed with the session key and carries a strictly increasing counter.
There is deliberately no command that carries text for the adapter: each command
maps to one whitelisted request the dongle builds itself.

This module is what both sides need: the dongle imports it. What only the daemon (the
central) does, packing commands and reading replies, is protocol.control_central, so
the firmware does not carry that code in the board's RAM (a .mpy module's bytecode
lives there).
"""

import struct

from protocol import MICROPYTHON

if MICROPYTHON:
    from micropython import const
else:  # CPython: the same names, without the compiler's folding
    def const(x: int) -> int:
        return x

from protocol.auth import CONTROL_MAC_LEN, NONCE_LEN
from protocol.errors import ProtocolError

# Annotations are for the type checks: MicroPython compiles them away and has no `typing`;
# CPython evaluates them, so names from the block below are quoted.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from protocol.auth import Session

HELLO = const(0x01)
AUTH = const(0x02)
TIME = const(0x03)
ACK = const(0x04)
STREAM = const(0x05)
SET_PLAN = const(0x06)
READ_DTC = const(0x07)
CLEAR_DTC = const(0x08)
READ_VIN = const(0x09)
STATUS = const(0x0A)
READ_FREEZE = const(0x0B)  # mode 02 frame 0: the code that stored it and the frame's PIDs, per ECU
REPLY = const(0x80)

COMMAND_NAMES = {1: "hello", 2: "auth", 3: "time", 4: "ack", 5: "stream", 6: "set_plan", 7: "read_dtc",
                 8: "clear_dtc", 9: "read_vin", 10: "status", 11: "read_freeze"}
UNAUTHENTICATED = (HELLO, AUTH)

OK = const(0)
BAD_REQUEST = const(1)
NOT_AUTHENTICATED = const(2)
REFUSED_MOVING = const(3)
BUSY = const(4)
UNSUPPORTED = const(5)
RATE_LIMITED = const(6)
ADAPTER_ERROR = const(7)
AUTH_FAILED = const(8)

POWER_DRIVING = const(0)
POWER_IDLE = const(1)
POWER_PARKED = const(2)
POWER_SLEEPING = const(3)

_HEAD = const(6)  # type, req, ctr
MAX_PLAN = const(32)


class Message:
    """A decoded command or reply. `status` is None for commands."""

    def __init__(self, type_: int, req: int, counter: int, status: int | None, payload: bytes) -> None:
        self.type = type_
        self.req = req
        self.counter = counter
        self.status = status
        self.payload = payload

    @property
    def is_reply(self) -> bool:
        return self.status is not None

    def __repr__(self) -> str:
        name = COMMAND_NAMES.get(self.type & 0x7F, "?")
        if self.status is None:
            return "Command(%s req=%d)" % (name, self.req)
        return "Reply(%s req=%d status=%d)" % (name, self.req, self.status)


def encode(type_: int, req: int, payload: bytes | bytearray | memoryview = b"", session: "Session | None" = None,
           status: int | None = None) -> bytes:
    """A command (status None) or a reply, MACed when a session is given."""
    if not 0 <= req <= 255:
        raise ProtocolError("request id out of range")
    t = type_ & 0x7F
    if status is not None:
        t |= REPLY
    needs_mac = (type_ & 0x7F) not in UNAUTHENTICATED
    mac_by = session if needs_mac else None  # the session that MACs this message
    if needs_mac and mac_by is None:
        # Refusals to a peer without a session can't be MACed: an error status
        # with no payload is all they may carry.
        if status is None or status == OK or payload:
            raise ProtocolError("%s needs an authenticated session" % COMMAND_NAMES.get(type_, "command"))
    counter = mac_by.next_counter() if mac_by is not None else 0
    head = struct.pack(">BBI", t, req, counter)
    if status is not None:
        head += bytes((status,))
    msg = head + bytes(payload)
    if mac_by is not None:
        msg += mac_by.mac(mac_by.tx_dir, msg)
    return msg


def decode(data: object, session: "Session | None" = None) -> Message:
    """Decode a command or reply. For authenticated types the session must be
    given; the MAC and counter are verified (replays and reordering rejected)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("control message must be bytes")
    data = bytes(data)
    if len(data) < _HEAD:
        raise ProtocolError("control message shorter than its header")
    t, req, counter = struct.unpack_from(">BBI", data, 0)
    kind = t & 0x7F
    if kind not in COMMAND_NAMES:
        raise ProtocolError("unknown control type 0x%02X" % t)
    is_reply = bool(t & REPLY)
    o = _HEAD
    status = None
    if is_reply:
        if len(data) < _HEAD + 1:
            raise ProtocolError("reply without a status")
        status = data[o]
        o += 1
        if status > AUTH_FAILED:  # the highest status code
            raise ProtocolError("unknown reply status %d" % status)
    end = len(data)
    if kind in UNAUTHENTICATED:
        if counter != 0:
            raise ProtocolError("%s carries a counter" % COMMAND_NAMES[kind])
    elif is_reply and counter == 0:
        # An unauthenticated refusal (see encode): error status, nothing else.
        if status == OK or end != o:
            raise ProtocolError("unauthenticated reply may only refuse")
    else:
        if session is None:
            raise ProtocolError("%s outside an authenticated session" % COMMAND_NAMES[kind])
        if end - o < CONTROL_MAC_LEN:
            raise ProtocolError("control message without its MAC")
        end -= CONTROL_MAC_LEN
        session.verify(data[:end], counter, data[end:])
    return Message(kind, req, counter, status, data[o:end])


def peek(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """(type, req) of a message too broken or unauthenticated to decode, so the
    dongle can still refuse it by its request id; None when not even that."""
    if len(data) < 2 or (data[0] & 0x7F) not in COMMAND_NAMES:
        return None
    return data[0] & 0x7F, data[1]


# --- payloads -----------------------------------------------------------------

def hello_reply(device_id: bytes | bytearray, nonce_d: bytes | bytearray) -> bytes:
    return bytes(device_id) + bytes(nonce_d)


def parse_hello(payload: bytes | bytearray | memoryview) -> bytes:
    if len(payload) != NONCE_LEN:
        raise ProtocolError("hello carries a %d-byte nonce" % NONCE_LEN)
    return bytes(payload)


def parse_u64(payload: bytes | bytearray | memoryview) -> int:
    if len(payload) != 8:
        raise ProtocolError("expected 8 bytes")
    v: int = struct.unpack(">Q", payload)[0]
    return v


def parse_u32(payload: bytes | bytearray | memoryview) -> int:
    if len(payload) != 4:
        raise ProtocolError("expected 4 bytes")
    v: int = struct.unpack(">I", payload)[0]
    return v


def pack_stream(first_unacked: int, next_seq: int, epoch: int) -> bytes:
    return struct.pack(">III", first_unacked, next_seq, epoch)


def pack_pair(a: int, b: int) -> bytes:
    return struct.pack(">II", a, b)


def parse_plan(payload: bytes | bytearray | memoryview) -> list[tuple[int, int, int, int]]:
    if len(payload) < 1:
        raise ProtocolError("empty plan")
    n = payload[0]
    if n > MAX_PLAN:
        raise ProtocolError("a plan has at most %d entries" % MAX_PLAN)
    if len(payload) != 1 + 7 * n:
        raise ProtocolError("plan of %d entries must be %d bytes" % (n, 1 + 7 * n))
    entries: list[tuple[int, int, int, int]] = []
    seen: set[int] = set()
    for k in range(n):
        e = struct.unpack_from(">BHHH", payload, 1 + 7 * k)
        if e[0] in seen:
            raise ProtocolError("plan lists channel 0x%02X twice" % e[0])
        seen.add(e[0])
        entries.append(e)
    return entries


def pack_dtcs(mode: int, codes: "Sequence[bytes]", ecus: "Sequence[int] | None" = None) -> bytes:
    """READ_DTC's reply: `mode u8`, 2 bytes a code; with ecus (one address a code, 0 unknown)
    the mode byte carries 0x80 and each code is preceded by its ECU's address (as the record)."""
    out = bytearray([mode if ecus is None else mode | 0x80])
    for i in range(len(codes)):
        if ecus is not None:
            out.append(ecus[i])
        out += codes[i]
    return bytes(out)


# STATUS reply: these fields, then n u8 and n rates.
STATUS_FORMAT = ">HBBIIIIIHHB"
STATUS_FIELDS = ("millivolts", "elm_protocol", "power_state", "uptime_s", "log_used", "log_capacity",
                 "first_unacked", "next_seq", "boot", "auth_failures")


def pack_freeze(entries: "Iterable[tuple[int, int, bytes]]") -> bytes:
    """READ_FREEZE's reply: per answer `ecu u8 | pid u8 | len u8 | data` (mode 02 frame 0 as
    the ECU sent it after `42 PP 00`; ecu 0 where the adapter showed no header). PID 02 (the
    code that stored the frame) comes first for each ECU."""
    out = bytearray()
    for ecu, pid, data in entries:
        if not 0 <= ecu <= 255 or not 0 < pid <= 255 or len(data) > 255:
            raise ProtocolError("freeze frame entry out of range")
        out += bytes((ecu, pid, len(data)))
        out += data
    return bytes(out)


def pack_status(values: "Iterable[int]", rates: "Sequence[tuple[int, int]]") -> bytes:
    """values: the STATUS_FIELDS in order; rates: (channel, centihertz) pairs."""
    out = bytearray(struct.pack(STATUS_FORMAT, *(tuple(values) + (len(rates),))))
    for ch, chz in rates:
        out += struct.pack(">BH", ch, chz)
    return bytes(out)
