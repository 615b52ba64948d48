"""Home Assistant's MQTT discovery schema for the platforms obdsync announces, as JSON
Schema: written from the integration's documentation (mqtt.sensor, mqtt.binary_sensor,
mqtt.event, and the shared entity/device/origin/availability options), full key names
only (no abbreviations). Unknown keys fail (``additionalProperties: false``), and so do
missing required ones, a device class the platform lacks, or a unit its device class
does not take."""

from __future__ import annotations

import jsonschema

DEVICE = {
    "type": "object",
    "additionalProperties": False,
    "anyOf": [{"required": ["identifiers"]}, {"required": ["connections"]}],
    "properties": {
        "configuration_url": {"type": "string"},
        "connections": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
        "hw_version": {"type": "string"},
        "identifiers": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "manufacturer": {"type": "string"},
        "model": {"type": "string"},
        "model_id": {"type": "string"},
        "name": {"type": "string"},
        "serial_number": {"type": "string"},
        "suggested_area": {"type": "string"},
        "sw_version": {"type": "string"},
        "via_device": {"type": "string"},
    },
}

ORIGIN = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "sw_version": {"type": "string"}, "support_url": {"type": "string"}},
}

AVAILABILITY = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["topic"],
        "properties": {"topic": {"type": "string"}, "payload_available": {"type": "string"},
                       "payload_not_available": {"type": "string"}, "value_template": {"type": "string"}},
    },
}

# Options every MQTT entity has.
ENTITY = {
    "availability": AVAILABILITY,
    "availability_mode": {"enum": ["all", "any", "latest"]},
    "availability_template": {"type": "string"},
    "availability_topic": {"type": "string"},
    "payload_available": {"type": "string"},
    "payload_not_available": {"type": "string"},
    "default_entity_id": {"type": "string"},
    "device": DEVICE,
    "enabled_by_default": {"type": "boolean"},
    "encoding": {"type": "string"},
    "entity_category": {"enum": ["config", "diagnostic"]},
    "entity_picture": {"type": "string"},
    "icon": {"type": "string", "pattern": "^mdi:[a-z0-9-]+$"},
    "json_attributes_template": {"type": "string"},
    "json_attributes_topic": {"type": "string"},
    "name": {"type": ["string", "null"]},
    "object_id": {"type": "string"},
    "origin": ORIGIN,
    "platform": {"const": "mqtt"},
    "qos": {"enum": [0, 1, 2]},
    "unique_id": {"type": "string"},
}

SENSOR_DEVICE_CLASSES = [
    "apparent_power", "aqi", "area", "atmospheric_pressure", "battery", "blood_glucose_concentration",
    "carbon_dioxide", "carbon_monoxide", "current", "data_rate", "data_size", "date", "distance", "duration",
    "energy", "energy_distance", "energy_storage", "enum", "frequency", "gas", "humidity", "illuminance",
    "irradiance", "moisture", "monetary", "nitrogen_dioxide", "nitrogen_monoxide", "nitrous_oxide", "ozone", "ph",
    "pm1", "pm10", "pm25", "power", "power_factor", "precipitation", "precipitation_intensity", "pressure",
    "reactive_power", "signal_strength", "sound_pressure", "speed", "sulphur_dioxide", "temperature", "timestamp",
    "volatile_organic_compounds", "volatile_organic_compounds_parts", "voltage", "volume", "volume_flow_rate",
    "volume_storage", "water", "weight", "wind_direction", "wind_speed",
]
BINARY_SENSOR_DEVICE_CLASSES = [
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door", "gas", "heat",
    "light", "lock", "moisture", "motion", "moving", "occupancy", "opening", "plug", "power", "presence", "problem",
    "running", "safety", "smoke", "sound", "tamper", "update", "vibration", "window",
]
EVENT_DEVICE_CLASSES = ["button", "doorbell", "motion"]

# The units HA's sensor device classes accept, for the classes obdsync uses.
UNITS = {
    "distance": ["km", "m", "cm", "mm", "mi", "yd", "ft", "in", "nmi"],
    "speed": ["km/h", "m/s", "mph", "kn", "ft/s", "in/d", "in/h", "mm/d", "mm/h", "mm/s", "Beaufort"],
    "voltage": ["V", "mV", "µV", "kV", "MV"],
    "temperature": ["°C", "°F", "K"],
    "volume": ["L", "mL", "gal", "fl. oz.", "m³", "ft³", "CCF", "MCF"],
    "duration": ["d", "h", "min", "s", "ms", "µs"],
}


def _unit_rules() -> list[dict]:
    rules = [{"if": {"required": ["device_class"], "properties": {"device_class": {"const": dc}}},
              "then": {"required": ["unit_of_measurement"], "properties": {"unit_of_measurement": {"enum": units}}}}
             for dc, units in UNITS.items()]
    # A timestamp sensor holds an ISO 8601 time: no unit, no statistics.
    rules.append({"if": {"required": ["device_class"], "properties": {"device_class": {"const": "timestamp"}}},
                  "then": {"not": {"anyOf": [{"required": ["unit_of_measurement"]}, {"required": ["state_class"]}]}}})
    return rules


SENSOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["state_topic"],
    "allOf": _unit_rules(),
    "properties": {
        **ENTITY,
        "device_class": {"enum": SENSOR_DEVICE_CLASSES},
        "expire_after": {"type": "integer", "minimum": 0},
        "force_update": {"type": "boolean"},
        "last_reset_value_template": {"type": "string"},
        "options": {"type": "array", "items": {"type": "string"}},
        "state_class": {"enum": ["measurement", "measurement_angle", "total", "total_increasing"]},
        "state_topic": {"type": "string"},
        "suggested_display_precision": {"type": "integer", "minimum": 0},
        "unit_of_measurement": {"type": ["string", "null"]},
        "value_template": {"type": "string"},
    },
}

BINARY_SENSOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["state_topic"],
    "properties": {
        **ENTITY,
        "device_class": {"enum": BINARY_SENSOR_DEVICE_CLASSES},
        "expire_after": {"type": "integer", "minimum": 0},
        "force_update": {"type": "boolean"},
        "off_delay": {"type": "integer", "minimum": 0},
        "payload_off": {"type": "string"},
        "payload_on": {"type": "string"},
        "state_topic": {"type": "string"},
        "value_template": {"type": "string"},
    },
}

EVENT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["state_topic", "event_types"],
    "properties": {
        **ENTITY,
        "device_class": {"enum": EVENT_DEVICE_CLASSES},
        "event_types": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True},
        "state_topic": {"type": "string"},
        "value_template": {"type": "string"},
    },
}

PLATFORMS = {"sensor": SENSOR, "binary_sensor": BINARY_SENSOR, "event": EVENT}


def validate(component: str, config: dict) -> None:
    """Raise ``jsonschema.ValidationError`` if ``config`` is not a valid discovery
    config of ``component`` (``KeyError``: a platform this schema does not know)."""
    jsonschema.validate(config, PLATFORMS[component])
