"""Figures 1 and 2: PIDs/s from the car, and UART bytes per PID value, both ways.

Three clients, each in a process of its own, each against a fresh emulator (scenario
long_drive: the engine runs) behind the link model at 38400 baud and 30 ms ECU latency:
- the firmware: dongle.elm327 + dongle.scheduler + RecordWriter + FlashLog on the unix
  port (hil/bench/mpy/fw_poll.py), the default plan's mode 01 PIDs, its clock warped so
  the plan asks more than the bus carries. The headline run asks every PID equally often
  (as python-OBD's loop does: like for like); a second run keeps the default plan's own
  rates (5 Hz / 1 Hz / 0.1 Hz), where fewer PIDs are due at once and requests carry fewer;
- python-OBD 0.7.3 `obd.OBD(fast=True)` querying the same PIDs in a loop;
- python-OBD `obd.Async(delay_cmds=0)` watching them.
Every client runs several windows; link model counters are read the moment a window's
line arrives. The link's own limit for what the firmware sent in a window is
(bytes both ways x 10 bits / baud) + 30 ms per OBD request: the time the line needs,
with nothing else waiting. The heap figures of the firmware's run go to figure 3.

Then the same pair (firmware, python-OBD OBD) on adapter/ECU profiles (hil/adapters), each
pair in one run against emulators and links wearing the profile, its baud and latency: CAN
29-bit 500k (headers on, two ECUs) and ISO 9141-2 (one PID a request, 120 ms each), beside
the headline CAN 11-bit 500k above. Where multi-PID does not apply (K-line) both clients are
bound by the bus: the figure there is the share of the link's limit, and the ratio.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import NotRequired, TypedDict

from hil import mpy
from hil.adapter import Profile, load_profile
from hil.bench.common import (
    BAUD,
    LATENCY_S,
    SCENARIO,
    BenchError,
    Context,
    LineProc,
    Row,
    fmt,
    median,
    rss_cpu,
)
from hil.build_firmware import code_heap_kb, sim_tree
from hil.emulator import Emulator
from hil.linkmodel import BITS_PER_BYTE, LinkModel
from hil.rig import heapsize

# The default plan (dongle.plan.DEFAULT) without what python-OBD 0.7.3 cannot ask:
# 0xA6 (odometer, beyond its 0x00-0x5F table) and ATRV (not a PID). Same set both sides.
PIDS = (0x0D, 0x0C, 0x04, 0x11, 0x05, 0x0F, 0x10, 0x5E, 0x2F, 0x31, 0x01, 0x42)
WARP = 10
GOAL_RATIO = 4.5
GOAL_EFFICIENCY = 0.90
PROFILES = ("can29_500", "iso9141")  # CAN 11-bit 500k is the headline run (a genuine adapter, one ECU)

# Link model counters (LinkModel.stats()) and a client's CPU seconds, read as a window's
# lines arrive, keyed ("s" | "e", window): at its start and at its end.
Snapshots = dict[tuple[str, int], dict[str, int]]
CpuSnapshots = dict[tuple[str, int], float]


class Window(TypedDict):
    """One measurement window of a client: its own line and the link's counters over it."""
    values: int
    requests: int
    ms: int
    bytes_to_elm: int
    bytes_from_elm: int
    obd_requests: int
    at_commands: int
    alloc_bytes: NotRequired[int]  # the firmware's windows only (gc.mem_alloc rises)
    collections: NotRequired[int]
    peak_alloc: NotRequired[int]
    seal_alloc_bytes: NotRequired[int]
    records_sealed: NotRequired[int]
    cpu_s: NotRequired[float]
    pids_per_s: float
    bytes_to_per_value: float
    bytes_from_per_value: float
    limit_s: float
    limit_pids_per_s: float
    efficiency: float
    pids_per_request: float
    ble_limit_s: NotRequired[float]  # direct mode over BLE (hil.bench.direct)
    ble_efficiency: NotRequired[float]


class ClientErrors(TypedDict):
    timeouts: int
    errors: int
    garbage: int
    truncated: int
    given_up: int


