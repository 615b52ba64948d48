"""The baseline client: python-OBD 0.7.3 polling PIDs on a pty, in windows.

    python -m hil.bench.pyobd_client PTY MODE WARM_MS WINDOWS WINDOW_MS PID,PID,...

MODE `sync`: `obd.OBD(portstr, baudrate=38400, fast=True)` and `query()` over the PIDs in
a loop. MODE `async`: `obd.Async(..., delay_cmds=0)` watching them. A process of its own,
as the firmware is, so neither client shares the relay's interpreter. Prints the same
window lines as hil/bench/mpy/fw_poll.py: `connected N_SUPPORTED`, `win_start I`,
`win I values queries ms`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Protocol


class _Response(Protocol):
    """What we read of python-OBD's obd.OBDResponse (the package has no type information)."""
    def is_null(self) -> bool: ...


def main(argv: list[str]) -> int:
    pty, mode, warm_ms, windows, window_ms, pids = argv
    warm, nwin, win = int(warm_ms) / 1000, int(windows), int(window_ms) / 1000
    logging.getLogger("obd").setLevel(logging.CRITICAL)
    import obd

    obd.logger.setLevel(logging.CRITICAL)
    cmds = [obd.commands[1][int(p, 16)] for p in pids.split(",")]
    count = {"values": 0, "queries": 0}
    lock = threading.Lock()
    if mode == "sync":
        conn = obd.OBD(portstr=pty, baudrate=38400, fast=True)
    elif mode == "async":
        conn = obd.Async(portstr=pty, baudrate=38400, fast=True, delay_cmds=0)
    else:
        print(f"unknown mode {mode!r}", flush=True)
        return 2
    if not conn.is_connected():
        print("not connected:", conn.status(), flush=True)
        return 1
    print("connected", sum(1 for c in cmds if conn.supports(c)), flush=True)

    if mode == "async":
        def seen(r: _Response) -> None:
            with lock:
                count["queries"] += 1
                if not r.is_null():
                    count["values"] += 1

        for c in cmds:
            conn.watch(c, callback=seen)
        conn.start()
        time.sleep(warm)
        for w in range(nwin):
            with lock:
                v0, q0 = count["values"], count["queries"]
            t0 = time.monotonic()
            print("win_start", w, flush=True)
            time.sleep(win)
            with lock:
                v, q = count["values"] - v0, count["queries"] - q0
            print("win", w, v, q, round((time.monotonic() - t0) * 1000), flush=True)
        conn.stop()
    else:
        def poll_until(deadline: float) -> None:
            while time.monotonic() < deadline:
                for c in cmds:
                    r: _Response = conn.query(c)
                    count["queries"] += 1
                    if not r.is_null():
                        count["values"] += 1
                    if time.monotonic() >= deadline:
                        return

        poll_until(time.monotonic() + warm)
        for w in range(nwin):
            v0, q0 = count["values"], count["queries"]
            t0 = time.monotonic()
            print("win_start", w, flush=True)
            poll_until(t0 + win)
            print("win", w, count["values"] - v0, count["queries"] - q0,
                  round((time.monotonic() - t0) * 1000), flush=True)
    conn.close()
    print("end", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
