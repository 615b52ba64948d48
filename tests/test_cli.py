"""`obdsync` as a user runs it: config errors, pairing, the service, what is stored, trouble
codes. Each command is a subprocess with its own XDG directories (tests/e2e.py `Home`);
with a rig, on the simulated radio. No secret appears in anything any command printed.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import stat

import pytest
from e2e import Answers, Home, dongle_status, query, record_count, scenario, short_city, wait_until

from hil.rig import Rig
from obdsync import devices
from obdsync.decode import display_value, signal_name
from obdsync.render import iso_ms

BAD_RANGE = "fuel.low_open_pct must be between 0 and 100, got 150"


@pytest.fixture
def home(tmp_path):
    h = Home(tmp_path / "home")
    yield h
    h.close()


def fails_with(p, text: str) -> None:
    assert p.returncode == 1, f"exit {p.returncode}\n{p.stdout}{p.stderr}"
    assert text in p.stderr, p.stderr
    assert "Traceback" not in p.stderr, p.stderr


# ---- config (no rig) -------------------------------------------------------------------------

def test_config_check_names_the_key_and_its_range(home, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[fuel]\nlow_open_pct = 150\n")
    fails_with(home.cli("--config", str(bad), "config", "check"), BAD_RANGE)
    fails_with(home.cli("config", "check", str(bad)), BAD_RANGE)
    good = tmp_path / "good.toml"
    good.write_text("[fuel]\nlow_open_pct = 12\n")
    p = home.cli("--config", str(good), "config", "check")
    assert p.returncode == 0 and "OK" in p.stdout, p.stdout + p.stderr


def test_config_defaults_is_a_config_file_that_changes_nothing(home, tmp_path):
    import dataclasses

    from obdsync.config import load_config, parse_config

    p = home.cli("config", "defaults")
    assert p.returncode == 0, p.stderr
    assert "[fuel]\nlow_open_pct = 15.0\n" in p.stdout, p.stdout
    f = tmp_path / "defaults.toml"
    f.write_text(p.stdout)
    assert dataclasses.replace(load_config(f), source=None) == parse_config({})


def test_run_refuses_a_bad_config_with_the_same_message(home, tmp_path):
    # A working setup (one paired dongle) whose config was then edited wrongly.
    devices.add("0011223344556677", "AA:BB:CC:DD:EE:01", bytes(32), base=home.config_home / "obdsync")
    bad = tmp_path / "bad.toml"
    bad.write_text("[fuel]\nlow_open_pct = 150\n")
    fails_with(home.cli("--config", str(bad), "run", timeout=30), BAD_RANGE)
    home.write_config("[fuel]\nlow_open_pct = 150\n")  # the default location too
    fails_with(home.cli("run", timeout=30), BAD_RANGE)
    assert not home.db.exists(), "run created a database before refusing"


def test_unknown_key_suggests_the_right_one(home, tmp_path):
    typo = tmp_path / "typo.toml"
    typo.write_text("[fuel]\nlow_open_pc = 10\n\n[enigne]\novereat_open_c = 100\n")
    p = home.cli("--config", str(typo), "config", "check")
    fails_with(p, "unknown key fuel.low_open_pc (did you mean fuel.low_open_pct?)")
    assert "unknown section [enigne] (did you mean [engine]?)" in p.stderr


def test_missing_or_broken_config_file_is_a_clear_error(home, tmp_path):
    fails_with(home.cli("--config", str(tmp_path / "nope.toml"), "config", "check"), "config file not found")
    broken = tmp_path / "broken.toml"
    broken.write_text("[fuel\nlow_open_pct = 1\n")
    fails_with(home.cli("--config", str(broken), "config", "check"), "not valid TOML")


def test_config_check_and_run_refuse_credentials_in_the_clear(home, tmp_path):
    devices.add("0011223344556677", "AA:BB:CC:DD:EE:01", bytes(32), base=home.config_home / "obdsync")
    cfg = home.write_config('[[forward.mqtt]]\nhost = "broker.lan"\nusername = "car"\npassword = "hunter2"\n')
    os.chmod(cfg, 0o600)
    plaintext = "forward.mqtt[0]: the password would cross the network in plaintext to broker.lan:1883 (no TLS)"
    fails_with(home.cli("config", "check"), plaintext)
    fails_with(home.cli("run", timeout=30), plaintext)
    os.chmod(cfg, 0o644)
    p = home.cli("config", "check")
    fails_with(p, f"forward.mqtt[0].password is written in a config file that group or others can read or write "
                  f"(mode 644); run: chmod 600 {cfg}")
    assert "hunter2" not in p.stderr
    assert not home.db.exists(), "run created a database before refusing"


def test_pair_takes_the_secret_from_stdin_or_a_private_file_not_the_command_line(home, tmp_path):
    # A label that is not hex fails before any radio work: it shows where the text was read from.
    not_hex = "the secret must be hex digits"
    p = home.cli("pair", "AA:BB:CC:DD:EE:01", input="obdsync:0011223344556677:zz\n")
    fails_with(p, not_hex)
    assert "warning" not in p.stderr
    fails_with(home.cli("pair", "AA:BB:CC:DD:EE:01", input=""), "no secret given")
    f = tmp_path / "label.txt"
    f.write_text("obdsync:0011223344556677:zz\n")
    f.chmod(0o600)
    fails_with(home.cli("pair", "AA:BB:CC:DD:EE:01", "--secret-file", str(f)), not_hex)
    fails_with(home.cli("pair", "AA:BB:CC:DD:EE:01", "--secret-file", "-", input="zz\n"), not_hex)
    f.chmod(0o644)
    fails_with(home.cli("pair", "AA:BB:CC:DD:EE:01", "--secret-file", str(f)),
               f"--secret-file: {f} is readable by group or others (mode 644); run: chmod 600 {f}")
    p = home.cli("pair", "AA:BB:CC:DD:EE:01", "--secret", "zz")
    fails_with(p, not_hex)
    assert "warning: --secret shows the dongle's secret to every local user (the process list)" in p.stderr
    p = home.cli("pair", "AA:BB:CC:DD:EE:01", "--secret", "zz", "--secret-file", str(f))
    assert p.returncode == 2 and "give the secret once" in p.stderr, p.stderr
    assert_nothing_paired(home)


# ---- pairing, the service, what is stored -----------------------------------------------------

@pytest.mark.slow
def test_pair_run_and_read_back_what_is_stored(tmp_path):
    with Rig(short_city(600, speedup=60), tmp_path / "rig") as rig:
        d = rig.dongle
        home = Home(tmp_path / "home", rig.air)
        try:
            # A wrong secret: its BLE passkey is refused, the user is told, nothing is kept.
            fails_with(home.cli("pair", d.mac, input=wrong_label(d)), "pairing failed")
            assert "wrong secret?" in home.outputs[-1]
            assert_nothing_paired(home)

            p = home.pair(d)
            assert d.device_id in p.stdout
            key = home.config_home / "obdsync" / "secrets" / f"{d.device_id}.key"
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
            assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
            assert [x.address for x in devices.load(home.config_home / "obdsync")] == [d.mac]

            daemon = home.run("-vv")  # debug logging: the secrets check reads it all
            wait_until(lambda: record_count(home.db, d.device_id) >= 40, 30, "40 records stored")
            assert daemon.terminate() == 0, daemon.output[-3000:]
        finally:
            home.close()

    db = home.db
    n_records = record_count(db, d.device_id)

    # status: the device, its records and gaps, the last values
    p = home.cli("status")
    assert p.returncode == 0, p.stderr
    assert f"dongle {d.device_id}" in p.stdout
    assert f"records {n_records}" in p.stdout and "gaps 0" in p.stdout, p.stdout
    for name in ("RPM", "SPEED", "FUEL_LEVEL", "VOLTAGE"):
        assert re.search(rf"^\s+{name}\s+[-\d.]+ ", p.stdout, re.M), f"no last {name} in:\n{p.stdout}"
    info = json.loads(home.cli("status", "--json").stdout)
    (dev,) = info["devices"]
    assert (dev["device"], dev["records"], dev["gaps"], dev["missing"]) == (d.device_id, n_records, 0, 0)
    last_rpm = query(db, "SELECT value FROM samples WHERE channel = 12 ORDER BY time_ms DESC, seq DESC LIMIT 1")
    assert dev["last_values"]["RPM"]["value"] == round(last_rpm[0][0])  # what an RPM reading resolves
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?[+-]\d\d:\d\d", dev["last_seen"]), dev["last_seen"]

    # samples: one signal, as stored, rounded to what the sensor resolves
    rpm = [v for (v,) in query(db, "SELECT value FROM samples WHERE channel = 12 ORDER BY time_ms, seq, n")]
    p = home.cli("samples", "--signal", "rpm", "--limit", "100000")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == f"RPM: {len(rpm)} samples"
    assert lines[1].split() == ["TIME", "rpm"]
    assert [float(x.split()[-1]) for x in lines[2:]] == [round(v) for v in rpm]

    # events: what the rules stored, whatever they are
    stored_events = {r[0] for r in query(db, "SELECT id FROM events")}
    p = home.cli("events", "--json")
    assert p.returncode == 0, p.stderr
    assert {json.loads(x)["id"] for x in p.stdout.splitlines()} == stored_events

    # export: every stored sample once, with its value, raw bytes and unit
    rows = query(db, "SELECT time_ms, channel, value, raw FROM samples")
    want = {(t, ch, raw.hex()): v for t, ch, v, raw in rows}
    p = home.cli("export", "--format", "csv")
    assert p.returncode == 0, p.stderr
    got = list(csv.DictReader(io.StringIO(p.stdout)))
    assert len(got) == len(rows) and f"exported {len(rows)} samples" in p.stderr
    by_key = {(int(r["time_ms"]), r["signal"], r["raw"]): r for r in got}
    assert len(by_key) == len(rows)
    units = {r["signal"]: r["unit"] for r in got}
    for (t, ch, raw), v in want.items():
        r = by_key[(t, signal_name(ch), raw)]
        assert (float(r["value"]) if r["value"] else None) == display_value(ch, v, r["unit"])
        assert r["time"].endswith(iso_ms(t)[-6:]) and r["time"] == iso_ms(t)  # ISO 8601 with the zone
    assert (units["RPM"], units["SPEED"], units["VOLTAGE"]) == ("rpm", "km/h", "V"), units
    p = home.cli("export", "--format", "jsonl", "-o", str(tmp_path / "out.jsonl"))
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {(x["time_ms"], x["signal"], x["raw"]) for x in lines} == set(by_key)
    assert all(x["device"] == d.device_id and x["approx"] is False for x in lines)

    assert_no_secret(home, d.secret)


def test_pair_refuses_a_secret_the_dongle_does_not_accept(tmp_path):
    """Without BLE pairing (a board built so) the wrong secret meets the dongle's AUTH."""
    with Rig(short_city(60, speedup=10), tmp_path / "rig", pairing=False) as rig:
        home = Home(tmp_path / "home", rig.air)
        try:
            p = home.cli("pair", rig.dongle.mac, input=wrong_label(rig.dongle))
            fails_with(p, "pairing failed: dongle refused authentication: authentication failed")
            assert_nothing_paired(home)
            other = f"obdsync:{'00' * 8}:{rig.dongle.secret.hex()}"  # a label of another dongle
            p = home.cli("pair", rig.dongle.mac, "--secret", other)  # still works, with a warning
            assert "warning: --secret shows the dongle's secret to every local user" in p.stderr
            fails_with(p, f"the label is for dongle {'00' * 8}, but {rig.dongle.mac} is dongle {rig.dongle.device_id}")
            assert_nothing_paired(home)
            label = tmp_path / "label.txt"  # the right one, from a file only its owner reads
            label.write_text(rig.dongle.label + "\n")
            label.chmod(0o600)
            p = home.cli("pair", rig.dongle.mac, "--secret-file", str(label))
            assert p.returncode == 0 and rig.dongle.device_id in p.stdout, p.stderr
        finally:
            home.close()
    assert_no_secret(home, rig.dongle.secret)


