"""The simulated vehicle: an engine ECU on CAN 11/500 driven over *simulated* time.

A `Vehicle` is built from `VehicleParams` and a list of `Phase`s (city, highway, idle,
park, refuel, theft, overheat, dtc, weak_battery). Its speed profile is a deterministic
function of sim time (drawn once from the seed); the state that accumulates (fuel,
odometer, coolant, engine run time) is integrated on demand from the last evaluated
time to "now" in fixed steps on a grid anchored at each phase start, so the same seed
gives the same numbers whatever the query pattern, and a long night parked costs a
few hundred steps.

Two entry points, both pure Python and usable without the emulator:
- `truth(t)` → `Truth`: the ground truth at sim second `t` (tests, scenario checker);
- `respond(request, t)` → list of ECU messages (bytes, service|0x40 first) or an ELM327
  error string (`NO DATA`, `UNABLE TO CONNECT`, `?`); `answer(request, t)` formats that
  as the lines an ELM327 prints with headers off and spaces on (ISO-TP multi-frame as
  `014` / `0: …` / `1: …`).

Physics, kept simple but consistent: road power (rolling + aero + inertia) drives fuel
rate; MAF = fuel rate × AFR × density (the inverse of the rules' MAF → fuel); the tank gauge
(PID 0x2F) reads the true level plus a few % of slosh while moving; coolant warms with
a time constant toward the thermostat, cools toward ambient with the engine off, and
climbs toward `peak_c` in an overheat phase. With the engine off the bus answers
`NO DATA`, and `UNABLE TO CONNECT` once it has slept (`bus_sleep_s` after engine off);
`ATRV` (`battery_volts`) always answers.
"""

from __future__ import annotations

import bisect
import math
import random
import re
import threading
from dataclasses import dataclass, replace

from hil.adapter import PROTOCOLS, Profile, dtc_messages, vin_messages

PHASE_KINDS = ("city", "highway", "idle", "park", "refuel", "theft", "overheat", "dtc", "weak_battery")
ENGINE_ON_KINDS = ("city", "highway", "idle", "overheat", "dtc")
DRIVE_PROFILES = ("city", "highway", "idle")

# The mode 01 PIDs this model answers; a scenario may restrict them (`supported_pids`).
MODELLED_PIDS = (0x01, 0x04, 0x05, 0x06, 0x07, 0x0C, 0x0D, 0x0F, 0x10, 0x11, 0x1C, 0x1F, 0x21, 0x2F, 0x31,
                 0x33, 0x41, 0x42, 0x46, 0x4E, 0x51, 0x5E, 0xA6)
# Readiness monitors (PID 0x01/0x41 bytes B–D, spark ignition): name -> (byte, available bit);
# the "incomplete" bit is 4 higher in byte B, the same bit of byte D for byte C's.
MONITORS = {"misfire": (1, 0x01), "fuel_system": (1, 0x02), "components": (1, 0x04),
            "catalyst": (2, 0x01), "heated_catalyst": (2, 0x02), "evap": (2, 0x04), "secondary_air": (2, 0x08),
            "ac": (2, 0x10), "o2_sensor": (2, 0x20), "o2_heater": (2, 0x40), "egr": (2, 0x80)}
# The ECUs that answer (response ids 7E8, 7E9, ...): a dtc phase names one by index.
ECUS = ("engine", "transmission")
CRANK_S = 4.0  # an engine start draws the battery down for this long (a weak one cranks slowly)
BITMAP_PIDS = (0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0)
MODE09_PIDS = (0x02,)

FUELS = {
    # stoichiometric AFR, density g/L (as the rules use them), PID 0x51 code, fuel per kW relative to petrol
    "petrol": (14.7, 740.0, 0x01, 1.0),
    "diesel": (14.5, 830.0, 0x04, 0.78),
}

_DT_ON = 0.5    # s: integration step with the engine running
_DT_OFF = 10.0  # s: engine off (only coolant, refuel and theft change, all smooth)
_THERMOSTAT_C = 90.0
_IDLE_RPM = 780.0
_MASS_KG = 1350.0
_GEARS = ((0.0, 118.0), (16.0, 68.0), (32.0, 46.0), (52.0, 35.0), (72.0, 28.5), (94.0, 23.5))


class EcuMessage(bytes):
    """One ECU message (service|0x40 first) and the index of the ECU that sent it (0 the
    engine): bytes wherever bytes are expected, and the emulator prints its header from .ecu."""

    ecu: int

    def __new__(cls, data: bytes, ecu: int = 0) -> EcuMessage:
        m = super().__new__(cls, data)
        m.ecu = ecu
        return m


class VehicleError(ValueError):
    """A bad vehicle parameter or phase description."""


