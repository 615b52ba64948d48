"""Home Assistant MQTT discovery: the car (through its dongle) as a device, no YAML.

Entities, each fed by a topic the daemon publishes:

- sensors and binary sensors read the one retained state topic
  (``<prefix>/<device>/state``, keys in ``payloads.STATE_KEYS``) through a
  ``value_template``; a key missing from the state renders as ``None``, which Home
  Assistant shows as unknown. Values that change while driving expire after
  :data:`FAST_EXPIRE_S`, the others after the target's ``ha_expire_after`` (a day by
  default), so a value days old never looks current;
- ``Connected`` (device class connectivity) reads ``<prefix>/<device>/link``
  (``ON``/``OFF``, retained): whether the dongle is connected now. The daemon's own
  availability stays the ``<prefix>/<device>/status`` topic (its last will);
- ``event`` entities (one per event type) read ``<prefix>/<device>/event/<type>``,
  the outbox's event messages; ``event_type`` is the type (``low_fuel``), or
  ``<type>_cleared`` when a persistent situation ends, so automations need no templates.

Configs go to ``<discovery_prefix>/<component>/obdsync_<device>/<key>/config``, retained;
an empty retained payload on the same topics removes them (:func:`removal_messages`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import SUPPORT_URL, __version__
from ..rules.events import EVENT_TYPES, PERSISTENT_TYPES
from . import payloads

#: Speed, RPM, coolant: a value older than this is not the car's now.
FAST_EXPIRE_S = 600
DEFAULT_EXPIRE_S = 86400


@dataclass(frozen=True)
class Sensor:
    key: str  # in the state JSON
    name: str
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    icon: str | None = None
    precision: int | None = None  # suggested_display_precision
    fast: bool = False  # expires after FAST_EXPIRE_S
    attributes: tuple[str, str] | None = None  # (attribute name, the state key that holds its value)


SENSORS: tuple[Sensor, ...] = (
    Sensor("fuel_pct", "Fuel level", "%", None, "measurement", "mdi:gas-station", 0),
    Sensor("range_km", "Range", "km", "distance", "measurement", "mdi:map-marker-distance", 0),
    Sensor("battery_v", "Battery", "V", "voltage", "measurement", None, 1),
    Sensor("coolant_c", "Coolant temperature", "°C", "temperature", "measurement", None, 0, fast=True),
    Sensor("odometer_km", "Odometer", "km", "distance", "total_increasing", None, 0),
    Sensor("speed_kmh", "Speed", "km/h", "speed", "measurement", None, 0, fast=True),
    Sensor("rpm", "Engine speed", "rpm", None, "measurement", "mdi:engine", 0, fast=True),
    Sensor("dtc_count", "Trouble codes", None, None, "measurement", "mdi:engine-off", 0,
           attributes=("codes", "dtc_codes")),
    Sensor("trip_distance_km", "Last trip distance", "km", "distance", None, "mdi:map-marker-path", 1),
    Sensor("trip_fuel_l", "Last trip fuel", "L", "volume", None, "mdi:gas-station-outline", 1),
    Sensor("trip_l_per_100km", "Last trip consumption", "L/100km", None, None, "mdi:fuel", 1),
    Sensor("trip_score", "Last trip driving score", None, None, None, "mdi:steering", 0),
    # The soonest item; every item (label, km and days to due, status) as attributes.
    Sensor("service_km_to_due", "Service due in", "km", "distance", None, "mdi:wrench-clock", 0,
           attributes=("items", "service_items")),
    Sensor("service_days_to_due", "Service due in days", "d", "duration", None, "mdi:calendar-clock", 0,
           attributes=("items", "service_items")),
    Sensor("last_seen", "Last seen", None, "timestamp", None, None),
)


@dataclass(frozen=True)
class BinarySensor:
    key: str
    name: str
    device_class: str | None
    icon: str | None
    open_event: str | None  # ON while an event of this type is open (``open_events`` in the state)


BINARY_SENSORS: tuple[BinarySensor, ...] = (
    BinarySensor("mil", "Check engine light", "problem", "mdi:engine-outline", "mil_on"),
    BinarySensor("overheating", "Overheating", "heat", None, "overheat"),
    BinarySensor("low_fuel", "Low fuel", "problem", "mdi:gas-station-off", "low_fuel"),
)

EVENT_NAMES = {
    "low_fuel": "Low fuel", "refuel": "Refuel", "fuel_drop": "Fuel drop", "fuel_leak_suspected": "Fuel leak suspected",
    "overheat": "Overheat",
    "dtc_new": "Trouble code", "dtc_cleared": "Trouble code cleared", "mil_on": "Check engine light",
    "battery_low": "Battery low", "charging_fault": "Charging fault", "service_due": "Service due",
    "service_soon": "Service soon", "trip": "Trip", "log_reset": "Dongle log reset",
}
EVENT_ICONS = {"low_fuel": "mdi:gas-station-off", "refuel": "mdi:gas-station", "fuel_drop": "mdi:water-alert",
               "fuel_leak_suspected": "mdi:water-alert",
               "overheat": "mdi:thermometer-alert", "dtc_new": "mdi:engine-off", "dtc_cleared": "mdi:engine",
               "mil_on": "mdi:engine-outline", "battery_low": "mdi:car-battery", "charging_fault": "mdi:battery-alert",
               "service_due": "mdi:wrench-clock", "service_soon": "mdi:wrench-clock", "trip": "mdi:map-marker-path",
               "log_reset": "mdi:restore-alert"}


def event_types(type_: str) -> list[str]:
    return [type_, f"{type_}_cleared"] if type_ in PERSISTENT_TYPES else [type_]


def link_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{payloads.topic_segment(device)}/link"


def _value(key: str) -> str:
    return "{{ value_json.KEY if value_json.KEY is defined else 'None' }}".replace("KEY", key)


def _attributes(name: str, key: str) -> str:
    return ("{{ {'NAME': value_json.KEY if value_json.KEY is defined else []} | tojson }}"
            .replace("NAME", name).replace("KEY", key))


def _flag(key: str, event_type: str | None) -> str:
    fallback = "'None'"
    if event_type is not None:
        fallback = ("(('ON' if 'TYPE' in value_json.open_events else 'OFF')"
                    " if value_json.open_events is defined else 'None')").replace("TYPE", event_type)
    return ("{{ ('ON' if value_json.KEY else 'OFF') if value_json.KEY is defined else FALLBACK }}"
            .replace("KEY", key).replace("FALLBACK", fallback))


# The event message's fields as the event's attributes; ``values`` by item: on a dict,
# Jinja's ``value_json.values`` is the method.
_EVENT_TEMPLATE = (
    "{{ {'event_type': value_json.type ~ ('_cleared' if value_json.state == 'cleared' else ''),"
    " 'id': value_json.id, 'severity': value_json.severity, 'message': value_json.message,"
    " 'opened_ms': value_json.opened_ms, 'cleared_ms': value_json.cleared_ms,"
    " 'values': value_json['values']} | tojson }}")


def device_block(device: str, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The HA device: the dongle in one car. ``info``: ``firmware``, ``vin``, ``name``
    (the user's name for it) as far as known; without ``vin``, the VIN this process
    learnt for the device (:func:`obdsync.vin.known`)."""
    from obdsync import vin

    info = info or {}
    block: dict[str, Any] = {
        "identifiers": [f"obdsync_{device}"],
        "name": f"obdsync {device}",
        "manufacturer": "obdsync",
        "model": "OBD-II BLE dongle",
        "serial_number": device,  # the dongle's id until the car's VIN is known
    }
    v = None
    if info.get("vin"):
        try:
            v = vin.decode(info["vin"])
        except vin.VinError:
            v = None
    else:
        v = vin.known(device)
    if v is not None:  # the car, once its VIN was read: HA names the device after it
        block.update(name=v.title, manufacturer=v.manufacturer or "obdsync", model=v.title, serial_number=v.vin)
    if info.get("name"):
        block["name"] = str(info["name"])
    if info.get("firmware"):
        block["sw_version"] = str(info["firmware"])
    return block


