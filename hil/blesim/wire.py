"""The simulated air's wire between a dongle (hil/mpy/bluetooth.py) and a central (this package).

A message is `[length u16 LE][type u8][payload]`; the message numbers and their constants come
from hil/mpy/blewire.py, the one module both interpreters import.
"""

from __future__ import annotations

import asyncio
import importlib.util
import struct
from pathlib import Path

# The numbers are defined once, in hil/mpy/blewire.py, which the MicroPython shim imports
# as `blewire`. It is loaded from its file: `hil.mpy` is the module hil/mpy.py, not that
# directory, so it cannot be imported by package name.
_BLEWIRE = Path(__file__).resolve().parents[1] / "mpy" / "blewire.py"
_spec = importlib.util.spec_from_file_location("hil_blewire", _BLEWIRE)
if _spec is None or _spec.loader is None:
    raise ImportError(f"cannot load the simulated air's wire numbers from {_BLEWIRE}")
_blewire = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_blewire)


def _number(name: str) -> int:
    """blewire's constant `name`: named here so the checker knows each one (an unknown
    name fails at import, not at the first message that uses it)."""
    v = getattr(_blewire, name)
    if not isinstance(v, int):
        raise ImportError(f"{_BLEWIRE.name}: {name} is not a number: {v!r}")
    return v


SCAN, CONNECT, MTU, DISCOVER = _number("SCAN"), _number("CONNECT"), _number("MTU"), _number("DISCOVER")
READ, WRITE, WRITE_CMD, CONFIRM = _number("READ"), _number("WRITE"), _number("WRITE_CMD"), _number("CONFIRM")
PAIR, ENCRYPT, CONN_UPDATE = _number("PAIR"), _number("ENCRYPT"), _number("CONN_UPDATE")
ADV, CONNECTED, MTU_RSP, SERVICES = _number("ADV"), _number("CONNECTED"), _number("MTU_RSP"), _number("SERVICES")
READ_RSP, WRITE_RSP, NOTIFY, INDICATE = _number("READ_RSP"), _number("WRITE_RSP"), _number("NOTIFY"), _number("INDICATE")
PAIR_RSP, SECURITY_REQ, DISCONNECT = _number("PAIR_RSP"), _number("SECURITY_REQ"), _number("DISCONNECT")
REJECT = _number("REJECT")
KIND_SVC, KIND_CHR, KIND_DSC = _number("KIND_SVC"), _number("KIND_CHR"), _number("KIND_DSC")
AUTH_BOND, AUTH_MITM, AUTH_SC = _number("AUTH_BOND"), _number("AUTH_MITM"), _number("AUTH_SC")
NO_PASSKEY = _number("NO_PASSKEY")

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
    out: list[tuple[int, int, int, str]] = []
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
