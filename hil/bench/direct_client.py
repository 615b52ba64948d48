"""Direct mode's poll path on CPython, measured in windows like hil/bench/mpy/fw_poll.py: the
firmware's ELM327 driver + Scheduler (unchanged, through obdsync.direct.mpcompat) over a
direct-mode transport, samples sealed by RecordWriter as the logger seals them.

    python -m hil.bench.direct_client PTY MODE WARP WARM_MS WINDOWS WINDOW_MS PID,PID,... [INTERVAL_MS]

MODE `pty`: SerialTransport on the link model's pty (38400 Bd). MODE `ble`: a simulated BLE
adapter (hil.adapter_links.BleAdapter, FFF0 layout, MTU 23, connection events every INTERVAL_MS
carrying 4 packets each way) in this process in front of the pty, reached through
BleTransport and the simulated radio. Every PID at the plan's shortest interval, the clock
warped WARP times so the plan asks more than the link carries (as fw_poll's `flat` plan).
Prints `init STATUS is_can`, `win_start I`, `win I samples requests ms`, `end timeouts errors
garbage truncated given_up 0 records`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from obdsync.direct.transports import Transport


async def main(argv: list[str]) -> int:
    from dongle import elm327 as E
    from dongle.plan import MIN_INTERVAL, Plan
    from dongle.scheduler import Scheduler
    from obdsync.direct import mpcompat
    from protocol.record import RecordWriter

    pty, mode, warp_arg, warm_ms, windows, window_ms, pid_list = argv[:7]
    interval = float(argv[7]) if len(argv) > 7 else 30.0
    warp, nwin, win = int(warp_arg), int(windows), int(window_ms) / 1000
    pids = [int(p, 16) for p in pid_list.split(",")]
    async with _transport(pty, mode, interval) as t:
        elm = E.ELM327(t)
        st = await elm.init()
        print("init", E.NAMES[st], elm.is_can, flush=True)
        t0 = mpcompat.ticks_ms()
        writer = RecordWriter(bytes(32))
        count = {"samples": 0, "records": 0}
        sealed_at = [time.monotonic()]

        def sink(t_ms: int, n: int, ch: bytearray, off: bytearray, ln: bytearray, data: bytearray) -> None:
            nbytes = sum(ln[i] for i in range(n))
            if not writer.fits(n, nbytes) or time.monotonic() - sealed_at[0] >= 1.0:
                if not writer.empty():
                    writer.seal(count["records"], 1)
                    count["records"] += 1
                sealed_at[0] = time.monotonic()
            writer.group(t_ms)
            for i in range(n):
                writer.add(ch[i], data, off[i], ln[i])
            count["samples"] += n

        def warped() -> int:
            return mpcompat.ticks_add(t0, mpcompat.ticks_diff(mpcompat.ticks_ms(), t0) * warp)

        plan = Plan(tuple((p, MIN_INTERVAL, MIN_INTERVAL, 0) for p in pids))
        s = Scheduler(elm, plan, sink, clock=warped)
        task = asyncio.create_task(s.run())
        await asyncio.sleep(int(warm_ms) / 1000)
        for w in range(nwin):
            print("win_start", w, flush=True)
            s0, r0, t1 = count["samples"], s.requests, time.monotonic()
            await asyncio.sleep(win)
            ms = int((time.monotonic() - t1) * 1000)
            print("win", w, count["samples"] - s0, s.requests - r0, ms, flush=True)
        s.stop()
        mpcompat.wake()
        await asyncio.wait_for(task, 10)
        print("end", elm.timeouts, elm.errors, elm.garbage, elm.truncated, s.given_up, 0, count["records"],
              flush=True)
    return 0


@contextlib.asynccontextmanager
async def _transport(pty: str, mode: str, interval: float) -> AsyncIterator[Transport]:
    """The opened transport of `mode`; what it stands on (the simulated adapter and its air)
    is closed too, also when opening fails halfway."""
    from obdsync.direct.transports import open_transport

    async with contextlib.AsyncExitStack() as stack:
        if mode == "pty":
            t = open_transport(pty)
        elif mode == "ble":
            from hil.adapter_links import BleAdapter
            from hil.blesim import SimClient
            from obdsync.direct.ble import BleTransport

            air = stack.enter_context(tempfile.TemporaryDirectory(prefix="obdsync-bench-air-"))
            mac = "0C:EE:E7:00:00:02"
            adapter = await BleAdapter(pty, air, mac, "fff0", mtu=23, conn_interval_ms=interval, per_event=4).start()
            stack.push_async_callback(adapter.close)
            t = BleTransport(mac, backend=SimClient, backend_kwargs={"air": air})
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        stack.push_async_callback(t.close)
        yield await t.open()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
