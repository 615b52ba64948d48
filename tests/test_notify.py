"""Notifications through Apprise from the outbox, against a real receiver on loopback:
Apprise's json:// and form:// services POST to an HTTP server this test starts (one
that is down, too). Filters, quiet hours, texts in the user's units. The demo's
low-fuel event reaching a receiver end to end: tests/test_e2e_reminders.py."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import http.server
import json
import socket
import threading
import urllib.parse

import pytest
from forward_util import DEV_A, FAST, rows, wait_until

from obdsync.config import ConfigError, DisplayConfig, NotifyTarget, Secret, parse_config
from obdsync.forward import Forwarder, Hold, outbox_status
from obdsync.forward.notify import NotifySender, quiet_until
from obdsync.forward.outbox import Delivery
from obdsync.forward.payloads import event_message
from obdsync.messages import Units, line, notification
from obdsync.model import Event
from obdsync.rules.events import EVENT_TYPES
from obdsync.store import Store


class Receiver(http.server.ThreadingHTTPServer):
    """What Apprise's json:// or form:// service POSTed, decoded."""

    daemon_threads = True

    def __init__(self, port: int = 0, status: int = 200):
        super().__init__(("127.0.0.1", port), _Handler)
        self.got: list[dict] = []
        self.status = status

    def url(self, scheme: str = "json") -> str:
        return f"{scheme}://127.0.0.1:{self.server_address[1]}/notify"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers["Content-Type"].startswith("application/json"):
            msg = json.loads(body)
        else:
            msg = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
        self.server.got.append(msg)
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def receiver(port: int = 0, status: int = 200):
    srv = Receiver(port, status)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def low_fuel(n: int = 1, *, severity: str = "warning", cleared: bool = False, device: str = DEV_A) -> Event:
    return Event(id=f"lowfuel-{n}", device=device, type="low_fuel", severity=severity,
                 opened_ms=1_700_000_000_000 + n, cleared_ms=1_700_000_900_000 if cleared else None,
                 values={"level_pct": 9.4, "litres_left": 4.7, "range_km": 48}, message="Fuel low: 9 % (≈ 48 km left)")


def overheat(n: int = 1) -> Event:
    return Event(id=f"overheat-{n}", device=DEV_A, type="overheat", severity="critical",
                 opened_ms=1_700_000_000_000 + n, cleared_ms=None,
                 values={"coolant_c": 116.0, "threshold_c": 110.0, "for_s": 31.0}, message="Engine overheating")


def refuel(n: int = 1) -> Event:
    return Event(id=f"refuel-{n}", device=DEV_A, type="refuel", severity="info", opened_ms=1_700_000_000_000 + n,
                 cleared_ms=None, values={"litres": 38.0, "from_pct": 10.2, "to_pct": 86.0}, message="Refuelled")


def target(url: str, **kw) -> NotifyTarget:
    cfg = parse_config({"notify": [{"urls": [url], "timeout": 5.0, **kw}]})
    [t] = cfg.forward.notify
    return t


@pytest.fixture
async def store(tmp_path):
    st = await Store.open(tmp_path / "obdsync.db")
    yield st
    await st.close()


@contextlib.asynccontextmanager
async def forwarding(store, *senders):
    fwd = Forwarder(store, senders=list(senders), backoff=FAST, idle_poll_s=5)
    await fwd.start()
    try:
        yield fwd
    finally:
        await fwd.stop()


# ---- delivery to a real receiver ------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["json", "form"])
async def test_a_low_fuel_event_reaches_the_receiver_as_a_short_message(store, scheme):
    with receiver() as srv:
        async with forwarding(store, NotifySender(target(srv.url(scheme)))) as fwd:
            await fwd.put_event(low_fuel())
            await wait_until(lambda: rows(store.path, "SELECT state FROM outbox") == [("sent",)], what="sent")
    [got] = srv.got
    assert got["title"] == "Fuel low"
    assert got["message"] == "9 %, ≈ 48 km left"
    assert got["type"] == "warning"


async def test_a_receiver_that_is_down_keeps_the_notification_pending_until_it_is_up(store):
    port = free_port()
    sender = NotifySender(target(f"json://127.0.0.1:{port}/notify"))
    async with forwarding(store, sender) as fwd:
        await fwd.put_event(low_fuel())

        async def failed_twice():
            r = rows(store.path, "SELECT state, attempts, last_error FROM outbox")
            return r and r[0][0] == "pending" and r[0][1] >= 2 and r

        [(_state, _attempts, error)] = await wait_until(failed_twice, what="two failed attempts")
        assert "connection" in error.lower()
        [st] = await outbox_status(store, ["notify"], live={w.target: w.live for w in fwd.workers})
        assert st.pending == 1 and st.sent == 0 and st.up is False and "connection" in st.last_error.lower()
        with receiver(port) as srv:
            await wait_until(lambda: rows(store.path, "SELECT state FROM outbox") == [("sent",)],
                             what="delivered once the receiver is up")
    assert [g["title"] for g in srv.got] == ["Fuel low"]


