"""Trouble codes and the MIL."""

from __future__ import annotations

import pytest
from test_rules_synth import DEVICE, EPOCH_MS, Car, config, run

from obdsync.rules import RuleEngine


def dtc_changes(changes):
    return [(c.change, c.event.type, c.event.values.get("code")) for c in changes
            if c.event.type in ("dtc_new", "dtc_cleared", "mil_on")]


def test_a_code_in_stored_pending_and_permanent_is_one_new_event_with_its_description():
    car = Car().drive(60, 30.0)
    car.dtcs(3, ["P0301"]).dtcs(7, ["P0301"]).dtcs(0x0A, ["P0301"]).drive(60, 30.0, mil=1)
    ch = run(car.items)
    assert dtc_changes(ch) == [("opened", "dtc_new", "P0301"), ("opened", "mil_on", None)]
    ev = ch[0].event
    assert ev.values["description"] == "Cylinder 1 Misfire Detected"
    assert ev.message == "Trouble code P0301: Cylinder 1 Misfire Detected"
    assert ev.severity == "warning"
    assert ch[1].event.values["codes"] == ["P0301"]


def test_reading_the_same_codes_again_changes_nothing():
    car = Car().drive(10, 0.0)
    for _ in range(5):
        car.dtcs(3, ["P0420", "P0301"]).drive(10, 0.0)
    ch = run(car.items)
    assert sorted(dtc_changes(ch)) == [("opened", "dtc_new", "P0301"), ("opened", "dtc_new", "P0420")]


def test_codes_that_disappear_clear_their_event_and_say_so():
    car = Car().drive(10, 0.0, mil=1).dtcs(3, ["P0301"]).dtcs(7, ["P0301"]).dtcs(0x0A, ["P0301"])
    car.drive(10, 0.0, mil=1)
    car.dtcs(3, []).drive(5, 0.0)  # pending still lists it
    before = dtc_changes(run(car.items))
    assert ("cleared", "dtc_new", "P0301") not in before
    car.dtcs(7, []).dtcs(0x0A, ["P0301"]).drive(10, 0.0, mil=0)
    ch = run(car.items)
    assert dtc_changes(ch) == [("opened", "dtc_new", "P0301"), ("opened", "mil_on", None),
                               ("cleared", "dtc_new", "P0301"), ("instant", "dtc_cleared", "P0301"),
                               ("cleared", "mil_on", None)]
    cleared = [c for c in ch if c.event.type == "dtc_cleared"][0].event
    assert cleared.values["permanent"] is True and "permanent" in cleared.message


def test_pending_code_is_info_and_is_upgraded_when_stored():
    car = Car().drive(10, 0.0).dtcs(7, ["P0171"]).drive(10, 0.0).dtcs(3, ["P0171"])
    ch = [c for c in run(car.items) if c.event.type == "dtc_new"]
    assert [(c.change, c.event.severity, c.event.values["status"]) for c in ch] == [
        ("opened", "info", "pending"), ("updated", "warning", "stored")]
    assert ch[0].event.id == ch[1].event.id
    assert ch[0].event.message.endswith("(pending)") and not ch[1].event.message.endswith("(pending)")


@pytest.mark.parametrize("code,text", [
    ("P1234", "Powertrain, manufacturer-specific code"),
    ("U0100", "Lost Communication With ECM/PCM A"),
    ("B1001", "Body, manufacturer-specific code"),
])
def test_codes_get_a_description_from_the_table_or_their_prefix(code, text):
    eng = RuleEngine(config(), DEVICE)
    eng.dtcs(EPOCH_MS, 3, [code])
    (ch,) = eng.drain()
    assert ch.event.values["description"] == text


def test_padding_and_junk_codes_are_ignored_and_a_bad_mode_is_refused():
    eng = RuleEngine(config(), DEVICE)
    eng.dtcs(EPOCH_MS, 3, ["P0000", "", "XYZ"])
    assert eng.drain() == []
    with pytest.raises(ValueError, match="DTC mode"):
        eng.dtcs(EPOCH_MS, 4, ["P0301"])


def test_the_same_code_returning_later_is_a_new_event_with_a_new_id():
    car = Car().drive(10, 0.0).dtcs(3, ["P0301"]).drive(10, 0.0).dtcs(3, []).drive(10, 0.0).dtcs(3, ["P0301"])
    opened = [c.event.id for c in run(car.items) if c.change == "opened" and c.event.type == "dtc_new"]
    assert len(opened) == 2 and opened[0] != opened[1]


def test_mil_on_waits_for_the_codes_it_names():
    """The MIL comes on seconds before the dongle's DTC read: mil_on goes out after the
    dtc_new it names, carrying the codes, and dated when the light came on."""
    car = Car().drive(10, 30.0).drive(20, 30.0, mil=1)
    car.dtcs(3, ["P0301"]).drive(10, 30.0, mil=1)
    ch = [c for c in run(car.items) if c.event.type in ("mil_on", "dtc_new")]
    assert [(c.change, c.event.type) for c in ch] == [("opened", "dtc_new"), ("opened", "mil_on")]
    mil = ch[1].event
    assert mil.values["codes"] == ["P0301"] and "P0301" in mil.message
    assert mil.opened_ms <= ch[0].event.opened_ms - 15_000  # when the light came on, not when the codes came


def test_mil_on_without_a_code_read_still_goes_out():
    car = Car().drive(10, 30.0).drive(120, 30.0, mil=1)
    (mil,) = [c for c in run(car.items) if c.event.type == "mil_on"]
    assert mil.change == "opened" and mil.event.values["codes"] == []


def test_codes_from_two_ecus_each_open_an_event_naming_its_ecu():
    # An engine ECU (7E8) holds P0133, the transmission (7E9) U0123: both are reported, each
    # with where it is, and a code without a header's address says nothing of an ECU.
    car = Car().drive(10, 0.0)
    car.dtcs(3, ["P0133", "U0123", "P0420"], ["engine (7E8)", "transmission (7E9)", ""]).drive(10, 0.0)
    ch = run(car.items)
    by_code = {c.event.values["code"]: c.event for c in ch if c.event.type == "dtc_new"}
    assert sorted(by_code) == ["P0133", "P0420", "U0123"]
    assert by_code["P0133"].values["ecu"] == "engine (7E8)"
    assert by_code["U0123"].values["ecu"] == "transmission (7E9)"
    assert by_code["U0123"].message.startswith("Trouble code U0123 in the transmission (7E9): ")
    assert "ecu" not in by_code["P0420"].values