class ClientResult(TypedDict):
    """A client's run: its windows and their medians."""
    windows: list[Window]
    wall_s: float
    output_tail: list[str]
    pids_per_s: float
    bytes_to_per_value: float
    bytes_from_per_value: float
    limit_pids_per_s: float
    efficiency: float
    pids_per_request: float
    errors: NotRequired[ClientErrors]  # from the firmware's `end` line
    heap_total: NotRequired[int]
    records: NotRequired[int]
    supported: NotRequired[int]
    heapsize: NotRequired[str]  # the firmware's runs (run_firmware)
    code_heap_kb: NotRequired[int]
    warp: NotRequired[int]
    plan: NotRequired[str]
    ble_efficiency: NotRequired[float]  # direct mode over BLE (hil.bench.direct)
    ble_limit_pids_per_s: NotRequired[float]


class ProfileResult(TypedDict):
    """Firmware and python-OBD side by side on one adapter profile, or why not."""
    profile: str
    error: NotRequired[str]
    protocol: NotRequired[str]
    baud: NotRequired[int]
    latency_s: NotRequired[float]
    multi_pid: NotRequired[bool]
    firmware: NotRequired[ClientResult]
    pyobd_sync: NotRequired[ClientResult]
    ratio_vs_pyobd_sync: NotRequired[float]
    efficiency: NotRequired[float]
    pyobd_efficiency: NotRequired[float]


class PidsResult(TypedDict):
    pids: list[str]
    concurrent_clients: bool
    baud: int
    latency_s: float
    scenario: str
    firmware: ClientResult
    firmware_default_plan: ClientResult
    pyobd_sync: ClientResult
    pyobd_async: ClientResult
    ratio_vs_pyobd_sync: float
    ratio_vs_pyobd_async: float
    ratio_vs_best_pyobd: float
    efficiency: float
    default_plan_ratio_vs_best_pyobd: float
    profiles: dict[str, ProfileResult]


def _windows(proc_lines: list[str], snaps: Snapshots, baud: int = BAUD, latency_s: float = LATENCY_S,
             cpu: CpuSnapshots | None = None) -> list[Window]:
    out: list[Window] = []
    for line in proc_lines:
        if not line.startswith("win "):
            continue
        f = line.split()
        i = int(f[1])
        if ("s", i) not in snaps or ("e", i) not in snaps:
            continue
        s0, s1 = snaps[("s", i)], snaps[("e", i)]
        d = {k: s1.get(k, 0) - s0.get(k, 0) for k in ("bytes_to_elm", "bytes_from_elm", "obd_requests", "at_commands")}
        values, ms = int(f[2]), int(f[4])
        v = max(1, values)
        line_s = (d["bytes_to_elm"] + d["bytes_from_elm"]) * BITS_PER_BYTE / baud + d["obd_requests"] * latency_s
        w: Window = {
            "values": values, "requests": int(f[3]), "ms": ms, "bytes_to_elm": d["bytes_to_elm"],
            "bytes_from_elm": d["bytes_from_elm"], "obd_requests": d["obd_requests"], "at_commands": d["at_commands"],
            "pids_per_s": values / (ms / 1000), "bytes_to_per_value": d["bytes_to_elm"] / v,
            "bytes_from_per_value": d["bytes_from_elm"] / v, "limit_s": line_s,
            "limit_pids_per_s": values / line_s if line_s else float("nan"), "efficiency": line_s / (ms / 1000),
            "pids_per_request": values / max(1, d["obd_requests"]),
        }
        if len(f) >= 8:
            w["alloc_bytes"], w["collections"], w["peak_alloc"] = int(f[5]), int(f[6]), int(f[7])
        if len(f) >= 10:
            w["seal_alloc_bytes"], w["records_sealed"] = int(f[8]), int(f[9])
        if cpu and ("s", i) in cpu and ("e", i) in cpu:  # the client's CPU seconds in the window
            w["cpu_s"] = cpu[("e", i)] - cpu[("s", i)]
        out.append(w)
    return out


