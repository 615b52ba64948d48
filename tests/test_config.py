"""Config: defaults without a file, errors that name the key, unknown-key hints, secret files."""

from __future__ import annotations

import os
import stat

import pytest

from obdsync import paths
from obdsync.config import (
    Config,
    ConfigError,
    Secret,
    SecretError,
    load_config,
    load_secret,
    parse_config,
    save_secret,
)

DEV = "00112233AABBCCDD"


@pytest.fixture(autouse=True)
def xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path


def write(xdg, text):
    p = xdg / "config" / "obdsync" / "config.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_no_file_gives_every_default(xdg):
    cfg = load_config()
    assert cfg == Config()
    assert cfg.source is None
    assert cfg.store.db_path == xdg / "data" / "obdsync" / "obdsync.db"
    assert (cfg.vehicle.tank_litres, cfg.vehicle.fuel_type) == (50.0, "petrol")
    assert (cfg.fuel.low_open_pct, cfg.fuel.low_clear_pct, cfg.fuel.refuel_min_pct, cfg.fuel.drop_min_pct) == (
        15, 20, 10, 3)
    assert (cfg.service.interval_km, cfg.service.warn_km, cfg.service.interval_months, cfg.service.warn_days) == (
        15000, 1000, 12, 30)
    assert (cfg.engine.overheat_open_c, cfg.engine.overheat_clear_c, cfg.engine.overheat_secs) == (110, 100, 30)
    assert (cfg.battery.parked_warn_v, cfg.battery.parked_crit_v, cfg.battery.parked_secs,
            cfg.battery.running_min_v, cfg.battery.running_secs) == (12.2, 11.8, 300, 13.0, 120)
    assert (cfg.trip.end_after_secs, cfg.trip.hard_brake_ms2, cfg.trip.hard_accel_ms2) == (180, 3.0, 3.0)
    assert cfg.forward.mqtt == () and cfg.poll == ()


def test_a_file_overrides_and_is_frozen(xdg):
    p = write(xdg, '[vehicle]\ntank_litres = 60\nfuel_type = "diesel"\n[store]\npath = "~/x.db"\n')
    cfg = load_config()
    assert cfg.source == p
    assert (cfg.vehicle.tank_litres, cfg.vehicle.fuel_type) == (60.0, "diesel")
    assert isinstance(cfg.vehicle.tank_litres, float)
    assert cfg.store.db_path == paths.Path("~/x.db").expanduser()
    with pytest.raises(AttributeError):
        cfg.vehicle.tank_litres = 1


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_bad_toml_names_the_file(xdg):
    p = write(xdg, "[fuel\n")
    with pytest.raises(ConfigError, match="not valid TOML") as e:
        load_config()
    assert str(p) in str(e.value)


