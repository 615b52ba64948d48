"""Scenarios: TOML data files in hil/scenarios/ that say what the car does and what the
daemon is expected to make of it.

    name = "refuel"
    description = "..."

    [vehicle]                 # VehicleParams fields (hil/vehicle.py); all optional
    vin = "WVWZZZ1KZAW386754"
    tank_l = 50
    fuel_type = "petrol"      # or "diesel"
    start_fuel_pct = 20
    start_odometer_km = 42000
    supported_pids = [0x01, 0x05, 0x0C, 0x0D, 0x2F]
    protocol = "CAN11/500"
    seed = 1

    [[phase]]                 # in order; Phase fields (hil/vehicle.py)
    kind = "city"             # city highway idle park refuel theft overheat dtc weak_battery
    duration_s = 120          # sim seconds
    speedup = 10              # sim seconds per real second

    [[expect]]                # events the daemon must emit over the run
    type = "refuel"           # low_fuel refuel fuel_drop overheat dtc_new dtc_cleared
                              # mil_on battery_low charging_fault trip
    count = 1                 # exact count; or min_count = N (default: at least 1)
    phase = "refuel"          # optional: the event belongs to this phase (name or kind)
    litres = 30               # any other key: a field the event must carry;
    tolerance = 4             # numbers match within ± tolerance (default 0)

`load(name_or_path)` gives a `Scenario`; `names()` lists the shipped ones. A bad file
raises `ScenarioError` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hil.simclock import Schedule
from hil.vehicle import Phase, Vehicle, VehicleError, VehicleParams

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from hil.adapter import Profile

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
EVENT_TYPES = ("low_fuel", "refuel", "fuel_drop", "fuel_leak_suspected", "overheat", "dtc_new",
               "dtc_cleared", "mil_on", "battery_low", "charging_fault", "trip")


class ScenarioError(ValueError):
    """A scenario file that cannot be used, with the file and the field at fault."""


@dataclass(frozen=True)
class Expect:
    type: str
    count: int | None = None      # exact
    min_count: int = 1            # when count is None
    phase: str | None = None
    tolerance: float = 0.0
    fields: dict[str, Any] = field(default_factory=dict)

    def count_ok(self, n: int) -> bool:
        return n == self.count if self.count is not None else n >= self.min_count

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether an event (a dict with 'type' and its fields) carries the expected fields."""
        if event.get("type") != self.type:
            return False
        for k, want in self.fields.items():
            got = event.get(k)
            if isinstance(want, bool) or not isinstance(want, (int, float)):
                if got != want:
                    return False
            elif not isinstance(got, (int, float)) or abs(got - want) > self.tolerance:
                return False
        return True


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    vehicle: VehicleParams
    phases: tuple[Phase, ...]
    expects: tuple[Expect, ...]
    path: Path | None = None

    def at_most(self, speedup: float) -> Scenario:
        """The same drive with no phase faster than `speedup` sim seconds a real second: a
        slow bus (K-line, J1850: one PID a request, ~100 ms each) cannot serve the plan at 20x."""
        return dataclasses.replace(self, phases=tuple(dataclasses.replace(p, speedup=min(p.speedup, speedup))
                                                      for p in self.phases))

    def make_vehicle(self, adapter: Profile | None = None) -> Vehicle:
        """A fresh vehicle (it carries state: mode 04 clears, integration cache); adapter: a
        hil.adapter.Profile (the bus and its ECUs), else CAN 11/500 with the engine alone."""
        return Vehicle(self.vehicle, self.phases, adapter)

    def schedule(self, epoch: float | None = None) -> Schedule:
        return Schedule(time.time() if epoch is None else epoch, [(p.duration_s, p.speedup) for p in self.phases])

    @property
    def total_sim_s(self) -> float:
        return sum(p.duration_s for p in self.phases)

    @property
    def total_real_s(self) -> float:
        return sum(p.duration_s / p.speedup for p in self.phases)

    def phase_window(self, which: str | int) -> tuple[float, float]:
        """(start, end) in sim seconds of a phase given by index, name or kind (first match)."""
        t = 0.0
        for i, p in enumerate(self.phases):
            if which == i or which == p.name or (isinstance(which, str) and not p.name and which == p.kind):
                return t, t + p.duration_s
            t += p.duration_s
        raise KeyError(f"scenario {self.name}: no phase {which!r}")


