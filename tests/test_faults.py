"""Fault injection, short versions (`make soak` runs the long ones, tests/test_soak.py):
the daemon SIGKILLed during backlog sync and live streaming, the dongle's power cut with
a torn last write, BLE drops and a broker outage during a sync, the database full.

Each run ends by reading the dongle's flash on CPython (what it produced, by its own
account) and checking the daemon's SQLite against it: every record stored once or
named lost by a GAP, nothing silent, events stored once by id and seen at the broker.
The figures are printed (pytest -s shows them)."""

from __future__ import annotations

import pytest

from hil import faults

pytestmark = pytest.mark.slow




def show(fig: faults.Figures, title: str) -> None:
    print("\n" + fig.format(title))


def test_daemon_sigkill_during_sync_and_streaming_loses_and_duplicates_nothing(tmp_path, broker):
    fig = faults.run_daemon_kills(tmp_path, kills=5, seed=20240611, mqtt_port=broker.port, backlog_s=300,
                                  say=print)
    show(fig, "daemon SIGKILL x5")
    assert fig.problems == []
    assert sum(fig.faults.values()) == 5 and fig.faults["daemon SIGKILL (backlog)"] >= 1
    assert fig.produced > 300 and fig.stored == fig.produced and fig.lost == 0 and fig.duplicated == 0
    # every event stored once by id, and each open/clear seen at the broker at least once
    assert fig.events > 0 and fig.event_deliveries_missing == 0 and fig.event_deliveries >= fig.events


def test_dongle_power_cuts_with_torn_writes_deliver_nothing_corrupt_and_lose_at_most_the_torn_tail(tmp_path):
    fig = faults.run_power_cuts(tmp_path, cuts=5, seed=7, tear_rate=0.8, say=print)
    show(fig, "dongle power cut x5")
    assert fig.problems == []
    assert sum(fig.faults.values()) == 5 and fig.faults["power cut + torn write"] >= 2
    assert fig.rejected == 0 and fig.duplicated == 0
    assert fig.lost == fig.lost_named <= fig.torn_entries  # what was lost is named by a GAP
    assert fig.stored + fig.lost == fig.produced


async def test_ble_drops_and_a_broker_outage_during_backlog_sync_lose_nothing(tmp_path, broker):
    fig = await faults.run_ble_drops(tmp_path, seed=3, backlog_s=600, broker=broker, outage_s=3.0, say=print)
    show(fig, "BLE drops + broker outage")
    assert fig.problems == []
    assert sum(v for k, v in fig.faults.items() if k.startswith("BLE drop")) >= 2
    assert fig.faults["broker terminated"] == 1 and fig.faults["broker frozen (SIGSTOP)"] == 1
    assert fig.stored == fig.produced > 600 and fig.lost == 0 and fig.duplicated == 0 and fig.rejected == 0
    assert fig.events > 0 and fig.event_deliveries_missing == 0
    said = "\n".join(fig.log)
    assert "unavailable: disconnected" in said and " is back" in said
    if fig.faults["events queued while the broker was down"]:  # then it had something to say
        assert "target unavailable" in said or "not taken" in said


def test_full_database_refuses_loudly_acks_nothing_and_recovers_after_the_cap_is_raised(tmp_path):
    fig = faults.run_disk_full(tmp_path, backlog_s=900, cap_mb=1, raised_mb=256, say=print)
    show(fig, "database full")
    assert fig.problems == []
    assert fig.stored == fig.produced > 900 and fig.lost == 0 and fig.duplicated == 0
    assert any("database or disk is full" in ln and "max_size_mb" in ln for ln in fig.log)
