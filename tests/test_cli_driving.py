"""`obdsync trips show ID` and `obdsync trips week`: the driving evaluation as the user reads
it, from trips the rules derived and the store kept."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import pytest
from e2e import Home
from test_rules_score import ramp
from test_rules_synth import DEVICE, Car, run

from obdsync.store import Store

WEEK = 7 * 86_400_000


@pytest.fixture
def home(tmp_path):
    h = Home(tmp_path / "home")
    yield h
    h.close()


def derived_trips(car: Car) -> list:
    return [c.trip for c in run(car.items) if c.event.type == "trip"]


def seed(home: Home, trips: list) -> None:
    async def go() -> None:
        home.db.parent.mkdir(parents=True, exist_ok=True)
        async with await Store.open(home.db) as store:
            await store.set_device_info(DEVICE)
            for t in trips:
                await store.put_trip(t)  # the rules' TripSummary as it is emitted

    asyncio.run(go())


def ok(p):
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_trips_show_prints_the_score_its_components_and_tips(home):
    car = Car().idle(400).drive(600, ramp(0, 80)).drive(200, ramp(80, 140)).drive(300, ramp(140, 60)).park(600)
    (trip,) = derived_trips(car)
    seed(home, [trip])
    text = ok(home.cli("trips", "show", trip.id[:10]))
    ev = trip.score
    assert f"driving score {ev['score']}/100" in text, text
    assert 0 < ev["score"] < 100
    for line in ("Speeding", "Idling", "Hard braking", "Over-revving"):
        assert line in text, text
    assert "% of the time moving above 120 km/h: ease off" in text, text
    assert "% of the trip idling: switch the engine off" in text, text
    header, row = ok(home.cli("trips")).splitlines()[:2]
    assert header.split()[-1] == "SCORE" and row.split()[-1] == str(ev["score"])
    home.write_config('[display]\nunits = "imperial"\n')
    assert "above 75 mph" in ok(home.cli("trips", "show", trip.id[:10]))


def test_trips_week_gives_the_trend(home):
    calm = Car().drive(1200, ramp(0, 60)).park(600)
    rough = Car().drive(600, ramp(0, 80)).drive(300, ramp(80, 150)).drive(300, ramp(150, 60)).park(600)
    (t1,) = derived_trips(rough)
    (t2,) = derived_trips(calm)
    now = int(time.time() * 1000)
    t1 = replace(t1, id="a" * 24, started_ms=now - WEEK - 3600_000, ended_ms=now - WEEK)
    t2 = replace(t2, id="b" * 24, started_ms=now - 3600_000, ended_ms=now)
    seed(home, [t1, t2])
    weeks = json.loads(ok(home.cli("trips", "week", "--json")))
    assert [w["score"] for w in weeks] == [t1.score["score"], 100]
    assert weeks[1]["change"] == 100 - t1.score["score"] > 0
    lines = ok(home.cli("trips", "week")).splitlines()
    assert lines[-1].endswith(f"↑ +{100 - t1.score['score']}") and "score 100 over 1 trips" in lines[-1], lines
