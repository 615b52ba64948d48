"""The dongle and the daemon's link, end to end on the simulated radio: the real firmware on
MicroPython (hil.rig) and obdsync.link.DongleLink over bleak with the SimClient backend.

Delivery as the README's delivery contract promises it: records arrive MACed at any MTU, an ack frees the log,
a dropped link replays from the first unacked record, nothing is lost and duplicates are
exact copies of what was sent before.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest
from e2e import RecordingSink, until

from hil.blesim import SimClient
from hil.rig import Rig
from obdsync.link import DongleLink, LinkError
from protocol import control, control_central

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("micropython")]


def provision(workdir: Path, **cfg) -> None:
    """config.json for the rig's first dongle, written before it boots (Rig keeps an existing one)."""
    flash = Path(workdir) / "flash0"
    flash.mkdir(parents=True, exist_ok=True)
    base = {"device_id": secrets.token_bytes(8).hex(), "secret": secrets.token_bytes(32).hex(),
            "pairing": True, "log_capacity": 1 << 20}
    (flash / "config.json").write_text(json.dumps({**base, **cfg}))


def link_for(rig: Rig, sink, **client_kw) -> DongleLink:
    return DongleLink(rig.dongle.mac, rig.dongle.secret, sink, backend=SimClient,
                      backend_kwargs={"air": str(rig.air), **client_kw})


async def status(link: DongleLink) -> dict:
    return control_central.parse_status(await link.command(control.STATUS))


@pytest.mark.parametrize("mtu,expect", [(23, 23), (517, 247)], ids=["mtu23", "mtu247"])
async def test_authenticated_link_receives_records_with_valid_macs(tmp_path, mtu, expect):
    with Rig("city", tmp_path) as rig:
        sink = RecordingSink()
        link = link_for(rig, sink, mtu=mtu)
        task = asyncio.create_task(link.session())
        try:
            await until(lambda: link.connected, 15, "the session")
            assert link.mtu == expect  # what the notifications were cut to
            await until(lambda: sum(1 for r in sink.records.values() if r.samples) >= 30, 20, "30 sample records")
            st = await status(link)
        finally:
            link.stop()
            await asyncio.wait_for(task, 15)
        assert link.stats.rejected_records == 0 and link.stats.broken_fragments == 0
        sink.assert_consistent()
        assert st["next_seq"] > sink.top and st["boot"] == sink.records[0].boot
        # the biggest records span many notifications at MTU 23
        assert link.stats.samples > 100


async def test_ack_frees_the_log(tmp_path):
    # Small segments: an ack frees whole segments, so they must close quickly here. As
    # many segments as the board's default (1 MiB in 16 KiB): the log keeps a table per
    # segment, and 512 of them outgrow the board's data heap before the ELM is up.
    capacity = 64 * 2048
    provision(tmp_path, segment_bytes=2048, log_capacity=capacity)
    with Rig("city", tmp_path) as rig:
        sink = RecordingSink(ack_limit=-1)  # nothing durable yet: the log only grows
        link = link_for(rig, sink)
        task = asyncio.create_task(link.session())
        try:
            await until(lambda: link.connected, 15, "the session")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while (before := await status(link))["log_used"] < 3 * 2048:
                assert loop.time() < deadline, f"the log never grew: {before}\n{rig.dongle.output()[-3000:]}"
                await asyncio.sleep(0.1)
            assert before["first_unacked"] == 0
            sink.ack_limit = None  # stored now: the link acks
            await until(lambda: link.stats.acked > before["next_seq"], 60, "acks past the backlog")
            after = await status(link)
        finally:
            link.stop()
            await asyncio.wait_for(task, 15)
        assert after["first_unacked"] > before["next_seq"]
        assert after["log_used"] < before["log_used"]
        assert after["log_capacity"] == before["log_capacity"] == capacity


async def test_disconnect_mid_stream_then_reconnect_replays_from_the_first_unacked(tmp_path):
    with Rig("city", tmp_path) as rig:
        sink = RecordingSink(ack_limit=5)  # a backlog stays unacked when the link drops
        link = link_for(rig, sink)
        task = asyncio.create_task(link.session())
        await until(lambda: link.connected, 15, "the first session")
        await until(lambda: sink.top >= 30, 20, "30 records")
        task.cancel()  # the daemon goes away mid-stream
        with pytest.raises(asyncio.CancelledError):
            await task
        rig.dongle.wait_for("disconnected", 10)
        first_max = max(sink.deliveries)
        assert link.stats.acked == 5

        sink.ack_limit = None
        link2 = link_for(rig, sink)
        task2 = asyncio.create_task(link2.session())
        try:
            await until(lambda: link2.stats.backlog_end > 0, 15, "the second session's STREAM")
            assert link2.stats.backlog_first == 6  # the first unacked record, nothing skipped
            await until(lambda: sink.top >= first_max + 20, 20, "20 records beyond the first session")
        finally:
            link2.stop()
            await asyncio.wait_for(task2, 15)
        sink.assert_consistent()
        doubled = sorted(s for s, got in sink.deliveries.items() if len(got) > 1)
        # Replayed: every unacked record sent before; doubled: nothing else (a stall resend may
        # repeat a few beyond first_max, never one at or below the ack).
        assert set(range(6, first_max + 1)) <= set(doubled)
        assert doubled and doubled[0] >= 6
        assert link.stats.rejected_records == link2.stats.rejected_records == 0


class _Deaf:
    """A telemetry reassembler that hears nothing: the notifications no longer arrive (a dead
    sender on the dongle, or lost below bleak) while commands still work."""

    def feed(self, _data: bytes) -> None:
        return None

    def reset(self) -> None:
        pass


async def test_a_stream_that_goes_silent_while_the_dongle_logs_is_asked_again_then_reconnected(tmp_path, caplog):
    with Rig("city", tmp_path) as rig:
        sink = RecordingSink()
        link = DongleLink(rig.dongle.mac, rig.dongle.secret, sink, backend=SimClient,
                          backend_kwargs={"air": str(rig.air)}, status_s=1.0)
        task = asyncio.create_task(link.session())
        try:
            await until(lambda: link.connected and sink.top >= 5, 20, "5 records")
            link._tel_rx = _Deaf()  # type: ignore[assignment]
            with pytest.raises(LinkError, match="streams none"):
                await asyncio.wait_for(task, 30)
        finally:
            link.stop()
            if not task.done():
                await asyncio.wait_for(task, 15)
        assert "asking it to stream again" in caplog.text
        sink.assert_consistent()
