"""What the rules emit: events, trips and the changes a caller drains.

An event's id is a pure function of what opened it — device, type, a key (the DTC
code, the service interval, ...) and the wall time of the sample that opened it —
so live evaluation, a replay and a restart after a crash give the same id and the
store's upsert keeps one row per situation.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from ..store import Event as StoredEvent

INFO, WARNING, CRITICAL = "info", "warning", "critical"
SEVERITIES = (INFO, WARNING, CRITICAL)

EVENT_TYPES = ("low_fuel", "refuel", "fuel_drop", "fuel_leak_suspected", "overheat", "dtc_new",
               "dtc_cleared", "mil_on", "battery_low", "charging_fault", "service_due", "service_soon", "trip",
               "log_reset")
#: Types that open and later clear (``cleared_ms``); the others are instants.
PERSISTENT_TYPES = frozenset({"low_fuel", "overheat", "dtc_new", "mil_on", "battery_low", "charging_fault"})

#: ``opened``/``cleared`` for persistent events; ``updated`` when an open event's
#: severity or values change (same id); ``instant`` for one-off events (refuel, trip, ...).
Change = Literal["opened", "updated", "cleared", "instant"]


def event_id(device: str, type_: str, key: str, opened_ms: int) -> str:
    """Stable id: 24 hex digits of SHA-256 over what identifies the situation."""
    h = hashlib.sha256(f"obdsync/event\x00{device}\x00{type_}\x00{key}\x00{int(opened_ms)}".encode())
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class Event(StoredEvent):
    """One derived event: the store's event (same fields, stored as it is) with
    what the rules need of it."""

    @property
    def persistent(self) -> bool:
        return self.type in PERSISTENT_TYPES

    def to_dict(self) -> dict[str, Any]:
        """Flat form for matching (``hil.scenario.Expect.matches``) and JSON: the fields,
        then the values at top level (a value never overrides a field)."""
        d = dict(self.values)
        d.update(asdict(self))
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        return cls(d["id"], d["device"], d["type"], d["severity"], d["opened_ms"], d["cleared_ms"],
                   dict(d["values"]), d["message"])

    def json(self) -> dict[str, Any]:
        return asdict(self)

    def cleared(self, cleared_ms: int, **values: Any) -> Event:
        return replace(self, cleared_ms=int(cleared_ms), values={**self.values, **values})


@dataclass(frozen=True)
class Trip:
    """A finished trip. Field names of the first seven match ``obdsync.store.Trip``;
    :attr:`values` gives the rest as the store's ``values_json``."""

    id: str
    device: str
    started_ms: int
    ended_ms: int
    distance_km: float
    fuel_l: float | None
    duration_s: float
    idle_s: float
    max_speed_kmh: float
    avg_speed_kmh: float
    l_per_100km: float | None
    hard_brakes: int
    hard_accels: int
    fuel_source: str  # "fuel_rate" (0x5E), "maf" (0x10), "level" (0x2F deltas) or "none"
    distance_source: str  # "odometer" (0xA6) or "speed" (integrated 0x0D)
    score: dict[str, Any] | None = None  # the driving evaluation (rules/score.py)
    fuel_cost: float | None = None  # fuel_l × the price per litre in force, when one is known

    @property
    def values(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("id", "device", "started_ms", "ended_ms", "distance_km", "fuel_l"):
            del d[k]
        return d

    def json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Trip:
        return cls(**d)


@dataclass(frozen=True)
class EventChange:
    """One output of :meth:`RuleEngine.drain`: what happened to which event."""

    change: Change
    event: Event
    trip: Trip | None = None  # set on the ``trip`` event

    def json(self) -> dict[str, Any]:
        return {"change": self.change, "event": self.event.json(),
                "trip": self.trip.json() if self.trip else None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EventChange:
        return cls(d["change"], Event.from_json(d["event"]), Trip.from_json(d["trip"]) if d["trip"] else None)
