"""Home Assistant discovery, entity by entity: every config valid for its platform (a
schema written from HA's documentation, tests/ha_schema.py), every published value with
an entity and every entity with a value (its template rendered as HA renders it, with
Jinja), event entities, the device block, a configurable discovery prefix, and the
entities of an unpaired device removed, at a real Mosquitto."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re

import jsonschema
import pytest
from forward_util import DEV_A, DEV_B, FAST, wait_until
from ha_schema import validate
from jinja2.sandbox import ImmutableSandboxedEnvironment
from mosquitto import Collector, retained, running

from obdsync import SUPPORT_URL, __version__
from obdsync.config import ForwardConfig, MqttTarget, parse_config
from obdsync.forward import Forwarder
from obdsync.forward.homeassistant import (
    BINARY_SENSORS,
    FAST_EXPIRE_S,
    SENSORS,
    discovery_configs,
    event_types,
)
from obdsync.forward.payloads import STATE_KEYS, encode, event_message
from obdsync.model import Event
from obdsync.rules.events import EVENT_TYPES, PERSISTENT_TYPES
from obdsync.store import Store

_JINJA = ImmutableSandboxedEnvironment()


def render(template: str, payload: bytes) -> str:
    """A value template rendered as Home Assistant's MQTT entities render it."""
    return _JINJA.from_string(template).render(value_json=json.loads(payload), value=payload.decode())


# A state as the pipeline publishes it (pipeline.Pipeline._publish_state).
FULL_STATE = {
    "fuel_pct": 9.4, "range_km": 48, "battery_v": 14.12, "coolant_c": 90, "odometer_km": 42017.3, "speed_kmh": 52,
    "rpm": 1850, "dtc_count": 1, "dtc_codes": [{"code": "P0301", "description": "Cylinder 1 Misfire Detected"}],
    "mil": True, "open_events": ["low_fuel", "mil_on"], "trip_distance_km": 12.3, "trip_fuel_l": 1.1,
    "trip_l_per_100km": 8.9, "trip_score": 87, "service_km_to_due": 14983, "service_days_to_due": 364,
    "service_items": [{"item": "Oil and filter", "status": "ok", "km_to_due": 14983, "days_to_due": 364}],
    "last_seen": "2026-12-04T17:00:00+00:00", "time_ms": 1_796_403_600_000,
}
META_KEYS = {"open_events", "time_ms", "dtc_codes", "service_items", "overheating", "low_fuel"}  # read by other entities


def configs(**kw):
    return discovery_configs("car", DEV_A, info={"firmware": "0.3.1", "vin": "WVWZZZ1KZAW386754", "name": "Golf"},
                             **kw)


def component_of(topic: str) -> str:
    return re.fullmatch(r"[^/]+/(sensor|binary_sensor|event)/obdsync_[0-9a-f]{16}/[a-z0-9_]+/config", topic).group(1)


def test_every_discovery_config_is_valid_for_its_platform():
    out = configs()
    assert len({c["unique_id"] for _, c in out}) == len(out)
    for topic, cfg in out:
        validate(component_of(topic), cfg)
        assert topic.startswith("homeassistant/")
        # The car, from its VIN (decoded offline), under the name the user gave the dongle.
        assert cfg["device"] == {"identifiers": [f"obdsync_{DEV_A}"], "name": "Golf", "manufacturer": "Volkswagen",
                                 "model": "Volkswagen 2010", "serial_number": "WVWZZZ1KZAW386754",
                                 "sw_version": "0.3.1"}
        assert cfg["origin"] == {"name": "obdsync", "sw_version": __version__, "support_url": SUPPORT_URL}
        assert cfg["availability"] == [{"topic": f"car/{DEV_A}/status", "payload_available": "online",
                                        "payload_not_available": "offline"}]
    # Before the dongle said who it is: its id as serial number, no firmware.
    [(_, first)] = discovery_configs("car", DEV_A)[:1]
    assert first["device"]["serial_number"] == DEV_A and "sw_version" not in first["device"]


def test_the_schema_refuses_unknown_and_missing_keys():
    sensor = next(c for t, c in configs() if t.endswith("/sensor/obdsync_" + DEV_A + "/range_km/config"))
    for broken in ({**sensor, "unit": "km"}, {k: v for k, v in sensor.items() if k != "state_topic"},
                   {**sensor, "device_class": "fuel"}, {**sensor, "unit_of_measurement": "furlong"},
                   {**sensor, "origin": {"sw_version": "1"}}, {**sensor, "device": {**sensor["device"], "vin": "x"}}):
        with pytest.raises(jsonschema.ValidationError):
            validate("sensor", broken)
    _, ev = next((t, c) for t, c in configs() if "/event/" in t)
    with pytest.raises(jsonschema.ValidationError):
        validate("event", {k: v for k, v in ev.items() if k != "event_types"})
    with pytest.raises(jsonschema.ValidationError):
        validate("event", {**ev, "expire_after": 60})  # a sensor's option, not an event's


