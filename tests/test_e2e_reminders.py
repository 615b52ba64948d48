"""The demo's drive end to end, with a real Mosquitto (Home Assistant discovery) and a
real notification receiver (Apprise's json:// to a loopback HTTP server): the low-fuel
event reaches the receiver as a short message, and every sensor and binary sensor
discovered in Home Assistant gets a value, rendered from the broker's retained
messages as Home Assistant renders its templates."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3

import pytest
from forward_util import wait_until
from ha_schema import validate
from mosquitto import retained, running
from test_homeassistant import component_of, render
from test_notify import receiver

from hil.runner import run_scenario, scenario_config
from hil.scenario import load
from obdsync.config import MqttTarget, parse_config
from obdsync.store import Store


def demo_drive():
    """The demo's city drive on a nearly empty tank, its highway and idling, then a
    short night parked (long enough to end the trip), faster than the demo shows them
    (the city at 4x: the demo's 1x is for a person watching, 15 s of the test's wait)."""
    demo = load("demo")
    city, highway, idle, park = demo.phases[:4]
    city = dataclasses.replace(city, speedup=4)
    highway = dataclasses.replace(highway, speedup=60)
    idle = dataclasses.replace(idle, speedup=12)
    park = dataclasses.replace(park, duration_s=1200, speedup=240)
    return dataclasses.replace(demo, phases=(city, highway, idle, park),
                               expects=tuple(e for e in demo.expects if e.type in ("low_fuel", "trip")))


async def enter_baseline(db, km: float) -> None:
    """What a user does on day one (`obdsync service baseline KM`) while the daemon runs:
    the service reminder counts from there."""
    def device():
        with contextlib.suppress(sqlite3.Error):
            conn = sqlite3.connect(db, timeout=5)
            try:
                row = conn.execute("SELECT id FROM devices").fetchone()
                return row and row[0]
            finally:
                conn.close()

    dev = await wait_until(device, timeout=60, what="the dongle in the database")
    store = await Store.open(db)
    try:
        await store.add_service(dev, store._now_ms(), km, "baseline")
    finally:
        await store.close()


@pytest.mark.slow
async def test_the_demo_notifies_and_every_home_assistant_entity_gets_a_value(tmp_path):
    sc = demo_drive()
    (tmp_path / "broker").mkdir()
    with receiver() as srv, running(tmp_path / "broker") as b:
        base = scenario_config(sc)
        mqtt = MqttTarget(host="127.0.0.1", port=b.port, name="ha", ha_discovery=True, topic_prefix="car")
        notify = parse_config({"notify": [{"urls": [srv.url()], "timeout": 5.0}]}).forward.notify
        cfg = dataclasses.replace(base, forward=dataclasses.replace(base.forward, mqtt=(mqtt,), notify=notify))
        baseline = asyncio.create_task(enter_baseline(tmp_path / "obdsync.db", 42000))
        report = await run_scenario(sc, workdir=tmp_path, echo=None, config=cfg)
        await baseline
        held = await retained(b.port)

    assert report.ok, [(c.expect.type, c.found) for c in report.checks] + report.problems
    # The notification: short, in the user's units, from the low-fuel event.
    fuel = [g for g in srv.got if g["title"] == "Fuel low"]
    assert len(fuel) == 1, srv.got
    level = next(e for e in report.events if e.type == "low_fuel").values["level_pct"]
    assert fuel[0]["message"].startswith(f"{level:.0f} %, ≈ ") and fuel[0]["type"] == "warning", fuel

    # Home Assistant: every sensor and binary sensor discovered has a value.
    discovered = {t: json.loads(p) for t, p in held.items() if t.startswith("homeassistant/") and p}
    assert discovered
    missing = []
    for topic, cfg in discovered.items():
        comp = component_of(topic)
        validate(comp, cfg)
        if comp == "event":
            continue  # an event entity holds the last event of its type, if one happened
        payload = held.get(cfg["state_topic"])
        if payload is None:
            missing.append((topic, "no retained message on " + cfg["state_topic"]))
            continue
        value = render(cfg["value_template"], payload) if "value_template" in cfg else payload.decode()
        if value in ("None", ""):
            missing.append((topic, payload[:300]))
    assert not missing, missing
    device = next(iter(discovered.values()))["device"]
    # The VIN once the dongle's info carries it (it reads it during the first drive); its id before.
    dev_id = device["identifiers"][0].removeprefix("obdsync_")
    assert device["sw_version"] and device["serial_number"] in ("WVWZZZ1KZAW386754", dev_id)
    state = json.loads(held[next(c["state_topic"] for c in discovered.values() if "/state" in c["state_topic"])])
    assert state["trip_distance_km"] > 0 and state["service_km_to_due"] > 0 and state["range_km"] > 0
    # Every item of the schedule, each due by distance, by time or both.
    assert state["service_items"] and all(it["km_to_due"] is not None or it["days_to_due"] is not None
                                          for it in state["service_items"])
    assert isinstance(state["fuel_pct"], float) and round(state["fuel_pct"], 1) == state["fuel_pct"]