def wrong_label(d) -> str:
    return f"obdsync:{d.device_id}:{bytes(32).hex()}"


def assert_nothing_paired(home: Home) -> None:
    assert not (home.config_home / "obdsync" / "paired.json").exists()
    assert not list(home.root.rglob("*.key")), "a refused secret was stored"


# ---- trouble codes ---------------------------------------------------------------------------

# Sim seconds idling with the code stored, at 2x: 30 s of real time for pair, read and
# clear (each CLI call imports python-OBD: seconds on a loaded 2-core machine). The
# scenario's clock cannot be held, so the margin is paid in waiting for the highway.
STANDING_S = 60
STANDING_SPEEDUP = 2


@pytest.mark.slow
@pytest.mark.parametrize("way", ["direct", "daemon"])
def test_dtc_read_live_and_clear_only_when_stationary(tmp_path, monkeypatch, way):
    """The same commands, the same answers and the same refusal, whether `obdsync run`
    holds the dongle (through its control door) or not (a connection of their own)."""
    answers = Answers().install(monkeypatch)
    standing = STANDING_S if way == "direct" else 2 * STANDING_S  # the daemon connects first
    sc = scenario("dtc-short", [
        {"kind": "dtc", "code": "P0301", "at_s": 2, "drive": "idle", "duration_s": standing,
         "speedup": STANDING_SPEEDUP},
        {"kind": "highway", "duration_s": 900, "speedup": 20},
    ], seed=5)
    with Rig(sc, tmp_path / "rig") as rig:
        d = rig.dongle
        car = rig.emulator.vehicle
        home = Home(tmp_path / "home", rig.air)
        try:
            home.pair(d)
            daemon = None
            if way == "daemon":
                daemon = home.run()
                daemon.wait_for(r"dongle .* connected")
            # Standing, engine running, P0301 stored.
            wait_until(lambda: car.truth(rig.sim_s()).stored_dtcs == ("P0301",), 10, "the code to be stored")
            p = home.cli("dtc", "read", "--live")
            assert p.returncode == 0, p.stderr
            assert re.search(r"^stored: *\n  P0301  Cylinder 1 Misfire", p.stdout, re.M), p.stdout
            assert "pending: \n  P0301" in p.stdout and "permanent: \n  P0301" in p.stdout, p.stdout
            p = home.cli("dtc", "clear", "--yes")
            assert rig.sim_s() < standing, "the test was too slow: the car drove off before the clear"
            assert p.returncode == 0, p.stdout + p.stderr
            assert "cleared" in p.stdout
            assert answers.requests(car).count("04") == 1, "mode 04 did not reach the car once"
            assert car.truth(rig.sim_s()).stored_dtcs == ()
            p = home.cli("dtc", "read", "--live")
            assert p.returncode == 0, p.stderr
            assert re.search(r"^stored: none$", p.stdout, re.M) and "permanent: \n  P0301" in p.stdout, p.stdout

            # Moving: the dongle has seen highway speed.
            wait_until(lambda: sum(1 for _t, data in answers.mode01(car).get(0x0D, []) if data[0] > 50) >= 3,
                       30 + max(0.0, standing - rig.sim_s()) / STANDING_SPEEDUP, "the dongle to see the car moving")
            p = home.cli("dtc", "clear", "--yes")
            assert car.truth(rig.sim_s()).speed_kmh > 30, "the car stopped during the test: the refusal proves nothing"
            fails_with(p, "the dongle refused: the vehicle is moving")
            assert answers.requests(car).count("04") == 1, "mode 04 reached the car while it moved"
            if daemon is not None:
                # Every command went through the daemon's link (it held the dongle throughout).
                assert daemon.output.count("control request dtc.read") == 2, daemon.output[-3000:]
                assert daemon.output.count("control request dtc.clear") == 2, daemon.output[-3000:]
                assert daemon.terminate() == 0, daemon.output[-3000:]
            assert asyncio.run(dongle_status(rig, d))["auth_failures"] == 0
        finally:
            home.close()
    assert_no_secret(home, d.secret)


