"""The dashboard in a real browser: Debian's headless Chromium through chromium-driver
(Selenium). Each page against a database from a HIL scenario (`web_rig`), the values shown
checked against the store, a live gauge changing as a sample is stored, "mark done"
clicked and found stored, and a screenshot of each page at a phone's and a desktop's size
into build/artifacts/web/ (OBDSYNC_ARTIFACTS overrides; CI keeps it for a person to look at).

Without a browser the tests skip and say why; with CI=true they fail instead (.ci/run
installs chromium and chromium-driver)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import require_or_skip
from test_health import DEVICE
from web_rig import Rig

from obdsync.messages import Units

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("OBDSYNC_ARTIFACTS", ROOT / "build" / "artifacts")) / "web"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PHONE, DESKTOP = (390, 844), (1280, 900)
DRIVE_S = 240  # the same for a whole HIL drive (25 s of real time unloaded)
WAIT_S = 30  # a ceiling for a condition, not a delay: load on a shared 2-core machine


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        require_or_skip("no headless Chromium: apt-get install chromium chromium-driver (.ci/run does)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require_or_skip("selenium is not installed (pip install -e .[dev])")
    profile = tempfile.mkdtemp(prefix="obdsync-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--lang=en-US"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("webui") / "obdsync.db")
    yield r
    r.close()


def wait(driver, cond, what: str, ceiling: float = WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, ceiling).until(lambda d: cond(d), message=what)


def text_of(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def shoot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for label, (w, h) in (("phone", PHONE), ("desktop", DESKTOP)):
        driver.set_window_size(w, h)
        # The whole page's height: a phone screenshot shows what scrolling shows.
        full = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(w, min(max(h, full + 120), 4000))
        assert driver.get_screenshot_as_file(str(ARTIFACTS / f"{name}-{label}.png"))
    driver.set_window_size(*DESKTOP)


def test_every_page_shows_the_store(browser, rig):
    from selenium.webdriver.common.by import By

    d, base = browser, rig.dash.url
    d.get(base)
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, ".gauge"), "the Now page's gauges")
    fuel = rig.call(rig.store.samples(DEVICE, 0x2F, limit=1, newest=True))[0].value
    assert text_of(d, '.val[data-key="fuel"]') == f"{fuel:.0f} %"
    shoot(d, "now")

    trips = rig.call(rig.store.trips(DEVICE))
    d.get(base + "trips")
    row = d.find_element(By.CSS_SELECTOR, f'tr.trip[data-id="{trips[0].id}"] td.distance')
    assert row.text == " ".join(Units().quantity(trips[0].distance_km, "km"))
    shoot(d, "trips")
    row.find_element(By.XPATH, "..").find_element(By.TAG_NAME, "a").click()
    wait(d, lambda d: d.find_elements(By.ID, "chart-speed"), "the trip's speed chart")
    assert text_of(d, "#f-distance dd") == " ".join(Units().quantity(trips[0].distance_km, "km"))
    assert text_of(d, "#f-score dd") == f"{trips[0].values['score']['score']}/100"
    for chart in ("chart-speed", "chart-rpm", "chart-fuel"):
        svg = d.find_element(By.ID, chart)
        assert svg.size["width"] > 200 and svg.find_elements(By.CSS_SELECTOR, "path")
    shoot(d, "trip")

    d.get(base + "fuel")
    assert text_of(d, "#fuel-level") == f"{fuel:.0f} %"
    shoot(d, "fuel")

    from obdsync.decode import describe_dtc

    d.get(base + "health")
    codes = {r.find_element(By.CSS_SELECTOR, ".dtc").text: r.find_element(By.CSS_SELECTOR, ".desc").text
             for r in d.find_elements(By.CSS_SELECTOR, "tr.code")}
    stored = {c for _t, _m, cs, _a in rig.call(rig.store.dtcs(DEVICE)) for c in cs}
    assert stored and set(codes) == stored
    assert codes["P0730"] == describe_dtc("P0730")
    shoot(d, "health")

    d.get(base + "events")
    shown = d.find_elements(By.CSS_SELECTOR, "li.event")
    assert len(shown) == len(rig.call(rig.store.events(DEVICE, limit=500)))
    shoot(d, "events")


def test_a_gauge_follows_the_stored_samples(browser, rig):
    from selenium.webdriver.common.by import By

    d = browser
    d.get(rig.dash.url)
    wait(d, lambda d: rig.dash.hub.subscribers > 0, "the page subscribing to the live stream")
    for kmh in (37, 83):
        rig.feed_speed(kmh, rpm=1500 + kmh * 10)
        wait(d, lambda d, kmh=kmh: d.find_element(By.CSS_SELECTOR, '.val[data-key="speed"]').text == f"{kmh} km/h",
             f"the speed gauge showing {kmh} km/h")
    assert text_of(d, '.val[data-key="rpm"]') == f"{1500 + 83 * 10} rpm"


def test_mark_done_is_stored(browser, rig):
    from selenium.webdriver.common.by import By

    d = browser
    d.get(rig.dash.url + "service")
    assert not d.find_elements(By.ID, "done-oil")  # not offered before a login
    d.get(rig.dash.login_url())
    d.get(rig.dash.url + "service")
    before = rig.call(rig.store.services(DEVICE))
    shoot(d, "service")
    d.find_element(By.ID, "done-oil").click()
    wait(d, lambda d: len(rig.call(rig.store.services(DEVICE))) == len(before) + 1, "the service stored")
    (_sid, _when, _km, note), *_ = rig.call(rig.store.services(DEVICE))
    assert note == "service:oil"
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, 'tr.item.ok[data-item="oil"]'),
         "the oil item shown as done after the reload")


def test_the_gauges_follow_a_hil_drive(browser, tmp_path):
    """`obdsync hil run highway` with the dashboard: the real firmware on MicroPython over
    the simulated radio into the daemon; the page's speed gauge changes as the car drives,
    and a value it showed is the one the store holds for that moment."""
    import asyncio
    import queue
    import threading

    from selenium.webdriver.common.by import By

    from hil import scenario as hil_scenario
    from hil.runner import run_scenario, scenario_config
    from obdsync.store import Store

    sc = hil_scenario.load("highway")
    lines: queue.Queue = queue.Queue()
    done: dict = {}

    def drive() -> None:
        try:
            done["report"] = asyncio.run(run_scenario(sc, workdir=tmp_path, echo=lines.put, web=True,
                                                      config=scenario_config(sc, {"web": {"port": 0}})))
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            done["error"] = e
        finally:
            lines.put(None)

    t = threading.Thread(target=drive, name="hil highway")
    t.start()
    try:
        url = None
        while url is None:
            line = lines.get(timeout=300)
            assert line is not None, f"the drive ended without a dashboard: {done.get('error')!r}"
            if line.startswith("dashboard: "):
                url = line.split()[1]
        d = browser
        d.get(url)

        def gauges(d) -> bool:
            if d.find_elements(By.CSS_SELECTOR, ".gauge"):
                return True
            d.refresh()  # nothing stored yet when the page first loaded: no device to show
            return False

        wait(d, gauges, "the Now page's gauges once the dongle's first records are stored", DRIVE_S)
        seen: list[tuple[str, int]] = []

        def changed(d) -> bool:
            el = d.find_element(By.CSS_SELECTOR, '.val[data-key="speed"]')
            text, at = el.text, el.get_attribute("data-t")
            if at and text.endswith("km/h") and (not seen or seen[-1][1] != int(at)):
                seen.append((text, int(at)))
            return len({s for s, _ in seen}) >= 3

        wait(d, changed, "the speed gauge changing while the car drives", DRIVE_S)
        shoot(d, "now-live")
    finally:
        t.join(300)
    assert "error" not in done, done.get("error")

    async def stored(at: int) -> float:
        async with await Store.open(tmp_path / "obdsync.db") as store:
            (dev,) = [s.device for s in await store.status()]
            return (await store.samples(dev, 0x0D, since_ms=at, until_ms=at + 1))[0].value

    text, at = seen[-1]
    assert text == Units().speed(asyncio.run(stored(at)))
