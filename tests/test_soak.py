"""The long fault-injection runs (`make soak`; deselected from `make test`): 50 daemon
SIGKILLs, 50 dongle power cuts, BLE drops through a long backlog with broker outages.
Each prints its figures, and the last test the totals (hil.faults.Figures)."""

from __future__ import annotations

import pytest

from hil import faults

pytestmark = [pytest.mark.soak, pytest.mark.timeout(3600)]

TOTAL = faults.Figures()




def keep(fig: faults.Figures, title: str) -> None:
    print("\n" + fig.format(title))
    TOTAL.add(fig)


def test_soak_daemon_sigkill_50_times(tmp_path, broker):
    fig = faults.run_daemon_kills(tmp_path, kills=50, seed=50, mqtt_port=broker.port, backlog_s=1800, say=print)
    keep(fig, "soak: daemon SIGKILL x50")
    assert fig.problems == []
    assert sum(fig.faults.values()) == 50 and fig.faults["daemon SIGKILL (backlog)"] >= 10
    assert fig.stored == fig.produced and fig.lost == 0 and fig.duplicated == 0
    assert fig.event_deliveries_missing == 0


def test_soak_dongle_power_cut_50_times(tmp_path):
    fig = faults.run_power_cuts(tmp_path, cuts=50, seed=51, tear_rate=0.7, say=print)
    keep(fig, "soak: dongle power cut x50")
    assert fig.problems == []
    assert fig.rejected == 0 and fig.duplicated == 0
    assert fig.lost == fig.lost_named <= fig.torn_entries
    assert fig.stored + fig.lost == fig.produced


@pytest.mark.parametrize("seed", [52, 53, 54])
async def test_soak_ble_drops_through_a_long_backlog(tmp_path, broker, seed):
    fig = await faults.run_ble_drops(tmp_path, seed=seed, backlog_s=3600, broker=broker, outage_s=10.0, say=print)
    keep(fig, f"soak: BLE drops + broker outages (seed {seed})")
    assert fig.problems == []
    assert fig.stored == fig.produced and fig.lost == 0 and fig.duplicated == 0
    assert fig.event_deliveries_missing == 0
    assert fig.faults["events queued while the broker was down"] > 0


def test_soak_database_full(tmp_path):
    fig = faults.run_disk_full(tmp_path, backlog_s=3600, cap_mb=2, raised_mb=512, say=print)
    keep(fig, "soak: database full")
    assert fig.problems == []
    assert fig.stored == fig.produced and fig.lost == 0


def test_soak_log_wipe(tmp_path):
    fig = faults.run_log_wipe(tmp_path, backlog_s=1200, say=print)
    keep(fig, "soak: dongle log wiped between two runs")
    assert fig.problems == []
    assert fig.stored == fig.produced and fig.lost == 0 and fig.duplicated == 0


def test_soak_upgrade_with_an_unreadable_rules_state(tmp_path):
    fig = faults.run_upgrade(tmp_path, backlog_s=1200, say=print)
    keep(fig, "soak: upgrade (future rules snapshot)")
    assert fig.problems == []
    assert fig.stored == fig.produced and fig.lost == 0 and fig.duplicated == 0


def test_soak_two_daemons_on_one_database(tmp_path):
    fig = faults.run_two_daemons(tmp_path, backlog_s=1200, say=print)
    keep(fig, "soak: two obdsync run on one database")
    assert fig.problems == []
    assert fig.stored == fig.produced and fig.lost == 0 and fig.duplicated == 0


def test_soak_totals():
    """Runs last in this file: the figures of every soak run above, added up."""
    print("\n" + TOTAL.format("soak totals"))
    assert TOTAL.runs > 0 and TOTAL.problems == []
