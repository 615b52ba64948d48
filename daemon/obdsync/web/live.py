"""The live hub: the newest value of each gauge signal, pushed to every open Now page.

The pipeline hands each stored batch's sample rows to :meth:`LiveHub.feed` (after the
commit: what a page shows is stored). Subscribers are bounded queues: a slow browser
loses intermediate values, never holds up ingest (only the newest value of a gauge matters).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, TypedDict

from obdsync.model import SAMPLE_ROW

_CH, _T, _V = SAMPLE_ROW.index("channel"), SAMPLE_ROW.index("time_ms"), SAMPLE_ROW.index("value")

QUEUE = 64


class Gauge(TypedDict):
    v: float  # the value
    t: int  # its time, Unix ms


class LiveMessage(TypedDict):
    """What a Now page receives (as JSON, on its event stream)."""

    device: str
    values: dict[str, Gauge]  # gauge key -> newest value
    sent_ms: int


class LiveHub:
    def __init__(self, signals: dict[int, str]) -> None:
        self.signals = signals  # signal id -> gauge key
        self.latest: dict[str, dict[str, Gauge]] = {}  # device -> key -> newest
        self._subs: set[asyncio.Queue[LiveMessage]] = set()

    def feed(self, device: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """A stored batch's sample rows (`model.SAMPLE_ROW`): the newest value per gauge."""
        new: dict[str, Gauge] = {}
        for r in rows:
            key = self.signals.get(r[_CH])
            if key is None or r[_V] is None:
                continue
            cur = new.get(key)
            if cur is None or r[_T] >= cur["t"]:
                new[key] = {"v": r[_V], "t": r[_T]}
        if not new:
            return
        self.latest.setdefault(device, {}).update(new)
        msg: LiveMessage = {"device": device, "values": new, "sent_ms": int(time.time() * 1000)}
        for q in list(self._subs):
            if q.full():
                q.get_nowait()  # drop the oldest: gauges show the newest
            q.put_nowait(msg)

    def subscribe(self) -> asyncio.Queue[LiveMessage]:
        q: asyncio.Queue[LiveMessage] = asyncio.Queue(QUEUE)
        self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[LiveMessage]) -> None:
        self._subs.discard(q)

    @property
    def subscribers(self) -> int:
        return len(self._subs)
