"""What `obdsync status` shows, gathered from the store, the running daemon (through its
control door; without one, what the last run left in its live file) and the forwarder's
bookkeeping. Secrets never appear here."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from obdsync.config import Config
from obdsync.vin import vehicle_json

log = logging.getLogger("obdsync.status")

LIVE_STALE_SECONDS = 30.0


async def live_view() -> dict[str, Any]:
    """Each dongle's link as the running daemon sees it now; with no daemon running, what
    the last one left, nothing connected."""
    return (await daemon_view())[1]


async def daemon_view() -> tuple[bool | None, dict[str, Any]]:
    """(whether `obdsync run` is running, :func:`live_view`'s dongles); None: a daemon
    answered the door but not about its links."""
    from obdsync import door

    try:
        return True, await door.call("live")
    except door.NoDaemon:
        devs, running = read_live(), False
    except door.DoorError as e:
        log.warning("the running daemon did not say how its links are: %s", e)
        devs, running = read_live(), None
    for d in devs.values():
        d["connected"] = False
    return running, devs


def live_fields(st: dict[str, Any]) -> dict[str, Any]:
    """A dongle's STATUS (`ops.dongle_status`) as `status` shows it (the same keys as
    `Daemon.live`)."""
    from protocol import control_central

    cap = st.get("log_capacity")
    return {
        "volts": round(st["millivolts"] / 1000, 2) if st.get("millivolts") else None,
        "log_fill": f"{100 * st['log_used'] / cap:.1f}%" if cap else None,
        "power": control_central.POWER_NAMES.get(st.get("power_state", -1)),
        "rates": st.get("rates", {}),
        "backlog": max(0, st["next_seq"] - st["first_unacked"]),
    }


def read_live() -> dict[str, Any]:
    """What the last daemon left in its live file (`Daemon._write_live`)."""
    from obdsync.daemon import live_path

    try:
        data = json.loads(live_path().read_text())
    except (OSError, ValueError):
        return {}
    devs: dict[str, Any] = data.get("devices", {})
    now = time.time()
    for d in devs.values():
        if now - d.get("updated", 0) > LIVE_STALE_SECONDS:
            d["connected"] = False  # the daemon is not running (or hung)
    return devs


def values(last_values: dict[int, tuple[int, float | None, str]]) -> dict[str, dict[str, Any]]:
    """The latest value of each signal, by name, rounded to what its sensor resolves."""
    from obdsync.decode import display_value, signal_name
    from obdsync.render import iso_ms

    return {signal_name(sig): {"value": (None if v is None else v >= 0.5) if unit == "bool"
                               else display_value(sig, v, unit), "unit": unit, "time": iso_ms(t), "time_ms": t}
            for sig, (t, v, unit) in sorted(last_values.items())}


async def gather(store: Any, config: Config) -> dict[str, Any]:
    from obdsync import devices as paired_devices
    from obdsync.render import iso_ms

    running, live = await daemon_view()
    try:
        paired = [{"device": p.device, "address": p.address, "name": p.name} for p in paired_devices.load()]
    except paired_devices.PairingError:
        paired = []
    devices = []
    for s in await store.status() if store is not None else ():
        devices.append({
            "device": s.device, "name": s.name, "address": s.address, "vin": s.vin, "vehicle": vehicle_json(s.vin),
            "first_seen": iso_ms(s.first_seen), "first_seen_ms": s.first_seen,
            "last_seen": iso_ms(s.last_seen), "last_seen_ms": s.last_seen, "records": s.records,
            "contiguous": s.contiguous, "missing": s.missing, "gaps": s.gaps, "lost": s.lost,
            # More than one: the dongle's log started over (wiped, reflashed, replaced); all kept.
            "log_epochs": s.epochs, "log_epoch": None if s.epoch is None else f"{s.epoch:08x}",
            "log_epoch_since_ms": s.epoch_since,
            "last_values": values(s.last_values),
            "live": live.get(s.device),
            "service": await service_state(store, config, s.device),
        })
    forwarding = []
    try:
        from obdsync.forward import outbox_status

        names = config.forward.target_names
        for t in await outbox_status(store, names) if store is not None else ():
            forwarding.append({"target": t.target, "configured": t.configured, "pending": t.pending,
                               "dead": t.dead, "dropped": t.dropped_total, "sent": t.sent,
                               "last_success": iso_ms(t.last_success_ms), "last_success_ms": t.last_success_ms,
                               "last_error": t.last_error})
    except ImportError:
        pass
    return {"daemon": {"running": running}, "paired": paired,
            "devices": devices, "forwarding": forwarding}


async def service_state(store: Any, config: Config, device: str) -> dict[str, Any]:
    """The service schedule from the rules engine's saved state plus the service
    records entered since, counted to now (not to the last sample)."""
    from obdsync.pipeline import Pipeline

    try:
        engine = await Pipeline(store, config).service_engine(device)
    except (ValueError, KeyError) as e:
        return {"unavailable": str(e)}
    svc = engine.service_state(int(time.time() * 1000))
    keep = ("odometer_km", "distance_source", "baseline_km", "last_service_ms", "items")
    return {k: v for k, v in svc.items() if k in keep}
