"""Two dongles, one daemon: each its own link task, both backlogs and live streams land
completely, each under its own device and with its own car's bytes."""

from __future__ import annotations

import pytest
from e2e import (
    Answers,
    assert_exactly_once,
    backlog_reaches,
    dongle_status,
    query,
    running_daemon,
    short_city,
    sim_reaches,
    synced,
    until,
)

from hil.rig import Rig

pytestmark = pytest.mark.slow


async def test_two_dongles_stream_at_once_and_both_land_completely(tmp_path, monkeypatch):
    answers = Answers().install(monkeypatch)
    sc = short_city(900, speedup=60)
    db = tmp_path / "obdsync.db"
    with Rig(sc, tmp_path, dongles=2) as rig:
        a, b = rig.dongles
        assert len({a.device_id, b.device_id}) == 2 and len({a.mac, b.mac}) == 2
        for d in rig.dongles:  # both log a backlog before the daemon comes
            await backlog_reaches(d, 10)
        async with running_daemon(rig, db) as daemon:
            assert len(daemon.runners) == 2
            runners = daemon.runners
            await until(lambda: all(r.link.stats.backlog_end for r in runners), 20, "both links to stream",
                        task=daemon.task)
            backlogs = {r.link.device: r.link.stats.backlog_end - r.link.stats.backlog_first for r in runners}
            await sim_reaches(rig, 360)  # and stream live for a while
            statuses = await synced(daemon)
        after = [await dongle_status(rig, d) for d in rig.dongles]

    for d, emu, st, later in zip(rig.dongles, rig.emulators, statuses, after, strict=True):
        assert backlogs[d.device_id] > 5, f"{d.device_id}: no backlog to sync ({backlogs})"
        stored = assert_exactly_once(db, d.device_id, st["next_seq"] - 1)
        assert later["first_unacked"] == stored[-1] + 1, f"{d.device_id}: stored and acked differ"
        # This device's rows carry its own car's answers (the two cars differ in timing).
        rpm = [raw for (raw,) in query(db, "SELECT s.raw FROM samples s JOIN devices v ON v.num = s.device"
                                           " WHERE v.id = ? AND s.channel = 12 ORDER BY s.boot, s.t_ms, s.seq, s.n",
                                       (d.device_id,))]
        served = [data for _t, data in answers.mode01(emu.vehicle)[0x0C]]
        assert len(rpm) > 20 and rpm == served[:len(rpm)], f"{d.device_id}: RPM bytes are not its car's"
    names = {r[0] for r in query(db, "SELECT id FROM devices")}
    assert names == {a.device_id, b.device_id}