def names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load(name_or_path: str | Path) -> Scenario:
    p = Path(name_or_path)
    if p.suffix != ".toml":
        p = SCENARIO_DIR / f"{name_or_path}.toml"
    if not p.exists():
        raise ScenarioError(f"no scenario {name_or_path!r} (shipped: {', '.join(names())})")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{p}: not valid TOML: {e}") from None
    return parse(data, source=p)


_D = TypeVar("_D", bound="DataclassInstance")


def _build(cls: type[_D], table: dict[str, Any], where: str) -> _D:
    """A TOML table as the dataclass `cls` (VehicleParams, Phase), or a ScenarioError naming the table."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    try:
        return cls(**table)
    except (VehicleError, TypeError) as e:
        raise ScenarioError(f"{where}: {e}") from None


def parse(data: dict[str, Any], source: str | Path = "<scenario>") -> Scenario:
    src = str(source)
    name = data.get("name") or (Path(source).stem if isinstance(source, Path) else "")
    if not name:
        raise ScenarioError(f"{src}: missing name")
    unknown = sorted(set(data) - {"name", "description", "vehicle", "phase", "expect"})
    if unknown:
        raise ScenarioError(f"{src}: unknown top-level key(s) {unknown}")
    vt = dict(data.get("vehicle", {}))
    if "supported_pids" in vt:
        pids = vt["supported_pids"]
        if not isinstance(pids, list) or not all(isinstance(x, int) for x in pids):
            raise ScenarioError(f"{src}: vehicle.supported_pids must be a list of integers (0x0C is fine)")
        vt["supported_pids"] = tuple(pids)
    if "stored_dtcs" in vt:
        vt["stored_dtcs"] = tuple(vt["stored_dtcs"])
    vehicle = _build(VehicleParams, vt, f"{src} [vehicle]")
    raw_phases = data.get("phase", [])
    if not raw_phases:
        raise ScenarioError(f"{src}: a scenario needs at least one [[phase]]")
    phases = tuple(_build(Phase, dict(ph), f"{src} phase {i + 1}") for i, ph in enumerate(raw_phases))
    labels = [p.label for p in phases]
    expects = []
    for i, ex in enumerate(data.get("expect", [])):
        where = f"{src} expect {i + 1}"
        ex = dict(ex)
        typ = ex.pop("type", None)
        if typ not in EVENT_TYPES:
            raise ScenarioError(f"{where}: type must be one of {list(EVENT_TYPES)}, got {typ!r}")
        count = ex.pop("count", None)
        min_count = ex.pop("min_count", 1)
        phase = ex.pop("phase", None)
        tolerance = ex.pop("tolerance", 0.0)
        if count is not None and (not isinstance(count, int) or count < 0):
            raise ScenarioError(f"{where}: count must be an integer >= 0")
        if not isinstance(min_count, int) or min_count < 0:
            raise ScenarioError(f"{where}: min_count must be an integer >= 0")
        if phase is not None and phase not in labels:
            raise ScenarioError(f"{where}: phase {phase!r} is not one of {labels}")
        if not isinstance(tolerance, (int, float)) or tolerance < 0:
            raise ScenarioError(f"{where}: tolerance must be a number >= 0")
        expects.append(Expect(typ, count, min_count, phase, float(tolerance), ex))
    return Scenario(name, str(data.get("description", "")), vehicle, phases, tuple(expects),
                    Path(source) if isinstance(source, Path) else None)
