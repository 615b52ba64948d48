"""A backlog logged while no daemon listened, synced over a link that breaks half way:
nothing lost, nothing doubled.

Once the radio drops under a running daemon (it reconnects by itself), once the daemon
process is killed with SIGKILL (a restarted `obdsync run` carries on). The dongle is
the real firmware; it frees its log only up to what the daemon acked.
"""

from __future__ import annotations

import asyncio

import pytest
from e2e import (
    Home,
    assert_exactly_once,
    backlog_reaches,
    dongle_status,
    record_count,
    records_logged,
    running_daemon,
    short_city,
    synced,
    until,
    wait_until,
    watermark,
)

from hil.blesim import SimClient
from hil.rig import Rig

pytestmark = pytest.mark.slow

BACKLOG_SIM_S = 700  # logged before anyone connects: about 70 records at 120x
MIN_BACKLOG = 30


def cuttable() -> type[SimClient]:
    """A SimClient that remembers its connections, so the test can drop one as a
    radio would (bleak's backend seam: the daemon is handed the class)."""

    class CutClient(SimClient):
        connections: list[SimClient] = []

        async def connect(self, pair: bool, **kwargs) -> None:
            await super().connect(pair, **kwargs)
            CutClient.connections.append(self)

    return CutClient


async def test_radio_drop_mid_backlog_loses_and_doubles_nothing(tmp_path):
    sc = short_city(1200, speedup=120)
    db = tmp_path / "obdsync.db"
    client = cuttable()
    with Rig(sc, tmp_path) as rig:
        await backlog_reaches(rig.dongle, MIN_BACKLOG + 20)
        # MTU 23: many small notifications, so the sync lasts long enough to be cut in.
        async with running_daemon(rig, db, backend=client, mtu=23) as daemon:
            stats = daemon.runners[0].link.stats
            await until(lambda: stats.acked >= stats.backlog_first + 10, 20, "the backlog sync to get going",
                        task=daemon.task)
            backlog = (stats.backlog_first, stats.backlog_end)
            cut_at = stats.acked
            assert backlog[1] - backlog[0] >= MIN_BACKLOG, f"backlog too small to cut: {backlog}"
            assert cut_at < backlog[1] - 10, f"the sync finished before the cut (acked {cut_at}, {backlog})"
            await client.connections[0].disconnect()
            await until(lambda: len(client.connections) >= 2 and daemon.runners[0].link.connected, 20,
                        "the daemon to reconnect", task=daemon.task)
            (st,) = await synced(daemon)
        assert daemon.runners[0].link.stats.records > 0
        after = await dongle_status(rig, rig.dongle)
        device = rig.dongle.device_id

    stored = assert_exactly_once(db, device, st["next_seq"] - 1)
    assert stored[-1] >= backlog[1] - 1
    # The dongle's log holds nothing the store has, and the store everything it freed.
    assert after["first_unacked"] == watermark(db, device) + 1


def test_daemon_killed_mid_backlog_restarts_where_it_was(tmp_path):
    """kill -9 of `obdsync run` during the sync: nothing was acked that is not stored,
    so the restarted daemon gets everything else exactly once."""
    sc = short_city(1200, speedup=120)
    with Rig(sc, tmp_path / "rig") as rig:
        home = Home(tmp_path / "home", rig.air)
        try:
            home.pair(rig.dongle)
            device = rig.dongle.device_id
            wait_until(lambda: records_logged(rig.dongle) >= MIN_BACKLOG + 20, 90,
                       f"{MIN_BACKLOG + 20} records in the dongle's log")
            first = home.run()
            m = first.wait_for(r"backlog ([1-7]\d)% \((\d+) of (\d+) records\)")
            backlog_end = int(m.group(3))
            assert backlog_end >= MIN_BACKLOG, f"backlog too small: {m.group(0)}"
            first.kill()
            at_kill = record_count(home.db, device)
            assert 0 < at_kill < backlog_end, f"{at_kill} of {backlog_end} stored when killed: not mid-backlog"

            second = home.run()
            wait_until(lambda: (watermark(home.db, device) or -1) >= backlog_end + 5, 30,
                       "the restarted daemon to sync the rest and stream on")
            assert second.terminate() == 0, second.output[-3000:]
            after = asyncio.run(dongle_status(rig, rig.dongle))
        finally:
            home.close()

    assert_exactly_once(home.db, device, backlog_end - 1)
    assert after["first_unacked"] == watermark(home.db, device) + 1, \
        "SIGTERM left stored records unacked, or acked what it had not stored"
