"""`obdsync import` of a CSV log (python-OBD names, PIDs, Torque Pro's columns) into the
store as a device of its own, then `obdsync replay` finds the fills and thefts in it:
end to end through the CLI on a real SQLite file; and the format's edges."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from e2e import Home

from hil.fueltrace import ATRV, EPOCH_MS, LEVEL, RATE, RPM, SPEED, FuelTrace, Noise
from obdsync.csvimport import ENCODERS, TORQUE, CsvFormatError, device_for, encode, parse
from obdsync.decode import decode

COLUMNS = {SPEED: "SPEED", RPM: "RPM", LEVEL: "FUEL_LEVEL", RATE: "0x5E", ATRV: "VOLTAGE"}


@pytest.fixture
def home(tmp_path):
    h = Home(tmp_path / "home")
    yield h
    h.close()


def trace_csv(tr: FuelTrace) -> str:
    """The trace as a logger writes it: one row per moment, ISO times, empty cells for
    what was not read then (dongle EVENT records have no column: the rules infer them)."""
    lines = ["time," + ",".join(COLUMNS.values())]
    for it in tr.items:
        if it[0] != "s":
            continue
        w = it[1][0][0]
        vals = {sig: v for (_w, sig, v) in it[1]}
        when = dt.datetime.fromtimestamp(w / 1000, dt.UTC).isoformat()
        lines.append(when + "," + ",".join("" if s not in vals else f"{vals[s]:g}" for s in COLUMNS))
    return "\n".join(lines) + "\n"


def ok(p):
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_import_then_replay_finds_the_fill_and_the_theft_with_their_litres(home, tmp_path):
    tr = FuelTrace(Noise(slosh_pct=3.0, gauge_tau_s=60.0, parked_answering=True), 4, level=20)
    tr.drive(900).refuel(30, secs=180, engine="idle").drive(900).park(1800).theft(8, secs=600).park(1200)
    tr.drive(900).park(600)
    log = tmp_path / "drive.csv"
    log.write_text(trace_csv(tr))
    out = ok(home.cli("import", str(log)))
    dev = device_for(log.read_bytes())
    assert f"device {dev}" in out and "FUEL_LEVEL (0x2F)" in out and f"obdsync replay --device {dev}" in out
    assert "ignored" not in out
    again = ok(home.cli("import", str(log)))  # the same file: the same device, nothing new
    assert "(0 records stored)" in again
    start = dt.datetime.fromtimestamp(EPOCH_MS / 1000 - 60).astimezone().isoformat()
    ok(home.cli("fuel", "price", "1.85", "--device", dev, "--at", start))
    ok(home.cli("replay", "--device", dev))
    events = [json.loads(line) for line in ok(home.cli("events", "--device", dev, "--json")).splitlines()]
    fuel = sorted((e for e in events if e["type"] in ("refuel", "fuel_drop", "fuel_leak_suspected")),
                  key=lambda e: e["opened_ms"])
    assert [e["type"] for e in fuel] == ["refuel", "fuel_drop"], fuel
    refuel, drop = (e["values"] for e in fuel)
    assert refuel["litres"] == pytest.approx(30, rel=0.1) and refuel["cost"] == pytest.approx(refuel["litres"] * 1.85)
    assert drop["litres"] == pytest.approx(8, rel=0.1) and drop["while"] == "parked"
    trips = [e for e in events if e["type"] == "trip"]
    assert len(trips) == 2 and all(t["values"]["fuel_cost"] is not None for t in trips)
    assert "fuel_price" not in ok(home.cli("service", "history", "--device", dev))


def test_a_bad_log_is_refused_naming_row_and_column(home, tmp_path):
    log = tmp_path / "bad.csv"
    log.write_text("time,SPEED,FUEL_LEVEL\n1700000000,50,40\n1700000001,fast,40\n")
    p = home.cli("import", str(log))
    assert p.returncode == 1 and "row 3, column 'SPEED': 'fast' is not a number" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and not home.db.exists()  # refused before a database was made


def test_torque_pro_columns_and_times():
    text = ("GPS Time, Device Time, Longitude, Speed (OBD)(km/h), Engine RPM(rpm), "
            "Fuel Level (From Engine ECU)(%), Engine Coolant Temperature(°C), Voltage (OBD Adapter)(V)\n"
            "Thu Jul 18 13:41:56 GMT+02:00 2013,18-Jul-2013 13:41:56.342,8.5,52,1800,47.1,88,14.2\n"
            "Thu Jul 18 13:41:57 GMT+02:00 2013,18-Jul-2013 13:41:57.342,8.5,-,1750,-,88,14.1\n"
            "GPS Time, Device Time, Longitude, Speed (OBD)(km/h), Engine RPM(rpm), "
            "Fuel Level (From Engine ECU)(%), Engine Coolant Temperature(°C), Voltage (OBD Adapter)(V)\n"
            "Thu Jul 18 14:00:00 GMT+02:00 2013,18-Jul-2013 14:00:00.000,8.5,0,800,46.7,90,14.0\n")
    p = parse(text)
    assert p.ignored == ["Longitude"]  # Device Time is the clock (GPS Time its spare)
    assert [len(r[1]) for r in p.rows] == [5, 3, 5]
    assert p.rows[1][0] - p.rows[0][0] == 1000 and p.rows[2][0] - p.rows[0][0] == (18 * 60 + 3.658) * 1000
    assert dict(p.rows[0][1]) == {0x0D: 52.0, 0x0C: 1800.0, 0x2F: 47.1, 0x05: 88.0, 0xFF: 14.2}
    assert TORQUE["Speed (OBD)(mph)"] == (0x0D, 1.609344)


@pytest.mark.parametrize("signal", sorted(ENCODERS))
def test_encoding_is_what_the_decoder_reads_back(signal):
    step = {0x04: 100 / 255, 0x11: 100 / 255, 0x2F: 100 / 255}.get(signal, 1.0)
    for v in (0.0, 12.3, 47.1, 55.0):
        (r, *_) = decode(signal, encode(signal, v))
        assert r.value == pytest.approx(v, abs=step / 2 + 1e-9)
    with pytest.raises(ValueError, match="outside what the PID can say"):
        encode(signal, -50.0)  # below every PID's range (coolant starts at -40 °C)
    with pytest.raises(ValueError, match="outside"):
        encode(signal, 1e10)


def test_a_value_the_pid_cannot_carry_is_an_error_not_a_clamp():
    with pytest.raises(CsvFormatError, match=r"row 2, column 'FUEL_LEVEL': 120 is outside .* \(0 to 100\)"):
        parse("time,FUEL_LEVEL\n1700000000,120\n")


def test_format_errors_say_what_is_wrong():
    with pytest.raises(CsvFormatError, match="no time column"):
        parse("SPEED,RPM\n1,2\n")
    with pytest.raises(CsvFormatError, match="row 3: time goes backwards"):
        parse("time,SPEED\n2026-01-01T10:00:01,5\n2026-01-01T10:00:00,5\n")
    with pytest.raises(CsvFormatError, match="no column names a signal"):
        parse("time,speedo\n1700000000,5\n")
    with pytest.raises(CsvFormatError, match=r"row 2: time 'yesterday' is neither"):
        parse("time,SPEED\nyesterday,5\n")
    p = parse("timestamp,SPEED,ENGINE_LOAD,whatever\n1700000000000,5,,x\n1700000001,6,40,y\n")
    assert p.rows == [(1_700_000_000_000, [(0x0D, 5.0)]), (1_700_000_001_000, [(0x0D, 6.0), (0x04, 40.0)])]
    assert p.ignored == ["whatever"]
