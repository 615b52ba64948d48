"""Where simulated dongles advertise: a directory of unix sockets, one per advertising dongle."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from bleak.exc import BleakError

from . import wire

ENV = "OBDSYNC_SIM_AIR"
_MAC = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")


def air_dir(air: str | os.PathLike[str] | None = None) -> Path:
    """The air given to a backend (its `air=` keyword), else $OBDSYNC_SIM_AIR."""
    chosen = air if air is not None else os.environ.get(ENV)
    if not chosen:
        raise BleakError(f"simulated BLE: no air directory (pass air=... or set {ENV})")
    return Path(chosen)


def normalize_address(address: str) -> str:
    a = address.strip().upper().replace("-", ":")
    if not _MAC.match(a):
        raise BleakError(f"simulated BLE: not a Bluetooth address: {address!r}")
    return a


def socket_path(air: Path, address: str) -> Path:
    return air / (normalize_address(address).replace(":", "") + ".sock")


def address_of(path: Path) -> str | None:
    stem = path.name[:-5] if path.name.endswith(".sock") else ""
    if len(stem) != 12 or not re.fullmatch(r"[0-9A-F]{12}", stem):
        return None
    return ":".join(stem[i : i + 2] for i in range(0, 12, 2))


async def query(path: Path, timeout: float = 1.0) -> tuple[int, bool, bytes, bytes] | None:
    """(rssi, connectable, advertisement, scan response) of the dongle listening at `path`,
    or None when nobody listens there any more (a dongle killed while advertising leaves its
    socket file behind; it is removed)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
    except (ConnectionRefusedError, FileNotFoundError):
        try:
            if path.is_socket():
                path.unlink()
        except OSError:
            pass
        return None
    except (TimeoutError, OSError):
        return None
    try:
        writer.write(wire.frame(wire.SCAN))
        kind, payload = await asyncio.wait_for(wire.read_message(reader), timeout)
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return None
    finally:
        writer.close()
    if kind != wire.ADV or len(payload) < 3 or len(payload) < 3 + payload[2]:
        return None
    rssi = int.from_bytes(payload[0:1], "little", signed=True)
    adv_len = payload[2]
    return rssi, bool(payload[1]), payload[3 : 3 + adv_len], payload[3 + adv_len :]