def _client(ctx: Context, name: str, argv: list[str], env: Mapping[str, str] | None, timeout: float,
            profile: Profile | None = None) -> ClientResult:
    baud = profile.baud if profile else BAUD
    latency_s = profile.latency_s if profile else LATENCY_S
    with Emulator(SCENARIO, adapter=profile) as emu, LinkModel(emu.pty, baud=baud, latency_s=latency_s,
                                                               adapter=profile) as link:
        snaps: Snapshots = {}
        cpus: CpuSnapshots = {}
        pid: list[int] = []

        def cpu() -> float | None:
            try:
                return rss_cpu(pid[0])[1] if pid else None
            except OSError:
                return None

        def on_line(line: str) -> None:
            if line.startswith("win_start "):
                i = int(line.split()[1])
                snaps[("s", i)] = link.stats()
                if (c := cpu()) is not None:
                    cpus[("s", i)] = c
            elif line.startswith("win "):
                i = int(line.split()[1])
                snaps[("e", i)] = link.stats()
                if (c := cpu()) is not None:
                    cpus[("e", i)] = c

        argv = [a.replace("{PTY}", link.pty) for a in argv]
        t0 = time.monotonic()
        with LineProc(argv, env=env, cwd=ctx.workdir, on_line=on_line) as p:
            pid.append(p.proc.pid)
            p.expect("end", timeout)
            lines = list(p.lines)
        ws = _windows(lines, snaps, baud, latency_s, cpus)
        if not ws:
            raise BenchError(f"{name}: no complete window; output:\n" + "\n".join(lines[-30:]))
        res: ClientResult = {
            "windows": ws, "wall_s": time.monotonic() - t0,
            "output_tail": [ln for ln in lines if not ln.startswith("win")][-5:],
            "pids_per_s": median(w["pids_per_s"] for w in ws),
            "bytes_to_per_value": median(w["bytes_to_per_value"] for w in ws),
            "bytes_from_per_value": median(w["bytes_from_per_value"] for w in ws),
            "limit_pids_per_s": median(w["limit_pids_per_s"] for w in ws),
            "efficiency": median(w["efficiency"] for w in ws),
            "pids_per_request": median(w["pids_per_request"] for w in ws),
        }
        for line in lines:
            if line.startswith("end ") and len(line.split()) >= 8:
                f = line.split()
                timeouts, errors, garbage, truncated, given_up = map(int, f[1:6])
                res["errors"] = {"timeouts": timeouts, "errors": errors, "garbage": garbage, "truncated": truncated,
                                 "given_up": given_up}
                res["heap_total"] = int(f[6])
                res["records"] = int(f[7])
            if line.startswith("connected "):
                res["supported"] = int(line.split()[1])
        return res


def run_firmware(ctx: Context, plan: str = "flat", profile: Profile | None = None) -> ClientResult:
    tree = sim_tree()
    heap = heapsize(tree)
    # the quick run has both plans (and the profiles) at once
    flash = ctx.workdir / f"fw_flash_{plan}{'_' + profile.name if profile else ''}"
    flash.mkdir(parents=True, exist_ok=True)
    windows, window_ms = ctx.pick((3, 2000), (5, 6000))
    pids = ",".join(f"{p:02X}" for p in PIDS)
    argv = mpy.argv(mpy.ROOT / "hil" / "bench" / "mpy" / "fw_poll.py", "{PTY}", str(flash), str(WARP), "1500",
                    str(windows), str(window_ms), pids, plan, heapsize=heap)
    env = mpy.env(simulated_ble=False, extra=[tree])
    res = _client(ctx, f"firmware ({plan} plan{', ' + profile.name if profile else ''})", argv, env,
                  timeout=60 + windows * window_ms / 1000, profile=profile)
    res["heapsize"], res["code_heap_kb"], res["warp"], res["plan"] = heap, code_heap_kb(tree), WARP, plan
    return res