async def test_a_receiver_answering_500_is_retried_and_never_dead_lettered(store):
    with receiver(status=500) as srv:
        async with forwarding(store, NotifySender(target(srv.url()))) as fwd:
            await fwd.put_event(low_fuel())
            await wait_until(lambda: len(srv.got) >= 3, what="three attempts")
            [(state, last_error)] = rows(store.path, "SELECT state, last_error FROM outbox")
            assert state == "pending" and "500" in last_error
            srv.status = 200
            await wait_until(lambda: rows(store.path, "SELECT state FROM outbox") == [("sent",)], what="sent")


# ---- what a target takes -------------------------------------------------------------------


async def test_filters_decide_which_events_get_an_outbox_entry(store):
    every = NotifySender(target("json://127.0.0.1:9/a", name="every"))
    urgent = NotifySender(target("json://127.0.0.1:9/b", name="urgent", min_severity="critical"))
    fuel_only = NotifySender(target("json://127.0.0.1:9/c", name="fuel", events=["low_fuel", "refuel"],
                                    on_clear=True))
    fwd = Forwarder(store, senders=[every, urgent, fuel_only])  # not started: only what is queued
    trip = dataclasses.replace(refuel(9), id="trip-1", type="trip")
    for ev in (low_fuel(1), low_fuel(1, cleared=True), overheat(2), refuel(3), trip):
        await store.put_event(ev, outbox=fwd.outbox_entries(ev))
    got = sorted(rows(store.path, "SELECT target, event_id FROM outbox"))
    assert got == sorted([
        ("every", "lowfuel-1"), ("every", "overheat-2"), ("every", "refuel-3"),  # not the clear, not the trip
        ("urgent", "overheat-2"),
        ("fuel", "lowfuel-1"), ("fuel", "lowfuel-1"), ("fuel", "refuel-3"),      # its open and its clear
    ])


def test_quiet_hours_span_midnight_and_end_at_their_end():
    tz = dt.timezone(dt.timedelta(hours=8))
    q = (22 * 60, 7 * 60)
    assert quiet_until(q, dt.datetime(2026, 3, 1, 21, 59, tzinfo=tz)) is None
    assert quiet_until(q, dt.datetime(2026, 3, 1, 7, 0, tzinfo=tz)) is None
    evening = quiet_until(q, dt.datetime(2026, 3, 1, 23, 30, tzinfo=tz))
    morning = quiet_until(q, dt.datetime(2026, 3, 2, 3, 0, tzinfo=tz))
    assert evening == morning
    assert (evening.year, evening.month, evening.day, evening.hour, evening.minute) == (2026, 3, 2, 7, 0)
    lunch = quiet_until((12 * 60, 13 * 60 + 30), dt.datetime(2026, 3, 1, 12, 10, tzinfo=tz))
    assert (lunch.day, lunch.hour, lunch.minute) == (1, 13, 30)


async def test_quiet_hours_hold_a_warning_until_morning_and_let_a_critical_one_through(store):
    # 23:30 local time, inside 22:00-07:00
    night = dt.datetime.now().astimezone().replace(hour=23, minute=30, second=0, microsecond=0)
    with receiver() as srv:
        sender = NotifySender(target(srv.url(), quiet_hours="22:00-07:00"), clock=night.timestamp)
        with pytest.raises(Hold) as held:
            await sender.send(Delivery(1, DEV_A, "k", b"{}", event_message(low_fuel())))
        morning = (night + dt.timedelta(days=1)).replace(hour=7, minute=0)
        assert held.value.until_ms == int(morning.timestamp() * 1000)
        async with forwarding(store, sender) as fwd:
            await fwd.put_event(low_fuel(1))
            await fwd.put_event(overheat(2))  # the same device, queued after the held one
            await wait_until(lambda: len(srv.got) == 1, what="the critical notification")
            await wait_until(lambda: rows(store.path, "SELECT state, attempts, next_attempt, last_error FROM outbox"
                                                      " WHERE event_id='lowfuel-1'")
                             == [("pending", 0, held.value.until_ms, None)], what="held, no attempt counted")
    assert srv.got[0]["title"] == "Engine overheating" and srv.got[0]["type"] == "failure"


# ---- texts ---------------------------------------------------------------------------------


def test_texts_in_metric_and_imperial_units():
    m = event_message(low_fuel())
    assert line(m) == "Fuel low: 9 %, ≈ 48 km left"
    assert line(m, Units.of("imperial")) == "Fuel low: 9 %, ≈ 30 mi left"
    no_range = event_message(dataclasses.replace(low_fuel(), values={"level_pct": 9.4, "litres_left": 4.7,
                                                                     "range_km": None}))
    assert line(no_range) == "Fuel low: 9 %, ≈ 4.7 L left"
    assert line(no_range, Units.of("imperial")) == "Fuel low: 9 %, ≈ 1.2 gal left"
    assert line(event_message(overheat()), Units.of("imperial")) == \
        "Engine overheating: Coolant 241 °F: stop safely and let it cool"
    assert line(event_message(refuel())) == "Refuelled: 38.0 L (10 % → 86 %)"
    assert notification(event_message(low_fuel(cleared=True)))[0] == "Fuel low: over"


