"""The simulated air's wire between a dongle (hil/mpy/bluetooth.py) and a central (this package).

A message is `[length u16 LE][type u8][payload]`. The dongle keeps the same numbers as private
`const()`s; tests/test_blesim.py checks that both lists agree.
"""

from __future__ import annotations

import asyncio
import struct

SCAN = 0x01  # () -> ADV
CONNECT = 0x02  # addr_type u8, addr[6], interval_ms u16, latency u16, timeout_ms u16 -> CONNECTED | REJECT
MTU = 0x03  # client mtu u16 -> MTU_RSP server mtu u16
DISCOVER = 0x04  # () -> SERVICES entries
READ = 0x05  # handle u16 -> READ_RSP status u8, value
WRITE = 0x06  # handle u16, data -> WRITE_RSP status u8
WRITE_CMD = 0x07  # handle u16, data (no reply)
CONFIRM = 0x08  # handle u16: indication confirmed
PAIR = 0x09  # io u8, auth u8 (bond 1, mitm 4, sc 8), passkey u32 (0xFFFFFFFF: none) -> PAIR_RSP
ENCRYPT = 0x0A  # ltk[16] of an earlier bond -> PAIR_RSP
CONN_UPDATE = 0x0B  # interval_ms u16, latency u16, timeout_ms u16
ADV = 0x81  # rssi i8, connectable u8, adv_len u8, adv, scan response
CONNECTED = 0x82  # conn_handle u16
MTU_RSP = 0x83
SERVICES = 0x84  # entries: kind u8, handle u16, extra u16, uuid_len u8, uuid (LE)
READ_RSP = 0x85
WRITE_RSP = 0x86
NOTIFY = 0x88  # handle u16, value
INDICATE = 0x89  # handle u16, value
PAIR_RSP = 0x8A  # status u8, encrypted u8, authenticated u8, bonded u8, key_size u8, ltk[16] if bonded
SECURITY_REQ = 0x8B  # the dongle asks the central to pair (gap_pair)
DISCONNECT = 0x8C  # reason u8: the dongle drops the link (gap_disconnect)
REJECT = 0x8D  # the dongle refuses the connection

KIND_SVC = 1
KIND_CHR = 2
KIND_DSC = 3

AUTH_BOND = 0x01
AUTH_MITM = 0x04
AUTH_SC = 0x08
NO_PASSKEY = 0xFFFFFFFF
IO_KEYBOARD_DISPLAY = 4  # BlueZ's default agent capability

MAX_PAYLOAD = 0xFFFF


def frame(kind: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"message too long: {len(payload)} bytes")
    return struct.pack("<HB", len(payload), kind) + payload


async def read_message(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One message; asyncio.IncompleteReadError at EOF."""
    head = await reader.readexactly(3)
    length, kind = struct.unpack("<HB", head)
    payload = await reader.readexactly(length) if length else b""
    return kind, payload


def uuid_str(le: bytes) -> str:
    """A UUID as bleak spells it (lower case, 128-bit form) from its little-endian bytes."""
    from bleak.uuids import normalize_uuid_16, normalize_uuid_32

    if len(le) == 2:
        return normalize_uuid_16(int.from_bytes(le, "little"))
    if len(le) == 4:
        return normalize_uuid_32(int.from_bytes(le, "little"))
    if len(le) == 16:
        h = le[::-1].hex()
        return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
    raise ValueError(f"bad UUID length {len(le)}")


def parse_services(payload: bytes) -> list[tuple[int, int, int, str]]:
    """(kind, handle, extra, uuid) entries of a SERVICES message."""
    out = []
    i = 0
    while i < len(payload):
        if i + 6 > len(payload):
            raise ValueError("truncated service table")
        kind, handle, extra, ulen = struct.unpack_from("<BHHB", payload, i)
        i += 6
        if i + ulen > len(payload):
            raise ValueError("truncated service table")
        out.append((kind, handle, extra, uuid_str(payload[i : i + ulen])))
        i += ulen
    return out
