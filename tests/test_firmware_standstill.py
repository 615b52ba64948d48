"""Mode 04 only when the car says, right then, that it stands still (firmware/dongle/standstill.py)
on the real MicroPython interpreter against a scripted ELM327: every answer but "0 km/h" to the
dongle's own speed request is refused before mode 04 is sent. The attack paths through the whole
firmware (a SET_PLAN that switches speed or every PID off) are in tests/test_security.py."""

from __future__ import annotations

import pytest

CLEARED = ("still", "still_reordered", "no_multi", "single_plan", "kline", "no_digit")
REFUSED = ("moving", "crawling", "no_data", "rpm_only", "cut_speed", "odd_line", "garbage", "unable",
           "can_error", "other_mode", "banner", "no_prompt", "silent", "stale_zero", "no_multi_moving",
           "always_unknown")


@pytest.fixture(scope="module")
def cases(run_mpy_json, micropython):
    return dict(run_mpy_json("fw_standstill.py", timeout=120))


def test_every_case_ran(cases):
    assert sorted(cases) == sorted(CLEARED + REFUSED)


@pytest.mark.parametrize("name", CLEARED)
def test_a_fresh_answer_of_zero_clears(cases, name):
    c = cases[name]
    assert c["status"] == "OK"
    assert c["sent"][-1] == "04" and c["sent"].count("04") == 1
    assert all(s.startswith("010D") for s in c["sent"][:-1])  # asked for speed first, nothing else
    assert c["seen"] and c["seen"][0] >= 1  # the answer went to the log before the decision


@pytest.mark.parametrize("name", REFUSED)
def test_anything_but_a_fresh_zero_counts_as_moving(cases, name):
    c = cases[name]
    assert c["status"] is None, c
    assert "04" not in c["sent"], c
    assert c["sent"][0] == "010D0C"  # the question was asked of the car, not of old readings


def test_the_car_is_asked_speed_and_rpm_in_one_request_on_can(cases):
    assert cases["still"]["sent"] == ["010D0C", "04"]
    assert cases["still"]["seen"] == [2]  # both answers logged
    # a clone that refuses two PIDs, or lacks the count digit: speed alone, then without the digit
    assert cases["no_multi"]["sent"] == ["010D0C", "010D1", "04"]
    assert cases["no_digit"]["sent"] == ["010D1", "010D", "04"]


def test_a_stale_zero_waiting_on_the_line_is_not_taken_for_the_answer(cases):
    assert cases["stale_zero"]["sent"] == ["010D0C"]
    assert cases["stale_zero"]["status"] is None


def test_a_timed_out_request_recovers_the_chip_and_a_banner_reinitialises_it(cases):
    assert cases["silent"]["sent"] == ["010D0C", "ATE0"]  # recover(): a prompt back, no lone CR
    assert cases["banner"]["ready"] is False  # the scheduler runs init() again
