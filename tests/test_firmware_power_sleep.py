"""Deep sleep's rules on the real interpreter (both builds): the state that crosses a sleep in
RTC memory, the boot's reading of the reset cause and wake reason (the ESP32 port's
constants), the timer wake's decision and the full start after a sleep. The script is
tests/mpy/fw_sleep.py; the rig runs the same code end to end in test_firmware_power.py."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("micropython")


@pytest.fixture
def cases(run_mpy_json):
    return dict(run_mpy_json("fw_sleep.py"))


def test_the_carried_state_survives_encoding_and_a_foreign_memory_is_none(cases):
    c = cases["carried"]
    assert c["roundtrip"] == [12480, 300000, True, 7]
    assert c["negative_low"] == [0, -1, False, 0]  # "not below the floor" survives as -1
    assert c["empty"] and c["foreign"]  # after a power-on, or another firmware's RTC memory
    assert c["size"] <= 2048  # the ESP32's RTC user memory


def test_the_boot_reads_why_it_runs(cases):
    assert cases["reason"] == {"power_on": "cold", "watchdog": "cold", "timer": "timer", "ext0": "supply",
                               "ext1": "supply", "touch": "cold"}


def test_sleep_keeps_the_state_and_arms_the_supply_pin_only_where_there_is_one(cases):
    s = cases["sleep"]
    assert s["with_pin"] == {"ms": 900000, "ext0": [32, True], "kept": [12500, -1, False, 1]}
    assert s["timer_only"] == {"ms": 60000, "ext0": None}


def test_a_timer_wake_sleeps_again_unless_the_engine_runs_or_battery_low_is_due(cases):
    s = cases["stays_asleep"]
    # still parked: asleep again, the resting supply follows the lowest reading
    assert s["parked"] == [True, [12550, -1, False, 0]]
    assert s["lower_rest"] == [True, [12400, -1, False, 0]]
    assert s["small_rise"][0] is True  # 400 mV above rest: no engine
    # the engine runs: above the charging level, or a rise_mv above rest (a weak alternator)
    assert s["alternator"][0] is False
    assert s["weak_alternator_rise"][0] is False
    # no reading: only the supply pin can notice a start, so without one the dongle starts
    assert s["no_reading_with_pin"][0] is True
    assert s["no_reading_timer_only"][0] is False
    # below the floor: counted from the first low reading; due after floor_after_ms, once
    assert s["first_low"] == [True, [11700, 0, False, 0]]
    assert s["low_again_due"] == [False, [11650, 300000, False, 0]]
    assert s["low_logged"] == [True, [11600, 300000, True, 0]]
    assert s["recovered"] == [True, [11650, -1, False, 0]]


def test_a_full_start_after_a_sleep_is_parked_and_judged_from_what_was_carried(cases):
    assert cases["resume"] == {"state_parked": True, "rise": True, "low_due_first_reading": True,
                               "low_logged_stays_quiet": True, "carry": [11600, True, True]}