@pytest.mark.parametrize("doc, message", [
    ({"fuel": {"low_open_pct": 15, "low_clear_pct": 10}},
     "fuel.low_clear_pct must be ≥ fuel.low_open_pct (15), got 10"),
    ({"fuel": {"low_open_pct": 150}}, "fuel.low_open_pct must be between 0 and 100, got 150"),
    ({"fuel": {"low_open_pct": "low"}}, "fuel.low_open_pct must be a number, got 'low'"),
    ({"fuel": {"low_open_pct": True}}, "fuel.low_open_pct must be a number, got True"),
    ({"vehicle": {"fuel_type": "lpg"}}, "vehicle.fuel_type must be one of petrol, diesel, got 'lpg'"),
    ({"service": {"interval_months": 1.5}}, "service.interval_months must be an integer, got 1.5"),
    ({"service": {"warn_km": 20000}}, "service.warn_km must be < service.interval_km (15000), got 20000"),
    ({"engine": {"overheat_clear_c": 120}}, "engine.overheat_clear_c must be < engine.overheat_open_c (110), got 120"),
    ({"battery": {"parked_crit_v": 12.5}}, "battery.parked_crit_v must be < battery.parked_warn_v (12.2), got 12.5"),
    ({"link": {"backoff_base_s": 10, "backoff_cap_s": 5}},
     "link.backoff_cap_s must be ≥ link.backoff_base_s (10), got 5"),
    ({"trip": {"hard_brake_ms2": 0}}, "trip.hard_brake_ms2 must be between 0.5 and 20, got 0"),
    ({"outbox": {"max_entries": 0}}, "outbox.max_entries must be between 1 and 10000000, got 0"),
    ({"store": {"retention_days": -1}}, "store.retention_days must be between 0 and 36500, got -1"),
    ({"forward": {"mqtt": [{"port": 1883}]}}, "forward.mqtt[0].host is required"),
    ({"forward": {"webhook": [{"url": "ftp://x"}]}}, "forward.webhook[0].url must be an http:// or https:// URL"),
    ({"forward": {"mqtt": [{"host": "a", "cert": "/c"}]}}, "forward.mqtt[0].cert and forward.mqtt[0].key go together"),
    ({"forward": {"mqtt": [{"host": "a"}, {"host": "a"}]}}, "forward target name 'mqtt:a:1883' is used twice"),
    ({"forward": {"mqtt": [{"host": "a", "password": "p", "password_file": "f"}]}},
     "forward.mqtt[0].password and forward.mqtt[0].password_file are both set"),
    ({"service": {"items": {"brake_fluid": {"months": 0}}}}, "service.items.brake_fluid.months must be between 1"),
    ({"service": {"items": {"oil": {"km": 10000, "mnths": 6}}}},
     "unknown key service.items.oil.mnths (did you mean service.items.oil.months?)"),
    ({"service": {"items": {"Oil Change": {"km": 10000}}}}, "service.items.Oil Change: an item name is"),
    ({"service": {"items": {"tyre_rotation": {"km": 800}}}},
     "service.items.tyre_rotation.km: the warning (1000 km ahead) must be shorter than the interval (800 km)"),
    ({"service": {"items": ["oil"]}}, "service.items must hold [service.items.NAME] tables"),
    ({"poll": {"RPM": [1, 2]}}, "poll.RPM must be [driving, idle, parked] seconds"),
    ({"poll": {"RPM": {"driving": 7000}}}, "poll.RPM.driving must be between 0 and 6553.5 seconds"),
    ({"poll": {"NOT_A_PID": [1, 1, 1]}}, "poll.NOT_A_PID: unknown channel"),
])
def test_each_validation_error_names_its_key(doc, message):
    with pytest.raises(ConfigError) as e:
        parse_config(doc)
    assert any(err.startswith(message) for err in e.value.errors), e.value.errors


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as e:
        parse_config({"fuel": {"low_open_pct": "x"}, "vehicle": {"fuel_type": "lpg"}})
    assert len(e.value.errors) == 2
    assert "2 problems" in str(e.value)


@pytest.mark.parametrize("doc, message", [
    ({"fuel": {"low_open_pc": 10}}, "unknown key fuel.low_open_pc (did you mean fuel.low_open_pct?)"),
    ({"fule": {}}, "unknown section [fule] (did you mean [fuel]?)"),
    ({"forward": {"mqt": []}}, "unknown key forward.mqt (did you mean forward.mqtt?)"),
    ({"forward": {"mqtt": [{"host": "a", "topic_prefx": "x"}]}},
     "unknown key forward.mqtt[0].topic_prefx (did you mean forward.mqtt[0].topic_prefix?)"),
    ({"poll": {"RPM": {"idel": 1}}}, "unknown key poll.RPM.idel (did you mean poll.RPM.idle?)"),
])
def test_unknown_keys_get_a_did_you_mean_hint(doc, message):
    with pytest.raises(ConfigError) as e:
        parse_config(doc)
    assert message in e.value.errors


def test_targets_and_poll_overrides(xdg):
    pw = xdg / "config" / "obdsync" / "mqtt.pw"
    pw.parent.mkdir(parents=True)
    pw.write_text("hunter2\n")
    pw.chmod(0o600)
    write(xdg, """
[[forward.mqtt]]
host = "broker.lan"
ca = "/etc/ssl/ca.pem"
username = "car"
password_file = "mqtt.pw"
ha_discovery = true

[[forward.webhook]]
url = "https://example.com/hook"
secret = "s3cret"

[poll]
RPM = [0.5, 2, 0]
0x2F = { parked = 600 }
voltage = { driving = 10 }
""")
    os.chmod(xdg / "config" / "obdsync" / "config.toml", 0o600)  # it holds a secret inline
    cfg = load_config()
    (m,) = cfg.forward.mqtt
    assert (m.port, m.tls, m.name, m.ha_discovery) == (8883, True, "mqtt:broker.lan:8883", True)
    assert m.password.reveal() == "hunter2"
    (w,) = cfg.forward.webhook
    assert (w.name, w.timeout, w.secret.reveal()) == ("webhook:example.com", 10.0, "s3cret")
    # secrets never show
    assert "hunter2" not in repr(cfg) and "s3cret" not in repr(cfg) and "s3cret" not in str(w)
    assert [(p.channel, p.driving, p.idle, p.parked) for p in cfg.poll] == [
        (0x0C, 0.5, 2.0, 0.0), (0x2F, None, None, 600.0), (0xFF, 10.0, None, None)]


