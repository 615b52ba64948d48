"""The vehicle health check (`obdsync check`): findings, each with a severity and what to
do, computed from what the store holds (so it works offline, on any past database) and
refreshed by live reads when a dongle is at hand.

A :class:`Finding` is data — ``--json`` prints the list, the text output and other
renderings are made of it. Titles and advice are in the user's language (i18n) and
units; ``values`` keep the numbers in SI/metric units for machines.

What is looked at (the firmware's default poll plan reads the slow PIDs for this):
- trouble codes: the latest stored (mode 03), pending (07) and permanent (0A) reads,
  each with its description (python-OBD's table, then ``decode.OWN_DTC``), its system,
  and a plain "no known description" for manufacturer-specific codes; the MIL (0x01)
  and the distance driven with it on (0x21);
- readiness monitors: PID 0x01 bytes B–D (since the codes were cleared), 0x41 (this
  drive cycle); any incomplete one means "not ready for an emissions inspection";
- the last clear: distance (0x31) and engine time (0x4E) since — recent on a used car
  is worth saying;
- fuel trims (0x06–0x09): the long-term trim's mean beyond ±10 % is a lean/rich engine;
- cooling: the warm-up time from a cold start to operating temperature (a thermostat
  stuck open warms slowly), the overheating history;
- the 12 V system: resting voltage after parking, the dip while cranking (samples
  around an engine start), the charging voltage while running;
- the PIDs the car answered and the protocol, for a mechanic.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from obdsync.decode import (
    SIG_MIL,
    DecodeError,
    decode_with_obd,
    dtc_info,
    signal_name,
)
from obdsync.i18n import N_, _
from obdsync.messages import Units
from obdsync.model import SampleRow
from protocol.channels import CH_VOLTAGE

if TYPE_CHECKING:
    from obdsync.config import Config
    from obdsync.store import Store

OK, INFO, WARNING, CRITICAL = "ok", "info", "warning", "critical"
SEVERITIES = (OK, INFO, WARNING, CRITICAL)
SECTIONS = ("codes", "readiness", "since_clear", "fuel_trim", "cooling", "battery", "vehicle")

WINDOW_MS = 30 * 86_400_000  # the last 30 days of data (counted back from the newest sample)
MODES = {0x03: "stored", 0x07: "pending", 0x0A: "permanent"}
COOLANT, RPM = 0x05, 0x0C
TRIM_PIDS = {1: (0x06, 0x07), 2: (0x08, 0x09)}  # bank: (short-term, long-term)
TRIM_WARN_PCT, TRIM_CRIT_PCT = 10.0, 20.0
TRIM_MIN_SAMPLES = 3
RECENT_CLEAR_KM, RECENT_CLEAR_MIN = 500.0, 600.0
COLD_START_C, WARM_C = 40.0, 80.0
SLOW_WARMUP_S = 15 * 60  # city driving warms a healthy engine in 5–10 min
SEGMENT_GAP_MS = 10 * 60_000
SEGMENT_MAX_GAP_MS = 2 * 3600_000
COOLED_C = 5.0
RESTING_AFTER_MS = 30 * 60_000  # surface charge gone: the battery's own voltage
START_GAP_MS = 5 * 60_000       # an RPM sample after this long without one is an engine start
CRANK_WINDOW_MS = (20_000, 10_000)
RUNNING_NEAR_MS = 10_000
# 12 V thresholds (field figures, e.g. OVMS and WiCAN docs: parked ≈ 12.4–12.8 V, running ≈ 13.5–14.5 V; a battery
# load test passes above 9.6 V while cranking).
RESTING_LOW_V, RESTING_CRIT_V, RESTING_FULL_V = 12.2, 11.8, 12.4
CRANK_WEAK_V, CRANK_LOW_V = 9.6, 10.0
CRANK_CAUGHT_V = 11.5  # a starter motor pulls any battery below this: a sample above it missed the crank
CHARGING_LOW_V, CHARGING_HIGH_V = 13.2, 14.8

LEAN_CAUSES = N_("a vacuum leak (hoses, intake gasket), a weak fuel pump or clogged filter, a dirty MAF sensor, "
                 "an exhaust leak before the O2 sensor")
RICH_CAUSES = N_("a leaking injector, too high fuel pressure, a clogged air filter, a faulty O2 or coolant "
                 "temperature sensor")


@dataclass(frozen=True)
class Finding:
    id: str
    section: str
    severity: str
    title: str
    action: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    device: str
    checked_ms: int
    findings: list[Finding]
    vehicle: dict[str, Any] | None = None
    live: bool = False

    @property
    def worst(self) -> str:
        return max((f.severity for f in self.findings), key=SEVERITIES.index, default=OK)

    def json(self) -> dict[str, Any]:
        return {"device": self.device, "checked_ms": self.checked_ms, "live": self.live, "worst": self.worst,
                "vehicle": self.vehicle, "findings": [f.json() for f in self.findings]}


# ---- the data ----------------------------------------------------------------------------------


# ATDPN digits (ELM327 datasheet), as the dongle's STATUS reports them.
PROTOCOLS = {1: "SAE J1850 PWM", 2: "SAE J1850 VPW", 3: "ISO 9141-2", 4: "ISO 14230-4 KWP (5 baud init)",
             5: "ISO 14230-4 KWP (fast init)", 6: "ISO 15765-4 CAN (11 bit, 500 kbaud)",
             7: "ISO 15765-4 CAN (29 bit, 500 kbaud)", 8: "ISO 15765-4 CAN (11 bit, 250 kbaud)",
             9: "ISO 15765-4 CAN (29 bit, 250 kbaud)", 10: "SAE J1939 CAN"}


@dataclass
class Live:
    """What a dongle said just now (``obdsync check --live``), or what the running daemon
    knows of it (its live file): the codes only from a live read."""

    dtcs: dict[int, list[str]] = field(default_factory=dict)  # mode -> codes
    ecus: dict[int, list[str]] = field(default_factory=dict)  # mode -> beside each code its ECU ("" unknown)
    protocol: str | None = None
    supported: list[int] | None = None   # mode 01 PIDs its info's bitmap names
    freeze: dict[str, Any] = field(default_factory=dict)  # code -> its freeze frame; {"error": why}
    fresh: bool = True                   # codes read just now

    @staticmethod
    def protocol_name(digit: int | None) -> str | None:
        return None if not digit else PROTOCOLS.get(digit, f"ATDPN {digit:X}")

    @staticmethod
    def pids_of(bitmap: bytes) -> list[int]:
        """The PIDs a supported-PID bitmap (info's 32 bytes: 0x01–0xFF) names, bitmap PIDs left out."""
        return [i + 1 for i in range(len(bitmap) * 8) if bitmap[i >> 3] & (0x80 >> (i & 7)) and (i + 1) & 0x1F]


class Data:
    """The store's view of one device over the window (fetched once per check)."""

    def __init__(self, store: Store, device: str) -> None:
        self.store = store
        self.device = device
        self.since = 0
        self.until = 1 << 62
        self._cache: dict[int, list[SampleRow]] = {}

    async def load(self) -> None:
        (st,) = await self.store.status(self.device)
        self.status = st
        newest = max((t for t, _v, _u in st.last_values.values()), default=None)
        if newest is not None:
            self.since = newest - WINDOW_MS
        self.channels = sorted(st.last_values)

    async def samples(self, signal: int) -> list[SampleRow]:
        if signal not in self._cache:
            self._cache[signal] = await self.store.samples(self.device, signal, since_ms=self.since,
                                                           limit=2_000_000)
        return self._cache[signal]

    async def values(self, signal: int) -> list[tuple[int, float]]:
        return [(r.time_ms, r.value) for r in await self.samples(signal) if r.value is not None]

    async def latest(self, signal: int) -> Any:
        rows = await self.samples(signal)
        return rows[-1] if rows else None


async def check(store: Store, config: Config, device: str, *, live: Live | None = None,
                now_ms: int | None = None) -> Report:
    """Every finding for ``device`` (texts in the process's language, ``config``'s units)."""
    from obdsync.vin import vehicle_json

    units = Units.of_display(config.display)
    data = Data(store, device)
    await data.load()
    out: list[Finding] = []
    for part in (_codes, _readiness, _since_clear, _fuel_trims, _cooling, _battery, _vehicle_info):
        out += await part(data, units, live)
    out.sort(key=lambda f: (SECTIONS.index(f.section), -SEVERITIES.index(f.severity)))
    return Report(device, now_ms if now_ms is not None else int(time.time() * 1000), out,
                  vehicle_json(data.status.vin), live is not None and live.fresh)


# ---- trouble codes -------------------------------------------------------------------------------


async def _codes(d: Data, u: Units, live: Live | None) -> list[Finding]:
    reads: dict[int, tuple[int | None, list[str], list[str]]] = {}
    for t, mode, codes, _approx, ecus in await d.store.dtcs(d.device, limit=200, with_ecus=True):
        reads.setdefault(mode, (t, codes, ecus))
    if live is not None and live.fresh:
        for mode, codes in live.dtcs.items():
            reads[mode] = (None, codes, live.ecus.get(mode) or [""] * len(codes))
    out: list[Finding] = []
    mil_row = await d.latest(SIG_MIL)
    mil_on = bool(mil_row and mil_row.value)
    mil_km_row = await d.latest(0x21)
    mil_km = mil_km_row.value if mil_km_row is not None and mil_km_row.value is not None else None
    if mil_on:
        title = _("Check-engine light (MIL) on")
        if mil_km is not None:
            title += _(" for {distance}").format(distance=u.distance(mil_km))
        out.append(Finding("mil", "codes", WARNING, title, _("Have the codes below diagnosed soon; "
                           "a flashing light means stop driving (misfire that damages the catalyst)"),
                           {"mil": True, "distance_with_mil_km": mil_km}))
    if not reads:
        out.append(Finding("codes.unread", "codes", INFO, _("No trouble codes read yet"),
                           _("They are read at engine start and when the MIL changes; or run `obdsync check --live`")))
        return out
    seen: dict[str, list[str]] = {}
    where: dict[str, list[str]] = {}  # code -> the ECUs that hold it, where the adapter said
    for mode in (0x03, 0x07, 0x0A):
        _t, codes, ecus = reads.get(mode) or (None, [], [])
        for code, ecu in zip(codes, ecus, strict=True):
            seen.setdefault(code, []).append(MODES[mode])
            if ecu and ecu not in where.setdefault(code, []):
                where[code].append(ecu)
    # The frames read just now, else those kept from earlier reads (each with when it was read).
    frames = {code: {**f, "read_ms": t} for code, (t, f) in (await d.store.freeze_frames(d.device)).items()}
    now = live.freeze if live is not None and live.fresh else {}
    if "error" in now:
        out.append(Finding("codes.freeze_frame", "codes", INFO, _("The freeze frame could not be read"),
                           str(now["error"]), {"error": now["error"]}))
    else:
        frames.update(now)
    for code, kinds in seen.items():
        try:
            info = dtc_info(code)
        except DecodeError:
            continue
        severity = WARNING if "stored" in kinds else INFO
        system = _(info.system)
        if info.description:
            title = f"{code} ({', '.join(_(k) for k in kinds)}, {system}): {info.description}"
        else:
            title = f"{code} ({', '.join(_(k) for k in kinds)}, {system}): " + (
                _("no known description (manufacturer-specific code)") if not info.sae else
                _("no known description"))
        if "stored" in kinds:
            action = _("Have it diagnosed; the freeze frame (engine state when it set) helps the mechanic")
        elif "pending" in kinds:
            action = _("Seen once: watch whether it comes back and turns the MIL on")
        else:
            action = _("Permanent: it clears itself once the ECU has confirmed the repair over drive cycles")
        if not info.description:
            action += _("; look the code up in the manufacturer's service information")
        if code in frames:
            action += "; " + _("freeze frame: {values}").format(values=", ".join(
                f"{name} {v:g}{' ' + unit if unit else ''}" for name, (v, unit) in frames[code]["values"].items()))
        out.append(Finding(f"dtc.{code}", "codes", severity, title, action, {
            "code": code, "status": kinds, "system": info.system, "description": info.description,
            "sae": info.sae, "ecu": ", ".join(where.get(code, ())) or None, "freeze_frame": frames.get(code)}))
    if not seen:
        t = max((r[0] for r in reads.values() if r[0] is not None), default=None)
        when = "" if t is None else " " + _("(read {when})").format(when=_date(t))
        out.append(Finding("codes.none", "codes", OK, _("No trouble codes") + when))
    return out


# ---- readiness -------------------------------------------------------------------------------------


def monitors(raw: bytes) -> dict[str, bool] | None:
    """Readiness monitors from PID 0x01/0x41 data (python-OBD's Status): name -> complete,
    for the monitors the car has; None when the bytes are not a status."""
    try:
        st = decode_with_obd(0x01, bytes(raw))
    except Exception:  # noqa: BLE001 - malformed bytes are "not known", not a crash
        return None
    if st is None or not hasattr(st, "MIL"):
        return None
    return {k: v.complete for k, v in vars(st).items() if k and hasattr(v, "available") and v.available}


MONITOR_NAMES = {
    "MISFIRE_MONITORING": N_("misfire"), "FUEL_SYSTEM_MONITORING": N_("fuel system"),
    "COMPONENT_MONITORING": N_("components"), "CATALYST_MONITORING": N_("catalyst"),
    "HEATED_CATALYST_MONITORING": N_("heated catalyst"), "EVAPORATIVE_SYSTEM_MONITORING": N_("evaporative system"),
    "SECONDARY_AIR_SYSTEM_MONITORING": N_("secondary air"), "OXYGEN_SENSOR_MONITORING": N_("oxygen sensor"),
    "OXYGEN_SENSOR_HEATER_MONITORING": N_("oxygen sensor heater"), "EGR_VVT_SYSTEM_MONITORING": N_("EGR/VVT"),
    "NMHC_CATALYST_MONITORING": N_("NMHC catalyst"), "NOX_SCR_AFTERTREATMENT_MONITORING": N_("NOx/SCR aftertreatment"),
    "BOOST_PRESSURE_MONITORING": N_("boost pressure"), "EXHAUST_GAS_SENSOR_MONITORING": N_("exhaust gas sensor"),
    "PM_FILTER_MONITORING": N_("particulate filter"),
}


async def _readiness(d: Data, u: Units, live: Live | None) -> list[Finding]:
    row = await d.latest(SIG_MIL)  # PID 0x01's raw bytes are kept with each of its readings
    mons = monitors(row.raw) if row is not None else None
    if mons is None:
        return [Finding("readiness.unknown", "readiness", INFO, _("Readiness monitors not read yet"),
                        _("PID 0x01 is read every 10 s while the engine runs"))]
    names = {k: _(MONITOR_NAMES.get(k, k)) for k in mons}
    incomplete = [k for k, done in mons.items() if not done]
    cycle_row = await d.latest(0x41)
    cycle = monitors(cycle_row.raw) if cycle_row is not None else None
    values = {"complete": sorted(k for k, v in mons.items() if v), "incomplete": sorted(incomplete),
              "this_drive_cycle": None if cycle is None else sorted(k for k, v in cycle.items() if not v)}
    if incomplete:
        return [Finding("readiness", "readiness", WARNING,
                        _("Not ready for an emissions inspection: {n} of {total} monitors incomplete ({names})").format(
                            n=len(incomplete), total=len(mons), names=", ".join(names[k] for k in incomplete)),
                        _("Drive normally for a few days (city and highway) so the ECU can run its self-tests; "
                          "incomplete monitors right after a clear hide faults"), values)]
    return [Finding("readiness", "readiness", OK, _("All {total} readiness monitors complete").format(
        total=len(mons)), "", values)]


# ---- since the last clear --------------------------------------------------------------------------


async def _since_clear(d: Data, u: Units, live: Live | None) -> list[Finding]:
    km_row, min_row = await d.latest(0x31), await d.latest(0x4E)
    km = km_row.value if km_row is not None else None
    minutes = min_row.value if min_row is not None else None
    if km is None and minutes is None:
        return [Finding("since_clear.unknown", "since_clear", INFO, _("Distance since codes were cleared not read"))]
    parts = []
    if km is not None:
        parts.append(u.distance(km))
    if minutes is not None:
        parts.append(_("{h} h of engine time").format(h=f"{minutes / 60:.0f}"))
    values = {"distance_km": km, "engine_minutes": minutes}
    recent = (km is not None and km < RECENT_CLEAR_KM) or (minutes is not None and minutes < RECENT_CLEAR_MIN)
    if recent:
        return [Finding("since_clear", "since_clear", WARNING,
                        _("Trouble codes were cleared recently: {ago} ago").format(ago=", ".join(parts)),
                        _("On a used car, ask why: a clear hides faults until the monitors have run again"),
                        values)]
    return [Finding("since_clear", "since_clear", OK,
                    _("Codes last cleared {ago} ago").format(ago=", ".join(parts)), "", values)]


# ---- fuel trims ----------------------------------------------------------------------------------


async def _fuel_trims(d: Data, u: Units, live: Live | None) -> list[Finding]:
    out = []
    for bank, (short_pid, long_pid) in TRIM_PIDS.items():
        long_v = [v for _t, v in await d.values(long_pid)]
        short_v = [v for _t, v in await d.values(short_pid)]
        if len(long_v) < TRIM_MIN_SAMPLES:
            continue
        ltft = statistics.fmean(long_v)
        stft = statistics.fmean(short_v) if short_v else None
        values = {"bank": bank, "long_term_pct": round(ltft, 1),
                  "short_term_pct": None if stft is None else round(stft, 1), "samples": len(long_v)}
        sev = CRITICAL if abs(ltft) > TRIM_CRIT_PCT else WARNING if abs(ltft) > TRIM_WARN_PCT else OK
        if sev == OK:
            out.append(Finding(f"fuel_trim.bank{bank}", "fuel_trim", OK,
                               _("Fuel trim bank {bank}: long-term {pct} % (within ±10 %)").format(
                                   bank=bank, pct=f"{ltft:+.1f}"), "", values))
            continue
        lean = ltft > 0
        title = (_("Bank {bank} runs lean: long-term fuel trim {pct} % (the ECU adds fuel)") if lean else
                 _("Bank {bank} runs rich: long-term fuel trim {pct} % (the ECU takes fuel away)")).format(
            bank=bank, pct=f"{ltft:+.1f}")
        action = _("Usual causes: {causes}").format(causes=_(LEAN_CAUSES if lean else RICH_CAUSES))
        out.append(Finding(f"fuel_trim.bank{bank}", "fuel_trim", sev, title, action, {**values, "lean": lean}))
    if not out:
        out.append(Finding("fuel_trim.unknown", "fuel_trim", INFO, _("Fuel trims not read"),
                           _("The car may not report PIDs 0x06–0x09")))
    return out


# ---- cooling -------------------------------------------------------------------------------------


class Warmup(TypedDict):
    start_ms: int
    from_c: float
    cold: bool
    warmup_s: float | None
    span_s: float
    max_c: float


def _warmup(seg: list[tuple[int, float]]) -> Warmup:
    cold = seg[0][1] <= COLD_START_C
    warm = next((x for x, c in seg if c >= WARM_C), None) if cold else None
    return {"start_ms": seg[0][0], "from_c": seg[0][1], "cold": cold,
            "warmup_s": None if warm is None else (warm - seg[0][0]) / 1000.0,
            "span_s": (seg[-1][0] - seg[0][0]) / 1000.0, "max_c": max(c for _x, c in seg)}


def warmups(samples: list[tuple[int, float]]) -> list[Warmup]:
    """The drives in coolant samples: ``from_c`` (the first sample), ``warmup_s`` from a
    cold first sample (≤ 40 °C) to the first ≥ 80 °C (None: not from cold, or never got
    there), ``span_s``, ``max_c``. A drive ends at a gap in the samples after which the
    engine had cooled (or a gap of hours): a gap with the coolant no cooler after it is
    missed samples, not a new start."""
    out: list[Warmup] = []
    seg: list[tuple[int, float]] = []
    for t, v in samples:
        if seg and t - seg[-1][0] > SEGMENT_GAP_MS and (v < seg[-1][1] - COOLED_C
                                                        or t - seg[-1][0] > SEGMENT_MAX_GAP_MS):
            out.append(_warmup(seg))
            seg = []
        seg.append((t, v))
    if seg:
        out.append(_warmup(seg))
    return out


async def _cooling(d: Data, u: Units, live: Live | None) -> list[Finding]:
    out = []
    coolant = await d.values(COOLANT)
    drives = warmups(coolant)
    times = [w["warmup_s"] for w in drives if w["warmup_s"] is not None]
    # Long enough to be warm, yet never at operating temperature: the engine runs cold,
    # whatever temperature the first sample caught (a late first poll misses the start).
    never = [w for w in drives if w["max_c"] < WARM_C and w["span_s"] >= SLOW_WARMUP_S]
    if times or never:
        worst = max(times + [w["span_s"] for w in never])
        med = statistics.median(times + [w["span_s"] for w in never])
        values = {"cold_starts": sum(1 for w in drives if w["cold"]), "median_warmup_s": round(med),
                  "never_warm": len(never), "max_c_when_never_warm": max((w["max_c"] for w in never), default=None)}
        if med > SLOW_WARMUP_S or never:
            title = _("Slow warm-up: {min} min from a cold start to {warm}").format(
                min=f"{med / 60:.0f}", warm=u.temperature(WARM_C))
            if never:
                title += _(" (not reached on drives: {n}; at most {temp})").format(
                    n=len(never), temp=u.temperature(max(w["max_c"] for w in never)))
            out.append(Finding("cooling.warmup", "cooling", WARNING, title,
                               _("A thermostat stuck open is the usual cause: more fuel, less heating, "
                                 "more engine wear. Have it checked"), values))
        else:
            out.append(Finding("cooling.warmup", "cooling", OK, _("Warm-up {min} min from a cold start").format(
                min=f"{med / 60:.0f}"), "", {**values, "worst_s": round(worst)}))
    overheats = [e for e in await d.store.events(d.device) if e.type == "overheat"]
    if overheats:
        peak = max(e.values.get("peak_c") or e.values.get("coolant_c") or 0 for e in overheats)
        last = max(e.opened_ms for e in overheats)
        out.append(Finding("cooling.overheat", "cooling", CRITICAL if last >= d.since else WARNING,
                           _("Overheated {n} times, last on {when} (peak {temp})").format(
                               n=len(overheats), when=_date(last), temp=u.temperature(peak)),
                           _("Check the coolant level, the radiator fan and the water pump; a head gasket "
                             "can suffer"), {"count": len(overheats), "last_ms": last, "peak_c": peak}))
    elif coolant:
        top = max(v for _t, v in coolant)
        out.append(Finding("cooling.overheat", "cooling", OK, _("No overheating (highest coolant {temp})").format(
            temp=u.temperature(top)), "", {"max_c": top}))
    if not out:
        out.append(Finding("cooling.unknown", "cooling", INFO, _("No cold start recorded yet")))
    return out


# ---- the 12 V system -----------------------------------------------------------------------------


async def _battery(d: Data, u: Units, live: Live | None) -> list[Finding]:
    volts = await d.values(CH_VOLTAGE)
    if not volts:
        return [Finding("battery.unknown", "battery", INFO, _("No battery voltage recorded yet"))]
    running = [t for t, v in await d.values(RPM) if v > 0]
    starts = [t for k, t in enumerate(running) if k == 0 or t - running[k - 1] > START_GAP_MS]
    out = []

    def near_running(t: int) -> bool:
        import bisect

        k = bisect.bisect_left(running, t - RUNNING_NEAR_MS)
        return k < len(running) and running[k] <= t + RUNNING_NEAR_MS

    def last_run_before(t: int) -> int | None:
        import bisect

        k = bisect.bisect_right(running, t)
        return running[k - 1] if k else None

    def resting_at(t: int) -> bool:
        before = last_run_before(t)
        return not near_running(t) and (before is None or t - before >= RESTING_AFTER_MS)

    resting = [(t, v) for t, v in volts if resting_at(t)]
    if resting:
        rest = statistics.median(v for _t, v in resting[-10:])
        sev = CRITICAL if rest < RESTING_CRIT_V else WARNING if rest < RESTING_LOW_V else \
            INFO if rest < RESTING_FULL_V else OK
        title = _("Resting battery voltage {v} V after parking").format(v=f"{rest:.2f}")
        action = {CRITICAL: _("Discharged: charge it now and have it tested; the car may not start"),
                  WARNING: _("Weak or discharged: have the battery tested; look for a drain while parked"),
                  INFO: _("Partly charged: short trips do not recharge it; a longer drive or a charger helps"),
                  OK: ""}[sev]
        out.append(Finding("battery.resting", "battery", sev, title, action, {"resting_v": round(rest, 2)}))
    dips = []
    for s in starts:
        window = [v for t, v in volts if s - CRANK_WINDOW_MS[0] <= t <= s + CRANK_WINDOW_MS[1]]
        if window and min(window) < CRANK_CAUGHT_V:  # else the samples missed the crank
            dips.append((s, min(window)))
    if dips:
        low = min(v for _s, v in dips[-5:])
        sev = WARNING if low < CRANK_WEAK_V else INFO if low < CRANK_LOW_V else OK
        title = _("Cranking dip to {v} V (the lowest over the starts caught: {n})").format(
            v=f"{low:.1f}", n=len(dips[-5:]))
        action = {WARNING: _("A weak crank: the battery is failing (or the starter draws too much); test it "
                             "before a cold morning"),
                  INFO: _("On the low side: have the battery tested at the next service"), OK: ""}[sev]
        out.append(Finding("battery.cranking", "battery", sev, title, action, {"crank_min_v": low}))
    elif starts:
        out.append(Finding("battery.cranking", "battery", INFO,
                           _("The cranking dip was not caught (no voltage sample during an engine start)")))
    charging = [v for t, v in volts if near_running(t)]
    if charging:
        med = statistics.median(charging)
        if med < CHARGING_LOW_V:
            sev, action = WARNING, _("Not charging enough: check the alternator and its belt")
        elif med > CHARGING_HIGH_V:
            sev, action = WARNING, _("Overcharging: the voltage regulator may be faulty; it boils batteries")
        else:
            sev, action = OK, ""
        out.append(Finding("battery.charging", "battery", sev, _("Charging voltage {v} V with the engine running").format(
            v=f"{med:.1f}"), action, {"charging_v": round(med, 2)}))
    return out


# ---- for a mechanic ------------------------------------------------------------------------------


async def _vehicle_info(d: Data, u: Units, live: Live | None) -> list[Finding]:
    answered = sorted({c if c <= 0xFF else c & 0xFF for c in d.channels if c != CH_VOLTAGE})
    pids = live.supported if live is not None and live.supported else answered
    names = ", ".join(f"{p:02X}" for p in pids)
    out = [Finding("vehicle.pids", "vehicle", INFO,
                   (_("Supported PIDs: {pids}") if live is not None and live.supported else
                    _("PIDs the car answered: {pids}")).format(pids=names or "-"), "",
                   {"pids": pids, "names": [signal_name(p) for p in pids]})]
    if live is not None and live.protocol:
        out.append(Finding("vehicle.protocol", "vehicle", INFO, _("OBD protocol: {p}").format(p=live.protocol),
                           "", {"protocol": live.protocol}))
    return out


# ---- text ------------------------------------------------------------------------------------------


def _date(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d")


MARKS = {OK: "✓", INFO: "·", WARNING: "!", CRITICAL: "✗"}
SECTION_TITLES = {"codes": N_("Trouble codes"), "readiness": N_("Readiness monitors"), "since_clear": N_("Since codes cleared"),
                  "fuel_trim": N_("Fuel trims"), "cooling": N_("Cooling"), "battery": N_("12 V battery"),
                  "vehicle": N_("For a mechanic")}
SEVERITY_NAMES = {OK: N_("ok"), INFO: N_("info"), WARNING: N_("warning"), CRITICAL: N_("critical")}
# Words the codes' lines use (decode.dtc_info's systems, the read modes).
WORDS = (N_("Powertrain"), N_("Chassis"), N_("Body"), N_("Network"), N_("stored"), N_("pending"), N_("permanent"))


def render(report: Report) -> list[str]:
    """The report as text lines: a headline, then each section's findings."""
    v = report.vehicle
    head = _("Health check of dongle {device}").format(device=report.device)
    if v:
        head += f" — {v['manufacturer'] or ''} {v['model_year'] or ''} ({v['vin']})".replace("  ", " ")
    counts = {s: sum(1 for f in report.findings if f.severity == s) for s in (CRITICAL, WARNING)}
    lines = [head, _("{critical} critical, {warning} warnings").format(**counts)
             + ("" if report.live else " " + _("(from stored data; --live asks the car now)"))]
    section = None
    for f in report.findings:
        if f.section != section:
            section = f.section
            lines.append("")
            lines.append(_(SECTION_TITLES[section]))
        lines.append(f"  {MARKS[f.severity]} [{_(SEVERITY_NAMES[f.severity])}] {f.title}")
        if f.action:
            lines.append(f"      → {f.action}")
    return lines
