"""The daemon asks a connected dongle for the freeze frame (mode 02 frame 0) when the newest
read of stored codes holds a code without a kept frame, and keeps what it gets with the codes
(`Store.put_freeze_frames`), so `obdsync check` shows the frame even when the car is gone.

The ECU keeps one frame 0 (the first code that set it): the dongle is asked again only when the
set of stored codes changed since it was last asked on this connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from obdsync.hooks import after_ready

if TYPE_CHECKING:  # types only: obdsync.link imports bleak
    from obdsync.link import DeviceLink, LinkInfo
    from obdsync.store import Store

log = logging.getLogger(__name__)

# After the link is ready, then while it stays up: when the stored codes are looked at again.
# A schedule, not synchronisation: codes are read by the dongle at engine start and on MIL change.
FIRST_S = 3.0
EVERY_S = 30.0

_following: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps only weak references)


def watch(link: DeviceLink, store: Store) -> None:
    """Follow ``link``'s stored codes each time it is ready (after whatever else it does then)."""

    async def ready(info: LinkInfo) -> None:
        device = info.device_id.hex()
        _following.add(asyncio.create_task(_follow(link, store, device), name=f"freeze {device}"))

    after_ready(link, ready)


async def _follow(link: DeviceLink, store: Store, device: str) -> None:
    asked: frozenset[str] = frozenset()
    try:
        await asyncio.sleep(FIRST_S)
        while link.connected:
            asked = await ask_if_missing(link, store, device, asked)
            await asyncio.sleep(EVERY_S)
    except Exception as e:  # noqa: BLE001 - best effort; the next connection tries again
        log.warning("dongle %s: reading the freeze frame failed: %s", device, e)
    finally:
        _following.discard(asyncio.current_task())


async def ask_if_missing(link: DeviceLink, store: Store, device: str, asked: frozenset[str]) -> frozenset[str]:
    """Ask for the freeze frame when a stored code has none kept and the stored codes changed
    since ``asked``; returns the stored codes now considered asked."""
    from obdsync.decode import DecodeError, decode_freeze
    from obdsync.link import LinkError
    from protocol import control, control_central
    from protocol.errors import ProtocolError

    stored: list[str] = next((codes for _t, mode, codes, _a in await store.dtcs(device, limit=20) if mode == 0x03), [])
    kept = await store.freeze_frames(device)
    if frozenset(stored) == asked or all(c in kept for c in stored):
        return asked
    try:
        frames = decode_freeze(control_central.parse_freeze(await link.command(control.READ_FREEZE)))
    except (LinkError, DecodeError, ProtocolError) as e:  # the next look tries again
        log.info("dongle %s: no freeze frame: %s", device, e)
        return asked
    if frames:
        # As JSON objects: the store keeps them as they are shown (`dtc show`, the dashboard).
        await store.put_freeze_frames(device, {code: {**frame} for code, frame in frames.items()},
                                      int(time.time() * 1000))
        log.info("dongle %s: freeze frame of %s kept", device, ", ".join(sorted(frames)))
    return frozenset(stored)
