"""HIL scenarios through direct mode: the vehicle → ELM327 emulator → link model (38400 Bd, ECU
latency) → a simulated off-the-shelf adapter (BLE layout, Wi-Fi, or the pty itself) → the daemon
as the logger (obdsync.direct) → SQLite and rules. The report is hil.runner's, so a scenario's
[[expect]] list is checked exactly as through a dongle.

    report = await run_direct_scenario("dtc", transport="ble", layout="vgate")
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hil.adapter_links import BleAdapter, TcpAdapter
from hil.blesim import SimClient
from hil.emulator import Emulator
from hil.linkmodel import LinkModel
from hil.runner import Report, _collect, _drive, scenario_config
from hil.scenario import Scenario, load
from hil.simclock import Schedule
from obdsync.config import Config
from obdsync.daemon import Daemon
from obdsync.direct.registry import Adapter

STOP_S = 60.0  # the daemon's stop (seal, store, derive what is left) on a loaded machine


class DirectRunError(RuntimeError):
    """A direct-mode drive whose daemon failed or did not stop: its report would be wrong."""


ADAPTER_MAC = "0C:EE:E7:00:00:01"
TRANSPORTS = ("ble", "tcp", "pty")


@dataclass
class _Bench:
    """What hil.runner._drive reads from a rig."""

    emulator: Emulator
    schedule: Schedule

    def sim_s(self) -> float:
        return self.schedule.sim_s()


async def run_direct_scenario(scenario: Scenario | str, *, transport: str = "ble", layout: str = "fff0",
                              workdir: Path | None = None, echo: Callable[[str], None] | None = print,
                              config: Config | None = None, dup_rate: float = 0.05, bond_required: bool = True,
                              baud: int | None = None, latency_s: float | None = None,
                              conn_interval_ms: float = 0.0, extra_sim_s: float = 0.0,
                              adapter: str | None = None) -> Report:
    """`adapter`: an adapter/ECU profile of hil/adapter.py worn by the emulator and the link model
    (its baud and latency unless given; else a genuine ELM327 on CAN 11/500 at 38400 Bd, 30 ms),
    as hil.runner.run_scenario's; `transport` and `layout` choose the adapter's link."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport is one of {', '.join(TRANSPORTS)}, not {transport!r}")
    sc = load(scenario) if isinstance(scenario, str) else scenario
    say = echo or (lambda _s: None)
    async with contextlib.AsyncExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="obdsync-direct-")))
        air = workdir / "air"
        schedule = sc.schedule(None)
        emu = stack.enter_context(Emulator(sc, clock=schedule, adapter=adapter))
        link = stack.enter_context(LinkModel(emu.pty, baud=baud, latency_s=latency_s, adapter=adapter))
        if transport == "ble":
            await stack.enter_async_context(BleAdapter(link.pty, air, ADAPTER_MAC, layout, dup_rate=dup_rate,
                                                       bond_required=bond_required,
                                                       conn_interval_ms=conn_interval_ms))
            registered = Adapter(ADAPTER_MAC, "ble", "sim adapter")
        elif transport == "tcp":
            tcp = await stack.enter_async_context(TcpAdapter(link.pty))
            registered = Adapter(tcp.address, "tcp", "sim adapter")
        else:
            registered = Adapter(link.pty, "serial", "sim adapter")
        cfg = config or scenario_config(sc)
        daemon = Daemon(cfg, workdir / "obdsync.db", [], backend=SimClient, backend_kwargs={"air": str(air)},
                        live_file=workdir / "live.json", adapters=[registered])
        # Poll intervals, power timers and record times run on the scenario's clock, as the
        # firmware's do in the rig; the driver's serial timeouts stay real (physics).
        daemon.direct_options = {"clock": lambda: int(schedule.sim_s() * 1000),
                                 "state_file": workdir / "direct.json"}
        t0 = time.monotonic()
        task = asyncio.create_task(daemon.run(install_signals=False))
        try:
            await _drive(sc, _Bench(emu, schedule), daemon, task, say, extra_sim_s)
        finally:
            # Stopping seals the record in hand and stores it; the pipeline derives what is left.
            daemon.stop()
            done, _ = await asyncio.wait([task], timeout=STOP_S)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not done:
            raise DirectRunError(f"the daemon did not stop within {STOP_S:.0f} s of the drive's end: what it had "
                                 "left to store and derive is missing, so the report would be wrong")
        task.result()  # a daemon that failed says why here, not as a report with nothing derived
        report = Report(sc.name, schedule.sim_s(), time.monotonic() - t0)
        await _collect(report, sc, workdir / "obdsync.db", cfg, daemon)
        return report
