"""The daemon's domain types, in one place: what the store keeps and gives back, what the
rules emit, and the records derivation takes. The store's modules, the rules, the pipeline
and the forwarders import them from here (none of them owns them).

The records derivation takes (:data:`Held`) come from two places with one shape: a batch
just stored (``Ingested.held``, times in the boot's ticks: ``boot`` is set and the
pipeline adds the boot's anchor once it is known) and the store read back in order
(``Store.replay_items``, times already wall ms: ``boot`` is None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple, Protocol

EVENT_TYPES = ("low_fuel", "refuel", "fuel_drop", "fuel_leak_suspected", "overheat", "dtc_new",
               "dtc_cleared", "mil_on", "battery_low", "charging_fault", "service_due", "service_soon", "trip",
               "log_reset")
#: Types that open and later clear (``cleared_ms``); the others are instants.
PERSISTENT_TYPES = frozenset({"low_fuel", "overheat", "dtc_new", "mil_on", "battery_low", "charging_fault"})


@dataclass(frozen=True)
class Event:
    """A derived event (rules). ``id`` is stable: storing it again updates it."""

    id: str
    device: str
    type: str
    severity: str
    opened_ms: int
    cleared_ms: int | None = None
    values: dict[str, Any] = field(default_factory=dict)
    message: str = ""

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


class TripRecord(Protocol):
    """What the store keeps of a trip: a :class:`Trip` read back, or the rules'
    :class:`TripSummary` as it is emitted (no copy in between)."""

    @property
    def id(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def started_ms(self) -> int: ...
    @property
    def ended_ms(self) -> int | None: ...
    @property
    def distance_km(self) -> float | None: ...
    @property
    def fuel_l(self) -> float | None: ...
    @property
    def values(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Trip:
    """A trip as stored: its columns, the rest of its figures in ``values``."""

    id: str
    device: str
    started_ms: int
    ended_ms: int | None = None
    distance_km: float | None = None
    fuel_l: float | None = None
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TripSummary:
    """A finished trip as the trip rule emits it: every figure a field. It is a
    :class:`TripRecord`: :attr:`values` gives the figures beyond :class:`Trip`'s columns."""

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
    def from_json(cls, d: dict[str, Any]) -> TripSummary:
        return cls(**d)


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    target: str
    event_id: str | None
    payload: bytes
    created_ms: int
    attempts: int
    next_attempt: int
    last_error: str | None
    state: str


@dataclass(frozen=True)
class DeviceStatus:
    device: str
    name: str | None
    address: str | None
    vin: str | None
    first_seen: int | None
    last_seen: int | None
    first_seq: int | None
    contiguous: int | None
    records: int
    missing: int
    """seqs above the watermark not received yet (will be re-sent)."""
    gaps: int
    lost: int
    """records the dongle dropped (sum of its GAP records)."""
    last_values: dict[int, tuple[int, float | None, str]]
    """signal -> (time_ms, value, unit)."""
    epoch: int | None = None
    """the log epoch met last (``first_seq`` and ``contiguous`` are its wire seqs)."""
    epochs: int = 0
    """log epochs met: more than one means the dongle's log started over (wiped, reflashed, replaced)."""
    epoch_since: int | None = None
    """when the current epoch was first met (Unix ms)."""


@dataclass(frozen=True)
class EpochInfo:
    """One log epoch of a device, its seqs as on the wire."""

    idx: int
    epoch: int
    first_seen: int
    first_seq: int | None
    contiguous: int | None


class SampleRow(NamedTuple):
    time_ms: int
    channel: int
    value: float | None
    raw: bytes
    approx: bool
    boot: int
    t_ms: int
    seq: int


#: Column order of the sample row tuples ingest builds (``Ingested.rows``, the live
#: listeners' input, :attr:`HeldSamples.rows` of a live batch). ``value_id`` is the row's
#: ``sample_values.id`` (value and raw bytes live there, see schema step 3).
SAMPLE_ROW = ("device_num", "channel", "time_ms", "seq", "n", "boot", "t_ms", "value", "value_id", "approx")
#: Where time, signal and value sit in a row of each source, for ``RuleEngine.samples``.
ROW_FIELDS = (SAMPLE_ROW.index("t_ms"), SAMPLE_ROW.index("channel"), SAMPLE_ROW.index("value"))
WALL_FIELDS = (0, 1, 2)  # (wall_ms, signal, value): a replayed record's rows


# ---- the records derivation takes (see the module docstring) -------------------------------

class HeldSamples(NamedTuple):
    """A SAMPLES record's decoded values. ``boot`` None: ``rows`` are ``(wall_ms, signal,
    value)``; else store rows (:data:`SAMPLE_ROW`), times in ``boot``'s ticks."""

    seq: int
    boot: int | None
    rows: Sequence[Sequence[Any]]

    @property
    def fields(self) -> tuple[int, int, int]:
        return WALL_FIELDS if self.boot is None else ROW_FIELDS

    @property
    def first_ms(self) -> int | None:
        """The first sample's time (None: no samples)."""
        return self.rows[0][self.fields[0]] if self.rows else None


class HeldDtc(NamedTuple):
    """A DTC record: the codes read (with each one's ECU) at ``t_ms``."""

    seq: int
    boot: int | None
    t_ms: int
    mode: int
    codes: list[str]
    ecus: list[str]

    @property
    def first_ms(self) -> int:
        return self.t_ms


class HeldDongleEvent(NamedTuple):
    """An EVENT record of the dongle (boot, engine on/off, battery low) at ``t_ms``."""

    seq: int
    boot: int | None
    t_ms: int
    code: int

    @property
    def first_ms(self) -> int:
        return self.t_ms


class HeldMark(NamedTuple):
    """An ANCHOR or GAP record: it moves the watermark, nothing to derive."""

    seq: int
    boot: int | None

    @property
    def first_ms(self) -> None:
        return None


Held = HeldSamples | HeldDtc | HeldDongleEvent | HeldMark
