"""The firmware's clock and timers across the wrap of the clock (dongle.clock), on both
MicroPython builds: on the 32-bit one (the ESP32's word size) the ticks wrap at 2**30
ms, 12.4 days; a timer set just before the wrap must end on time after it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("micropython")


@pytest.fixture(scope="module")
def cases(run_mpy_json, tmp_path_factory, micropython):
    return dict(run_mpy_json("fw_wrap.py", str(tmp_path_factory.mktemp("wrap-log"))))


def test_the_clock_counts_across_its_wrap_in_small_ints_without_allocating(cases):
    c = cases["ticks_clock"]
    assert c["diffs"] == [True] * 5  # every step is measured exactly, across both wraps
    assert c["wrapped"] and c["nonneg"]
    assert c["locked"] == "ok"  # micropython.heap_lock(): reading the clock allocates nothing


def test_the_engine_off_timer_ends_on_time_across_the_wrap(cases):
    assert cases["power_off"] == {"first": True, "early": True, "at_end": True}


def test_the_battery_floor_timer_ends_on_time_across_the_wrap(cases):
    assert cases["power_floor"] == {"first": True, "early": True, "at_end": True}


def test_the_flash_log_flushes_on_time_across_the_wrap(cases):
    assert cases["flashlog_flush"] == {"early": False, "at_end": True}