def test_password_file_readable_by_others_is_refused(xdg):
    pw = xdg / "pw"
    pw.write_text("hunter2")
    pw.chmod(0o644)
    with pytest.raises(ConfigError, match="forward.mqtt\\[0\\].password_file: .*readable by group or others"):
        parse_config({"forward": {"mqtt": [{"host": "a", "password_file": str(pw)}]}})


def test_secret_is_saved_private_and_loaded(xdg):
    secret = bytes(range(32))
    p = save_secret(DEV, secret)
    assert p == xdg / "config" / "obdsync" / "secrets" / "00112233aabbccdd.key"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700
    loaded = load_secret(DEV.lower())
    assert loaded.reveal() == secret
    assert loaded == Secret(secret)
    assert secret.hex() not in repr(loaded) and secret.hex() not in str(loaded)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_secret_readable_by_group_or_world_is_refused(xdg, mode):
    p = save_secret(DEV, bytes(16))
    os.chmod(p, mode)
    with pytest.raises(SecretError, match="readable by group or others .*chmod 600"):
        load_secret(DEV)


def test_secret_errors_are_clear(xdg):
    with pytest.raises(SecretError, match="does not exist"):
        load_secret(DEV)
    p = save_secret(DEV, bytes(16))
    p.write_text("not hex")
    with pytest.raises(SecretError, match="hex"):
        load_secret(DEV)
    with pytest.raises(ValueError, match="16 hex digits"):
        save_secret("../../etc/passwd", bytes(16))
    with pytest.raises(ValueError, match="16 to 64 bytes"):
        save_secret(DEV, b"short")


def test_secret_dir_is_tightened_if_it_existed_open(xdg):
    d = paths.secrets_dir()
    d.mkdir(parents=True)
    d.chmod(0o755)
    save_secret(DEV, bytes(16))
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_the_service_schedule_is_the_defaults_edited_by_the_config():
    default = [(i.name, i.km, i.months) for i in parse_config({}).service.schedule]
    assert default[0] == ("oil", 15000.0, 12) and ("brake_fluid", None, 24) in default
    cfg = parse_config({"service": {"interval_km": 10000, "items": {
        "spark_plugs": {},                                   # off
        "brake_fluid": {"months": 36, "warn_days": 60},      # replaced whole
        "timing_belt": {"km": 120000, "months": 96},         # added
    }}})
    items = {i.name: i for i in cfg.service.schedule}
    assert "spark_plugs" not in items
    assert (items["oil"].km, items["oil"].months) == (10000.0, 12)
    assert (items["brake_fluid"].km, items["brake_fluid"].months, items["brake_fluid"].warn_days) == (None, 36, 60)
    assert (items["timing_belt"].km, items["timing_belt"].months) == (120000.0, 96)
    oil = parse_config({"service": {"items": {"oil": {"km": 8000, "months": 6}}}}).service.schedule[0]
    assert (oil.name, oil.km, oil.months) == ("oil", 8000.0, 6)


# ---- credentials only over protected channels, secrets only in private files (issue 13) --------

def private(xdg, text, mode=0o600):
    p = write(xdg, text)
    os.chmod(p, mode)
    return p


def test_port_8883_means_tls(xdg):
    private(xdg, '[[forward.mqtt]]\nhost = "broker.lan"\nport = 8883\nusername = "car"\npassword = "pw"\n')
    (m,) = load_config().forward.mqtt
    assert (m.port, m.tls) == (8883, True)


@pytest.mark.parametrize("extra", ["", "port = 1883\n", "port = 8883\ntls = false\n", "tls = false\n"])
def test_a_password_over_plaintext_is_refused(xdg, extra):
    private(xdg, '[[forward.mqtt]]\nhost = "broker.lan"\nusername = "car"\npassword = "pw"\n' + extra)
    with pytest.raises(ConfigError, match=r"forward.mqtt\[0\]: the password would cross the network in plaintext "
                                          r"to broker.lan:\d+ \(no TLS\); set tls = true .*allow_plaintext = true"):
        load_config()


def test_a_password_file_over_plaintext_is_refused_too(xdg):
    pw = xdg / "config" / "obdsync" / "mqtt.pw"
    pw.parent.mkdir(parents=True)
    pw.write_text("pw\n")
    pw.chmod(0o600)
    private(xdg, '[[forward.mqtt]]\nhost = "broker.lan"\nusername = "car"\npassword_file = "mqtt.pw"\n', 0o644)
    with pytest.raises(ConfigError, match="password would cross the network in plaintext"):
        load_config()