@dataclass(frozen=True)
class VehicleParams:
    vin: str = "WVWZZZ1KZAW386754"  # python-OBD strips 0, 1, 2 from both ends of a VIN
    tank_l: float = 50.0
    fuel_type: str = "petrol"
    start_fuel_pct: float = 60.0
    start_odometer_km: float = 42000.0
    distance_since_clear_km: float = 1500.0
    supported_pids: tuple[int, ...] = MODELLED_PIDS
    protocol: str = "CAN11/500"
    ambient_c: float = 18.0
    start_coolant_c: float | None = None  # None: cold start at ambient
    battery_v: float = 12.6               # resting volts of a healthy battery
    running_v: float = 14.2
    bus_sleep_s: float = 600.0            # engine off this long → UNABLE TO CONNECT
    stored_dtcs: tuple[str, ...] = ()
    # the health check's conditions (obdsync check)
    monitors_incomplete: tuple[str, ...] = ()  # names from MONITORS, not ready since the last clear
    minutes_since_clear: float = 6000.0   # PID 0x4E at t = 0 (it counts on with sim time)
    stft_pct: float = 0.0                 # PID 0x06, bank 1 short-term fuel trim
    ltft_pct: float = 0.0                 # PID 0x07, bank 1 long-term: > +10 % is a lean engine
    thermostat_c: float = 90.0            # a thermostat stuck open regulates lower ...
    warmup_factor: float = 1.0            # ... and warms the engine this many times slower
    crank_v: float | None = None          # volts while cranking (None: not modelled, no dip)
    seed: int = 1

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-HJ-NPR-Z0-9]{17}", self.vin):
            raise VehicleError(f"vin must be 17 characters A-Z/0-9 without I, O, Q: {self.vin!r}")
        if self.fuel_type not in FUELS:
            raise VehicleError(f"fuel_type must be one of {sorted(FUELS)}, got {self.fuel_type!r}")
        if not 5 <= self.tank_l <= 400:
            raise VehicleError(f"tank_l must be 5..400 litres, got {self.tank_l!r}")
        if not 0 <= self.start_fuel_pct <= 100:
            raise VehicleError(f"start_fuel_pct must be 0..100, got {self.start_fuel_pct!r}")
        if self.start_odometer_km < 0 or self.distance_since_clear_km < 0:
            raise VehicleError("start_odometer_km and distance_since_clear_km must be >= 0")
        if self.protocol not in PROTOCOLS:
            raise VehicleError(f"protocol must be one of {sorted(PROTOCOLS)}, got {self.protocol!r}")
        bad = [p for p in self.supported_pids if p not in MODELLED_PIDS]
        if bad:
            raise VehicleError("supported_pids not modelled: " + ", ".join(f"0x{p:02X}" for p in bad)
                               + "; modelled: " + ", ".join(f"0x{p:02X}" for p in MODELLED_PIDS))
        for code in self.stored_dtcs:
            dtc_bytes(code)
        unknown = [m for m in self.monitors_incomplete if m not in MONITORS]
        if unknown:
            raise VehicleError(f"monitors_incomplete: unknown {unknown}; known: {sorted(MONITORS)}")
        if not (-100 < self.stft_pct < 99.3 and -100 < self.ltft_pct < 99.3):
            raise VehicleError("fuel trims must be between -100 and 99.2 %")
        if not self.warmup_factor > 0:
            raise VehicleError(f"warmup_factor must be > 0, got {self.warmup_factor!r}")


@dataclass(frozen=True)
class Phase:
    kind: str
    duration_s: float
    speedup: float = 1.0
    name: str = ""
    litres: float | None = None    # refuel: litres added; theft: litres taken
    to_pct: float | None = None    # refuel: fill up to this level instead
    code: str | None = None        # dtc: e.g. "P0301"
    ecu: int = 0                   # dtc: which ECU stores it (ECUS: 0 engine 7E8, 1 transmission 7E9)
    pending: bool = False          # dtc: pending only (no MIL)
    at_s: float | None = None      # dtc: seconds into the phase (default: a third)
    peak_c: float = 118.0          # overheat: coolant heads here
    end_volts: float = 11.7        # weak_battery: resting volts at the end of the phase
    alternator: bool = True        # engine-on phases: False = charging fault
    charging_v: float | None = None  # engine-on phases: a weak alternator charges only to this
    drive: str = "city"            # overheat, dtc: the speed profile to drive

    def __post_init__(self) -> None:
        if self.kind not in PHASE_KINDS:
            raise VehicleError(f"phase kind must be one of {list(PHASE_KINDS)}, got {self.kind!r}")
        if not self.duration_s > 0:
            raise VehicleError(f"phase {self.label}: duration_s must be > 0, got {self.duration_s!r}")
        if not self.speedup > 0:
            raise VehicleError(f"phase {self.label}: speedup must be > 0, got {self.speedup!r}")
        if self.kind == "refuel" and (self.litres is None) == (self.to_pct is None):
            raise VehicleError(f"phase {self.label}: refuel needs exactly one of litres, to_pct")
        if not 0 <= self.ecu < len(ECUS):
            raise VehicleError(f"phase {self.label}: ecu must be 0..{len(ECUS) - 1} ({', '.join(ECUS)})")
        if self.kind == "theft" and not (self.litres and self.litres > 0):
            raise VehicleError(f"phase {self.label}: theft needs litres > 0")
        if self.kind == "dtc":
            if not self.code:
                raise VehicleError(f"phase {self.label}: dtc needs a code such as 'P0301'")
            dtc_bytes(self.code)
            if self.at_s is not None and not 0 <= self.at_s <= self.duration_s:
                raise VehicleError(f"phase {self.label}: at_s must lie within the phase")
        if self.drive not in DRIVE_PROFILES:
            raise VehicleError(f"phase {self.label}: drive must be one of {list(DRIVE_PROFILES)}")

    @property
    def label(self) -> str:
        return self.name or self.kind

    @property
    def dtc_code(self) -> str:
        """dtc: the code, upper case (__post_init__ made sure a dtc phase has one)."""
        if self.code is None:
            raise VehicleError(f"phase {self.label}: a {self.kind} phase has no code")
        return self.code.upper()

    @property
    def theft_litres(self) -> float:
        """theft: the litres taken (__post_init__ made sure a theft phase has them)."""
        if self.litres is None:
            raise VehicleError(f"phase {self.label}: a {self.kind} phase takes no litres")
        return self.litres

    @property
    def engine_on(self) -> bool:
        return self.kind in ENGINE_ON_KINDS

    @property
    def profile(self) -> str | None:
        if self.kind in DRIVE_PROFILES:
            return self.kind
        if self.kind in ("overheat", "dtc"):
            return self.drive
        return None


