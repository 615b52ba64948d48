"""The firmware's heap while it polls the city drive and streams to the daemon: no MemoryError,
the live heap (after a collection) stays flat, and what the firmware's data holds fits the
board's budget — on both interpreters with the firmware as .mpy files, and on the 32-bit one
with the firmware frozen into the image (firmware/manifest.py), as a board would run it.
With OBDSYNC_HEAP_REPORT_MS set, main.py makes the dongle print "heap ALLOC FREE" (after
gc.collect()) that often in its own clock's ms; "ready … heap A F" is the figure at start.
Per-sample allocation and the board's live-heap figures are measured by `make bench`."""

from __future__ import annotations

import asyncio

import pytest
from conftest import require_or_skip

from hil import mpy
from hil.blesim import SimClient, shim
from hil.build_firmware import code_heap_kb, frozen_tree, sim_tree
from hil.rig import Rig
from obdsync.link import DongleLink
from protocol import control, control_central

pytestmark = pytest.mark.slow

REPORT_SIM_MS = 24000  # 0.5 s of real time at the city's 48x
WARMUP = 4  # reports before steady state: adapter init, first connection, first records
STEADY = 12
GROWTH_LIMIT = 4096  # a leak of one small object per record would pass this within seconds
FROZEN_DATA_KB = 40  # the frozen firmware's data on the board (the design's heap budget)


class Sink:
    def __init__(self) -> None:
        self.seqs: set[int] = set()
        self.top = -1

    async def ingest(self, device: str, records: list, **_epoch: object) -> int:
        self.seqs.update(r.seq for r in records)
        while self.top + 1 in self.seqs:
            self.top += 1
        return self.top


def heap_reports(lines: list[str]) -> list[int]:
    return [int(x.split()[1]) for x in list(lines) if x.startswith("heap ")]


async def stream_and_watch(tmp_path, monkeypatch, frozen=False):
    """Drive the city with a daemon connected; (ready line, steady heap reports, STATUS)."""
    monkeypatch.setenv("OBDSYNC_HEAP_REPORT_MS", str(REPORT_SIM_MS))
    monkeypatch.setenv("OBDSYNC_SIM_WDT_MS", "10000")  # housekeeping feeds it all along
    with Rig("city", tmp_path, frozen=frozen) as rig:
        ready = next(x for x in rig.dongle.lines if x.startswith("ready"))
        link = DongleLink(rig.dongle.mac, rig.dongle.secret, Sink(), backend=SimClient,
                          backend_kwargs={"air": str(rig.air)})
        task = asyncio.create_task(link.session())
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            # Enough reports for a steady state, and records streamed while they were taken
            # (on a loaded machine the firmware falls behind the city's 48x: wait, don't count).
            while len(heap_reports(rig.dongle.lines)) < WARMUP + STEADY or link.stats.records <= 50:
                assert loop.time() < deadline, rig.dongle.output()
                assert rig.dongle.alive, rig.dongle.output()
                await asyncio.sleep(0.05)
            st = control_central.parse_status(await link.command(control.STATUS))
        finally:
            link.stop()
            await asyncio.wait_for(task, 15)
        out = "\n".join(rig.dongle.lines)
    assert "MemoryError" not in out and "Traceback" not in out and "wdt reset" not in out, out[-3000:]
    assert link.stats.records > 50  # it did stream while we watched
    steady = heap_reports(out.splitlines())[WARMUP:]
    assert max(steady) - min(steady) < GROWTH_LIMIT, steady
    return ready, steady, st


@pytest.mark.usefixtures("micropython")
async def test_heap_stays_flat_and_within_the_board_budget_while_streaming(tmp_path, monkeypatch):
    ready, steady, st = await stream_and_watch(tmp_path, monkeypatch)
    # The unix port holds the code (from .mpy) and the simulated radio on the same heap; the
    # board keeps no radio there. What remains is the firmware's data.
    data_kb = (max(steady) - shim.heap_bytes()) / 1024 - code_heap_kb(sim_tree())
    assert data_kb <= int(mpy.HEAPSIZE[:-1]), (data_kb, ready, steady)

    assert st["elm_protocol"] == 6 and st["boot"] >= 1 and st["next_seq"] > 50
    assert 11000 < st["millivolts"] < 15000
    assert st["log_capacity"] == 1 << 20 and st["log_used"] > 0
    assert {0x0D, 0x0C, 0xFF} <= set(st["rates"])
    assert st["auth_failures"] == 0


async def test_the_frozen_firmware_streams_within_the_boards_data_budget(tmp_path, monkeypatch):
    """The image a board gets from firmware/manifest.py, on the 32-bit interpreter: the code
    stays in the image, the heap holds the modules' objects and the firmware's data."""
    why = mpy.frozen_unavailable()
    if why:
        require_or_skip(why)
    monkeypatch.setenv(mpy.INTERPRETER_ENV, str(mpy.MPY32))
    ready, steady, st = await stream_and_watch(tmp_path, monkeypatch, frozen=True)
    assert "dongle" not in " ".join(p.name for p in frozen_tree().iterdir())  # nothing but the image's
    data_kb = (max(steady) - shim.heap_bytes(str(mpy.MPY32))) / 1024 - code_heap_kb(frozen_tree(), frozen=True)
    assert data_kb <= FROZEN_DATA_KB, (data_kb, ready, steady)
    assert st["next_seq"] > 50 and st["auth_failures"] == 0
