"""What each screen shows, as data: read from the store's public queries (and the running
daemon's live view), in the store's units (km, L, °C, %); `pages` formats them in the
user's units and language. The JSON API (API.md) returns these dicts as they are."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from obdsync.decode import describe_dtc
from obdsync.rules.smoothing import accel_ms2
from obdsync.rules.trips import hard_episode
from obdsync.web.live import Gauge

if TYPE_CHECKING:
    from obdsync.config import Config
    from obdsync.model import Trip
    from obdsync.store import Store

SPEED, RPM, COOLANT, FUEL, VOLTAGE = 0x0D, 0x0C, 0x05, 0x2F, 0xFF
#: The Now page's gauges: signal id -> key (and unit in the store).
GAUGES = {SPEED: "speed", RPM: "rpm", COOLANT: "coolant", FUEL: "fuel", VOLTAGE: "battery"}
GAUGE_UNITS = {"speed": "km/h", "rpm": "rpm", "coolant": "°C", "fuel": "%", "battery": "V"}
CHART_LIMIT = 200_000  # samples a signal a trip (a 10-hour trip at 5 Hz)


async def devices(store: Store) -> list[str]:
    return [s.device for s in await store.status()]


async def now(store: Store, config: Config, device: str, live: dict[str, Any] | None,
              latest: dict[str, Gauge] | None) -> dict[str, Any]:
    """The gauges: each signal's newest stored value (the hub's, if newer), range left."""
    found = await store.status(device)
    st = found[0] if found else None
    gauges: dict[str, Any] = {}
    if st is not None:
        for sig, key in GAUGES.items():
            if sig in st.last_values:
                t, v, _unit = st.last_values[sig]
                gauges[key] = {"v": v, "t": t}
    for key, g in (latest or {}).items():
        if key not in gauges or g["t"] >= gauges[key]["t"]:
            gauges[key] = g
    cfg = config.for_device(device)
    fuel = gauges.get("fuel", {}).get("v")
    range_km = None
    trips = await store.trips(device, limit=20)
    km = sum(t.distance_km or 0 for t in trips if t.fuel_l)
    litres = sum(t.fuel_l or 0 for t in trips if t.distance_km)
    if fuel is not None and km >= 5 and litres > 0:
        range_km = round(fuel / 100.0 * cfg.vehicle.tank_litres / (litres / km))
    return {"device": device, "gauges": gauges, "range_km": range_km,
            "connected": bool(live and live.get("connected")),
            "last_seen_ms": st.last_seen if st is not None else None}


def trip_summary(t: Trip, config: Config) -> dict[str, Any]:
    v = t.values
    price = config.for_device(t.device).fuel.price_per_litre
    score = v.get("score") or {}
    return {"id": t.id, "device": t.device, "started_ms": t.started_ms, "ended_ms": t.ended_ms,
            "distance_km": None if t.distance_km is None else round(t.distance_km, 2),
            "fuel_l": None if t.fuel_l is None else round(t.fuel_l, 2),
            "cost": round(t.fuel_l * price, 2) if price and t.fuel_l else None,
            "duration_s": v.get("duration_s"), "avg_speed_kmh": v.get("avg_speed_kmh"),
            "max_speed_kmh": v.get("max_speed_kmh"), "l_per_100km": v.get("l_per_100km"),
            "hard_brakes": v.get("hard_brakes", 0), "hard_accels": v.get("hard_accels", 0),
            "score": score.get("score"), "components": score.get("components", {}), "tips": score.get("tips", [])}


async def trips(store: Store, config: Config, device: str | None, limit: int = 200) -> list[dict[str, Any]]:
    return [trip_summary(t, config) for t in await store.trips(device, limit=limit)]


async def find_trip(store: Store, trip_id: str) -> Trip | None:
    for t in await store.trips(limit=100_000):
        if t.id == trip_id:
            return t
    return None


Series = list[tuple[int, float]]  # (Unix ms, value) of one signal, oldest first


async def series(store: Store, device: str, signal: int, since_ms: int, until_ms: int) -> Series:
    rows = await store.samples(device, signal, since_ms=since_ms, until_ms=until_ms + 1, limit=CHART_LIMIT)
    return [(r.time_ms, r.value) for r in rows if r.value is not None]


def hard_moments(speed: list[tuple[int, float]], config: Config) -> list[tuple[int, str]]:
    """When the hard brakes and accelerations happened: the trip rule's smoothed
    acceleration and episode counter (`rules.trips`) run over the stored speed (the
    trip keeps only counts)."""
    tc = config.trip
    out: list[tuple[int, str]] = []
    recent: list[list[float]] = []
    state: dict[str, tuple[int | None, bool]] = {"brake": (None, True), "accel": (None, True)}  # (since, armed)
    for t, v in speed:
        a = accel_ms2(recent, t, v)
        if a is None:
            state = {kind: (None, armed) for kind, (_since, armed) in state.items()}
            continue
        for kind, val, threshold in (("brake", -a, tc.hard_brake_ms2), ("accel", a, tc.hard_accel_ms2)):
            since, armed, n = hard_episode(*state[kind], t, val, threshold)
            state[kind] = (since, armed)
            if n:
                out.append((t, kind))
    return out


async def fuel(store: Store, config: Config, device: str, days: int = 90) -> dict[str, Any]:
    """The last ``days`` up to the newest stored sample (a car parked for a month still shows its history)."""
    last = await store.samples(device, FUEL, limit=1, newest=True)
    newest = last[0].time_ms if last else int(time.time() * 1000)
    since = newest - days * 86_400_000
    level = await series(store, device, FUEL, since, 1 << 62)
    if len(level) > 20_000:  # the chart shows a pixel column's min/max anyway
        step = len(level) // 20_000 + 1
        level = level[::step]
    marks = [{"t": e.opened_ms, "type": e.type, "values": e.values}
             for e in await store.events(device, since_ms=since, limit=10_000) if e.type in ("refuel", "fuel_drop")]
    price = config.for_device(device).fuel.price_per_litre
    months: dict[str, dict[str, float]] = {}
    trend = []
    for t in sorted(await store.trips(device, since_ms=since, limit=10_000), key=lambda t: t.started_ms):
        m = dt.datetime.fromtimestamp(t.started_ms / 1000).strftime("%Y-%m")
        acc = months.setdefault(m, {"fuel_l": 0.0, "distance_km": 0.0})
        acc["fuel_l"] += t.fuel_l or 0
        acc["distance_km"] += t.distance_km or 0
        if t.values.get("l_per_100km"):
            trend.append((t.started_ms, t.values["l_per_100km"]))
    per_month = [{"month": m, "fuel_l": round(a["fuel_l"], 2), "distance_km": round(a["distance_km"], 1),
                  "cost": round(a["fuel_l"] * price, 2) if price else None} for m, a in sorted(months.items())]
    return {"device": device, "level": level, "level_pct": level[-1][1] if level else None,
            "marks": sorted(marks, key=lambda m: m["t"]), "consumption": trend, "months": per_month}


async def health(store: Store, config: Config, device: str) -> dict[str, Any]:
    from obdsync import health as check

    report = await check.check(store, config.for_device(device), device)
    out = report.json()
    codes: list[dict[str, Any]] = []
    for t, mode, cs, _approx, ecus in await store.dtcs(device, limit=50, with_ecus=True):
        if any(c["mode"] == mode for c in codes):
            continue  # the newest read of each mode
        codes.append({"mode": mode, "read_ms": t, "codes": [{"code": c, "description": describe_dtc(c), "ecu": e}
                                                            for c, e in zip(cs, ecus, strict=True)]})
    out["codes"] = codes
    return out


async def service(store: Store, config: Config, device: str) -> dict[str, Any]:
    from obdsync.status import service_state

    return await service_state(store, config.for_device(device), device)


async def mark_done(store: Store, config: Config, device: str, items: list[str] | None, km: float | None) -> int:
    """A service of ``items`` (None: the whole schedule) done now, checked as
    `obdsync service done` checks it. Raises ValueError naming what is wrong."""
    from obdsync.pipeline import Pipeline, service_note

    names = [i.name for i in config.for_device(device).service.schedule]
    unknown = [i for i in items or () if i not in names]
    if unknown:
        raise ValueError(f"unknown item {', '.join(unknown)}; the schedule has: {', '.join(names)}")
    now = int(time.time() * 1000)
    engine = await Pipeline(store, config.for_device(device)).service_engine(device)
    engine.service.check_entry(now, km, now)
    if km is None and engine.service.odo is None:
        raise ValueError("the odometer is not known yet: give the odometer reading")
    entry: int = await store.add_service(device, now, km, service_note(items))
    return entry


async def events(store: Store, device: str | None, *, severity: str | None, type_: str | None,
                 limit: int = 500) -> list[Any]:
    out = []
    for e in await store.events(device, limit=limit * 4 if (severity or type_) else limit):
        if severity and e.severity != severity:
            continue
        if type_ and e.type != type_:
            continue
        out.append(e)
    return out[:limit]
