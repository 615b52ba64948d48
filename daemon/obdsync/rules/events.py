"""What the rules emit: events (``model.Event``), trips (``model.TripSummary``) and the
changes a caller drains.

An event's id is a pure function of what opened it — device, type, a key (the DTC
code, the service interval, ...) and the wall time of the sample that opened it —
so live evaluation, a replay and a restart after a crash give the same id and the
store's upsert keeps one row per situation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from ..model import EVENT_TYPES, PERSISTENT_TYPES, Event, TripSummary

__all__ = ["EVENT_TYPES", "PERSISTENT_TYPES", "Event", "TripSummary", "EventChange", "event_id", "INFO", "WARNING",
           "CRITICAL", "SEVERITIES", "Change"]

INFO, WARNING, CRITICAL = "info", "warning", "critical"
SEVERITIES = (INFO, WARNING, CRITICAL)

#: ``opened``/``cleared`` for persistent events; ``updated`` when an open event's
#: severity or values change (same id); ``instant`` for one-off events (refuel, trip, ...).
Change = Literal["opened", "updated", "cleared", "instant"]


def event_id(device: str, type_: str, key: str, opened_ms: int) -> str:
    """Stable id: 24 hex digits of SHA-256 over what identifies the situation."""
    h = hashlib.sha256(f"obdsync/event\x00{device}\x00{type_}\x00{key}\x00{int(opened_ms)}".encode())
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class EventChange:
    """One output of :meth:`RuleEngine.drain`: what happened to which event."""

    change: Change
    event: Event
    trip: TripSummary | None = None  # set on the ``trip`` event

    def json(self) -> dict[str, Any]:
        return {"change": self.change, "event": self.event.json(),
                "trip": self.trip.json() if self.trip else None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EventChange:
        return cls(d["change"], Event.from_json(d["event"]),
                   TripSummary.from_json(d["trip"]) if d["trip"] else None)
