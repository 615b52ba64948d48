"""Work that follows a link's readiness (storing the VIN, following freeze frames).

Kept apart from `obdsync.link` so that commands importing a follower (`status` imports
`obdsync.vin`) do not import bleak with it."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: importing obdsync.link imports bleak
    from obdsync.link import DeviceLink, LinkInfo


def after_ready(link: DeviceLink, then: Callable[[LinkInfo], Awaitable[None]]) -> None:
    """Run ``then(info)`` each time ``link`` is ready, after whatever it already ran then."""
    before = link.on_ready

    async def ready(info: LinkInfo) -> None:
        if before is not None:
            r = before(info)
            if inspect.isawaitable(r):
                await r
        await then(info)

    link.on_ready = ready
