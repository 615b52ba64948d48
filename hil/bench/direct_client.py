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
import sys
import tempfile
import time


async def main(argv: list[str]) -> int:
    from dongle import elm327 as E
    from dongle.plan import MIN_INTERVAL, Plan
    from dongle.scheduler import Scheduler
    from obdsync.direct import mpcompat
    from protocol.record import RecordWriter

    pty, mode, warp, warm_ms, windows, window_ms, pids = argv[:7]
    interval = float(argv[7]) if len(argv) > 7 else 30.0
    warp, nwin, win = int(warp), int(windows), int(window_ms) / 1000
    pids = [int(p, 16) for p in pids.split(",")]
    async with _transport(pty, mode, interval) as t:
        elm = E.ELM327(t)
        st = await elm.init()
        print("init", E.NAMES[st], elm.is_can, flush=True)
        t0 = mpcompat.ticks_ms()
        writer = RecordWriter(bytes(32))
        count = {"samples": 0, "records": 0, "rec_t": time.monotonic()}

        def sink(t_ms, n, ch, off, ln, data):
            nbytes = sum(ln[i] for i in range(n))
            if not writer.fits(n, nbytes) or time.monotonic() - count["rec_t"] >= 1.0:
                if not writer.empty():
                    writer.seal(count["records"], 1)
                    count["records"] += 1
                count["rec_t"] = time.monotonic()
            writer.group(t_ms)
            for i in range(n):
                writer.add(ch[i], data, off[i], ln[i])
            count["samples"] += n

        def warped():
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


class _transport:
    def __init__(self, pty: str, mode: str, interval: float) -> None:
        self.pty, self.mode, self.interval = pty, mode, interval
        self._tmp = None
        self._adapter = None
        self._t = None

    async def __aenter__(self):
        from obdsync.direct.transports import open_transport

        if self.mode == "pty":
            self._t = open_transport(self.pty)
        elif self.mode == "ble":
            from hil.adapter_links import BleAdapter
            from hil.blesim import SimClient
            from obdsync.direct.ble import BleTransport

            self._tmp = tempfile.TemporaryDirectory(prefix="obdsync-bench-air-")
            mac = "0C:EE:E7:00:00:02"
            self._adapter = await BleAdapter(self.pty, self._tmp.name, mac, "fff0", mtu=23,
                                             conn_interval_ms=self.interval, per_event=4).start()
            self._t = BleTransport(mac, backend=SimClient, backend_kwargs={"air": self._tmp.name})
        else:
            raise SystemExit(f"unknown mode {self.mode!r}")
        return await self._t.open()

    async def __aexit__(self, *exc):
        await self._t.close()
        if self._adapter is not None:
            await self._adapter.close()
        if self._tmp is not None:
            self._tmp.cleanup()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
