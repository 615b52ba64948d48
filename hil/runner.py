"""Run a scenario through the whole chain and check what the daemon concluded.

vehicle (ELM327 emulator) -> link model -> firmware on MicroPython -> simulated
BLE -> the daemon (the same Daemon `obdsync run` builds, handed the simulated
backend class) -> SQLite. At the end: every record the dongle logged is stored
exactly once, and the events match the scenario's [[expect]] list.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hil.blesim import SimClient
from hil.emulator import Emulator
from hil.rig import Rig
from hil.scenario import Expect, Scenario, load
from obdsync.config import Config, parse_config
from obdsync.daemon import Daemon
from obdsync.devices import Paired
from obdsync.model import Event, Trip

DRAIN_TIMEOUT = 60.0


@dataclass
class Check:
    expect: Expect
    found: int
    ok: bool


@dataclass
class Report:
    scenario: str
    sim_s: float
    real_s: float
    records: int = 0
    samples: int = 0
    contiguous: int | None = None
    dongle_next_seq: int | None = None
    missing: int = 0
    lost: int = 0
    rejected: int = 0
    events: list[Event] = field(default_factory=list)
    trips: list[Trip] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.checks)


def scenario_config(scenario: Scenario, overrides: dict[str, Any] | None = None) -> Config:
    """The daemon's config for this vehicle: its tank and fuel type."""
    v = scenario.vehicle
    data: dict[str, Any] = {"vehicle": {"tank_litres": v.tank_l, "fuel_type": v.fuel_type}}
    for k, sec in (overrides or {}).items():
        data.setdefault(k, {}).update(sec)
    return parse_config(data)


def check_expectations(scenario: Scenario, events: list[Event]) -> list[Check]:
    dicts = []
    for e in events:
        d = dict(e.values)
        d.update({"type": e.type, "severity": e.severity, "opened_ms": e.opened_ms, "cleared_ms": e.cleared_ms})
        dicts.append(d)
    out = []
    for ex in scenario.expects:
        n = sum(1 for d in dicts if ex.matches(d))
        out.append(Check(ex, n, ex.count_ok(n)))
    return out


async def run_scenario(scenario: Scenario | str, *, workdir: Path | None = None,
                       echo: Callable[[str], None] | None = print, config: Config | None = None,
                       extra_sim_s: float = 0.0, adapter: str | None = None, web: bool = False) -> Report:
    """Run the scenario to its end (plus extra_sim_s), drain, check, report; adapter: an
    adapter/ECU profile name (hil/adapters), else a genuine ELM327 on CAN 11/500."""
    sc = load(scenario) if isinstance(scenario, str) else scenario
    say = echo or (lambda _s: None)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="obdsync-hil-")))
        rig = stack.enter_context(Rig(sc, workdir, adapter=adapter))
        d = rig.dongle
        cfg = config or scenario_config(sc)
        daemon = Daemon(cfg, workdir / "obdsync.db", [Paired(d.device_id, d.mac, "sim")],
                        backend=SimClient, backend_kwargs={"air": str(rig.air)},
                        secrets={d.device_id: d.secret}, live_file=workdir / "live.json", web=web)
        t0 = time.monotonic()
        task = asyncio.create_task(daemon.run(install_signals=False))
        try:
            if web:
                await _say_dashboard(daemon, task, say)
            await _drive(sc, rig, daemon, task, say, extra_sim_s)
            behind = await _drain(daemon, task)
        finally:
            daemon.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        report = Report(sc.name, rig.sim_s(), time.monotonic() - t0)
        await _collect(report, sc, workdir / "obdsync.db", cfg, daemon)
        if behind:
            report.problems.append(behind)
        return report


async def _say_dashboard(daemon: Daemon, task: asyncio.Task[None], say: Callable[[str], None]) -> None:
    """The dashboard's address once it is up (live gauges while the drive runs)."""
    started = asyncio.create_task(daemon.web_tried.wait())
    await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    if daemon.dashboard is not None:
        say(f"dashboard: {daemon.dashboard.url} (live while the drive runs; to act: {daemon.dashboard.login_url()})")


class Drivable(Protocol):
    """What _drive reads of a rig (hil.rig.Rig, direct mode's bench, a board's bench)."""

    @property
    def emulator(self) -> Emulator: ...

    def sim_s(self) -> float: ...


async def _drive(sc: Scenario, rig: Drivable, daemon: Daemon, task: asyncio.Task[None], say: Callable[[str], None],
                 extra_sim_s: float) -> None:
    end = sc.total_sim_s + extra_sim_s
    last_phase = -1
    next_line = 0.0
    vehicle = rig.emulator.vehicle
    while True:
        if task.done():
            task.result()  # the daemon died: raise why
            raise RuntimeError("the daemon stopped on its own")
        t = rig.sim_s()
        if t >= end:
            return
        i = vehicle.phase_at(max(0.0, t))
        if i != last_phase and i < len(sc.phases):
            last_phase = i
            p = sc.phases[i]
            say(f"[{_hms(t)}] phase {i + 1}/{len(sc.phases)}: {p.name or p.kind} "
                f"({_hms(p.duration_s)} at {p.speedup:g}x)")
        now = time.monotonic()
        if now >= next_line:
            next_line = now + 5
            truth = vehicle.truth(max(0.0, t))
            got = sum(r.link.stats.samples for r in daemon.runners)
            say(f"[{_hms(t)}] {truth.speed_kmh:5.1f} km/h  {truth.rpm:6.0f} rpm  fuel {truth.fuel_pct:5.1f} %"
                f"  battery {truth.volts:4.1f} V   daemon: {got} samples")
        await asyncio.sleep(0.25)


