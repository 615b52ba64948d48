"""A dongle whose log is wiped (reflash, new littlefs, factory reset, replaced board)
starts its seqs and boots again at 0 under a new log epoch: the daemon keeps both
logs' records, each once, acks the new log from its own start so the dongle frees it,
and says the log started over (status, an event). A dongle of another protocol
version is told apart clearly. The dongle is the real firmware on MicroPython."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from e2e import dongle_status, query, running_daemon, short_city, synced, until

from hil.blesim import SimClient
from hil.rig import Rig
from obdsync.config import Config
from obdsync.ingest import EPOCH_SEQ_SHIFT
from obdsync.link import DongleLink, IncompatibleError
from obdsync.status import gather
from obdsync.store import Store
from protocol import uuids

pytestmark = pytest.mark.slow


def by_epoch(db, device) -> dict[int, list[int]]:
    """idx -> the wire seqs stored for that log epoch, in order."""
    out: dict[int, list[int]] = {}
    for (seq,) in query(db, "SELECT r.seq FROM records r JOIN devices d ON d.num = r.device WHERE d.id = ?"
                            " ORDER BY r.seq", (device,)):
        out.setdefault(seq >> EPOCH_SEQ_SHIFT, []).append(seq & 0xFFFFFFFF)
    return out


async def test_a_wiped_log_lands_whole_beside_the_old_one(tmp_path):
    db = tmp_path / "obdsync.db"
    with Rig(short_city(3000, speedup=60), tmp_path / "rig") as rig:
        dongle = rig.dongle
        device = dongle.device_id
        async with running_daemon(rig, db) as daemon:
            link = daemon.runners[0].link
            await until(lambda: link.stats.acked >= 25, 60, "25 records of the first log", task=daemon.task)
            (before,) = await synced(daemon)
            old_epoch = link.stats.epoch
            dongle.kill()
            shutil.rmtree(dongle.flash / "log")  # the log is gone; the board keeps its identity
            dongle.start()
            await asyncio.to_thread(dongle.wait_for, "ready", 30)
            await until(lambda: link.stats.epoch not in (None, old_epoch) and link.connected, 30,
                        "the daemon to meet the new log", task=daemon.task)
            # Past where the old log was: every seq of the new one overlaps an old one.
            await until(lambda: link.stats.acked >= before["next_seq"] + 3, 90,
                        f"the new log to pass seq {before['next_seq'] + 3}", task=daemon.task)
            (after,) = await synced(daemon)
            assert link.stats.rejected_records == 0
        freed = await dongle_status(rig, dongle)

    logs = by_epoch(db, device)
    assert sorted(logs) == [0, 1], logs.keys()
    old, new = logs[0], logs[1]
    assert old == list(range(len(old))) and old[-1] >= before["next_seq"] - 1  # all the first log sent, once
    assert new == list(range(len(new))) and new[-1] >= after["next_seq"] - 1  # the whole new log, once
    assert new[-1] >= old[-1]
    dup = query(db, "SELECT seq, n, channel FROM samples GROUP BY seq, n, channel HAVING COUNT(*) > 1")
    assert not dup
    # The new log was acked from its own start: the dongle freed it (no BAD_REQUEST, no stuck ack).
    assert freed["first_unacked"] >= after["next_seq"]

    store = await Store.open(db, create=False)
    try:
        (st,) = await store.status(device)
        epochs = await store.epochs(device)
        events = [e for e in await store.events(device) if e.type == "log_reset"]
        shown = await gather(store, Config())  # what `obdsync status` shows
    finally:
        await store.close()
    assert st.epochs == 2 and st.epoch == epochs[1].epoch != epochs[0].epoch
    assert st.contiguous == new[-1]
    (d,) = shown["devices"]
    assert d["log_epochs"] == 2 and d["log_epoch"] == f"{epochs[1].epoch:08x}" and d["contiguous"] == new[-1]
    assert len(events) == 1 and events[0].values["epoch"] == f"{epochs[1].epoch:08x}"
    assert events[0].values["previous_acked_seq"] == old[-1]


async def test_a_dongle_of_another_protocol_version_is_told_apart(tmp_path):
    """A protocol-1 dongle (its info starts with 1): the daemon says what to update
    instead of failing on bytes it cannot read."""

    class OldDongle(SimClient):
        async def read_gatt_char(self, char, **kwargs):
            data = bytearray(await super().read_gatt_char(char, **kwargs))
            if str(getattr(char, "uuid", char)).lower() == str(uuids.INFO).lower():
                data[0] = 1
            return bytes(data)

    with Rig(short_city(60), tmp_path) as rig:
        class NoSink:
            async def ingest(self, device, records, **_epoch):
                raise AssertionError("nothing may be ingested from a dongle we cannot read")

        link = DongleLink(rig.dongle.mac, rig.dongle.secret, NoSink(), backend=OldDongle,
                          backend_kwargs={"air": str(rig.air)})
        with pytest.raises(IncompatibleError, match="speaks wire protocol 1, this obdsync speaks 2:"
                                                    " update the dongle firmware"):
            await asyncio.wait_for(link.session(), 30)