# Values as the rules emit them (rules/fuel.py, dtc.py, engine.py, service.py, trips.py).
SAMPLE_VALUES = {
    "low_fuel": {"level_pct": 9.4, "litres_left": 4.7, "range_km": 48},
    "refuel": {"litres": 38.0, "from_pct": 10.2, "to_pct": 86.0},
    "fuel_drop": {"litres": 6.0, "from_pct": 60.0, "to_pct": 48.0, "while": "parked"},
    "fuel_leak_suspected": {"excess_lph": 9.5, "expected_lph": 7.8, "source": "fuel_rate",
                            "window_start_ms": 0, "window_end_ms": 900_000, "level_pct": 52.0},
    "overheat": {"coolant_c": 116.0, "threshold_c": 110.0, "for_s": 31.0},
    "dtc_new": {"code": "P0301", "description": "Cylinder 1 Misfire Detected", "status": "stored",
                "permanent": False},
    "dtc_cleared": {"code": "P0301", "description": "Cylinder 1 Misfire Detected", "permanent": False},
    "mil_on": {"dtc_count": 1, "codes": ["P0301"]},
    "battery_low": {"volts": 11.6, "threshold_v": 11.8},
    "charging_fault": {"volts": 12.1, "threshold_v": 13.0, "for_s": 120.0},
    "service_due": {"by": "km", "km_since_service": 15020.0, "km_to_due": -20.0, "days_to_due": 100,
                    "odometer_km": 57020.0},
    "service_soon": {"by": "km", "km_since_service": 14200.0, "km_to_due": 800.0, "days_to_due": 100,
                     "odometer_km": 56200.0},
    "trip": {"started_ms": 0, "ended_ms": 1_500_000, "distance_km": 12.34, "fuel_l": 1.1, "duration_s": 1500.0,
             "idle_s": 60.0, "max_speed_kmh": 80.0, "avg_speed_kmh": 29.6, "l_per_100km": 8.9, "hard_brakes": 0,
             "hard_accels": 0, "fuel_source": "maf", "distance_source": "speed"},
    "log_reset": {"epoch": "5eed0001", "previous_epoch": "0badc0de", "previous_acked_seq": 4711, "logs": 2},
}


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_every_event_type_has_its_own_text(type_):
    msg = {"type": type_, "severity": "critical", "state": "open", "values": SAMPLE_VALUES[type_],
           "message": "FALLBACK"}
    title, body = notification(msg)
    assert body and "FALLBACK" not in body, (title, body)
    assert len(title) + len(body) < 100, (title, body)


def test_texts_go_through_the_gettext_catalogues(monkeypatch):
    from obdsync import i18n

    class Catalogue:
        def gettext(self, message):
            return {"Fuel low": "燃油不足", "{level} %, ≈ {distance} left": "{level} %，约剩 {distance}"}.get(
                message, message)

    monkeypatch.setattr(i18n, "translations", lambda lang: Catalogue())
    assert notification(event_message(low_fuel()), lang="zh-CN") == ("燃油不足", "9 %，约剩 48 km")


def test_an_unknown_event_type_falls_back_to_its_own_message():
    assert notification({"type": "tyre_pressure", "values": {}, "message": "Tyre pressure low"}) == \
        ("Tyre pressure", "Tyre pressure low")


# ---- configuration -------------------------------------------------------------------------


def test_config_expands_each_url_to_a_target_and_never_echoes_a_url():
    cfg = parse_config({"notify": [{"name": "phone", "urls": ["json://127.0.0.1:9/a", "form://127.0.0.1:9/b"]}],
                        "display": {"units": "imperial"}})
    assert [t.name for t in cfg.forward.notify] == ["phone#1", "phone#2"]
    assert cfg.forward.target_names == ["phone#1", "phone#2"]
    assert cfg.display == DisplayConfig(units="imperial")
    assert "trip" not in cfg.forward.notify[0].events and "low_fuel" in cfg.forward.notify[0].events
    with pytest.raises(ConfigError) as e:
        parse_config({"notify": [{"urls": ["nosuch://T0KEN"], "events": ["lowfuel"], "min_severity": "loud",
                                  "quiet_hours": "22-7"}, {}]})
    text = str(e.value)
    assert "T0KEN" not in text
    for want in ("notify[0].urls[0]: not a notification URL", "notify[0].events: unknown event type(s) lowfuel",
                 "notify[0].min_severity must be one of", "notify[0].quiet_hours must be HH:MM-HH:MM",
                 "notify[1].urls is required"):
        assert want in text, text


def test_urls_can_live_in_a_private_file(tmp_path):
    f = tmp_path / "notify.urls"
    f.write_text("# my phone\njson://127.0.0.1:9/a\n\nform://127.0.0.1:9/b\n")
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by group or others"):
        parse_config({"notify": [{"urls_file": str(f)}]})
    f.chmod(0o600)
    cfg = parse_config({"notify": [{"urls_file": str(f)}]})
    assert [t.url for t in cfg.forward.notify] == [Secret("json://127.0.0.1:9/a"), Secret("form://127.0.0.1:9/b")]
