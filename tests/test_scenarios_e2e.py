"""The HIL scenarios end to end: vehicle → ELM327 emulator → link model → the
firmware on MicroPython → simulated BLE → the daemon → SQLite, and exactly the
events each scenario expects (its [[expect]] list), every record stored once."""

import pytest

from hil.runner import format_report, run_scenario

SCENARIOS = ["refuel", "theft_overnight", "overheat", "dtc", "weak_battery"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SCENARIOS)
async def test_scenario_gives_exactly_its_expected_events(name, tmp_path):
    await _expect_exactly(name, tmp_path)


@pytest.mark.soak
async def test_the_demo_gives_exactly_its_expected_events(tmp_path):
    # `make demo`'s drive (~95 s real: beyond make test's 30-s scenarios). It missed its
    # refuel for a while without a test noticing: 2 minutes of city after the pump never
    # settled the level; the scenario now stands a minute at the pump first.
    await _expect_exactly("demo", tmp_path)


async def _expect_exactly(name: str, tmp_path) -> None:
    report = await run_scenario(name, workdir=tmp_path, echo=None)
    text = format_report(report)
    assert report.records > 0, text
    assert not report.problems, text  # e.g. a stream that stalled: its events would be a guess
    assert report.missing == 0 and report.rejected == 0, text
    # the records table holds every sequence number from the first to the watermark
    assert report.contiguous == report.records - 1 + report.lost, text
    for check in report.checks:
        assert check.ok, f"{check.expect.type}: found {check.found}\n{text}"
