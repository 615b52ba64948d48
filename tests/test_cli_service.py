"""`obdsync service …` and the schedule in `obdsync status`, as a user runs them (subprocesses
with their own XDG directories) against a store whose rules state knows the odometer."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from e2e import Home

from obdsync.config import Config
from obdsync.rules import RuleEngine
from obdsync.store import Store

DEV = "2ac781bcacd0bc99"
DAY = 86_400_000


@pytest.fixture
def home(tmp_path):
    h = Home(tmp_path / "home")
    yield h
    h.close()


def seed(home: Home, odometer: float | None) -> None:
    """A device whose saved rules state read ``odometer`` from PID 0xA6 a minute ago
    (None: a car without the odometer PID, nothing read)."""
    async def go() -> None:
        home.db.parent.mkdir(parents=True, exist_ok=True)
        store = await Store.open(home.db)
        try:
            await store.set_device_info(DEV, name="obdsync-test")
            if odometer is not None:
                eng = RuleEngine(Config(), DEV)
                eng.samples([(int(time.time() * 1000) - 60_000, 0xA6, odometer)])
                await store.save_rules_state(DEV, 0, json.dumps({"engine": eng.snapshot(), "services_fed": 0}))
        finally:
            await store.close()

    asyncio.run(go())


def ok(p):
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def fails(p, text):
    assert p.returncode != 0, p.stdout
    assert text in p.stderr and "Traceback" not in p.stderr, p.stderr


def service_of(home: Home) -> dict:
    (dev,) = json.loads(ok(home.cli("status", "--json")))["devices"]
    return dev["service"]


def test_status_shows_km_and_days_to_due_after_baseline_and_done(home):
    seed(home, None)
    ok(home.cli("service", "baseline", "42000"))
    svc = service_of(home)
    assert svc["odometer_km"] == 42000 and svc["distance_source"] == "speed"
    oil = svc["items"][0]
    assert (oil["item"], oil["km_to_due"], oil["days_to_due"]) == ("oil", 15000, 364)
    assert all(i["km_to_due"] is not None or i["days_to_due"] is not None for i in svc["items"])

    ok(home.cli("service", "done", "oil", "--km", "42100"))
    items = {i["item"]: i for i in service_of(home)["items"]}
    assert (items["oil"]["km_to_due"], items["oil"]["days_to_due"]) == (15000, 364)
    assert items["air_filter"]["km_to_due"] == 30000  # from the baseline; not serviced
    text = ok(home.cli("status"))
    assert "odometer 42\u202f000 km, from the baseline plus integrated speed (PID 0x0D)" in text, text
    assert "oil and filter" in text and "15\u202f000 km to due, 364 days to due" in text, text
    history = ok(home.cli("service", "history")).splitlines()
    assert "service" in history[0] and "42100 km" in history[0] and "oil and filter" in history[0]
    assert "odometer baseline" in history[1] and "42000 km" in history[1]


def test_service_done_refuses_what_contradicts_the_odometer_or_the_calendar(home):
    seed(home, 42007.0)
    fails(home.cli("service", "done", "oil", "--km", "9"),
          "9 km is below the odometer (42007 km, from the car's odometer (PID 0xA6))")
    fails(home.cli("service", "done", "oil", "--at", "2030-01-01"), "the date 2030-01-01")
    fails(home.cli("service", "done", "timing_belt"), "unknown item timing_belt; the schedule has: oil, air_filter")
    fails(home.cli("service", "done"), "Missing argument")
    assert "no service" in ok(home.cli("service", "history"))  # nothing refused was stored
    ok(home.cli("service", "done", "all"))  # at the odometer the car reports
    items = service_of(home)["items"]
    assert {i["last_km"] for i in items} == {42007.0}


def test_service_done_without_a_known_odometer_asks_for_km(home):
    seed(home, None)
    fails(home.cli("service", "done", "oil"), "the odometer is not known yet: give --km KM")
    ok(home.cli("service", "done", "oil", "--km", "30000", "--at", "30d"))
    oil = service_of(home)["items"][0]
    assert oil["last_km"] == 30000 and oil["days_to_due"] in (364 - 30, 365 - 30)
