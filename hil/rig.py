"""A test rig: the vehicle on the ELM327 emulator, the link model, and the real
firmware on the MicroPython unix port with the simulated radio.

    with Rig("city", workdir) as rig:       # emulator + link model + one dongle
        rig.dongle.label                     # what `obdsync pair` takes
        rig.dongle.wait_for("ready")
        ... a daemon with backend=SimClient, air=rig.air ...

Every process and thread it starts, it stops — also when the test fails (use it
as a context manager). The dongle is a subprocess so that tests can SIGKILL it
("power cut") and start it again on the same flash directory.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from hil import mpy
from hil.adapter import Profile, load_profile
from hil.blesim import shim
from hil.build_firmware import code_heap_kb, frozen_tree, sim_tree
from hil.emulator import Emulator
from hil.linkmodel import FaultPlan, LinkModel
from hil.proc import LineProcess
from hil.scenario import Scenario, load
from hil.simclock import Schedule


class RigError(RuntimeError):
    pass


def heapsize(tree: Path, data: str = mpy.HEAPSIZE, frozen: bool = False) -> str:
    """The -X heapsize that leaves the firmware `data` for its data: the board's
    budget plus the simulated radio and the firmware's code, both of which cost
    the unix port's heap but not the board's (see code_heap_kb)."""
    kb = int(shim.heapsize(data)[:-1]) + code_heap_kb(tree, frozen)
    return f"{kb}K"


class SimDongle:
    """One simulated dongle: the firmware's main.py on MicroPython, its flash a
    directory, its UART a pty, its radio the shared air directory."""

    def __init__(self, flash: Path, uart: str, air: Path, *, clock: Schedule | None = None,
                 device_id: bytes | None = None, secret: bytes | None = None, mac: str | None = None,
                 pairing: bool = True, log_capacity: int = 1 << 20, heap: str = mpy.HEAPSIZE,
                 echo: Callable[[str], None] | None = None, config: Mapping[str, object] | None = None,
                 frozen: bool = False) -> None:
        self.flash = Path(flash)
        self.flash.mkdir(parents=True, exist_ok=True)
        cfg_path = self.flash / "config.json"
        cfg: dict[str, object]
        if cfg_path.exists():  # a restart: the board keeps its identity
            cfg = json.loads(cfg_path.read_text())
        else:
            cfg = {"device_id": (device_id or secrets.token_bytes(8)).hex(),
                   "secret": (secret or secrets.token_bytes(32)).hex(),
                   "pairing": pairing, "log_capacity": log_capacity}
            cfg.update(config or {})  # e.g. "power": PowerConfig's keywords, "segment_bytes"
            cfg_path.write_text(json.dumps(cfg))
        dev, sec = cfg.get("device_id"), cfg.get("secret")
        if not isinstance(dev, str) or not isinstance(sec, str):
            raise RigError(f"{cfg_path}: device_id and secret must be hex strings, got {dev!r}, {sec!r}")
        self.device_id = dev
        self.secret = bytes.fromhex(sec)
        self.mac = mac or ":".join(self.device_id[i:i + 2] for i in range(4, 16, 2)).upper()
        self.uart = uart
        self.air = Path(air)
        self.clock = clock
        self.heap = heap
        # The firmware frozen into the 32-bit interpreter (hil.mpy.MPY32), as a board image
        # built with firmware/manifest.py holds it; else .mpy files on the "filesystem".
        self.frozen = frozen
        if frozen:
            why = mpy.frozen_unavailable()
            if why:
                raise RigError(why)
        self._echo = echo
        self.process: LineProcess | None = None
        self._lines: list[str] = []  # output of earlier boots

    @property
    def label(self) -> str:
        """The text on the dongle's label / QR code."""
        return f"obdsync:{self.device_id}:{self.secret.hex()}"

    def start(self) -> SimDongle:
        if self.alive:
            return self
        tree = frozen_tree() if self.frozen else sim_tree()
        env = mpy.env(simulated_ble=False, extra=[shim.module_dir(), tree], sources=not self.frozen,
                      OBDSYNC_FLASH=str(self.flash), OBDSYNC_UART=self.uart,
                      OBDSYNC_SIM_AIR=str(self.air), OBDSYNC_SIM_MAC=self.mac)
        if self.clock is not None:
            env["OBDSYNC_SIM_CLOCK"] = self.clock.encode()
        else:
            env.pop("OBDSYNC_SIM_CLOCK", None)
        if self.process is not None:
            self._lines += self.process.lines
        cmd = mpy.argv(tree / "main.py", heapsize=heapsize(tree, self.heap, self.frozen),
                       exe=str(mpy.MPY32) if self.frozen else None)
        self.process = LineProcess(cmd, env=env,
                                   on_line=self._echo, error=RigError, name=f"dongle {self.mac}")
        return self

    @property
    def proc(self) -> subprocess.Popen[str] | None:
        return None if self.process is None else self.process.proc

    @property
    def lines(self) -> list[str]:
        """Every line the firmware printed, across reboots."""
        return self._lines + (self.process.lines if self.process is not None else [])

    def wait_for(self, prefix: str, timeout: float = 30.0) -> str:
        """The next output line starting with prefix; RigError when the firmware
        exits or the deadline passes (its output is in the message)."""
        if self.process is None:
            raise RigError("the dongle was never started")
        return self.process.wait_line(prefix, timeout)

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def kill(self) -> None:
        """A power cut: SIGKILL, nothing flushed."""
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        """A clean stop (SIGINT: the firmware seals and flushes its log), SIGKILL if
        it does not exit in time."""
        if self.process is not None:
            self.process.stop(signal.SIGINT)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive


