"""A test rig: the vehicle on the ELM327 emulator, the link model, and the real
firmware on the MicroPython unix port with the simulated radio.

    with Rig("city", workdir) as rig:       # emulator + link model + one dongle
        rig.dongle.label                     # what `obdsync pair` takes
        rig.dongle.wait_for("ready")
        ... a daemon with backend=SimClient, air=rig.air ...

Every process and thread it starts, it stops — also when the test fails (use it
as a context manager). The dongle is a subprocess so that tests can SIGKILL it
("power cut") and start it again on the same flash directory.

Deep sleep is what it is on the board, a reset: the firmware's machine.deepsleep
(hil/mpy/simsleep.py) ends the process, and the SimDongle plays the sleeping chip's
RTC: it starts main.py again when the sleep timer has run on the sim clock, or when
the supply-rise comparator would switch (the emulated car's supply above
SUPPLY_WAKE_V, on a dongle whose config.json names a "supply_pin"), with the wake
reason and the RTC memory carried over. `boots` records every boot (duty cycle).
That is with deep_sleep=True; by default a rig's dongle has no sleep hardware and
stays awake through a park (battery_low is logged, the supply watched): the scenario
runs judge the daemon's rules on what a dongle awake through the night sees (a theft
at 2 am, a five-minute run on a failing alternator), and the sleeping dongle is
tested and measured where a test or the bench asks for it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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

SLEEP_EXIT = 75  # the firmware went to deep sleep (hil/mpy/simsleep.py)
TIMER_WAKE = 4  # machine.wake_reason() values of the ESP32 port
EXT0_WAKE = 2
# The supply-rise comparator's threshold (hil/README.md "The board"): above any resting
# battery (<= 12.8 V), below any charging alternator (>= 13.5 V).
SUPPLY_WAKE_V = 13.2


class RigError(RuntimeError):
    pass


@dataclass
class Boot:
    """One run of the firmware, from power-on or a wake to deep sleep (or the end)."""

    reason: str  # "cold", "timer", "supply"
    wall0: float  # time.monotonic() at the start
    sim0: float  # sim seconds at the start (wall seconds without a sim clock)
    wall1: float | None = None
    sim1: float | None = None
    slept: bool = False  # it ended in deep sleep

    @property
    def awake_s(self) -> float:
        """Real seconds the process ran: the chip's awake time does not warp with the car's clock."""
        return (self.wall1 if self.wall1 is not None else time.monotonic()) - self.wall0


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
                 frozen: bool = False, supply: Callable[[float], float] | None = None,
                 supply_wake_v: float = SUPPLY_WAKE_V, deep_sleep: bool = False) -> None:
        """supply: the car's supply voltage at a sim second (the emulator's), for the
        supply-rise wake."""
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
            cfg.update(config or {})  # e.g. "power": PowerConfig's keywords, "supply_pin"
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
        self.rtc = self.flash.with_name(self.flash.name + ".rtc")  # RTC memory across deep sleep
        self._supply = supply
        self._supply_wake_v = supply_wake_v
        self.deep_sleep = deep_sleep
        self.boots: list[Boot] = []
        self._spawned = threading.Condition()
        self._off = threading.Event()  # set: no more wakes (stopped, or the power cut)
        self._board: threading.Thread | None = None

    @property
    def label(self) -> str:
        """The text on the dongle's label / QR code."""
        return f"obdsync:{self.device_id}:{self.secret.hex()}"

    def start(self) -> SimDongle:
        """Power on: a cold boot (RTC memory is lost without power)."""
        if self.alive:
            return self
        self._halt_board()
        self.rtc.unlink(missing_ok=True)
        self._off = threading.Event()
        self._spawn("cold")
        return self

    def _sim_now(self) -> float:
        return self.clock.sim_s() if self.clock is not None else time.monotonic()

    def _spawn(self, reason: str) -> None:
        tree = frozen_tree() if self.frozen else sim_tree()
        env = mpy.env(simulated_ble=False, extra=[shim.module_dir(), tree], sources=not self.frozen,
                      OBDSYNC_FLASH=str(self.flash), OBDSYNC_UART=self.uart,
                      OBDSYNC_SIM_AIR=str(self.air), OBDSYNC_SIM_MAC=self.mac)
        if self.deep_sleep:
            env["OBDSYNC_SIM_RTC"] = str(self.rtc)
        else:
            env.pop("OBDSYNC_SIM_RTC", None)
        if self.clock is not None:
            env["OBDSYNC_SIM_CLOCK"] = self.clock.encode()
        else:
            env.pop("OBDSYNC_SIM_CLOCK", None)
        if self.process is not None:
            self._lines += self.process.lines
        cmd = mpy.argv(tree / "main.py", heapsize=heapsize(tree, self.heap, self.frozen),
                       exe=str(mpy.MPY32) if self.frozen else None)
        boot = Boot(reason, time.monotonic(), self._sim_now())
        with self._spawned:
            self.process = LineProcess(cmd, env=env, on_line=self._echo, error=RigError, name=f"dongle {self.mac}")
            self.boots.append(boot)
            self._spawned.notify_all()
        self._board = threading.Thread(target=self._run_board, args=(self.process, boot, self._off),
                                       name=f"board {self.mac}", daemon=True)
        self._board.start()

    def _run_board(self, process: LineProcess, boot: Boot, off: threading.Event) -> None:
        """The chip around one boot: after a deep sleep, its RTC's wakes."""
        rc = process.proc.wait()
        boot.wall1, boot.sim1 = time.monotonic(), self._sim_now()
        if rc != SLEEP_EXIT or off.is_set():
            return
        boot.slept = True
        armed = json.loads(self.rtc.read_text())
        wake_at = boot.sim1 + armed["sleep_ms"] / 1000 if armed["sleep_ms"] else None
        ext0 = armed.get("ext0")
        def pin_wakes(t: float) -> bool:
            return bool(ext0) and self._supply is not None and (self._supply(t) >= self._supply_wake_v) == bool(ext0[1])

        while not off.wait(0.02):  # the RTC's timer and the comparator, looked at every 20 ms
            now = self._sim_now()
            timer = wake_at is not None and now >= wake_at
            # Both due at one look (a loaded machine can starve this thread): the pin wins if
            # it was already up when the timer ran out, as the chip would have woken then.
            if pin_wakes(min(now, wake_at) if timer and wake_at is not None else now):
                reason, woke = "supply", EXT0_WAKE
            elif timer:
                reason, woke = "timer", TIMER_WAKE
            else:
                continue
            with self._spawned:  # a stop or a power cut now wins over the wake
                if off.is_set():
                    return
                self.rtc.write_text(json.dumps({"woke": woke, "memory": armed["memory"]}))
                process.stop()  # its output reader
                self._spawn(reason)
            return

    def _halt_board(self) -> None:
        """No more wakes; waits for the board's thread (its process has ended or is ending)."""
        self._off.set()
        if self._board is not None and self._board is not threading.current_thread():
            self._board.join(10)

    @property
    def asleep(self) -> bool:
        """In deep sleep: the process ended for it and no wake has come yet."""
        p = self.process
        return p is not None and p.proc.poll() == SLEEP_EXIT and not self._off.is_set()

    @property
    def proc(self) -> subprocess.Popen[str] | None:
        return None if self.process is None else self.process.proc

    @property
    def lines(self) -> list[str]:
        """Every line the firmware printed, across reboots."""
        return self._lines + (self.process.lines if self.process is not None else [])

    def wait_for(self, prefix: str | Callable[[str], bool], timeout: float = 30.0) -> str:
        """The next output line starting with prefix (or matching, see LineProcess.wait_line),
        across deep sleeps and wakes; RigError when the firmware exits otherwise or the
        deadline passes (its output is in the message)."""
        if self.process is None:
            raise RigError("the dongle was never started")
        deadline = time.monotonic() + timeout
        while True:
            p = self.process
            try:
                line: str = p.wait_line(prefix, max(deadline - time.monotonic(), 0.001))
                return line
            except RigError:
                if p.proc.poll() != SLEEP_EXIT or time.monotonic() >= deadline:
                    raise
            # Asleep: the line may come from a later boot, once the board wakes.
            def woke(p: LineProcess = p) -> bool:
                return self.process is not p or self._off.is_set()

            with self._spawned:
                if not self._spawned.wait_for(woke, max(deadline - time.monotonic(), 0.001)):
                    raise RigError(f"dongle {self.mac} slept through {timeout:g} s without {prefix!r}; "
                                   f"output:\n{self.output()}")
                if self.process is p:
                    raise RigError(f"dongle {self.mac} was stopped asleep, before {prefix!r}")

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def kill(self) -> None:
        """A power cut: SIGKILL, nothing flushed (and no wake from a deep sleep)."""
        with self._spawned:
            self._off.set()  # no wake starts another process after this
        if self.process is not None:
            self.process.kill()
        self._halt_board()

    def stop(self) -> None:
        """A clean stop (SIGINT: the firmware seals and flushes its log), SIGKILL if
        it does not exit in time."""
        with self._spawned:
            self._off.set()
        if self.process is not None:
            self.process.stop(signal.SIGINT)
        self._halt_board()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive


class Rig:
    """Vehicle, link model and dongles for one scenario."""

    def __init__(self, scenario: Scenario | str, workdir: str | os.PathLike[str], *, baud: int | None = None,
                 latency_s: float | None = None, faults: FaultPlan | None = None, pairing: bool = True,
                 dongles: int = 1, log_capacity: int = 1 << 20, echo: Callable[[str], None] | None = None,
                 epoch: float | None = None, dongle_config: Mapping[str, object] | None = None, frozen: bool = False,
                 adapter: Profile | str | None = None, deep_sleep: bool = False) -> None:
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
        self._deep_sleep = deep_sleep
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
                              config=self._dongle_config, frozen=self._frozen,
                              supply=self._supply_of(emu), deep_sleep=self._deep_sleep)
                self.dongles.append(d.start())
            for d in self.dongles:
                d.wait_for("ready")
        except BaseException:
            self.close()
            raise
        return self

    def sim_s(self) -> float:
        return self.schedule.sim_s()

    @staticmethod
    def _supply_of(emu: Emulator) -> Callable[[float], float]:
        return emu.vehicle.battery_volts

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