def run_pyobd(ctx: Context, mode: str, profile: Profile | None = None) -> ClientResult:
    windows, window_ms = ctx.pick((3, 1500), (5, 6000))
    pids = ",".join(f"{p:02X}" for p in PIDS)
    argv = [sys.executable, "-m", "hil.bench.pyobd_client", "{PTY}", mode, "1000", str(windows), str(window_ms), pids]
    return _client(ctx, f"python-OBD {mode}{' ' + profile.name if profile else ''}", argv, None,
                   timeout=90 + windows * window_ms / 1000, profile=profile)


def run_profile(ctx: Context, name: str) -> ProfileResult:
    """Firmware (flat plan) and python-OBD OBD side by side on one profile."""
    prof = load_profile(name)
    with ThreadPoolExecutor(2) as ex:
        fw_job = ex.submit(run_firmware, ctx, "flat", prof)
        py_job = ex.submit(run_pyobd, ctx, "sync", prof)
        fw, py = fw_job.result(), py_job.result()
    return {"profile": name, "protocol": prof.protocol, "baud": prof.baud, "latency_s": prof.latency_s,
            "multi_pid": prof.is_can, "firmware": fw, "pyobd_sync": py,
            "ratio_vs_pyobd_sync": fw["pids_per_s"] / py["pids_per_s"], "efficiency": fw["efficiency"],
            "pyobd_efficiency": py["efficiency"]}


def run(ctx: Context) -> PidsResult:
    if ctx.quick:
        # Quick: the three clients at once, each on its own emulator and link (they wait on
        # the line, not the CPU); the full run measures them one after the other.
        ctx.log("pids: firmware (two plans), python-OBD OBD and Async side by side (quick) …")
        with ThreadPoolExecutor(4) as ex:
            jobs = [ex.submit(run_firmware, ctx), ex.submit(run_firmware, ctx, "default"),
                    ex.submit(run_pyobd, ctx, "sync"), ex.submit(run_pyobd, ctx, "async")]
            fw, fw_default, sync, asy = (j.result() for j in jobs)
    else:
        ctx.log("pids: firmware on the unix port …")
        fw = run_firmware(ctx)
        ctx.log(f"pids: firmware {fw['pids_per_s']:.1f} PIDs/s; with the default plan's rates …")
        fw_default = run_firmware(ctx, "default")
        ctx.log(f"pids: firmware {fw_default['pids_per_s']:.1f} PIDs/s; python-OBD OBD …")
        sync = run_pyobd(ctx, "sync")
        ctx.log(f"pids: python-OBD {sync['pids_per_s']:.1f} PIDs/s; python-OBD Async …")
        asy = run_pyobd(ctx, "async")
    ctx.firmware_run = fw  # figure heap reads the same run
    best = max(sync["pids_per_s"], asy["pids_per_s"])
    return {
        "pids": [f"0x{p:02X}" for p in PIDS], "concurrent_clients": ctx.quick, "baud": BAUD, "latency_s": LATENCY_S, "scenario": SCENARIO,
        "firmware": fw, "firmware_default_plan": fw_default, "pyobd_sync": sync, "pyobd_async": asy,
        "ratio_vs_pyobd_sync": fw["pids_per_s"] / sync["pids_per_s"],
        "ratio_vs_pyobd_async": fw["pids_per_s"] / asy["pids_per_s"],
        "ratio_vs_best_pyobd": fw["pids_per_s"] / best,
        "efficiency": fw["efficiency"],
        "default_plan_ratio_vs_best_pyobd": fw_default["pids_per_s"] / best,
        "profiles": _profiles(ctx),
    }


def _profiles(ctx: Context) -> dict[str, ProfileResult]:
    out: dict[str, ProfileResult] = {}
    for name in PROFILES:
        ctx.log(f"pids: firmware and python-OBD side by side on the {name} profile …")
        try:
            out[name] = run_profile(ctx, name)
        except BenchError as e:
            out[name] = {"profile": name, "error": str(e).splitlines()[0][:200]}
    return out


