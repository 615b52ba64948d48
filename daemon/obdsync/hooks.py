"""Work that follows a link's readiness (storing the VIN, following freeze frames).

Kept apart from `obdsync.link` so that commands importing a follower (`status` imports
`obdsync.vin`) do not import bleak with it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


def after_ready(link: Any, then: Callable[[Any], Awaitable[None]]) -> None:
    """Run ``then(info)`` each time ``link`` is ready, after whatever it already ran then."""
    before = link.on_ready

    async def ready(info: Any) -> None:
        if before is not None:
            r = before(info)
            if hasattr(r, "__await__"):
                await r
        await then(info)

    link.on_ready = ready
