"""The ELM327 on a pseudo-terminal, with our vehicle behind it.

Runs the PyPI ELM327-emulator 4.0.0 (`elm`) with a scenario table of our own: the
emulator's AT command set (echo, headers, spaces, linefeeds, ATZ, ATSP …) and its
output formatting, and one catch-all entry that hands every OBD request to
`hil.vehicle.Vehicle.respond` at the current sim time (`hil.simclock.Schedule`). The
stock `default`/`car` OBD entries are not used (as ELM327-emulator ships them, the car's mode 03 lacks
the count byte, its A6 answers 0x61).

Replies are printed by `hil.adapter.reply_lines` for the adapter profile's bus, as the
lines of `<writeln>` tags: the emulator's own framers know CAN 11-bit only (`uds_answer`;
`obd_message.iso_tp_frames` prints a first frame as `14 49 02 …` instead of the ELM327's
`014` / `0: 49 02 …` with headers off), while a profile may be CAN 29-bit, ISO 9141, KWP
or J1850, with headers on (ATH1, or a clone that ignores ATH0) or off, spaces on or off.
Multi-PID mode 01 requests (2–6 PIDs, with or without the response-count digit) are one
ISO-TP message, as from a real CAN ECU; ECUs beside the engine answer after it. The first OBD
request after a reset with automatic protocol prints `SEARCHING...` first; ATRV reads the
vehicle's battery.

In-process:

    with Emulator("demo") as emu:          # or Emulator(scenario, clock=schedule)
        emu.pty                            # open this like a serial port
        emu.vehicle.truth(emu.sim_s())

As a process (the scenario runner): `python -m hil.emulator SCENARIO [--clock SPEC]`
prints the pty path as its first stdout line and `OBDSYNC_SIM_CLOCK=<spec>` as its
second; the clock comes from `--clock`, else from `$OBDSYNC_SIM_CLOCK`, else starts now.
It stops on SIGINT/SIGTERM and when its parent dies (it polls getppid), and never
writes elm.log (a WARNING logging config is installed through ELM_LOG_CFG).
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypedDict

from hil.adapter import Profile, load_profile, reply_lines
from hil.scenario import Scenario, load
from hil.simclock import ENV as CLOCK_ENV
from hil.simclock import Schedule
from hil.vehicle import Vehicle

_LOG_CFG_INPROCESS = """version: 1
incremental: true
root:
  level: WARNING
"""
# A full config for the subprocess: warnings to stderr, nothing to elm.log.
_LOG_CFG_PROCESS = """version: 1
disable_existing_loggers: false
handlers:
  stderr:
    class: logging.StreamHandler
    level: WARNING
    stream: ext://sys.stderr
root:
  level: WARNING
  handlers: [stderr]