def rows(r: PidsResult) -> list[Row]:
    fw, s, a = r["firmware"], r["pyobd_sync"], r["pyobd_async"]
    fd = r.get("firmware_default_plan")
    ratio = r["ratio_vs_best_pyobd"]
    return [
        Row("PIDs/s from the car (38400 Bd, 30 ms)", f"{fmt(fw['pids_per_s'])} PIDs/s "
            f"({fmt(fw['pids_per_request'])}/request)",
            f"python-OBD {fmt(s['pids_per_s'])} (OBD) / {fmt(a['pids_per_s'])} (Async)",
            f"{fmt(ratio, 2)}× the better one", f"≥ {GOAL_RATIO}×", ratio >= GOAL_RATIO),
        *([Row("… with the default plan's rates (5 / 1 / 0.1 Hz, warped)", f"{fmt(fd['pids_per_s'])} PIDs/s "
               f"({fmt(fd['pids_per_request'])}/request)", "the same python-OBD runs",
               f"{fmt(r['default_plan_ratio_vs_best_pyobd'], 2)}×; {fmt(100 * fd['efficiency'])} % of its limit",
               "— (information)", None)] if fd else []),
        Row("PIDs/s vs the link model's limit", f"{fmt(fw['pids_per_s'])} PIDs/s",
            f"limit {fmt(fw['limit_pids_per_s'])} PIDs/s for the same requests",
            f"{fmt(100 * fw['efficiency'])} % of it", "≥ 90 %", fw["efficiency"] >= GOAL_EFFICIENCY),
        Row("UART bytes per PID value (to ELM / from ELM)",
            f"{fmt(fw['bytes_to_per_value'])} / {fmt(fw['bytes_from_per_value'])}",
            f"python-OBD {fmt(s['bytes_to_per_value'])} / {fmt(s['bytes_from_per_value'])}",
            f"{fmt((fw['bytes_to_per_value'] + fw['bytes_from_per_value']) / (s['bytes_to_per_value'] + s['bytes_from_per_value']), 2)}×",
            "fewer", fw["bytes_to_per_value"] + fw["bytes_from_per_value"]
            < s["bytes_to_per_value"] + s["bytes_from_per_value"]),
        *[row for p in r.get("profiles", {}).values() for row in _profile_rows(p)],
    ]


def _profile_rows(p: ProfileResult) -> list[Row]:
    name = p["profile"]
    if "error" in p:
        return [Row(f"PIDs/s on {name}", f"FAILED: {p['error']}")]
    fw, s = p["firmware"], p["pyobd_sync"]
    ratio = p["ratio_vs_pyobd_sync"]
    bus = f"{p['protocol']}, {p['baud']} Bd, {p['latency_s'] * 1000:g} ms"
    goal_ratio = f"≥ {GOAL_RATIO}×" if p["multi_pid"] else "≥ 1× (one PID a request)"
    ok_ratio = ratio >= (GOAL_RATIO if p["multi_pid"] else 1.0)
    return [
        Row(f"PIDs/s on {name} ({bus})", f"{fmt(fw['pids_per_s'])} PIDs/s ({fmt(fw['pids_per_request'])}/request)",
            f"python-OBD {fmt(s['pids_per_s'])} (OBD), same profile, same run", f"{fmt(ratio, 2)}×", goal_ratio,
            ok_ratio),
        Row(f"… vs the link model's limit on {name}", f"{fmt(100 * fw['efficiency'])} % of it",
            f"python-OBD {fmt(100 * p['pyobd_efficiency'])} % of its own", "—", "≥ 90 %",
            fw["efficiency"] >= GOAL_EFFICIENCY),
        Row(f"UART bytes per PID value on {name} (to / from ELM)",
            f"{fmt(fw['bytes_to_per_value'])} / {fmt(fw['bytes_from_per_value'])}",
            f"python-OBD {fmt(s['bytes_to_per_value'])} / {fmt(s['bytes_from_per_value'])}", "—", "fewer",
            fw["bytes_to_per_value"] + fw["bytes_from_per_value"] < s["bytes_to_per_value"] + s["bytes_from_per_value"]),
    ]
