"""The ELM327 on a pseudo-terminal, with our vehicle behind it.

Runs the PyPI ELM327-emulator 4.0.0 (`elm`) with a scenario table of our own: the
emulator's AT command set (echo, headers, spaces, linefeeds, ATZ, ATSP …) and its
output formatting, and one catch-all entry that hands every OBD request to
`hil.vehicle.Vehicle.respond` at the current sim time (`hil.simclock.Schedule`). The
stock `default`/`car` OBD entries are not used (as ELM327-emulator ships them, the car's mode 03 lacks
the count byte, its A6 answers 0x61).

Replies go through the emulator's `<answer>` tag (its ISO-TP framer `uds_answer`),
not `obd_message.iso_tp_frames`: with headers off (ATH0) the `<header>/<size>/<data>`
frames that `iso_tp_frames` builds print the first frame as `14 49 02 …` instead of the
ELM327's `014` / `0: 49 02 …` (checked here), while `<answer>` gets both ATH0 and ATH1
right, and honours ATSH/ATCAF. Multi-PID mode 01 requests (2–6 PIDs, with or without
the response-count digit) are one ISO-TP message, as from a real CAN ECU. The first OBD
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
import os
import signal
import sys
import tempfile
import threading
import zlib
from pathlib import Path

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


def _log_config(text: str) -> str:
    path = Path(tempfile.gettempdir()) / f"obdsync-elm-log-{zlib.crc32(text.encode()):08x}.yaml"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return str(path)


def _xml_hex(data: bytes) -> str:
    return " ".join(f"{b:02X}" for b in data)


class Emulator:
    """ELM327-emulator serving `vehicle` on a pty; a context manager.

    `scenario` is a Scenario or a scenario name; `clock` maps real to sim time
    (default: the scenario's schedule starting now); `vehicle` overrides the one the
    scenario would make."""

    def __init__(self, scenario: Scenario | str, clock: Schedule | None = None, vehicle: Vehicle | None = None,
                 _log_cfg: str = _LOG_CFG_INPROCESS):
        self.scenario = load(scenario) if isinstance(scenario, str) else scenario
        self.clock = clock or self.scenario.schedule()
        self.vehicle = vehicle or self.scenario.make_vehicle()
        self._log_cfg = _log_cfg
        self._elm = None
        self.pty: str | None = None
        self.requests = 0

    # -- the scenario table ------------------------------------------------------------------

    def sim_s(self) -> float:
        return self.clock.sim_s()

    def _obd(self, emu, cmd: str, pid, uc_val) -> str:
        """ResponseFooter of the catch-all entry: one OBD request → emulator XML."""
        self.requests += 1
        t = self.sim_s()
        reply = self.vehicle.respond(cmd, t)
        out = ""
        proto = emu.counters.get("cmd_proto")
        if "cmd_obdsync_searched" not in emu.counters:
            # forgotten on ATZ/ATD like every cmd_ counter: the ELM searches again
            emu.counters["cmd_obdsync_searched"] = True
            if proto in (None, "0", "00") and "cmd_try_proto" not in emu.counters:
                out = "<string>SEARCHING...</string><writeln></writeln>"
        if isinstance(reply, str):
            return out + "<writeln>" + reply + "</writeln>"
        return out + "".join("<answer>" + _xml_hex(m) + "</answer>" for m in reply)

    def _atrv(self, emu, cmd: str, pid, uc_val) -> str:
        return f"<writeln>{self.vehicle.battery_volts(self.sim_s()):.1f}V</writeln>"

    def _table(self, stock: dict) -> dict:
        ours = {
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
        return {"default": {}, "AT": stock["AT"], _SCENARIO_KEY: ours}

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> Emulator:
        if self._elm is not None:
            return self
        os.environ["ELM_LOG_CFG"] = _log_config(self._log_cfg)
        from elm.elm import Elm  # imported late: it reads ELM_LOG_CFG when it runs

        elm = Elm(batch_mode=True)
        elm.ObdMessage = self._table(elm.ObdMessage)
        elm.set_sorted_obd_msg(_SCENARIO_KEY)
        # Its multi-PID path probes each PID through our entry, finds no <data> tags
        # (we answer with <answer>) and falls back to our entry anyway: skip the probes,
        # which would ask the vehicle n extra times and eat the one SEARCHING... line.
        elm.multi_pid_answer = lambda cmd, header: None
        self.pty = elm.get_pty()
        if not self.pty:
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

    def __exit__(self, *exc) -> None:
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
