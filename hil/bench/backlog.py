"""Figure 6: backlog sync end to end — an hour of driving buffered on the dongle, then
the daemon connects: time until everything is acked.

1. hil/bench/mpy/fill_log.py writes SECONDS of driving (the default plan's driving
   rates, one record a second) into a dongle's flash directory with the firmware's own
   FlashLog, faster than real time.
2. The firmware boots on that directory (hil.rig: emulator, link model, MicroPython,
   simulated radio) and keeps polling the car meanwhile.
3. DongleLink (bleak API, hil.blesim.SimClient) with Store as its sink connects,
   authenticates, streams; the clock stops when the ack reaches the last record that
   was in the log when STREAM was answered.

The simulated link's own bound: the radio shim gives each connection
OBDSYNC_SIM_TX_BUFFERS (12) buffers, refilled with OBDSYNC_SIM_PKTS_PER_EVENT (4) per
connection interval (30 ms), one notification each; a record goes out as
ceil(len / (MTU-4)) notifications. So the backlog needs at least
(notifications - 12) / (4 / 30 ms) seconds, whoever is listening.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from hil import mpy
from hil.bench.common import SCENARIO, BenchError, Context, Row, StoreSink, fmt
from hil.build_firmware import sim_tree

if TYPE_CHECKING:
    from hil.rig import Rig

MTU = 247
TX_BUFFERS = 12
PKTS_PER_EVENT = 4
CONN_INTERVAL_S = 0.030


class Filled(TypedDict):
    """What fill_log.py wrote into the flash directory."""
    records: int
    samples: int
    first_seq: int
    next_seq: int
    boot: int
    dropped: int


class LinkBound(TypedDict):
    notifications: int
    notified_bytes: int
    mtu: int
    notifications_per_s: float
    bound_s: float


class Synced(TypedDict):
    connect_s: float
    sync_s: float
    total_s: float
    backlog_first: int
    backlog_end: int
    records_received: int
    samples_received: int
    rejected: int
    broken_fragments: int


class BacklogResult(Synced):
    seconds_of_driving: int
    filled: Filled
    firmware_boot_s: float
    ready_line: str
    link: LinkBound
    record_bytes: int
    sink: str
    ratio_to_bound: float


def fill(flash: Path, secret: bytes, seconds: int) -> Filled:
    tree = sim_tree()
    script = mpy.ROOT / "hil" / "bench" / "mpy" / "fill_log.py"
    r = subprocess.run(mpy.argv(script, str(flash), secret.hex(), str(seconds), heapsize="2M"),
                       env=mpy.env(simulated_ble=False, extra=[tree]), capture_output=True, text=True,
                       timeout=300)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("filled ")), None)
    if r.returncode or line is None:
        raise BenchError("fill_log failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
    f = line.split()
    return {"records": int(f[1]), "samples": int(f[2]), "first_seq": int(f[3]), "next_seq": int(f[4]),
            "boot": int(f[5]), "dropped": int(f[6])}


def record_sizes(log_dir: Path) -> list[int]:
    """Lengths of the records in the segment files (entry: len u16 | crc32 u32 | record)."""
    sizes = []
    for seg in sorted(log_dir.glob("*.seg")):
        b = seg.read_bytes()
        o = 0
        while o + 6 <= len(b):
            n = (b[o] << 8) | b[o + 1]
            if n == 0 or o + 6 + n > len(b):
                break
            sizes.append(n)
            o += 6 + n
    return sizes


def link_bound(sizes: list[int], mtu: int = MTU) -> LinkBound:
    room = mtu - 3 - 1  # ATT header, then our fragment header
    notes = sum(math.ceil(n / room) for n in sizes)
    rate = PKTS_PER_EVENT / CONN_INTERVAL_S
    return {"notifications": notes, "notified_bytes": sum(sizes) + notes, "mtu": mtu,
            "notifications_per_s": rate, "bound_s": max(0, notes - TX_BUFFERS) / rate}


async def _sync(rig: Rig, db: Path, timeout: float) -> Synced:
    from hil.blesim import SimClient
    from obdsync.link import DongleLink
    from obdsync.store import Store

    store = await Store.open(db)
    link = DongleLink(rig.dongle.mac, rig.dongle.secret, StoreSink(store), backend=SimClient,
                      backend_kwargs={"air": str(rig.air)})
    t0 = time.monotonic()
    task = asyncio.create_task(link.session())
    try:
        deadline = t0 + timeout
        while True:
            if task.done():
                task.result()
                raise BenchError("the link ended before the backlog was acked")
            st = link.stats
            if st.backlog_end and st.acked >= st.backlog_end - 1:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"backlog not acked within {timeout:.0f} s: acked {st.acked} of "
                                 f"{st.backlog_end - 1}; dongle output:\n" + rig.dongle.output())
            await asyncio.sleep(0.02)
        t_done = time.monotonic()
        st = link.stats
        out: Synced = {"connect_s": (st.connected_since or t0) - t0, "sync_s": t_done - (st.connected_since or t0),
               "total_s": t_done - t0, "backlog_first": st.backlog_first, "backlog_end": st.backlog_end,
               "records_received": st.records, "samples_received": st.samples,
               "rejected": st.rejected_records, "broken_fragments": st.broken_fragments}
    finally:
        link.stop()
        try:
            await asyncio.wait_for(task, 15)
        except Exception:  # noqa: BLE001 - stopping; the figure is already taken
            task.cancel()
        await store.close()
    return out


def run(ctx: Context) -> BacklogResult:
    from hil.rig import Rig

    seconds = ctx.pick(600, 3600)
    work = ctx.workdir / "backlog"
    flash = work / "flash0"  # where Rig puts its first dongle: it keeps this config on start
    flash.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    device_id = secrets.token_bytes(8)
    (flash / "config.json").write_text(json.dumps({"device_id": device_id.hex(), "secret": secret.hex(),
                                                   "pairing": True, "log_capacity": 1 << 20}))
    t = time.monotonic()
    filled = fill(flash, secret, seconds)
    ctx.log(f"backlog: {seconds} s of driving = {filled['records']:,} records, {filled['samples']:,} samples "
            f"written in {time.monotonic() - t:.1f} s")
    sizes = record_sizes(flash / "log")
    bound = link_bound(sizes)
    env_before = {k: os.environ.get(k) for k in ("OBDSYNC_SIM_TX_BUFFERS", "OBDSYNC_SIM_PKTS_PER_EVENT")}
    if any(env_before.values()):
        raise BenchError(f"the sim radio is tuned in this environment ({env_before}): the bound would be wrong")
    t = time.monotonic()
    with Rig(SCENARIO, work) as rig:
        ready = next((ln for ln in rig.dongle.lines if ln.startswith("ready")), "")  # Rig.start waited for it
        boot_s = time.monotonic() - t
        ctx.log(f"backlog: firmware up in {boot_s:.1f} s ({ready}); daemon connecting …")
        synced = asyncio.run(_sync(rig, work / "daemon.db", timeout=ctx.pick(60, 300) + 2 * bound["bound_s"]))
    return {**synced, "seconds_of_driving": seconds, "filled": filled, "firmware_boot_s": boot_s,
            "ready_line": ready, "link": bound, "record_bytes": sum(sizes), "sink": "Store (obdsync.store.Store.ingest)",
            "ratio_to_bound": synced["sync_s"] / bound["bound_s"] if bound["bound_s"] else float("nan")}


def rows(r: BacklogResult) -> list[Row]:
    b = r["link"]
    return [Row(f"Backlog sync: {r['seconds_of_driving'] // 60} min of driving "
                f"({r['filled']['records']:,} records, {r['filled']['samples']:,} samples)",
                f"all acked {fmt(r['sync_s'], 1)} s after STREAM (+{fmt(r['connect_s'], 1)} s connect/auth)",
                f"sim link bound {fmt(b['bound_s'], 1)} s ({b['notifications']:,} notifications at "
                f"{b['notifications_per_s']:.0f}/s)", f"{fmt(r['ratio_to_bound'], 2)}× the bound",
                "bounded by the link, not the daemon", r["ratio_to_bound"] <= 1.25)]
