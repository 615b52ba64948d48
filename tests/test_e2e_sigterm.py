"""SIGTERM to `obdsync run` while records stream in: exit 0, and everything it stored is
acked — the dongle's first unacked record is the one after the store's watermark, so
the next connection replays nothing already stored and misses nothing."""

from __future__ import annotations

import asyncio

import pytest
from e2e import Home, assert_exactly_once, dongle_status, record_count, short_city, wait_until, watermark

from hil.rig import Rig

pytestmark = pytest.mark.slow


def test_sigterm_mid_stream_stores_acks_and_exits_0(tmp_path):
    with Rig(short_city(900, speedup=60), tmp_path / "rig") as rig:
        d = rig.dongle
        home = Home(tmp_path / "home", rig.air)
        try:
            home.pair(d)
            daemon = home.run()
            daemon.wait_for(r"dongle .* connected")
            # Streaming live: records keep arriving (about ten a second).
            wait_until(lambda: record_count(home.db, d.device_id) >= 30, 30, "30 records stored")
            rc = daemon.terminate()
            assert rc == 0, daemon.output[-3000:]
            assert "stopping: storing and acknowledging" in daemon.output
            assert "Traceback" not in daemon.output and " ERROR " not in daemon.output, daemon.output[-3000:]
            stored = assert_exactly_once(home.db, d.device_id, 29)
            after = asyncio.run(dongle_status(rig, d))
            assert after["first_unacked"] == watermark(home.db, d.device_id) + 1, \
                f"dongle's first unacked {after['first_unacked']}, store's watermark {stored[-1]}"

            # The next run carries on from there: nothing doubled, nothing skipped.
            again = home.run()
            wait_until(lambda: (watermark(home.db, d.device_id) or -1) >= after["next_seq"] + 10, 30,
                       "the next run to store what came after")
            assert again.terminate() == 0, again.output[-3000:]
        finally:
            home.close()
    assert_exactly_once(home.db, d.device_id, after["next_seq"] + 10)