def origin() -> dict[str, str]:
    return {"name": "obdsync", "sw_version": __version__, "support_url": SUPPORT_URL}


def discovery_configs(prefix: str, device: str, *, discovery_prefix: str = "homeassistant",
                      info: dict[str, Any] | None = None, expire_after_s: int = DEFAULT_EXPIRE_S
                      ) -> list[tuple[str, dict[str, Any]]]:
    """``(config topic, config dict)`` for every entity of ``device``."""
    node = payloads.topic_segment(f"obdsync_{device}")
    dev = device_block(device, info)
    available = {
        "availability": [{"topic": payloads.status_topic(prefix, device),
                          "payload_available": payloads.ONLINE.decode(),
                          "payload_not_available": payloads.OFFLINE.decode()}],
        "device": dev,
        "origin": origin(),
    }
    state = {**available, "state_topic": payloads.state_topic(prefix, device)}
    out = []
    for s in SENSORS:
        cfg: dict[str, Any] = {**state, "name": s.name, "unique_id": f"{node}_{s.key}",
                               "value_template": _value(s.key),
                               "expire_after": FAST_EXPIRE_S if s.fast else expire_after_s}
        for k, v in (("unit_of_measurement", s.unit), ("device_class", s.device_class),
                     ("state_class", s.state_class), ("icon", s.icon), ("suggested_display_precision", s.precision)):
            if v is not None:
                cfg[k] = v
        if s.attributes is not None:
            cfg["json_attributes_topic"] = payloads.state_topic(prefix, device)
            cfg["json_attributes_template"] = _attributes(*s.attributes)
        out.append((f"{discovery_prefix}/sensor/{node}/{s.key}/config", cfg))
    for b in BINARY_SENSORS:
        cfg = {**state, "name": b.name, "unique_id": f"{node}_{b.key}",
               "value_template": _flag(b.key, b.open_event), "payload_on": "ON", "payload_off": "OFF",
               "expire_after": expire_after_s}
        if b.device_class is not None:
            cfg["device_class"] = b.device_class
        if b.icon is not None:
            cfg["icon"] = b.icon
        out.append((f"{discovery_prefix}/binary_sensor/{node}/{b.key}/config", cfg))
    out.append((f"{discovery_prefix}/binary_sensor/{node}/connected/config", {
        **available, "name": "Connected", "unique_id": f"{node}_connected",
        "state_topic": link_topic(prefix, device), "payload_on": "ON", "payload_off": "OFF",
        "device_class": "connectivity", "entity_category": "diagnostic"}))
    for t in EVENT_TYPES:
        out.append((f"{discovery_prefix}/event/{node}/{t}/config", {
            **available, "name": EVENT_NAMES.get(t, t.replace("_", " ").capitalize()),
            "unique_id": f"{node}_event_{t}",
            "state_topic": payloads.event_topic(prefix, device, t), "event_types": event_types(t),
            "value_template": _EVENT_TEMPLATE, "icon": EVENT_ICONS.get(t, "mdi:car")}))
    return out


def discovery_messages(prefix: str, device: str, *, discovery_prefix: str = "homeassistant",
                       info: dict[str, Any] | None = None, expire_after_s: int = DEFAULT_EXPIRE_S
                       ) -> list[tuple[str, bytes]]:
    """The retained messages that announce ``device`` to Home Assistant."""
    return [(topic, payloads.encode(cfg)) for topic, cfg in discovery_configs(
        prefix, device, discovery_prefix=discovery_prefix, info=info, expire_after_s=expire_after_s)]


def removal_messages(prefix: str, device: str, *, discovery_prefix: str = "homeassistant"
                     ) -> list[tuple[str, bytes]]:
    """Empty retained payloads that remove ``device``'s entities (and its retained state)."""
    topics = [topic for topic, _ in discovery_configs(prefix, device, discovery_prefix=discovery_prefix)]
    topics += [payloads.state_topic(prefix, device), link_topic(prefix, device)]
    return [(t, b"") for t in topics]