"""
_SCENARIO_KEY = "obdsync"


class _Entry(TypedDict, total=False):
    """One entry of an ELM327-emulator scenario table (elm/obd_message.py's shape)."""
    Request: str
    Descr: str
    Response: str
    ResponseFooter: Callable[[_Elm, str, str, dict[str, object]], str]  # (emulator, request, entry name, entry)
    Priority: int


# scenario name -> entry name -> entry (elm.Elm.ObdMessage)
_Table = dict[str, dict[str, _Entry]]


class _ElmThreadStates(Protocol):
    TERMINATED: int


class _Elm(Protocol):
    """What we use of ELM327-emulator's `elm.elm.Elm` (the package has no type information)."""
    ObdMessage: _Table
    counters: dict[str, object]
    multi_pid_answer: Callable[[str, str], object]
    threadState: int
    THREAD: _ElmThreadStates
    thread: threading.Thread | None
    slave_fd: int

    def set_sorted_obd_msg(self, scenario: str) -> None: ...
    def get_pty(self) -> str | None: ...
    def __enter__(self) -> object: ...
    def terminate(self) -> None: ...


def _log_config(text: str) -> str:
    path = Path(tempfile.gettempdir()) / f"obdsync-elm-log-{zlib.crc32(text.encode()):08x}.yaml"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return str(path)


class Emulator:
    """ELM327-emulator serving `vehicle` on a pty; a context manager.

    `scenario` is a Scenario or a scenario name; `clock` maps real to sim time
    (default: the scenario's schedule starting now); `vehicle` overrides the one the
    scenario would make."""

    def __init__(self, scenario: Scenario | str, clock: Schedule | None = None, vehicle: Vehicle | None = None,
                 _log_cfg: str = _LOG_CFG_INPROCESS, adapter: Profile | str | None = None):
        self.scenario = load(scenario) if isinstance(scenario, str) else scenario
        self.clock = clock or self.scenario.schedule()
        # The adapter/ECU profile (hil.adapter): the bus, its ECUs, the clone's AT quirks. The
        # link model applies the rest of it (case, NULs, echo, buffer, latency).
        self.adapter = load_profile(adapter) if isinstance(adapter, str) else (adapter or Profile(name="default"))
        self.vehicle = vehicle or self.scenario.make_vehicle(self.adapter)
        self._log_cfg = _log_cfg
        self._elm: _Elm | None = None
        self._pty: str | None = None
        self.requests = 0
        # the last OBD requests served: (request, sim time, the ECUs' messages or the error
        # text) — what an oracle (python-OBD) decodes to check what a client read
        self.served: collections.deque[tuple[str, float, list[tuple[int, bytes]] | str]] = collections.deque(
            maxlen=512)

    @property
    def pty(self) -> str:
        """The pseudo-terminal to open like a serial port (once started)."""
        if self._pty is None:
            raise RuntimeError("the emulator is not started: it has no pty yet")
        return self._pty

    # -- the scenario table ------------------------------------------------------------------

    def sim_s(self) -> float:
        return self.clock.sim_s()

    def _obd(self, emu: _Elm, cmd: str, pid: str, uc_val: dict[str, object]) -> str:
        """ResponseFooter of the catch-all entry: one OBD request → emulator XML."""
        self.requests += 1
        t = self.sim_s()
        ad = self.adapter
        req = cmd.replace(" ", "").upper()
        if ad.multi_pid == "unknown" and req.startswith("01") and len(req) > 5:
            self.served.append((req, t, "?"))
            return "<writeln>?</writeln>"  # an adapter without multi-PID requests
        reply = self.vehicle.respond_all(cmd, t)  # through respond(): the seam tests watch
        self.served.append((req, t, reply))
        out = ""
        proto = emu.counters.get("cmd_proto")
        if "cmd_obdsync_searched" not in emu.counters:
            # forgotten on ATZ/ATD like every cmd_ counter: the ELM searches again
            emu.counters["cmd_obdsync_searched"] = True
            if proto in (None, "0", "00") and "cmd_try_proto" not in emu.counters:
                out = "<string>SEARCHING...</string><writeln></writeln>"
            if ad.protocol in ("ISO9141", "KWP_SLOW", "KWP_FAST"):
                out += "<writeln>BUS INIT: ...OK</writeln>"  # the K-line's 5-baud / fast init
        if isinstance(reply, str):
            return out + "<writeln>" + reply + "</writeln>"
        headers = ad.headers == "always" or bool(emu.counters.get("cmd_use_header"))
        spaces = emu.counters.get("cmd_spaces", 1) != 0
        return out + "".join(f"<writeln>{ln}</writeln>" for ln in reply_lines(ad, reply, headers, spaces))

    def _atrv(self, emu: _Elm, cmd: str, pid: str, uc_val: dict[str, object]) -> str:
        return f"<writeln>{self.vehicle.battery_volts(self.sim_s()):.1f}V</writeln>"

    def _table(self, stock: _Table) -> _Table:
        ours: dict[str, _Entry] = {
            "OBDSYNC_OBD": {
                # every hex request; AT/ST commands are not hex ('T' and 'S' are not)
                "Request": r"^[0-9A-F]+$",
                "Descr": "obdsync vehicle",
                "ResponseFooter": self._obd,
                "Priority": 1,
            },
            "AT_R_VOLT": {
                "Request": r"^ATRV$",
                "Descr": "AT read volt (vehicle battery)",
                "ResponseFooter": self._atrv,
            },
        }
        # The stock 'default' table would answer OBD requests the vehicle does not
        # model (two ECUs for RPM, fixed bitmaps): replace it with nothing.
        ad = self.adapter
        # ATDPN: the profile's protocol, found by the automatic search (`A` + digit)
        ours["OBDSYNC_DPN"] = {"Request": r"^ATDPN$", "Descr": "protocol number", "Priority": 1,
                               "Response": f"<writeln>A{ad.dpn:X}</writeln>"}
        for i, c in enumerate(ad.at_ok):
            # a clone that claims every AT command: OK, and nothing done
            ours[f"OBDSYNC_AT_OK_{i}"] = {"Request": "^" + c.upper() + "$", "Descr": "clone OK", "Priority": 1,
                                          "Response": "<writeln>OK</writeln>"}
        return {"default": {}, "AT": stock["AT"], _SCENARIO_KEY: ours}

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> Emulator:
        if self._elm is not None:
            return self
        os.environ["ELM_LOG_CFG"] = _log_config(self._log_cfg)
        from elm.elm import Elm  # imported late: it reads ELM_LOG_CFG when it runs

        elm: _Elm = Elm(batch_mode=True)
        elm.ObdMessage = self._table(elm.ObdMessage)
        elm.set_sorted_obd_msg(_SCENARIO_KEY)
        # Its multi-PID path probes each PID through our entry, finds no <data> tags
        # (we answer with <answer>) and falls back to our entry anyway: skip the probes,
        # which would ask the vehicle n extra times and eat the one SEARCHING... line.
        elm.multi_pid_answer = lambda cmd, header: None
        self._pty = elm.get_pty()
        if not self._pty:
            raise RuntimeError("ELM327-emulator could not open a pseudo-terminal")
        self._elm = elm
        elm.__enter__()
        return self

    def close(self) -> None:
        elm, self._elm = self._elm, None
        if elm is None:
            return
        # The emulator's thread blocks in os.read on the pty master: mark it stopped,
        # then give it a byte so it notices and returns instead of leaking.
        elm.threadState = elm.THREAD.TERMINATED
        try:
            os.write(elm.slave_fd, b"\r")
        except OSError:
            pass
        thread = elm.thread
        if thread is not None:
            thread.join(2.0)
        elm.thread = None  # already stopped: terminate() need not wait on it
        elm.terminate()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _watch_parent(stop: threading.Event, ppid: int) -> None:
    # An orphaned batch emulator never exits on its own (SIGINT is what stops it): poll the parent.
    while not stop.wait(0.5):
        if os.getppid() != ppid:
            stop.set()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hil.emulator", description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", help="scenario name (hil/scenarios/NAME.toml) or path to a .toml")
    ap.add_argument("--clock", help=f"sim clock spec (default: ${CLOCK_ENV}, else start now)")
    args = ap.parse_args(argv)
    try:
        scn = load(args.scenario)
        spec = args.clock or os.environ.get(CLOCK_ENV)
        clock = Schedule.decode(spec) if spec else scn.schedule()
    except ValueError as e:
        print(f"hil.emulator: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=_watch_parent, args=(stop, os.getppid()), daemon=True).start()
    emu = Emulator(scn, clock=clock, _log_cfg=_LOG_CFG_PROCESS)
    with emu:
        print(emu.pty, flush=True)
        print(f"{CLOCK_ENV}={clock.encode()}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