def test_every_published_value_has_an_entity_and_every_entity_reads_one():
    sensors = {s.key for s in SENSORS}
    binary = {b.key for b in BINARY_SENSORS}
    assert set(FULL_STATE) - META_KEYS == sensors | {"mil"}
    assert set(STATE_KEYS) - META_KEYS == sensors | {"mil"}
    assert {"range_km", "speed_kmh", "rpm", "trip_distance_km", "service_km_to_due", "last_seen"} <= sensors
    assert binary == {"mil", "overheating", "low_fuel"}


def test_every_entity_renders_a_value_from_a_full_state_and_unknown_from_an_empty_one():
    full, empty = encode(FULL_STATE), encode({})
    for topic, cfg in configs():
        comp = component_of(topic)
        if comp == "event" or cfg["state_topic"].endswith("/link"):
            continue
        assert cfg["state_topic"] == f"car/{DEV_A}/state"
        value = render(cfg["value_template"], full)
        assert value != "None", topic
        assert render(cfg["value_template"], empty) == "None", topic
        if comp == "binary_sensor":
            assert value in ("ON", "OFF")
    by_key = {t.split("/")[-2]: c for t, c in configs() if component_of(t) != "event"}
    assert render(by_key["fuel_pct"]["value_template"], full) == "9.4"
    assert render(by_key["low_fuel"]["value_template"], full) == "ON"
    assert render(by_key["overheating"]["value_template"], full) == "OFF"
    dtc = by_key["dtc_count"]
    assert json.loads(render(dtc["json_attributes_template"], full)) == {"codes": FULL_STATE["dtc_codes"]}
    svc = by_key["service_km_to_due"]
    assert json.loads(render(svc["json_attributes_template"], full)) == {"items": FULL_STATE["service_items"]}
    assert (by_key["speed_kmh"]["expire_after"], by_key["fuel_pct"]["expire_after"]) == (FAST_EXPIRE_S, 86400)
    assert by_key["fuel_pct"]["suggested_display_precision"] == 0


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_event_entities_render_the_event_type_and_its_values(type_):
    cfg = {t.split("/")[-2]: c for t, c in configs() if component_of(t) == "event"}[type_]
    assert cfg["state_topic"] == f"car/{DEV_A}/event/{type_}"
    ev = Event(id="e1", device=DEV_A, type=type_, severity="warning", opened_ms=1, cleared_ms=None,
               values={"level_pct": 9.4, "nested": {"a": [1, 2]}}, message="Fuel low: 9 %")
    opened = json.loads(render(cfg["value_template"], encode(event_message(ev))))
    assert opened["event_type"] == type_ and opened["event_type"] in cfg["event_types"]
    assert opened["values"] == ev.values and opened["message"] == ev.message and opened["severity"] == "warning"
    if type_ in PERSISTENT_TYPES:
        cleared = dataclasses.replace(ev, cleared_ms=2)
        got = json.loads(render(cfg["value_template"], encode(event_message(cleared))))
        assert got["event_type"] == f"{type_}_cleared" and got["event_type"] in event_types(type_)


def test_discovery_prefix_and_expiry_are_configurable_and_checked():
    cfg = parse_config({"forward": {"mqtt": [{"host": "b", "ha_discovery": True, "discovery_prefix": "ha",
                                              "ha_expire_after": 7200}]}})
    [m] = cfg.forward.mqtt
    assert (m.discovery_prefix, m.ha_expire_after) == ("ha", 7200)


# ---- at a real broker ------------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path):
    with running(tmp_path) as b:
        yield b


@pytest.fixture
async def store(tmp_path):
    st = await Store.open(tmp_path / "obdsync.db")
    yield st
    await st.close()


@contextlib.asynccontextmanager
async def forwarder(store, port):
    t = MqttTarget(host="127.0.0.1", port=port, name="ha", ha_discovery=True, discovery_prefix="ha-test",
                   topic_prefix="car")
    fwd = Forwarder(store, ForwardConfig(mqtt=(t,)), backoff=FAST, idle_poll_s=5, mqtt_timeout_s=5)
    await fwd.start()
    try:
        yield fwd
    finally:
        await fwd.stop()


async def test_an_unpaired_device_leaves_home_assistant(broker, store):
    n = len(configs())
    async with Collector(broker.port, ("ha-test/#", "car/#"), ident="c-ha", clean=True) as col:
        async with forwarder(store, broker.port) as fwd:
            fwd.publish_state(DEV_A, FULL_STATE)
            fwd.publish_state(DEV_B, FULL_STATE)
            fwd.set_device_info(DEV_B, firmware="0.3.1", vin="WVWZZZ1KZAW386754")
            await col.wait_for(lambda ms: sum(m.topic.startswith("ha-test/") and b"0.3.1" in m.payload
                                              for m in ms) >= n, what="DEV_B announced with its firmware")
            fwd.forget(DEV_B)
            await wait_until(lambda: fwd.senders[0].pending_retained() == 0, what="removal published")
    # A Home Assistant that starts now finds DEV_A's entities only, and nothing of DEV_B.
    held = await retained(broker.port)
    assert not [t for t in held if DEV_B in t], sorted(t for t in held if DEV_B in t)
    configs_held = {t: p for t, p in held.items() if t.startswith("ha-test/")}
    assert len(configs_held) == n and f"car/{DEV_A}/state" in held
    for topic, payload in configs_held.items():
        validate(component_of(topic), json.loads(payload))
