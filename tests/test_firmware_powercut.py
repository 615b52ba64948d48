"""Power cuts: the firmware's process is SIGKILLed while it streams to the daemon's link, at
seeded random points, and boots again on the same flash. Every record the daemon stores is
intact (its MAC checks), sequence numbers continue without a hole, each boot counts one up,
what is lost is at most the unflushed tail, and a sequence number is never delivered twice
with different content (the daemon's dedup by (device, seq) would hide the second)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from e2e import RecordingSink, until

from hil.blesim import SimClient
from hil.rig import Rig
from hil.scenario import parse
from obdsync.link import DongleLink, LinkError
from protocol.record import EVENT_BOOT, KIND_ANCHOR, KIND_EVENT, KIND_GAP

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("micropython")]

SEED = 4242
CUTS = 2
# A sample waits up to a record's age (1 s) to be sealed and up to the flush interval (1 s) to
# reach flash: that tail may be lost. Plus the test's view of the kill instant (scheduling).
LOSS_BOUND_MS = 2000
SLACK_MS = 1500


def last_ms(r) -> int:
    return max(t for t, _, _ in r.samples) if r.samples else r.t0


async def test_power_cut_while_streaming_loses_at_most_the_unflushed_tail(tmp_path):
    rng = random.Random(SEED)
    # 4x: records come fast enough, and the loss bound (dongle ms) stays well above jitter.
    scenario = parse({"name": "powercut", "phase": [{"kind": "city", "duration_s": 3600, "speedup": 4}]})
    with Rig(scenario, tmp_path) as rig:
        sink = RecordingSink()
        links: list[DongleLink] = []
        kills: list[tuple[float, int]] = []  # (wall time of the SIGKILL, boot it ended)
        for cut in range(CUTS + 1):
            link = DongleLink(rig.dongle.mac, rig.dongle.secret, sink, backend=SimClient,
                              backend_kwargs={"air": str(rig.air)})
            links.append(link)
            task = asyncio.create_task(link.session())
            await until(lambda lk=link: lk.stats.backlog_end > 0, 20, f"session {cut}")
            target = sink.top + rng.randint(3, 12)
            await until(lambda t=target: sink.top >= t, 30, f"{target + 1} records")
            if cut == CUTS:
                link.stop()
                await asyncio.wait_for(task, 15)
                break
            boot = max(r.boot for r in sink.records.values())
            kills.append((time.time(), boot))
            rig.dongle.kill()  # the power cut: nothing flushed, no goodbye
            try:
                await asyncio.wait_for(task, 15)  # the link notices the dongle is gone
            except LinkError:
                pass
            rig.dongle.start()
            await asyncio.to_thread(rig.dongle.wait_for, "ready", 30)

    assert all(lk.stats.rejected_records == 0 for lk in links)  # every record intact
    recs = sink.records
    assert all(s in recs for s in range(sink.top + 1))  # no hole
    for seq, got in sink.deliveries.items():
        assert all(g == got[0] for g in got), f"seq {seq} re-used with different content"
    assert not any(r.kind == KIND_GAP for r in recs.values())  # nothing sent was lost

    by_boot: dict[int, list] = {}
    for r in recs.values():
        by_boot.setdefault(r.boot, []).append(r)
    boots = sorted(by_boot)
    assert len(boots) == CUTS + 1 and boots == list(range(boots[0], boots[0] + CUTS + 1))
    for b in boots:
        assert any(r.kind == KIND_EVENT and r.code == EVENT_BOOT for r in by_boot[b]), b
    for a, b in zip(boots, boots[1:], strict=False):
        # the next boot continues right after the last record the cut left on flash
        assert min(r.seq for r in by_boot[b]) == max(r.seq for r in by_boot[a]) + 1

    for kill_wall, b in kills:
        # The anchor (the daemon's TIME) maps this boot's ms to wall time, hence to the cut.
        anchor = next(r for r in by_boot[b] if r.kind == KIND_ANCHOR)
        boot_sim_ms = rig.schedule.sim_ms(anchor.wall_ms / 1000) - anchor.t0
        cut_ms = rig.schedule.sim_ms(kill_wall) - boot_sim_ms
        newest = max(last_ms(r) for r in by_boot[b])
        assert newest <= cut_ms + SLACK_MS
        assert cut_ms - newest <= LOSS_BOUND_MS + SLACK_MS, (b, cut_ms, newest)