class Rig:
    """Vehicle, link model and dongles for one scenario."""

    def __init__(self, scenario: Scenario | str, workdir: str | os.PathLike[str], *, baud: int | None = None,
                 latency_s: float | None = None, faults: FaultPlan | None = None, pairing: bool = True,
                 dongles: int = 1, log_capacity: int = 1 << 20, echo: Callable[[str], None] | None = None,
                 epoch: float | None = None, dongle_config: Mapping[str, object] | None = None, frozen: bool = False,
                 adapter: Profile | str | None = None) -> None:
        """baud and latency_s default to the adapter profile's (hil.adapter), else 38400 Bd
        and 30 ms; the profile is applied by the emulator (vehicle) and the link model."""
        self.scenario = load(scenario) if isinstance(scenario, str) else scenario
        self.workdir = Path(workdir)
        self.air = self.workdir / "air"
        self.air.mkdir(parents=True, exist_ok=True)
        self.schedule = self.scenario.schedule(epoch)
        self._baud = baud
        self._latency = latency_s
        self._faults = faults
        self._pairing = pairing
        self._n = dongles
        self._log_capacity = log_capacity
        self._echo = echo
        self._dongle_config = dongle_config
        self._frozen = frozen
        self.adapter = load_profile(adapter) if isinstance(adapter, str) else adapter
        self.emulators: list[Emulator] = []
        self.links: list[LinkModel] = []
        self.dongles: list[SimDongle] = []

    @property
    def dongle(self) -> SimDongle:
        return self.dongles[0]

    @property
    def link(self) -> LinkModel:
        return self.links[0]

    @property
    def emulator(self) -> Emulator:
        return self.emulators[0]

    def start(self) -> Rig:
        try:
            for i in range(self._n):
                emu = Emulator(self.scenario, clock=self.schedule, adapter=self.adapter).start()
                self.emulators.append(emu)
                link = LinkModel(emu.pty, baud=self._baud, latency_s=self._latency, plan=self._faults,
                                 adapter=self.adapter).start()
                self.links.append(link)
                d = SimDongle(self.workdir / f"flash{i}", link.pty, self.air, clock=self.schedule,
                              pairing=self._pairing, log_capacity=self._log_capacity, echo=self._echo,
                              config=self._dongle_config, frozen=self._frozen)
                self.dongles.append(d.start())
            for d in self.dongles:
                d.wait_for("ready")
        except BaseException:
            self.close()
            raise
        return self

    def sim_s(self) -> float:
        return self.schedule.sim_s()

    def close(self) -> None:
        for d in self.dongles:
            d.stop()
        for link in self.links:
            link.close()
        for emu in self.emulators:
            emu.close()

    def __enter__(self) -> Rig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