def test_dtc_commands_without_a_paired_dongle_say_so(home):
    fails_with(home.cli("dtc", "read", "--live"), "no paired dongle")
    fails_with(home.cli("dtc", "clear", "--yes"), "no paired dongle")


# ---- secrets ----------------------------------------------------------------------------------

def assert_no_secret(home: Home, secret: bytes) -> None:
    """No command output and no log line carries the secret (hex in either case, or
    its bytes as Python would print them)."""
    needles = [secret.hex(), secret.hex().upper(), repr(secret)[2:-1]]
    text = "\n".join(home.outputs)
    assert text.strip(), "nothing was captured: the check would be empty"
    for n in needles:
        assert n not in text, "a secret appears in CLI output or the daemon's log"
    for path in home.root.rglob("*"):
        if path.is_file() and path.suffix != ".key" and os.access(path, os.R_OK):
            data = path.read_bytes()
            assert secret.hex().encode() not in data and secret not in data, f"the secret is in {path}"


def test_check_live_shows_each_codes_freeze_frame_through_the_running_daemon(tmp_path, monkeypatch):
    """Mode 02 end to end: `obdsync check --live` through the daemon's door asks the dongle
    (READ_FREEZE: the firmware reads 02 02 00 and the frame's PIDs on the emulated car), the
    daemon decodes the raw bytes with python-OBD and the finding of the code that stored the
    frame carries it, ECU and values as the car froze them."""
    import obd

    from obdsync.decode import decode_with_obd

    answers = Answers().install(monkeypatch)
    sc = scenario("dtc-freeze", [
        {"kind": "dtc", "code": "P0301", "at_s": 2, "drive": "idle", "duration_s": 4 * STANDING_S, "speedup": 10},
        {"kind": "highway", "duration_s": 900, "speedup": 20},
    ], seed=5)
    with Rig(sc, tmp_path / "rig") as rig:
        car = rig.emulator.vehicle
        home = Home(tmp_path / "home", rig.air)
        try:
            home.pair(rig.dongle)
            daemon = home.run()
            daemon.wait_for(r"dongle .* connected")
            wait_until(lambda: car.truth(rig.sim_s()).stored_dtcs == ("P0301",), 10, "the code to be stored")
            # The daemon asks by itself once the dongle's stored-code read reached the store
            # (obdsync.freeze), and keeps the frame with the code.
            wait_until(lambda: query(home.db, "SELECT code FROM freeze_frames") == [("P0301",)], 120,
                       "the daemon to keep the freeze frame")
            assert answers.requests(car).count("020200") == 1  # asked once for this set of codes
            p = home.cli("check", "--live", "--json")
            assert p.returncode in (0, 2), p.stdout + p.stderr
            finding = next(f for f in json.loads(p.stdout)["findings"] if f["id"] == "dtc.P0301")
            ecu, code, data = car.freeze_frame(rig.sim_s())
            assert code == "P0301"
            frame = finding["values"]["freeze_frame"]
            assert frame["ecu"] == "", frame  # the emulated adapter prints no headers
            want = {obd.commands[1][pid].name: decode_with_obd(pid, d).magnitude for pid, d in data.items()}
            assert {k: v[0] for k, v in frame["values"].items()} == pytest.approx(want), (frame, want)
            reqs = answers.requests(car)
            # only frame 0 of mode 02 PIDs, the code and each value one request
            assert "020200" in reqs and "020C00" in reqs, reqs
            assert all(len(r) == 6 and r[4:] == "00" for r in reqs if r[:2] == "02"), reqs
            assert "control request check.live" in daemon.output
            assert daemon.terminate() == 0, daemon.output[-3000:]
            # kept with the code: a check without the car shows the frame read then
            p = home.cli("check", "--json")
            assert p.returncode in (0, 2), p.stdout + p.stderr
            kept = next(f for f in json.loads(p.stdout)["findings"] if f["id"] == "dtc.P0301")["values"]
            assert kept["freeze_frame"] == frame and frame["read_ms"] > 0, (kept, frame)
        finally:
            home.close()
