"""The core scenarios end to end behind the adapter/ECU profiles: vehicle → emulator → link
model (both wearing the profile) → the firmware on MicroPython → BLE → the daemon → SQLite.

Each run must give exactly its expected events, every record stored once, and for a car
whose transmission ECU holds a code as well, that code too — named with its ECU where the
adapter prints headers. A slice of the matrix here (CAN 29-bit with two ECUs and headers,
a "v2.1" clone that answers ATDPN and ATRV `OK`: each changes what the firmware polls and
reads); every profile in `make soak` (the K-line and J1850 ones slowed down, see
LEGACY_SPEEDUP; the clone printing lower case with NULs too: a quirk of the reply's text
alone); the driver-level matrix (test_adapter_matrix) covers every profile in `make test`."""

import pytest

from hil import adapter
from hil.runner import format_report, run_scenario
from hil.scenario import load
from obdsync.decode import ecu_name

SLICE = ["can29_500", "v21_clone"]
# A K-line or J1850 bus carries ~8 PIDs a second: at the scenarios' 6-20x time warp the plan's
# 0.1 Hz channels (MIL status, fuel level) get no share at all, so those profiles run at most 2x.
LEGACY_SPEEDUP = 2
SCENARIOS = ["dtc", "refuel"]


async def check(scenario: str, profile: str, tmp_path) -> None:
    prof = adapter.load_profile(profile)
    sc = load(scenario)
    report = await run_scenario(sc if prof.is_can else sc.at_most(LEGACY_SPEEDUP), workdir=tmp_path, echo=None,
                                adapter=profile)
    text = format_report(report)
    assert report.records > 0 and report.samples > 0, text
    assert report.missing == 0 and report.rejected == 0, text
    assert report.contiguous == report.records - 1 + report.lost, text
    for c in report.checks:
        assert c.ok, f"{profile}: {c.expect.type}: found {c.found}\n{text}"
    if scenario == "dtc":
        new = {e.values["code"]: e for e in report.events if e.type == "dtc_new"}
        for i, ecu in enumerate(prof.ecus, start=1):
            for code in ecu.stored_dtcs:
                assert code in new, f"{profile}: {code} of the {ecu.name} ECU never reported\n{text}"
                if prof.headers == "always":
                    assert new[code].values.get("ecu") == ecu_name(prof.ecu_label(i)), new[code].values
        engine = new["P0301"].values
        assert engine.get("ecu", ecu_name(prof.ecu_label(0))) == ecu_name(prof.ecu_label(0)), engine


@pytest.mark.slow
@pytest.mark.parametrize("profile", SLICE)
async def test_dtc_scenario_behind_a_slice_of_the_matrix(profile, tmp_path):
    await check("dtc", profile, tmp_path)


@pytest.mark.soak
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("profile", adapter.names())
async def test_core_scenarios_behind_every_profile(scenario, profile, tmp_path):
    await check(scenario, profile, tmp_path)
