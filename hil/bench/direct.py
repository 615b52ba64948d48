"""Figure: direct mode's PIDs/s (the firmware's driver and scheduler on CPython, the daemon as
the logger) over a pty at 38400 Bd and over a simulated BLE adapter, against python-OBD 0.7.3 on
the same kind of pty in the same run.

Each client runs in a process of its own against a fresh emulator behind the link model
(38400 Bd, 30 ms ECU latency, scenario long_drive), polling the pids figure's PID set, every PID
equally often (like python-OBD's loop). The link's limit for what a client sent in a window is
the pids figure's: bytes both ways × 10 bits / baud + 30 ms per OBD request. Over BLE, data
moves only at connection events (hil.adapter_links.BleAdapter: every 30 ms, 4 packets each way): an
ELM327 takes one request at a time, so a request can only be written after the previous reply's
last fragment arrived at an event, i.e. at the next event, one full interval later; its own
reply then ends somewhere between two events and waits half an interval on average for the next
one. So the BLE link's limit is the line's + 1.5 intervals per request (more when a reply needs
more than 4 fragments, which 6 PIDs at MTU 23 do not). No sequential client can beat it.
Goals (issue 20): ≥ 4× python-OBD over the pty, ≥ 90 % of the limit over BLE.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TypedDict

from hil.bench.common import Context, Row, fmt, median
from hil.bench.pids import PIDS, WARP, ClientResult, _client, run_pyobd

GOAL_RATIO = 4.0
GOAL_BLE_EFFICIENCY = 0.90
BLE_INTERVAL_MS = 30.0  # BlueZ's default minimum; phones use 15-30 ms


class DirectResult(TypedDict):
    pids: list[str]
    ble_interval_ms: float
    ble_mtu: int
    direct_pty: ClientResult
    direct_ble: ClientResult
    pyobd_sync: ClientResult
    ratio_pty_vs_pyobd: float
    ble_efficiency: float


def run_direct(ctx: Context, mode: str) -> ClientResult:
    windows, window_ms = ctx.pick((3, 2000), (5, 6000))
    pids = ",".join(f"{p:02X}" for p in PIDS)
    argv = [sys.executable, "-m", "hil.bench.direct_client", "{PTY}", mode, str(WARP), "1500", str(windows),
            str(window_ms), pids, str(BLE_INTERVAL_MS)]
    res = _client(ctx, f"direct mode ({mode})", argv, None, timeout=90 + windows * window_ms / 1000)
    if mode == "ble":
        limits = []
        for w in res["windows"]:
            limit = w["limit_s"] + w["obd_requests"] * 1.5 * BLE_INTERVAL_MS / 1000
            w["ble_limit_s"], w["ble_efficiency"] = limit, limit / (w["ms"] / 1000)
            limits.append((w["values"], limit, w["ble_efficiency"]))
        res["ble_efficiency"] = median(eff for _v, _limit, eff in limits)
        res["ble_limit_pids_per_s"] = median(v / limit for v, limit, _eff in limits)
    return res


def run(ctx: Context) -> DirectResult:
    ctx.log("direct: direct mode over a pty and over simulated BLE, python-OBD on a pty …")
    if ctx.quick:
        with ThreadPoolExecutor(3) as ex:
            jobs = [ex.submit(run_direct, ctx, "pty"), ex.submit(run_direct, ctx, "ble"),
                    ex.submit(run_pyobd, ctx, "sync")]
            pty, ble, sync = (j.result() for j in jobs)
    else:
        pty = run_direct(ctx, "pty")
        ble = run_direct(ctx, "ble")
        sync = run_pyobd(ctx, "sync")
    return {"pids": [f"0x{p:02X}" for p in PIDS], "ble_interval_ms": BLE_INTERVAL_MS, "ble_mtu": 23,
            "direct_pty": pty, "direct_ble": ble, "pyobd_sync": sync,
            "ratio_pty_vs_pyobd": pty["pids_per_s"] / sync["pids_per_s"],
            "ble_efficiency": ble["ble_efficiency"]}


def rows(r: DirectResult) -> list[Row]:
    pty, ble, s = r["direct_pty"], r["direct_ble"], r["pyobd_sync"]
    ratio = r["ratio_pty_vs_pyobd"]
    return [
        Row("Direct mode PIDs/s over a pty (38400 Bd, 30 ms)", f"{fmt(pty['pids_per_s'])} PIDs/s "
            f"({fmt(pty['pids_per_request'])}/request)", f"python-OBD {fmt(s['pids_per_s'])} (OBD, same pty setup)",
            f"{fmt(ratio, 2)}×", f"≥ {GOAL_RATIO:g}×", ratio >= GOAL_RATIO),
        Row(f"Direct mode PIDs/s over BLE (MTU 23, {BLE_INTERVAL_MS:g} ms interval)",
            f"{fmt(ble['pids_per_s'])} PIDs/s ({fmt(ble['pids_per_request'])}/request)",
            f"link model's limit {fmt(ble['ble_limit_pids_per_s'])} PIDs/s",
            f"{fmt(100 * r['ble_efficiency'])} % of it", "≥ 90 %", r["ble_efficiency"] >= GOAL_BLE_EFFICIENCY),
    ]
