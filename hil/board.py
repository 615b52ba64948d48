"""`obdsync hil run SCENARIO --board PORT`: the same scenario against a real dongle.

The ELM327 emulator serves the vehicle on a pty; a relay copies bytes between
that pty and a USB-serial adapter (PORT) wired to the dongle's UART (TX↔RX, GND;
38400 8N1, as an ELM327). The daemon talks to the dongle over real BLE through
bleak's default backend. The board's clock is real time, so every phase runs at
speedup 1 here: use the short scenarios (city, highway, dtc, overheat).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from hil.emulator import Emulator
from hil.runner import Report, _collect, _drain, _drive, format_report
from hil.scenario import Scenario, load
from obdsync.daemon import Daemon
from obdsync.devices import Paired, parse_label


class SerialRelay:
    """Copies bytes between the emulator's pty and a serial port, both ways."""

    def __init__(self, pty: str, port: str, baud: int = 38400) -> None:
        import serial  # pyserial (python-OBD's dependency)

        self._ser = serial.Serial(port, baud, timeout=0.05)
        self._pty = os.open(pty, os.O_RDWR | os.O_NOCTTY)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._up, daemon=True),
                         threading.Thread(target=self._down, daemon=True)]
        for t in self._threads:
            t.start()

    def _up(self) -> None:  # dongle -> emulator
        while not self._stop.is_set():
            data = self._ser.read(256)
            if data:
                os.write(self._pty, data)

    def _down(self) -> None:  # emulator -> dongle
        import select

        while not self._stop.is_set():
            r, _, _ = select.select([self._pty], [], [], 0.05)
            if r:
                self._ser.write(os.read(self._pty, 256))

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self._ser.close()
        os.close(self._pty)


class BoardBench:
    """What the scenario runner needs of a rig, with the vehicle on a serial port."""

    def __init__(self, scenario: Scenario, port: str) -> None:
        self.scenario = scenario
        self.schedule = scenario.schedule()
        self.emulator = Emulator(scenario, clock=self.schedule).start()
        try:
            self.relay = SerialRelay(self.emulator.pty, port)
        except BaseException:
            self.emulator.close()
            raise

    def sim_s(self) -> float:
        return self.schedule.sim_s()

    def close(self) -> None:
        self.relay.close()
        self.emulator.close()


def real_time(sc: Scenario) -> Scenario:
    return replace(sc, phases=tuple(replace(p, speedup=1) for p in sc.phases))


async def _run(scenario: str, port: str, address: str, label: str) -> Report:
    from hil.runner import scenario_config

    sc = real_time(load(scenario))
    device, secret = parse_label(label)
    with tempfile.TemporaryDirectory(prefix="obdsync-board-") as tmp:
        work = Path(tmp)
        bench = BoardBench(sc, port)
        try:
            dev = device or "0" * 16
            daemon = Daemon(scenario_config(sc), work / "obdsync.db", [Paired(dev, address, "board")],
                            secrets={dev: secret}, live_file=work / "live.json")
            t0 = time.monotonic()
            task = asyncio.create_task(daemon.run(install_signals=False))
            try:
                await _drive(sc, bench, daemon, task, print, 0.0)
                await _drain(daemon, task)
            finally:
                daemon.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 30)
            report = Report(sc.name, bench.sim_s(), time.monotonic() - t0)
            await _collect(report, sc, work / "obdsync.db", daemon.config, daemon)
            return report
        finally:
            bench.close()


def run_board(scenario: str, port: str, address: str | None = None, label: str | None = None) -> int:
    address = address or os.environ.get("OBDSYNC_BOARD_ADDRESS")
    label = label or os.environ.get("OBDSYNC_BOARD_SECRET")
    if not address or not label:
        raise SystemExit("--board needs the dongle's BLE address and label text: set OBDSYNC_BOARD_ADDRESS and "
                         "OBDSYNC_BOARD_SECRET (see hil/README.md)")
    report = asyncio.run(_run(scenario, port, address, label))
    print(format_report(report))
    return 0 if report.ok else 1
