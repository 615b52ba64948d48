"""What `obdsync status` shows, gathered from the store, the running daemon's
live file and the forwarder's bookkeeping. Secrets never appear here."""

from __future__ import annotations

import json
import time
from typing import Any

from obdsync.config import Config

LIVE_STALE_SECONDS = 30.0


def read_live() -> dict[str, Any]:
    from obdsync.daemon import live_path

    try:
        data = json.loads(live_path().read_text())
    except (OSError, ValueError):
        return {}
    devs = data.get("devices", {})
    now = time.time()
    for d in devs.values():
        if now - d.get("updated", 0) > LIVE_STALE_SECONDS:
            d["connected"] = False  # the daemon is not running (or hung)
    return devs


async def gather(store: Any, config: Config) -> dict[str, Any]:
    live = read_live()
    devices = []
    for s in await store.status():
        devices.append({
            "device": s.device, "name": s.name, "address": s.address, "vin": s.vin, "vehicle": _vehicle(s.vin),
            "first_seen": s.first_seen, "last_seen": s.last_seen, "records": s.records,
            "contiguous": s.contiguous, "missing": s.missing, "gaps": s.gaps, "lost": s.lost,
            "last_values": {str(k): v for k, v in s.last_values.items()},
            "live": live.get(s.device),
            "service": await service_state(store, config, s.device),
        })
    forwarding = []
    try:
        from obdsync.forward import outbox_status

        names = config.forward.target_names
        for t in await outbox_status(store, names):
            forwarding.append({"target": t.target, "configured": t.configured, "pending": t.pending,
                               "dead": t.dead, "dropped": t.dropped_total, "sent": t.sent,
                               "last_success": t.last_success_ms, "last_error": t.last_error})
    except ImportError:
        pass
    return {"devices": devices, "forwarding": forwarding}


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


def _vehicle(vin: str | None) -> dict[str, Any] | None:
    from obdsync.vin import VinError, decode

    try:
        return decode(vin).json() if vin else None
    except VinError:
        return None