@dataclass(frozen=True)
class Truth:
    """What the car really is at sim second `t` (the gauge reading is `fuel_pct_reported`)."""
    t: float
    phase: str
    phase_index: int
    engine_on: bool
    bus: str                     # "awake", "no_data" (ignition off) or "asleep"
    speed_kmh: float
    accel_mps2: float
    rpm: float
    throttle_pct: float
    load_pct: float
    coolant_c: float
    intake_c: float
    ambient_c: float
    maf_gps: float
    fuel_rate_lph: float
    fuel_l: float
    fuel_pct: float
    fuel_pct_reported: float
    odometer_km: float
    distance_since_clear_km: float
    run_time_s: float
    volts: float
    mil: bool
    stored_dtcs: tuple[str, ...]
    pending_dtcs: tuple[str, ...]
    permanent_dtcs: tuple[str, ...]


def dtc_bytes(code: str) -> bytes:
    """'P0301' → b'\\x03\\x01' (SAE J2012: two bits letter, two bits digit, three hex digits)."""
    m = re.fullmatch(r"([PCBU])([0-3])([0-9A-F]{3})", (code or "").upper())
    if not m:
        raise VehicleError(f"DTC must look like P0301 (letter PCBU, digit 0-3, 3 hex digits): {code!r}")
    value = ("PCBU".index(m.group(1)) << 14) | (int(m.group(2)) << 12) | int(m.group(3), 16)
    return value.to_bytes(2, "big")


def dtc_code(raw: bytes) -> str:
    v = int.from_bytes(raw[:2], "big")
    return "PCBU"[v >> 14] + str((v >> 12) & 3) + f"{v & 0xFFF:03X}"