async def _drain(daemon: Daemon, task: asyncio.Task[None]) -> str | None:
    """Wait until the daemon has acked everything the dongle logged up to now: the
    dongle seals a record each second and flushes each second. None once it has, else
    what was left behind: a run whose stream stalled is a failed run, however its
    events look (the records the daemon never got are missing from them)."""
    await asyncio.sleep(2.5)  # let the last record be sealed and flushed on the dongle
    deadline = time.monotonic() + DRAIN_TIMEOUT
    link = daemon.runners[0].link
    from protocol import control, control_central

    last: dict[str, Any] | None = None  # the dongle's last STATUS, for the report
    while time.monotonic() < deadline and not task.done():
        if link.connected:
            try:
                st = last = control_central.parse_status(await link.command(control.STATUS))
            except Exception:  # noqa: BLE001 - the link may be reconnecting; try again
                st = None
            if st and st["first_unacked"] >= st["next_seq"] - 1 and link.stats.acked >= st["next_seq"] - 2:
                if link.stats.acked >= st["next_seq"] - 1 or st["first_unacked"] == st["next_seq"]:
                    return None
        await asyncio.sleep(0.5)
    if task.done():
        return "the daemon stopped before it had acked everything the dongle logged"
    where = (f"the dongle had logged up to seq {last['next_seq'] - 1}" if last
             else "the dongle never answered STATUS")
    return (f"the daemon did not catch up within {DRAIN_TIMEOUT:.0f} s of the end: acked up to seq"
            f" {link.stats.acked}, {where} (a stalled stream: see the dongle's output)")


async def _collect(report: Report, sc: Scenario, db: Path, cfg: Config, daemon: Daemon) -> None:
    from obdsync.store import Store

    store = await Store.open(db)
    try:
        sts = await store.status()
        if sts:
            s = sts[0]
            report.records = s.records
            report.contiguous = s.contiguous
            report.missing = s.missing
            report.lost = s.lost
            rows = await store.db.fetch("SELECT COUNT(*) FROM samples")
            report.samples = rows[0][0]
        report.events = sorted(await store.events(limit=10000), key=lambda e: e.opened_ms)
        report.trips = sorted(await store.trips(limit=1000), key=lambda t: t.started_ms)
    finally:
        await store.close()
    report.rejected = sum(r.link.stats.rejected_records for r in daemon.runners)
    report.checks = check_expectations(sc, report.events)
    if report.records == 0:
        report.problems.append("no record reached the database")
    if report.missing:
        report.problems.append(f"{report.missing} records above the watermark never arrived")
    if report.rejected:
        report.problems.append(f"{report.rejected} records failed their MAC")


def format_report(r: Report) -> str:
    from obdsync.cli import fmt_ms

    lines = [f"scenario {r.scenario}: {_hms(r.sim_s)} simulated in {r.real_s:.0f} s",
             f"  stored {r.samples} samples in {r.records} records (acked up to seq {r.contiguous});"
             f" missing {r.missing}, lost on the dongle {r.lost}, rejected {r.rejected}"]
    lines.append(f"  events ({len(r.events)}):")
    for e in r.events:
        cleared = f", cleared {fmt_ms(e.cleared_ms)}" if e.cleared_ms else ""
        lines.append(f"    {fmt_ms(e.opened_ms)} {e.severity:<8} {e.type:<14} {e.message}{cleared}")
    lines.append(f"  trips ({len(r.trips)}):")
    for t in r.trips:
        v = t.values
        l100 = v.get("l_per_100km")
        lines.append(f"    {fmt_ms(t.started_ms)} {t.distance_km or 0:6.1f} km  {v.get('duration_s', 0) / 60:5.1f} min"
                     f"  avg {v.get('avg_speed_kmh', 0):5.1f} km/h  max {v.get('max_speed_kmh', 0):5.1f}"
                     f"  fuel {t.fuel_l or 0:.2f} L" + (f" ({l100:.1f} L/100 km)" if l100 else "")
                     + f"  hard brakes {v.get('hard_brakes', 0)}, accels {v.get('hard_accels', 0)}")
    lines.append("  expected events:")
    for c in r.checks:
        want = f"= {c.expect.count}" if c.expect.count is not None else f">= {c.expect.min_count}"
        fields = "".join(f" {k}={v}" for k, v in c.expect.fields.items())
        lines.append(f"    {'ok  ' if c.ok else 'MISS'} {c.expect.type}{fields} {want}: found {c.found}")
    for p in r.problems:
        lines.append(f"  PROBLEM: {p}")
    lines.append("PASS" if r.ok else "FAIL")
    return "\n".join(lines)


def _hms(s: float) -> str:
    s = int(s)
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"
