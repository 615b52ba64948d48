"""What goes on the wire to the platform: event JSON, the ``dropped`` record, MQTT topics.

An outbox entry's payload is the event JSON built here when the event is stored, so a
retry sends the very bytes of the first attempt (the webhook signs those bytes).

Event message (``v`` 1)::

    {"v": 2, "key": "<event id>:open:warning", "id": "<event id>", "device": "0011223344556677",
     "type": "low_fuel", "state": "open", "severity": "warning", "opened_ms": ..., "cleared_ms": null,
     "values": {...}, "message": "..."}

Event identity and updates:

- ``id`` names one situation (a low tank, a trouble code, a trip) for its whole life.
- ``state`` is ``open`` (a lasting condition, now true), ``cleared`` (it is over: ``cleared_ms``
  says when) or ``instant`` (a one-off: a trip, a refuel, a cleared code, a log reset — never
  left "open").
- ``key`` = ``<id>:<state>:<severity>`` is the idempotency key. Each change a consumer must
  act on is a new key: the opening, an escalation while open (``battery_low`` warning →
  critical: "the car may not start"; a pending trouble code becoming stored, info →
  warning), the clearing. A retry of the same delivery repeats its key (at-least-once
  transport), so a consumer that processes each key once sees every change exactly once.
  Severity never steps down while an event is open; a change of values alone at the same
  severity reuses the key (the latest values are in the retained state topic).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..model import Event

VERSION = 2  # 2: the key carries the severity; instants have the state "instant"
#: The JSON Schema of the event message of this VERSION (and of the ``dropped`` record).
SCHEMA_FILE = Path(__file__).with_name(f"event.v{VERSION}.schema.json")
DEFAULT_PREFIX = "obdsync"

#: Keys of the retained state JSON (``<prefix>/<device>/state``) that Home Assistant
#: discovery reads. ``publish_state`` takes any JSON-able dict; these are the ones with a meaning.
STATE_KEYS = {
    "fuel_pct": "fuel level, % of the tank",
    "range_km": "estimated range, km (null until enough driving to know the consumption)",
    "battery_v": "battery voltage, V",
    "coolant_c": "coolant temperature, °C",
    "odometer_km": "odometer, km",
    "speed_kmh": "vehicle speed, km/h",
    "rpm": "engine speed, rpm",
    "dtc_count": "stored trouble codes",
    "dtc_codes": "the open trouble codes: [{code, description}]",
    "mil": "malfunction indicator lamp on (bool)",
    "overheating": "overheating event open (bool)",
    "low_fuel": "low fuel event open (bool)",
    "open_events": "types of the device's open events (list); stands in for the two flags above",
    "trip_distance_km": "the last finished trip's distance, km",
    "trip_fuel_l": "the last finished trip's fuel, L",
    "trip_l_per_100km": "the last finished trip's consumption, L/100 km",
    "trip_score": "the last finished trip's driving score, 0-100",
    "service_km_to_due": "km until the service is due (negative: overdue)",
    "service_days_to_due": "days until the service is due (negative: overdue)",
    "service_items": "every service item: [{item, status, km_to_due, days_to_due}]",
    "last_seen": "when these values were current, ISO 8601 UTC",
    "time_ms": "when these values were current, Unix ms",
}

_SEGMENT_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def topic_segment(text: str) -> str:
    """``text`` made safe as one MQTT topic level: no ``/``, wildcards or control characters."""
    seg = _SEGMENT_BAD.sub("_", text)
    return seg or "_"


def event_state(event: Event) -> str:
    from ..rules.events import PERSISTENT_TYPES

    if event.type not in PERSISTENT_TYPES:
        return "instant"
    return "open" if event.cleared_ms is None else "cleared"


def delivery_key(event_id: str, state: str, severity: str) -> str:
    return f"{event_id}:{state}:{severity}"


def event_message(event: Event) -> dict[str, Any]:
    state = event_state(event)
    return {
        "v": VERSION,
        "key": delivery_key(event.id, state, event.severity),
        "id": event.id,
        "device": event.device,
        "type": event.type,
        "state": state,
        "severity": event.severity,
        "opened_ms": event.opened_ms,
        "cleared_ms": event.cleared_ms,
        "values": event.values,
        "message": event.message,
    }


def encode(message: dict[str, Any]) -> bytes:
    # Compact and key-sorted: the same event always gives the same bytes.
    return json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def event_payload(event: Event) -> bytes:
    """The outbox payload of ``event`` (raises ``ValueError`` for values JSON can't hold,
    NaN included: better refused when stored than dead-lettered later)."""
    return encode(event_message(event))


def dropped_message(device: str, count: int, first_id: int, last_id: int,
                    first_ms: int, last_ms: int) -> dict[str, Any]:
    """The record that tells a target ``count`` of its entries were dropped (outbox full).

    ``first_id``/``last_id`` are the local outbox ids the count covers, so a consumer
    that receives two reports of overlapping ranges (a retry after new drops) can tell.
    """
    return {
        "v": VERSION,
        "key": f"dropped:{device}:{first_id}-{last_id}",
        "type": "dropped",
        "device": device,
        "count": count,
        "first_outbox_id": first_id,
        "last_outbox_id": last_id,
        "first_ms": first_ms,
        "last_ms": last_ms,
        "message": f"{count} undelivered event messages were dropped because the outbox was full",
    }


def decode(payload: bytes) -> dict[str, Any]:
    """An outbox payload back as a dict; ``ValueError`` if it is not a JSON object."""
    msg = json.loads(payload)
    if not isinstance(msg, dict):
        raise ValueError("payload is not a JSON object")
    return msg


def event_topic(prefix: str, device: str, event_type: str) -> str:
    return f"{prefix}/{topic_segment(device)}/event/{topic_segment(event_type)}"


def state_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{topic_segment(device)}/state"


def status_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{topic_segment(device)}/status"


ONLINE = b"online"
OFFLINE = b"offline"