def _hash01(seed: int, k: int) -> float:
    """Cheap deterministic noise in [0, 1) for (seed, k)."""
    x = (seed * 0x9E3779B1 + k * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
    x ^= x >> 12
    x = (x * 0x297A2D39) & 0xFFFFFFFF
    x ^= x >> 15
    return x / 4294967296.0


def _smooth_noise(seed: int, t: float, period: float) -> float:
    """Value noise in [-1, 1], smooth in t, knots every `period` seconds."""
    u = t / period
    k = math.floor(u)
    f = u - k
    f = f * f * (3 - 2 * f)
    a = _hash01(seed, k) * 2 - 1
    b = _hash01(seed, k + 1) * 2 - 1
    return a + (b - a) * f


class _Profile:
    """A phase's speed over time: piecewise linear knots, starting and ending at rest."""

    def __init__(self, kind: str | None, duration: float, rng: random.Random):
        self.duration = duration
        if kind == "city":
            knots = self._city(duration, rng)
        elif kind == "highway":
            knots = self._highway(duration, rng)
        else:
            knots = [(0.0, 0.0), (duration, 0.0)]
        self.t = [k[0] for k in knots]
        self.v = [k[1] for k in knots]

    @staticmethod
    def _city(duration: float, rng: random.Random) -> list[tuple[float, float]]:
        t, v = 0.0, 0.0
        knots = [(0.0, 0.0)]
        t += rng.uniform(2, 6)  # pull away after a moment
        knots.append((t, 0.0))
        while t < duration:
            target = rng.uniform(25, 55)
            t += (target - v) / 3.6 / rng.uniform(1.0, 2.0)
            knots.append((t, target))
            cruise = rng.uniform(8, 40)
            mid = max(15.0, target + rng.uniform(-6, 6))
            knots.append((t + cruise / 2, mid))
            t += cruise
            knots.append((t, target))
            low = 0.0 if rng.random() < 0.7 else rng.uniform(10, 20)
            t += (target - low) / 3.6 / rng.uniform(1.5, 2.5)
            knots.append((t, low))
            v = low
            if low == 0.0:
                t += rng.uniform(5, 25)
                knots.append((t, 0.0))
        return knots

    @staticmethod
    def _highway(duration: float, rng: random.Random) -> list[tuple[float, float]]:
        target = rng.uniform(105, 125)
        t = 3.0
        knots = [(0.0, 0.0), (t, 0.0)]
        t += target / 3.6 / 1.8
        knots.append((t, target))
        v = target
        while t < duration:
            hold = rng.uniform(30, 90)
            t += hold
            knots.append((t, v))
            nxt = rng.uniform(95, 130)
            t += abs(nxt - v) / 3.6 / 0.3
            knots.append((t, nxt))
            v = nxt
        return knots

    def speed(self, tau: float) -> float:
        """km/h at `tau` seconds into the phase; ramps to rest at the phase end."""
        if tau <= 0 or tau >= self.duration:
            return 0.0
        i = bisect.bisect_right(self.t, tau)
        if i >= len(self.t):
            v = self.v[-1]
        else:
            t0, t1 = self.t[i - 1], self.t[i]
            v0, v1 = self.v[i - 1], self.v[i]
            v = v0 + (v1 - v0) * (tau - t0) / (t1 - t0) if t1 > t0 else v1
        # brake to a stop at 2 m/s² before the phase ends
        return max(0.0, min(v, (self.duration - tau) * 2.0 * 3.6))


@dataclass
class _State:
    t: float
    step: int            # index of the last committed grid step within the phase
    phase: int
    fuel_l: float
    odo_km: float
    coolant_c: float
    run_s: float         # since engine start (PID 0x1F)
    phase_fuel0: float   # fuel at the start of the current phase (refuel to_pct)


class Vehicle:
    """The car: answers OBD requests and tells the truth at any sim time."""

    def __init__(self, params: VehicleParams | None = None, phases: list[Phase] | tuple[Phase, ...] = (),
                 profile: Profile | None = None):
        """profile (hil.adapter): the bus's message shapes, ECUs beside the engine, batches
        refused; its protocol overrides params.protocol."""
        self.profile = profile or Profile(name="default", protocol=(params or VehicleParams()).protocol)
        params = replace(params or VehicleParams(), protocol=self.profile.protocol)
        self.params = params
        self.phases = tuple(phases) or (Phase("idle", 3600.0),)
        afr, density, fuel_code, fuel_factor = FUELS[self.params.fuel_type]
        self._afr, self._density, self._fuel_code, self._fuel_factor = afr, density, fuel_code, fuel_factor
        self.starts: list[float] = []
        t = 0.0
        for p in self.phases:
            self.starts.append(t)
            t += p.duration_s
        self.duration_s = t
        self._profiles = [_Profile(p.profile, p.duration_s, random.Random(f"{self.params.seed}:{i}"))
                          for i, p in enumerate(self.phases)]
        self._supported = frozenset(self.params.supported_pids)
        self._bitmaps = self._build_bitmaps()
        self._off_since = self._engine_off_starts()
        self._rest_v = self._resting_volts_at_phase_starts()
        # DTC history: (t, action, code); clears are appended when mode 04 is served.
        self._dtc_events: list[tuple[float, str, str]] = [(-1.0, "stored", c) for c in self.params.stored_dtcs]
        self._ecu_of: dict[str, int] = {}  # code -> the ECU that stores it (default: the engine)
        for i, p in enumerate(self.phases):
            if p.kind == "dtc":
                at = p.at_s if p.at_s is not None else p.duration_s / 3
                self._dtc_events.append((self.starts[i] + at, "pending" if p.pending else "stored", p.dtc_code))
                self._ecu_of[p.dtc_code] = p.ecu
        self._dtc_events.sort(key=lambda e: e[0])
        self._clear_odo: list[tuple[float, float]] = []  # (t, odometer at the clear)
        p0 = self.params
        cool0 = p0.ambient_c if p0.start_coolant_c is None else p0.start_coolant_c
        self._s0 = _State(0.0, 0, 0, p0.tank_l * p0.start_fuel_pct / 100.0, p0.start_odometer_km, cool0, 0.0,
                          p0.tank_l * p0.start_fuel_pct / 100.0)
        self._s = replace(self._s0)
        self._checkpoints = [replace(self._s0)]  # state at each phase start reached
        # the emulator thread serves requests while tests and the checker ask for the truth
        self._lock = threading.RLock()

    # -- static structure -----------------------------------------------------------------

    def _build_bitmaps(self) -> dict[int, bytes]:
        """Mode 01 'PIDs supported' answers: the groups a client can reach, and nothing else."""
        sup = self._supported
        highest = max(sup) if sup else 0
        maps: dict[int, bytes] = {}
        for base in BITMAP_PIDS:
            if base and (base - 0x20) not in maps:
                break
            if base and not (maps[base - 0x20][3] & 1):
                break
            bits = 0
            for pid in range(base + 1, base + 0x21):
                if pid in sup or (pid == base + 0x20 and highest > base + 0x20):
                    bits |= 1 << (31 - (pid - base - 1))
            maps[base] = bits.to_bytes(4, "big")
        return maps

    def _engine_off_starts(self) -> list[float | None]:
        """For each phase with the engine off: when the engine went off (None: never ran)."""
        out: list[float | None] = []
        since: float | None = None
        for i, p in enumerate(self.phases):
            if p.engine_on:
                out.append(None)
                since = None
            else:
                if since is None:
                    since = self.starts[i] if i > 0 else -self.params.bus_sleep_s * 2
                out.append(since)
        return out

    def _resting_volts_at_phase_starts(self) -> list[float]:
        v = self.params.battery_v
        out = []
        for p in self.phases:
            out.append(v)
            if p.kind == "weak_battery":
                v = p.end_volts
        return out

    def phase_at(self, t: float) -> int:
        if t <= 0:
            return 0
        return max(0, min(len(self.phases) - 1, bisect.bisect_right(self.starts, t) - 1))

    # -- instantaneous quantities (no integrated state) ------------------------------------

    def _tau(self, i: int, t: float) -> float:
        return min(max(t - self.starts[i], 0.0), self.phases[i].duration_s)

    def _speed(self, i: int, t: float) -> float:
        return self._profiles[i].speed(self._tau(i, t))

    def _accel(self, i: int, t: float) -> float:
        return (self._speed(i, t + 0.5) - self._speed(i, t - 0.5)) / 3.6

    def _rpm(self, i: int, t: float, v: float) -> float:
        if not self.phases[i].engine_on:
            return 0.0
        ratio = _GEARS[0][1]
        for floor_kmh, r in _GEARS:
            if v >= floor_kmh:
                ratio = r
        rpm = max(_IDLE_RPM, v * ratio) if v > 3 else _IDLE_RPM
        return rpm + 25.0 * _smooth_noise(self.params.seed + 7, t, 1.3)

    def _road_kw(self, v_kmh: float, a: float) -> float:
        v = v_kmh / 3.6
        force = _MASS_KG * a + 0.5 * 1.2 * 0.65 * v * v + 0.012 * _MASS_KG * 9.81
        return max(0.0, force * v) / 1000.0 if v > 0 else 0.0

    def _fuel_lph(self, i: int, v: float, a: float) -> float:
        if not self.phases[i].engine_on:
            return 0.0
        # idle consumption plus ≈0.41 L/h per kW at the wheels (27 % efficiency, 32 MJ/L)
        return (0.75 + 0.41 * self._road_kw(v, a)) * self._fuel_factor

    def _load(self, i: int, v: float, a: float, rpm: float) -> float:
        if not self.phases[i].engine_on:
            return 0.0
        avail = 85.0 * min(1.0, rpm / 5500.0)  # kW the engine could give at this rpm
        return max(12.0, min(100.0, 12.0 + 100.0 * self._road_kw(v, a) / 0.9 / max(avail, 1.0)))

    def _throttle(self, i: int, v: float, a: float) -> float:
        if not self.phases[i].engine_on:
            return 0.0
        return max(11.0, min(100.0, 13.0 + 0.22 * v + 28.0 * max(a, 0.0)))

    def _volts(self, i: int, t: float) -> float:
        p = self.phases[i]
        rest = self._rest_v[i]
        if p.kind == "weak_battery":
            f = self._tau(i, t) / p.duration_s
            rest = rest + (p.end_volts - rest) * f
        if p.engine_on:
            crank = self.params.crank_v
            if crank is not None and self._tau(i, t) < CRANK_S and (i == 0 or not self.phases[i - 1].engine_on):
                return crank
            if p.alternator:
                v = p.charging_v if p.charging_v is not None else self.params.running_v
                return v + 0.04 * _smooth_noise(self.params.seed + 3, t, 2.0)
            # a dead alternator: the battery alone feeds the car and slowly drains
            return rest - 0.25 - 0.4 * min(1.0, self._tau(i, t) / 1800.0)
        off = self._off_since[i]
        # surface charge right after the engine stops fades over minutes
        surface = 0.3 * math.exp(-(t - off) / 300.0) if off is not None and off >= 0 else 0.0
        return rest + surface

    def _bus(self, i: int, t: float) -> str:
        if self.phases[i].engine_on:
            return "awake"
        off = self._off_since[i]
        if off is None or t - off >= self.params.bus_sleep_s:
            return "asleep"
        return "no_data"

    # -- integration -------------------------------------------------------------------------

    def _step(self, s: _State, t1: float) -> None:
        """Advance `s` from s.t to t1 (both within phase s.phase)."""
        i = s.phase
        p = self.phases[i]
        dt = t1 - s.t
        if dt <= 0:
            return
        tm = (s.t + t1) / 2
        if p.engine_on:
            v = self._speed(i, tm)
            a = self._accel(i, tm)
            s.odo_km += v / 3600.0 * dt
            s.fuel_l = max(0.0, s.fuel_l - self._fuel_lph(i, v, a) * dt / 3600.0)
            s.run_s += dt
            if p.kind == "overheat":
                target, tau = p.peak_c, 110.0
            else:
                thermostat = self.params.thermostat_c
                target, tau = thermostat, (260.0 - 60.0 * min(1.0, v / 100.0)) * self.params.warmup_factor
                if s.coolant_c > thermostat:  # the thermostat opens wide, fan on
                    tau = 90.0
        else:
            target, tau = self.params.ambient_c, 2400.0
            if p.kind == "refuel":
                s.fuel_l = min(self.params.tank_l, s.fuel_l + self._refuel_litres(p, s.phase_fuel0) * dt / p.duration_s)
            elif p.kind == "theft":
                s.fuel_l = max(0.0, s.fuel_l - p.theft_litres * dt / p.duration_s)
        s.coolant_c += (target - s.coolant_c) * (1.0 - math.exp(-dt / tau))
        s.t = t1

    def _refuel_litres(self, p: Phase, fuel0: float) -> float:
        if p.litres is not None:
            return p.litres
        if p.to_pct is None:  # __post_init__ asks a refuel phase for one of them
            raise VehicleError(f"phase {p.label}: a refuel needs litres or to_pct")
        return max(0.0, self.params.tank_l * p.to_pct / 100.0 - fuel0)

    def _grid(self, i: int, k: int) -> float:
        p = self.phases[i]
        dt = _DT_ON if p.engine_on else _DT_OFF
        return min(self.starts[i] + k * dt, self.starts[i] + p.duration_s)

    def _state_at(self, t: float) -> _State:
        t = max(0.0, t)
        if t < self._s.t:  # going back: restart from the last phase start at or before t
            i = self.phase_at(t)
            cps = [c for c in self._checkpoints if c.t <= t + 1e-12 and c.phase <= i]
            self._s = replace(cps[-1] if cps else self._s0)
        s = self._s
        while True:
            last = len(self.phases) - 1
            end = self.starts[s.phase] + self.phases[s.phase].duration_s
            nxt = self._grid(s.phase, s.step + 1)
            if nxt <= t + 1e-9 and (nxt > s.t or s.phase < last):
                self._step(s, nxt)
                s.step += 1
                if nxt >= end - 1e-9 and s.phase < last:
                    was_on = self.phases[s.phase].engine_on
                    s.phase += 1
                    s.step = 0
                    s.t = self.starts[s.phase]
                    s.phase_fuel0 = s.fuel_l
                    if not was_on and self.phases[s.phase].engine_on:
                        s.run_s = 0.0
                    if not any(c.phase == s.phase for c in self._checkpoints):
                        self._checkpoints.append(replace(s))
                continue
            break
        out = replace(s)
        if t > out.t:
            if out.t >= end - 1e-9 and s.phase == last:
                self._beyond(out, t)
            else:
                self._step(out, t)
        return out

    def _beyond(self, s: _State, t: float) -> None:
        """After the last phase the car stays as it ended: idling or parked."""
        if self.phases[s.phase].engine_on:
            s.fuel_l = max(0.0, s.fuel_l - 0.75 * self._fuel_factor * (t - s.t) / 3600.0)
            s.run_s += t - s.t
        s.t = t

    # -- DTCs --------------------------------------------------------------------------------

    def _dtcs(self, t: float) -> tuple[list[str], list[str], list[str]]:
        stored: list[str] = []
        pending: list[str] = []
        permanent: list[str] = []
        for when, action, code in self._dtc_events:
            if when > t:
                break
            if action == "clear":
                stored.clear()
                pending.clear()
            elif action == "stored":
                for lst in (stored, pending, permanent):
                    if code not in lst:
                        lst.append(code)
            elif action == "pending" and code not in pending:
                pending.append(code)
        return stored, pending, permanent

    def clear_codes(self, t: float) -> None:
        """Mode 04: stored and pending codes go, the MIL goes off; permanent codes stay."""
        with self._lock:
            self._clear_codes(t)

    def _clear_codes(self, t: float) -> None:
        self._dtc_events.append((t, "clear", ""))
        self._dtc_events.sort(key=lambda e: e[0])
        self._clear_odo.append((t, self._state_at(t).odo_km))
        self._clear_odo.sort()

    def _since_clear(self, t: float, odo: float) -> float:
        base = self.params.start_odometer_km - self.params.distance_since_clear_km
        for when, o in self._clear_odo:
            if when <= t:
                base = o
        return max(0.0, odo - base)

    def _minutes_since_clear(self, t: float) -> float:
        """PID 0x4E: engine running time since the clear, in minutes."""
        clears = [when for when, action, _c in self._dtc_events if action == "clear" and when <= t]
        since = clears[-1] if clears else 0.0
        run = sum(max(0.0, min(t, st + p.duration_s) - max(since, st))
                  for st, p in zip(self.starts, self.phases, strict=True) if p.engine_on)
        return run / 60.0 + (0.0 if clears else self.params.minutes_since_clear)

    def _mil_km(self, tr: Truth) -> float:
        """PID 0x21: km driven since the MIL came on (0 while it is off)."""
        if not tr.mil:
            return 0.0
        on = None
        for when, action, _code in self._dtc_events:
            if when > tr.t:
                break
            if action == "clear":
                on = None
            elif action == "stored" and on is None:
                on = max(0.0, when)
        return max(0.0, tr.odometer_km - self._state_at(on).odo_km) if on is not None else 0.0

    def freeze_frame(self, t: float) -> tuple[int, str, dict[int, bytes]] | None:
        """Mode 02 frame 0 at sim second t: (ECU index, the code that stored it, PID -> data
        as at the moment it set), None when no stored code holds a frame."""
        with self._lock:
            return self._freeze(t)

    def _freeze(self, t: float) -> tuple[int, str, dict[int, bytes]] | None:
        stored, _p, _perm = self._dtcs(t)
        if not stored:
            return None
        code = stored[0]
        when = next(w for w, action, c in self._dtc_events if action == "stored" and c == code)
        at = self._truth(max(0.0, when))
        data = {pid: self.pid_data(pid, at) for pid in (0x04, 0x05, 0x0C, 0x0D)}
        return self._ecu_of.get(code, 0), code, {pid: d for pid, d in data.items() if d is not None}

    # -- public -----------------------------------------------------------------------------

    def battery_volts(self, t: float) -> float:
        """What ATRV reads at sim second t."""
        return self._volts(self.phase_at(t), max(0.0, t))

    def truth(self, t: float) -> Truth:
        with self._lock:
            return self._truth(max(0.0, float(t)))

    def _truth(self, t: float) -> Truth:
        i = self.phase_at(t)
        p = self.phases[i]
        s = self._state_at(t)
        v = self._speed(i, t) if t < self.duration_s else 0.0
        a = self._accel(i, t) if t < self.duration_s else 0.0
        rpm = self._rpm(i, t, v)
        fuel_lph = self._fuel_lph(i, v, a)
        fuel_pct = 100.0 * s.fuel_l / self.params.tank_l
        reported = fuel_pct
        if v > 3:
            amp = min(4.0, 1.2 + 1.2 * abs(a))
            reported = min(100.0, max(0.0, fuel_pct + amp * _smooth_noise(self.params.seed + 11, t, 1.7)))
        hot = max(0.0, min(1.0, (s.coolant_c - self.params.ambient_c) / 70.0))
        intake = self.params.ambient_c + 3.0 + 9.0 * hot * max(0.0, 1.0 - v / 50.0)
        stored, pending, permanent = self._dtcs(t)
        return Truth(
            t=t, phase=p.label, phase_index=i, engine_on=p.engine_on, bus=self._bus(i, t),
            speed_kmh=v, accel_mps2=a, rpm=rpm, throttle_pct=self._throttle(i, v, a),
            load_pct=self._load(i, v, a, rpm), coolant_c=s.coolant_c, intake_c=intake,
            ambient_c=self.params.ambient_c,
            maf_gps=fuel_lph * self._density / 3600.0 * self._afr, fuel_rate_lph=fuel_lph,
            fuel_l=s.fuel_l, fuel_pct=fuel_pct, fuel_pct_reported=reported, odometer_km=s.odo_km,
            distance_since_clear_km=self._since_clear(t, s.odo_km), run_time_s=s.run_s if p.engine_on else 0.0,
            volts=self.battery_volts(t), mil=bool(stored), stored_dtcs=tuple(stored),
            pending_dtcs=tuple(pending), permanent_dtcs=tuple(permanent),
        )

    def supported_bitmap(self, base: int) -> bytes | None:
        return self._bitmaps.get(base)

    def answered_pids(self) -> set[int]:
        """Every mode 01 PID this vehicle answers (bitmaps included)."""
        return set(self._supported) | set(self._bitmaps)

    def pid_data(self, pid: int, tr: Truth) -> bytes | None:
        """The data bytes of mode 01 `pid` for the truth `tr` (None: not answered)."""
        if pid in self._bitmaps:
            return self._bitmaps[pid]
        if pid not in self._supported:
            return None

        def u8(x: float) -> bytes:
            return bytes([max(0, min(255, int(round(x))))])

        def u16(x: float) -> bytes:
            return max(0, min(0xFFFF, int(round(x)))).to_bytes(2, "big")

        if pid in (0x01, 0x41):  # monitors since the clear / this drive cycle: the same here
            count = min(len(tr.stored_dtcs), 0x7F)
            b, c, d = 0x07 | (0x08 if self.params.fuel_type == "diesel" else 0), 0x65, 0x00
            for name in self.params.monitors_incomplete:
                byte, bit = MONITORS[name]
                if byte == 1:
                    b |= bit << 4
                else:
                    c, d = c | bit, d | bit
            a = ((0x80 if tr.mil else 0) | count) if pid == 0x01 else 0x00
            return bytes([a, b, c, d])
        if pid in (0x06, 0x07):  # (A − 128) × 100 / 128 %
            trim = self.params.stft_pct if pid == 0x06 else self.params.ltft_pct
            return u8(128 + trim * 128 / 100)
        if pid == 0x21:
            return u16(self._mil_km(tr))
        if pid == 0x4E:
            return u16(self._minutes_since_clear(tr.t))
        if pid == 0x04:
            return u8(tr.load_pct * 255 / 100)
        if pid == 0x05:
            return u8(tr.coolant_c + 40)
        if pid == 0x0C:
            return u16(tr.rpm * 4)
        if pid == 0x0D:
            return u8(tr.speed_kmh)
        if pid == 0x0F:
            return u8(tr.intake_c + 40)
        if pid == 0x10:
            return u16(tr.maf_gps * 100)
        if pid == 0x11:
            return u8(tr.throttle_pct * 255 / 100)
        if pid == 0x1C:
            return b"\x06"  # EOBD
        if pid == 0x1F:
            return u16(tr.run_time_s)
        if pid == 0x2F:
            return u8(tr.fuel_pct_reported * 255 / 100)
        if pid == 0x31:
            return u16(tr.distance_since_clear_km)
        if pid == 0x33:
            return b"\x65"  # 101 kPa
        if pid == 0x42:
            return u16(tr.volts * 1000)
        if pid == 0x46:
            return u8(tr.ambient_c + 40)
        if pid == 0x51:
            return bytes([self._fuel_code])
        if pid == 0x5E:
            return u16(tr.fuel_rate_lph / 0.05)
        if pid == 0xA6:
            return max(0, min(0xFFFFFFFF, int(tr.odometer_km * 10))).to_bytes(4, "big")
        return None

    def respond(self, request: str, t: float) -> list[bytes] | str:
        """Serve one OBD request at sim second t.

        Returns the ECUs' messages (each an ISO-TP payload, service|0x40 first, an EcuMessage:
        bytes that know their ECU) or the ELM327 error text. Mode 04 clears the codes as a
        side effect."""
        with self._lock:
            r = self._respond(request, t)
            req = re.sub(r"\s+", "", request or "").upper()
            if self.profile.ecus and req[:4] == "0100" and not isinstance(r, str):
                # the profile's ECUs answer their supported-PID bitmap too
                for i, ecu in enumerate(self.profile.ecus, start=1):
                    bits = 0
                    for p in ecu.pids:
                        if 1 <= p <= 0x20:
                            bits |= 1 << (32 - p)
                    r.append((i, b"\x41\x00" + bits.to_bytes(4, "big")))
        return r if isinstance(r, str) else [EcuMessage(m, ecu) for ecu, m in r]

    def _respond(self, request: str, t: float) -> list[tuple[int, bytes]] | str:
        req = re.sub(r"\s+", "", request or "").upper()
        if not req or not re.fullmatch(r"[0-9A-F]+", req):
            return "?"
        if len(req) % 2:
            req = req[:-1]  # the response-count digit changes timing only
        data = bytes.fromhex(req)
        if len(data) > 7 or not data:
            return "?"
        tr = self.truth(t)
        if tr.bus == "asleep":
            return "UNABLE TO CONNECT"
        if tr.bus != "awake":
            return "NO DATA"
        mode, pids = data[0], data[1:]
        if mode == 0x01:
            if not 1 <= len(pids) <= 6:
                return "NO DATA"
            if len(pids) > 1 and (self.profile.multi_pid == "no_data" or not self.profile.is_can):
                return "NO DATA"  # an ECU that answers PIDs one at a time (all of K-line and J1850)
            out = bytearray([0x41])
            for pid in pids:
                d = self.pid_data(pid, tr)
                if d is not None:
                    out += bytes([pid]) + d
            return [(0, bytes(out))] if len(out) > 1 else "NO DATA"
        if mode in (0x03, 0x07, 0x0A) and not pids:
            # One message per ECU that has codes (the engine answers always), in ECU order.
            codes = {0x03: tr.stored_dtcs, 0x07: tr.pending_dtcs, 0x0A: tr.permanent_dtcs}[mode]
            # One message (or legacy frames) per ECU that has codes, in ECU order: the engine
            # answers always, the profile's ECUs beside it too (with no codes, `43 00`).
            per: dict[int, list[str]] = {0: []}
            for c in codes:
                per.setdefault(self._ecu_of.get(c, 0), []).append(c)
            cleared = any(action == "clear" and when <= t for when, action, _ in self._dtc_events)
            for i, ecu in enumerate(self.profile.ecus, start=1):
                mine = per.setdefault(i, [])
                if not cleared or mode == 0x0A:
                    mine += [c for c in (ecu.pending_dtcs + ecu.stored_dtcs if mode == 0x07 else ecu.stored_dtcs)
                             if c not in mine]
            return [(ecu, m) for ecu in sorted(per)
                    for m in dtc_messages(self.profile, mode, [dtc_bytes(c) for c in per[ecu]])]
        if mode == 0x02 and len(pids) == 2:  # freeze frame: 02 PID FRAME
            ff = self._freeze(t)
            if ff is None or pids[1] != 0:
                return "NO DATA"
            ff_ecu, code, frame = ff
            if pids[0] == 0x02:
                return [(ff_ecu, b"\x42\x02\x00" + dtc_bytes(code))]
            if pids[0] in frame:
                return [(ff_ecu, b"\x42" + bytes((pids[0], 0)) + frame[pids[0]])]
            return "NO DATA"
        if mode == 0x04 and not pids:
            self.clear_codes(t)
            return [(0, b"\x44")]
        if mode == 0x09 and len(pids) == 1:
            if pids[0] == 0x00:
                bits = 0
                for p in MODE09_PIDS:
                    bits |= 1 << (32 - p)
                return [(0, b"\x49\x00" + bits.to_bytes(4, "big"))]
            if pids[0] == 0x02:
                return [(0, m) for m in vin_messages(self.profile, self.params.vin.encode("ascii"))]
        return "NO DATA"

    def respond_all(self, request: str, t: float) -> list[tuple[int, bytes]] | str:
        """respond() as (ECU index, message) pairs in ECU order: 0 the engine, the profile's
        ECUs beside it from 1 (as ECUS numbers them); or the ELM327 error text."""
        r = self.respond(request, t)
        return r if isinstance(r, str) else [(getattr(m, "ecu", 0), bytes(m)) for m in r]

    def answer(self, request: str, t: float) -> list[str]:
        """The lines an ELM327 (ATH0, ATS1, CAN auto-formatting) prints for `request`."""
        r = self.respond(request, t)
        if isinstance(r, str):
            return [r]
        lines: list[str] = []
        for msg in r:
            lines += format_isotp(msg)
        return lines


def format_isotp(msg: bytes) -> list[str]:
    """One ISO-TP message as an ELM327 prints it with headers off: a single frame's data,
    or the length line (3 hex digits) and numbered frames `0:`, `1:` … (6 then 7 bytes)."""
    hx = [f"{b:02X}" for b in msg]
    if len(msg) <= 7:
        return [" ".join(hx)]
    lines = [f"{len(msg):03X}", "0: " + " ".join(hx[:6])]
    rest = hx[6:]
    n = 1
    while rest:
        lines.append(f"{n & 0xF:X}: " + " ".join(rest[:7]))
        rest = rest[7:]
        n += 1
    return lines
