"""A command's adapter job (Dongle.elm_job) on the real MicroPython interpreter: its failure
reaches the command, and the poll loop it ran in keeps polling (tests/mpy/app_elm_job.py)."""

from __future__ import annotations

import pytest

from hil import mpy


@pytest.fixture(scope="module")
def cases(run_mpy_json, micropython):
    # dongle.app imports the radio: the unix port's shim stands in (nothing is constructed).
    return dict(run_mpy_json("app_elm_job.py", path=[mpy.SHIM], timeout=120))


def test_a_job_that_raises_raises_in_the_command_that_asked(cases):
    # Not None: clear_dtc would report REFUSED_MOVING for a failed adapter.
    assert cases["failing_job"] == ["raised", 5]


def test_the_scheduler_keeps_polling_after_a_failed_job(cases):
    assert cases["next_job"] == 42
    assert cases["scheduler_running"] is True
