"""The VIN: parsed from what the firmware keeps, decoded offline (vininfo), stored per device
by the running daemon, shown in `status`, exports and Home Assistant's device block."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sqlite3

import pytest
from e2e import Home, short_city, wait_until

from hil.rig import Rig
from obdsync import vin
from obdsync.forward import homeassistant

SCENARIO_VIN = "WVWZZZ1KZAW386754"  # hil/vehicle.py's default


@pytest.mark.parametrize("raw, want", [
    (b"WVWZZZ1KZAW386754", "WVWZZZ1KZAW386754"),
    (b"\x00\x00\x00WVWZZZ1KZAW386754", "WVWZZZ1KZAW386754"),  # K-line's leading fill
    (b"\x011HGCM82633A004352\x00\x00", "1HGCM82633A004352"),  # CAN's count byte, padding
    ("1HGCM82633A004352", "1HGCM82633A004352"),  # as stored
])
def test_the_vin_is_found_in_what_the_ecu_sent(raw, want):
    assert vin.parse_vin(raw) == want


@pytest.mark.parametrize("raw", [b"", b"WVWZZZ1KZAW38675", b"WVWZZZ1KZAW3867544", b"WVWZZZ1KZAW38675O"])
def test_what_is_not_a_vin_is_refused_by_name(raw):
    with pytest.raises(vin.VinError, match="VIN"):
        vin.parse_vin(raw)


def test_decoded_offline_wmi_model_year_check_digit():
    today = dt.date(2026, 6, 1)
    vw = vin.decode("WVWZZZ1KZAW386754", today)
    assert (vw.manufacturer, vw.country, vw.region) == ("Volkswagen", "Germany", "Europe")
    assert vw.model_years == (1980, 2010) and vw.model_year == 2010  # the 30-year cycle, the latest past one
    assert vw.check_digit == "not used"  # position 9 is a filler in Europe
    honda = vin.decode("1HGCM82633A004352", today)
    assert (honda.manufacturer, honda.country, honda.model_year, honda.check_digit) == (
        "Honda", "United States", 2003, "valid")
    assert vin.decode("1HGCM82643A004352", today).check_digit == "invalid"  # mandatory in North America
    assert vin.decode("LSVAU2180N2183294", today).check_digit == "invalid"  # and in China (GB 16735)
    assert vw.title == "Volkswagen 2010"


def test_home_assistant_names_the_device_after_the_car():
    dev = "feedfacecafe0001"
    assert homeassistant.device_block(dev)["name"] == f"obdsync {dev}"
    vin.learn(dev, "1HGCM82633A004352")
    block = homeassistant.device_block(dev)
    assert (block["name"], block["manufacturer"], block["serial_number"]) == ("Honda 2003", "Honda", "1HGCM82633A004352")
    assert block["identifiers"] == [f"obdsync_{dev}"]  # the same device in HA as before the VIN was known


@pytest.mark.slow
def test_the_daemon_stores_the_vin_and_status_and_exports_show_it(tmp_path):
    with Rig(short_city(300, speedup=60), tmp_path / "rig") as rig:
        d = rig.dongle
        home = Home(tmp_path / "home", rig.air)
        try:
            home.pair(d)
            daemon = home.run()

            def stored_vin():
                try:
                    with sqlite3.connect(home.db) as c:
                        return c.execute("SELECT vin FROM devices WHERE id=?", (d.device_id,)).fetchone()[0]
                except (sqlite3.Error, TypeError):
                    return None

            def stored_samples():
                try:
                    with sqlite3.connect(home.db) as c:
                        return c.execute("SELECT COUNT(*) FROM samples s JOIN devices d ON d.num = s.device"
                                         " WHERE d.id=?",
                                         (d.device_id,)).fetchone()[0]
                except sqlite3.Error:
                    return 0

            wait_until(stored_vin, 60, "the VIN stored")
            # The VIN can land before the first batch of samples: the export below needs rows.
            wait_until(stored_samples, 60, "samples stored")
            assert daemon.terminate() == 0, daemon.output[-3000:]
        finally:
            home.close()
    assert stored_vin() == SCENARIO_VIN
    (dev,) = json.loads(home.cli("status", "--json").stdout)["devices"]
    assert dev["vin"] == SCENARIO_VIN and dev["vehicle"]["manufacturer"] == "Volkswagen"
    text = home.cli("status").stdout
    assert f"VIN {SCENARIO_VIN}  Volkswagen, Germany, model year 2010, check digit not used" in text, text
    rows = list(csv.DictReader(io.StringIO(home.cli("export", "--format", "csv").stdout)))
    assert rows and {r["vin"] for r in rows} == {SCENARIO_VIN}
