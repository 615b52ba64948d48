"""Home Assistant MQTT discovery: the dongle as a device with sensors, no YAML.

Every entity reads the one retained state topic (``<prefix>/<device>/state``, keys in
``payloads.STATE_KEYS``) through a ``value_template`` and is available while
``<prefix>/<device>/status`` says ``online``. A key missing from the state renders as
``None``, which Home Assistant's MQTT entities show as unknown rather than as an error.
Configs go to ``<discovery_prefix>/<component>/obdsync_<device>/<key>/config``, retained.
"""

from __future__ import annotations

from typing import Any

from . import payloads

# key, name, unit, device_class, state_class, icon
SENSORS: tuple[tuple[str, str, str | None, str | None, str | None, str | None], ...] = (
    ("fuel_pct", "Fuel level", "%", None, "measurement", "mdi:gas-station"),
    ("range_km", "Range", "km", "distance", "measurement", None),
    ("battery_v", "Battery", "V", "voltage", "measurement", None),
    ("coolant_c", "Coolant temperature", "°C", "temperature", "measurement", None),
    ("odometer_km", "Odometer", "km", "distance", "total_increasing", None),
    ("dtc_count", "Trouble codes", None, None, "measurement", "mdi:engine-off"),
)

# key, name, device_class, icon, the event type whose presence in ``open_events`` means ON
# when the state has no such key (the pipeline sends open_events, not these flags)
BINARY_SENSORS: tuple[tuple[str, str, str | None, str | None, str | None], ...] = (
    ("mil", "Check engine light", "problem", "mdi:engine-outline", "mil_on"),
    ("overheating", "Overheating", "heat", None, "overheat"),
    ("low_fuel", "Low fuel", "problem", "mdi:gas-station-off", "low_fuel"),
)


def _value(key: str) -> str:
    return "{{ value_json.KEY if value_json.KEY is defined else 'None' }}".replace("KEY", key)


def _flag(key: str, event_type: str | None) -> str:
    fallback = "'None'"
    if event_type is not None:
        fallback = ("(('ON' if 'TYPE' in value_json.open_events else 'OFF')"
                    " if value_json.open_events is defined else 'None')").replace("TYPE", event_type)
    return ("{{ ('ON' if value_json.KEY else 'OFF') if value_json.KEY is defined else FALLBACK }}"
            .replace("KEY", key).replace("FALLBACK", fallback))


def device_block(device: str) -> dict[str, Any]:
    from obdsync import vin

    block = {
        "identifiers": [f"obdsync_{device}"],
        "name": f"obdsync {device}",
        "manufacturer": "obdsync",
        "model": "OBD-II BLE dongle",
    }
    v = vin.known(device)  # the car, once its VIN was read: HA names the device after it
    if v is not None:
        block.update(name=v.title, manufacturer=v.manufacturer or "obdsync", model=v.title, serial_number=v.vin)
    return block


def discovery_configs(prefix: str, device: str, *, discovery_prefix: str = "homeassistant"
                      ) -> list[tuple[str, dict[str, Any]]]:
    """``(config topic, config dict)`` for every entity of ``device``."""
    node = payloads.topic_segment(f"obdsync_{device}")
    common = {
        "state_topic": payloads.state_topic(prefix, device),
        "availability_topic": payloads.status_topic(prefix, device),
        "payload_available": payloads.ONLINE.decode(),
        "payload_not_available": payloads.OFFLINE.decode(),
        "device": device_block(device),
        "origin": {"name": "obdsync"},
    }
    out = []
    for key, name, unit, dclass, sclass, icon in SENSORS:
        cfg = {**common, "name": name, "unique_id": f"{node}_{key}",
               "value_template": _value(key)}
        for k, v in (("unit_of_measurement", unit), ("device_class", dclass), ("state_class", sclass),
                     ("icon", icon)):
            if v is not None:
                cfg[k] = v
        out.append((f"{discovery_prefix}/sensor/{node}/{key}/config", cfg))
    for key, name, dclass, icon, event_type in BINARY_SENSORS:
        cfg = {**common, "name": name, "unique_id": f"{node}_{key}",
               "value_template": _flag(key, event_type), "payload_on": "ON", "payload_off": "OFF"}
        if dclass is not None:
            cfg["device_class"] = dclass
        if icon is not None:
            cfg["icon"] = icon
        out.append((f"{discovery_prefix}/binary_sensor/{node}/{key}/config", cfg))
    return out


def discovery_messages(prefix: str, device: str, *, discovery_prefix: str = "homeassistant"
                       ) -> list[tuple[str, bytes]]:
    """The retained messages that announce ``device`` to Home Assistant."""
    return [(topic, payloads.encode(cfg))
            for topic, cfg in discovery_configs(prefix, device, discovery_prefix=discovery_prefix)]
