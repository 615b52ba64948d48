"""The CLI as a user meets it, in-process (click's runner) on a database built through the
store: the newest samples in time order, `--json` on every data command with ISO 8601
times and their zone, values rounded to what their sensor resolves, and the messages of
the first minutes (nothing paired, nothing running, no config file, bad input)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from obdsync import devices
from obdsync.cli import cli
from obdsync.config import parse_config
from obdsync.model import Event, Trip
from obdsync.store import Store
from protocol.record import KIND_ANCHOR, KIND_DTC, KIND_SAMPLES

DEV = "0011223344556677"
WALL = 1_700_000_000_000
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?[+-]\d\d:\d\d")


def record(seq: int):
    """RPM, speed, fuel level: one group per record, a second apart."""
    t = seq * 1000
    return SimpleNamespace(kind=KIND_SAMPLES, seq=seq, boot=1, t0=t, samples=[
        (t, 0x0C, bytes([0x0B, seq * 7 & 0xFF])), (t, 0x0D, bytes([seq])), (t, 0x2F, bytes([154]))])


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var, sub in (("HOME", "h"), ("XDG_CONFIG_HOME", "c"), ("XDG_DATA_HOME", "d")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv("OBDSYNC_BLE_BACKEND", raising=False)
    return tmp_path


@pytest.fixture
async def db(home):
    path = home / "obdsync.db"
    store = await Store.open(path)
    try:
        await store.ingest(DEV, [SimpleNamespace(kind=KIND_ANCHOR, seq=0, boot=1, t0=0, wall_ms=WALL)]
                           + [record(i) for i in range(1, 11)])
        await store.ingest(DEV, [SimpleNamespace(kind=KIND_DTC, seq=11, boot=1, t0=11_000, mode=3,
                                                 codes=[b"\x03\x01"])])
        await store.put_event(Event("ev1", DEV, "low_fuel", "warning", WALL + 5000, None,
                                    {"level_pct": 9.4, "litres_left": 4.7, "range_km": 48}, "Fuel low: 9 %"))
        await store.put_trip(Trip("trip1", DEV, WALL + 1000, WALL + 600_000, 12.345, 1.04,
                                  {"duration_s": 599.0, "l_per_100km": 8.42, "hard_brakes": 1}))
        await store.add_service(DEV, WALL, 42000.0, "baseline")
    finally:
        await store.close()
    return path


def run(*args: str, ok: bool = True):
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert r.exit_code == 0, r.output
    return r


def test_samples_are_the_newest_n_in_time_order_rounded(db):
    r = run("--db", str(db), "samples", "--signal", "speed", "--limit", "4")
    lines = r.output.splitlines()
    assert lines[0] == "SPEED: 4 samples (the newest 4)"
    assert [int(x.split()[-1]) for x in lines[2:]] == [7, 8, 9, 10]
    got = [json.loads(x) for x in run("--db", str(db), "samples", "--signal", "fuel_level", "--limit", "3",
                                      "--json").output.splitlines()]
    assert [g["time_ms"] for g in got] == [WALL + 8000, WALL + 9000, WALL + 10000]
    assert {g["value"] for g in got} == {60.4}  # 154 × 100 / 255 = 60.39…: one decimal is what it resolves
    assert all(ISO.fullmatch(g["time"]) for g in got)


def test_every_data_command_has_json_with_times_and_their_zone(db):
    status = json.loads(run("--db", str(db), "status", "--json").output)
    [dev] = status["devices"]
    assert ISO.fullmatch(dev["last_seen"]) and dev["last_values"]["RPM"]["time_ms"] == WALL + 10_000
    assert dev["last_values"]["FUEL_LEVEL"]["value"] == 60.4 and ISO.fullmatch(dev["last_values"]["RPM"]["time"])
    assert isinstance(dev["last_values"]["RPM"]["value"], int)
    [ev] = map(json.loads, run("--db", str(db), "events", "--json").output.splitlines())
    assert ISO.fullmatch(ev["opened"]) and ev["cleared"] is None
    [trip] = map(json.loads, run("--db", str(db), "trips", "--json").output.splitlines())
    assert (trip["distance_km"], trip["fuel_l"]) == (12.35, 1.04) and ISO.fullmatch(trip["ended"])
    assert json.loads(run("--db", str(db), "trips", "show", "trip1", "--json").output)["id"] == "trip1"
    [dtc] = map(json.loads, run("--db", str(db), "dtc", "read", "--json").output.splitlines())
    assert dtc["mode"] == "stored" and dtc["codes"][0]["code"] == "P0301" and ISO.fullmatch(dtc["read"])
    [svc] = map(json.loads, run("--db", str(db), "service", "history", "--json").output.splitlines())
    assert (svc["kind"], svc["km"]) == ("baseline", 42000.0) and ISO.fullmatch(svc["at"])
    assert run("--db", str(db), "outbox", "dead", "--json").output == ""


def test_export_has_iso_times_and_rounded_values(db):
    rows = list(csv.DictReader(io.StringIO(run("--db", str(db), "export").stdout)))
    assert rows and all(ISO.fullmatch(r["time"]) for r in rows)
    assert {r["value"] for r in rows if r["signal"] == "FUEL_LEVEL"} == {"60.4"}


def test_tables_for_people(db):
    out = run("--db", str(db), "trips").output
    header, row = out.splitlines()[:2]
    assert header.split() == ["TRIP", "STARTED", "DISTANCE", "MIN", "FUEL", "ECONOMY", "HARD", "BRAKES", "SCORE"]
    assert "12 km" in row and "1.0 L" in row and "8.4 L/100 km" in row
    assert "Fuel low: 9 %" in run("--db", str(db), "events").output


def test_status_says_what_is_missing(home, db):
    out = run("status").output  # the default database: nothing there, nothing paired
    assert "no dongle paired yet" in out
    devices.add(DEV, "AA:BB:CC:DD:EE:FF", bytes(32))
    out = run("status").output
    assert "obdsync run is not running: nothing is connected" in out
    assert f"dongle {DEV} at AA:BB:CC:DD:EE:FF: paired, nothing received from it yet" in out
    out = run("--db", str(db), "status").output
    assert "not running" in out and f"dongle {DEV}" in out and "paired, nothing received" not in out


def test_run_with_a_device_that_is_not_paired_names_the_paired_ones(home):
    r = run("run", "--device", "AA:BB", ok=False)
    assert r.exit_code == 1 and "no paired dongle: run `obdsync scan`" in r.output
    devices.add(DEV, "AA:BB:CC:DD:EE:FF", bytes(32))
    r = run("run", "--device", "ffff", ok=False)
    assert r.exit_code == 1 and f"--device ffff: no paired dongle has that id or address (paired: {DEV} at" in r.output


def test_config_check_without_a_file_and_with_errors_of_every_kind(home):
    r = run("config", "check")
    assert r.output.endswith("config.toml: no file: all defaults\n")
    bad = home / "bad.toml"
    bad.write_text("[fuel]\nlow_open_pct = 30\nlow_clear_pct = 20\nrefuel_min_pct = -1\n")
    r = run("config", "check", str(bad), ok=False)
    assert r.exit_code == 1
    assert "fuel.refuel_min_pct must be between" in r.output
    assert "fuel.low_clear_pct must be ≥ fuel.low_open_pct (30), got 20" in r.output  # in the same run
    r = run("config", "check", str(home / "nosuch.toml"), ok=False)
    assert r.exit_code == 1 and "config file not found" in r.output


def test_bad_input_is_refused_by_name(home, db):
    r = run("--db", str(db), "vacuum", "--days", "-1", ok=False)
    assert r.exit_code == 2 and "'--days': -1.0 is not in the range x>=0" in r.output
    r = run("hil", "run", "nosuch", ok=False)
    assert r.exit_code == 1 and "no scenario 'nosuch' (shipped: city, demo," in r.output


def test_scan_without_bluetooth_says_so_in_one_line(home):
    r = run("--ble-backend", "no_bluetooth", "scan", "--timeout", "0.1", ok=False)
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        "Error: Bluetooth is not available here (No Bluetooth adapters found.): is there an adapter, and is"
        " bluetoothd running (systemctl status bluetooth)?"]


async def test_per_device_vehicle_tables(db, home):
    from obdsync.pipeline import Pipeline

    cfg = parse_config({"vehicle": {"tank_litres": 55},
                        "device": {DEV: {"vehicle": {"tank_litres": 40, "fuel_type": "diesel"},
                                         "fuel": {"low_open_pct": 10}}}})
    store = await Store.open(db)
    try:
        engine = (await Pipeline(store, cfg)._state(DEV)).engine
        other = (await Pipeline(store, cfg)._state("ffeeddccbbaa9988")).engine
    finally:
        await store.close()
    assert (engine.config.vehicle.tank_litres, engine.config.vehicle.fuel_type) == (40, "diesel")
    assert engine.config.fuel.low_open_pct == 10 and engine.config.fuel.low_clear_pct == 20
    assert other.config.vehicle.tank_litres == 55
    f = home / "c.toml"
    f.write_text(f"[vehicle]\ntank_litres = 55\n[device.{DEV}.vehicle]\ntank_litres = 40\n")
    assert f"dongle {DEV}: its own vehicle settings (40 L tank, petrol)" in run("config", "check", str(f)).output


@pytest.mark.slow
def test_hil_run_takes_a_config_and_keeps_its_database(home):
    from test_notify import receiver

    with receiver() as srv:
        cfg = home / "config.toml"
        cfg.write_text(f'[[notify]]\nurls = ["{srv.url()}"]\nevents = ["trip"]\ntimeout = 5.0\n'
                       '[display]\nunits = "imperial"\n')
        cfg.chmod(0o600)  # it holds a notification URL
        work = home / "w"
        # A drive of the user's own (a scenario file): the city's start and a park that ends
        # the trip, 9 s of real time (the shipped highway took 25 s for the same trip).
        drive = home / "short.toml"
        drive.write_text('name = "short"\ndescription = "a short drive, then parked"\n[vehicle]\nseed = 7\n'
                         '[[phase]]\nkind = "city"\nduration_s = 300\nspeedup = 60\n'
                         '[[phase]]\nkind = "park"\nduration_s = 600\nspeedup = 150\n'
                         '[[expect]]\ntype = "trip"\ncount = 1\n')
        r = run("hil", "run", str(drive), "--config", str(cfg), "--workdir", str(work))
        assert "PASS" in r.stdout
    db = (work / "obdsync.db").resolve()
    assert f"the database is kept in {db}" in r.stdout and f"obdsync --db {db} events" in r.stdout
    # The notification went out in the file's units, and the database answers afterwards.
    [trip] = [g for g in srv.got if g["title"] == "Trip"]
    assert " mi in " in trip["message"], trip
    assert "trip" in run("--db", str(db), "events").stdout


@pytest.mark.slow
def test_scan_lists_a_dongle_as_a_table_and_as_json(tmp_path):
    from e2e import Home, short_city

    from hil.rig import Rig

    with Rig(short_city(300, speedup=60), tmp_path / "rig") as rig:
        home = Home(tmp_path / "home", rig.air)
        try:
            found = [json.loads(x) for x in home.cli("scan", "--json", "--timeout", "3").stdout.splitlines()]
            table = home.cli("scan", "--timeout", "3").stdout.splitlines()
        finally:
            home.close()
    d = rig.dongle
    dongles = [f for f in found if f["kind"] == "dongle"]
    assert [f["address"] for f in dongles] == [d.mac] and isinstance(dongles[0]["rssi"], int)
    assert dongles[0]["to_use"] == f"obdsync pair {d.mac}"
    assert table[0].split() == ["ADDRESS", "NAME", "RSSI", "KIND", "TO", "USE"]
    assert any(line.split()[0] == d.mac for line in table[1:])


def test_trips_show_takes_a_trip_without_an_end(db):
    """The store allows a trip with no end (the dashboard shows it up to now): `trips show`
    reads its samples up to now instead of failing on None + 1."""
    async def put() -> None:
        store = await Store.open(db)
        try:
            await store.put_trip(Trip("open1", DEV, WALL + 1000, None, 1.5, None, {"duration_s": 60.0}))
        finally:
            await store.close()

    asyncio.run(put())
    r = run("--db", str(db), "trips", "show", "open1")
    assert r.output.startswith("trip open1 ")
    assert json.loads(run("--db", str(db), "trips", "show", "open1", "--json").output)["ended_ms"] is None


@pytest.mark.parametrize("name, text", [("paired.json", '{"dongles": []}'), ("adapters.json", "[1]")])
def test_a_damaged_registry_is_one_line_not_a_traceback(home, name, text):
    (home / "c" / "obdsync").mkdir(parents=True)
    (home / "c" / "obdsync" / name).write_text(text)
    r = run("run", ok=False)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"{name}" in r.output and "not an object" in r.output.replace("is list", "not an object")