def test_plaintext_is_allowed_when_asked_and_without_a_password(xdg):
    private(xdg, '[[forward.mqtt]]\nhost = "localhost"\nusername = "car"\npassword = "pw"\nallow_plaintext = true\n'
                 '[[forward.mqtt]]\nhost = "broker.lan"\nname = "anon"\n')
    a, b = load_config().forward.mqtt
    assert (a.port, a.tls, a.password.reveal()) == (1883, False, "pw")
    assert (b.port, b.tls, b.password) == (1883, False, None)


@pytest.mark.parametrize("url", ["http://example.com/hook", "http://192.168.1.20:8123/api/webhook/x",
                                 "http://127.0.0.1.example.com/h", "http://localhost.example.com/h"])
def test_a_signed_webhook_over_http_is_refused(xdg, url):
    private(xdg, f'[[forward.webhook]]\nurl = "{url}"\nsecret = "s"\n')
    with pytest.raises(ConfigError, match=r"forward.webhook\[0\]: events signed with the secret would go to .* over "
                                          r"plain http:// .*use https://, or set allow_plaintext = true"):
        load_config()


@pytest.mark.parametrize("url", ["http://localhost:8080/h", "http://127.0.0.1/h", "http://127.8.9.1/h",
                                 "http://[::1]:8080/h", "https://example.com/h"])
def test_a_signed_webhook_to_this_machine_or_over_https_is_fine(xdg, url):
    private(xdg, f'[[forward.webhook]]\nurl = "{url}"\nsecret = "s"\n')
    (w,) = load_config().forward.webhook
    assert w.url == url and w.secret.reveal() == "s"


def test_a_webhook_over_http_with_the_users_consent_or_without_a_secret(xdg):
    private(xdg, '[[forward.webhook]]\nurl = "http://example.com/a"\nsecret = "s"\nallow_plaintext = true\n'
                 '[[forward.webhook]]\nurl = "http://example.com/b"\nname = "b"\n')
    a, b = load_config().forward.webhook
    assert (a.secret.reveal(), b.secret) == ("s", None)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620], ids=oct)
@pytest.mark.parametrize("table", ['[[forward.mqtt]]\nhost = "b"\nport = 8883\nusername = "u"\npassword = "pw"\n',
                                   '[[forward.webhook]]\nurl = "https://example.com/h"\nsecret = "s"\n'],
                         ids=["mqtt", "webhook"])
def test_an_inline_secret_in_a_config_others_can_read_is_refused_with_the_fix(xdg, mode, table):
    p = private(xdg, table, mode)
    key = "password" if "mqtt" in table else "secret"
    with pytest.raises(ConfigError) as e:
        load_config()
    msg = str(e.value)
    assert f"{key} is written in a config file that group or others can read or write (mode {mode:o})" in msg
    assert f"run: chmod 600 {p}" in msg and f"{key}_file" in msg
    assert '"pw"' not in msg and '"s"' not in msg  # the message never shows the secret
    os.chmod(p, 0o600)
    assert load_config().forward  # the named fix is enough


def test_a_config_others_can_read_is_fine_without_inline_secrets(xdg):
    private(xdg, '[[forward.webhook]]\nurl = "https://example.com/h"\n[fuel]\nlow_open_pct = 12\n', 0o644)
    assert load_config().fuel.low_open_pct == 12


def test_notification_urls_in_a_config_others_can_read_are_refused(xdg):
    p = private(xdg, '[[notify]]\nurls = ["ntfy://ntfy.sh/my-car-topic"]\n', 0o644)
    with pytest.raises(ConfigError) as e:
        load_config()
    msg = str(e.value)
    assert (f"notify[0].urls are written in a config file that group or others can read or write (mode 644); "
            f"run: chmod 600 {p}") in msg
    assert "my-car-topic" not in msg  # the URL carries the token: never in a message


def test_a_previous_webhook_secret_inline_in_a_readable_config_is_refused_too(xdg):
    p = private(xdg, '[[forward.webhook]]\nurl = "https://example.com/h"\nsecret_file = "/nonexistent"\n'
                     'previous_secret = "old"\n', 0o644)
    with pytest.raises(ConfigError) as e:
        load_config()
    assert (f"forward.webhook[0].previous_secret is written in a config file that group or others can read or "
            f"write (mode 644); run: chmod 600 {p}") in str(e.value)
