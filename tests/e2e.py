"""End-to-end kit: the rig (vehicle, link model, real firmware on MicroPython) with the
daemon in-process (`running_daemon`) or as `obdsync` subprocesses (`Home`).

Everything started here is stopped here, also when the test fails: `running_daemon`
is an async context manager, `Home.close()` (the `home` fixture's finalizer) ends every
`obdsync` process it started. Waits are on conditions with deadlines, never on time.

    with Rig(short_city(), tmp_path) as rig:
        async with running_daemon(rig, tmp_path / "db") as daemon:
            await synced(daemon)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from hil.blesim import SimClient
from hil.proc import LineProcess, wait_until  # noqa: F401 - re-exported for the tests
from hil.rig import Rig, SimDongle
from hil.scenario import Scenario, parse
from hil.vehicle import Vehicle
from obdsync.config import Config, parse_config
from obdsync.daemon import Daemon
from obdsync.devices import Paired
from obdsync.link import DongleLink
from protocol import control, control_central
from protocol.channels import DATA_LEN

OBDSYNC = str(Path(sys.executable).with_name("obdsync"))
# Reconnect fast: the tests wait on reconnects, the default backoff is for real radios.
FAST_LINK = {"link": {"backoff_base_s": 0.1, "backoff_cap_s": 0.5}}


def scenario(name: str, phases: list[dict[str, Any]], **vehicle: Any) -> Scenario:
    """A scenario made for one test (no expectations: rules are tested elsewhere)."""
    return parse({"name": name, "vehicle": vehicle, "phase": phases})


def short_city(duration_s: float = 300, speedup: float = 48, seed: int = 7) -> Scenario:
    """The start of the shipped `city` drive (same seed and speed-up), cut short."""
    return scenario("city-short", [{"kind": "city", "duration_s": duration_s, "speedup": speedup}],
                    start_fuel_pct=55, seed=seed)


# ---- waiting ------------------------------------------------------------------------------

async def until(cond: Callable[[], Any], timeout: float, what: str, *, task: asyncio.Task | None = None) -> Any:
    """Poll cond() until it is truthy; fail naming `what` at the deadline, or at once
    when `task` (the daemon) ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if task is not None and task.done():
            task.result()
            raise AssertionError(f"the daemon stopped while waiting for {what}")
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)




def records_logged(dongle: SimDongle) -> int:
    """Intact records in a running dongle's flash log (a lower bound: a tail being
    written is not counted) — what it has to sync, whatever the machine's load."""
    from hil.faults import entries, segments

    return sum(1 for seg in segments(dongle.flash) for _o, _n, rec in entries(seg.read_bytes()) if rec)


async def backlog_reaches(dongle: SimDongle, n: int, timeout: float = 90.0) -> None:
    """Wait until the dongle has logged at least n records (before a daemon comes)."""
    await until(lambda: records_logged(dongle) >= n, timeout, f"{n} records in the dongle's log")


async def sim_reaches(rig: Rig, sim_s: float, timeout: float | None = None) -> None:
    """Wait until the scenario's clock reaches sim_s."""
    if timeout is None:
        timeout = max(0.0, rig.schedule.real_at(sim_s) - time.time()) + 10
    await until(lambda: rig.sim_s() >= sim_s, timeout, f"sim time {sim_s} s")


# ---- what the car answered ----------------------------------------------------------------

class Answers:
    """Every OBD request the simulated vehicles served: (vehicle, sim t, request, reply).
    `install(monkeypatch)` wraps Vehicle.respond for the test's duration."""

    def __init__(self) -> None:
        self.log: list[tuple[Vehicle, float, str, Any]] = []

    def install(self, monkeypatch: Any) -> Answers:
        orig = Vehicle.respond
        log = self.log

        def respond(vehicle: Vehicle, request: str, t: float) -> Any:
            reply = orig(vehicle, request, t)
            log.append((vehicle, t, request, reply))
            return reply

        monkeypatch.setattr(Vehicle, "respond", respond)
        return self

    def requests(self, vehicle: Vehicle, since_s: float = float("-inf")) -> list[str]:
        return [re.sub(r"\s+", "", req).upper() for v, t, req, _ in list(self.log) if v is vehicle and t >= since_s]

    def mode01(self, vehicle: Vehicle) -> dict[int, list[tuple[float, bytes]]]:
        """PID -> [(sim t, data bytes)] of every mode 01 answer, in the order served."""
        out: dict[int, list[tuple[float, bytes]]] = {}
        for v, t, _req, reply in list(self.log):
            if v is not vehicle or isinstance(reply, str):
                continue
            for msg in reply:
                if msg[:1] != b"\x41":
                    continue
                i = 1
                while i < len(msg):
                    pid = msg[i]
                    n = DATA_LEN[pid]
                    out.setdefault(pid, []).append((t, bytes(msg[i + 1:i + 1 + n])))
                    i += 1 + n
        return out


# ---- the daemon in-process ------------------------------------------------------------------

def paired(dongles: list[SimDongle]) -> list[Paired]:
    return [Paired(d.device_id, d.mac, f"sim{i}") for i, d in enumerate(dongles)]


@contextlib.asynccontextmanager
async def running_daemon(rig: Rig, db: Path, *, dongles: list[SimDongle] | None = None,
                         config: Config | None = None, backend: type = SimClient,
                         wall_clock: Callable[[], float] = time.time,
                         **backend_kwargs: Any) -> AsyncIterator[Daemon]:
    """The Daemon `obdsync run` builds, on the rig's radio; stopped as by SIGTERM on exit
    (its own failure is raised then)."""
    ds = rig.dongles if dongles is None else dongles
    daemon = Daemon(config or parse_config(FAST_LINK), db, paired(ds), backend=backend,
                    backend_kwargs={"air": str(rig.air), **backend_kwargs}, wall_clock=wall_clock,
                    secrets={d.device_id: d.secret for d in ds}, live_file=db.with_name("live.json"))
    task = asyncio.create_task(daemon.run(install_signals=False))
    daemon.task = task  # type: ignore[attr-defined]  # for until(..., task=)
    try:
        await until(daemon.started.is_set, 20, "the daemon to start", task=task)
        yield daemon
    finally:
        daemon.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), 30)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise


async def synced(daemon: Daemon, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait until every link has acked all the dongle had logged when asked (its STATUS
    next_seq); return those STATUS replies."""
    out = []
    task = getattr(daemon, "task", None)
    for r in daemon.runners:
        link = r.link
        await until(lambda link=link: link.connected, timeout, f"{link.address} to connect", task=task)
        st = control_central.parse_status(await link.command(control.STATUS))
        await until(lambda link=link, st=st: link.stats.acked >= st["next_seq"] - 1, timeout,
                    f"{link.address} to ack up to {st['next_seq'] - 1} (acked {link.stats.acked})", task=task)
        out.append(st)
    return out


async def dongle_status(rig: Rig, dongle: SimDongle, timeout: float = 20.0) -> dict[str, Any]:
    """STATUS read by a short authenticated visit (no daemon may hold the dongle). The
    visit's TIME logs an ANCHOR: next_seq grows by one, first_unacked does not move."""

    async def visit() -> dict[str, Any]:
        async with DongleLink(dongle.mac, dongle.secret, backend=SimClient,
                              backend_kwargs={"air": str(rig.air)}) as link:
            return control_central.parse_status(await link.command(control.STATUS))

    return await asyncio.wait_for(visit(), timeout)


# ---- the database -----------------------------------------------------------------------------

def query(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """A read on its own connection, as another process would (the store is WAL)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def seqs(db: Path, device: str) -> list[int]:
    return [r[0] for r in query(db, "SELECT r.seq FROM records r JOIN devices d ON d.num = r.device"
                                    " WHERE d.id = ? ORDER BY r.seq", (device,))]


def watermark(db: Path, device: str) -> int | None:
    rows = query(db, "SELECT contiguous FROM devices WHERE id = ?", (device,))
    return rows[0][0] if rows else None


def record_count(db: Path, device: str) -> int:
    if not db.exists():
        return 0
    try:
        rows = query(db, "SELECT COUNT(*) FROM records r JOIN devices d ON d.num = r.device WHERE d.id = ?",
                     (device,))
    except sqlite3.OperationalError:  # not created yet by the daemon
        return 0
    return rows[0][0]


def assert_exactly_once(db: Path, device: str, upto: int) -> list[int]:
    """Records 0..upto (at least) stored once each with nothing missing, and no sample
    stored twice. Returns the stored seqs."""
    got = seqs(db, device)
    assert got, f"no record of {device} stored"
    missing = sorted(set(range(got[-1] + 1)) - set(got))
    assert not missing, f"records missing: {missing[:20]} (of {len(missing)})"
    assert got == list(range(len(got))), "records not contiguous from 0"
    assert got[-1] >= upto, f"stored up to seq {got[-1]}, the dongle had logged up to {upto}"
    dup = query(db, "SELECT s.seq, s.n, s.channel, COUNT(*) FROM samples s JOIN devices d ON d.num = s.device"
                    " WHERE d.id = ? GROUP BY s.seq, s.n, s.channel HAVING COUNT(*) > 1", (device,))
    assert not dup, f"samples stored twice (seq, n, channel, count): {dup[:10]}"
    assert watermark(db, device) == got[-1], "the store's watermark is not its last contiguous record"
    return got


# ---- `obdsync` as a user runs it ---------------------------------------------------------------

class DaemonProc(LineProcess):
    """`obdsync run` in a subprocess; its log collected line by line."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        super().__init__(argv, env=env, error=AssertionError, name="obdsync run")

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """The first new log line matching the regex `pattern`."""
        return self.wait_line(re.compile(pattern), timeout)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, as systemd stops the service; the exit code."""
        return self.stop(signal.SIGTERM, timeout)

    def close(self) -> None:
        self.kill()


class Home:
    """A user's XDG config and data directories and the environment the `obdsync` CLI
    runs in; with an air, on the simulated radio."""

    def __init__(self, root: Path, air: Path | None = None) -> None:
        self.root = root
        self.config_home = root / "config"
        self.data_home = root / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OBDSYNC_", "XDG_"))}
        # The control socket's directory: short (a unix socket path has 107 bytes, a test's
        # tmp_path may not fit), and this user's own, never the real session's.
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="obdsync-run-"))
        self.env.update(XDG_CONFIG_HOME=str(self.config_home), XDG_DATA_HOME=str(self.data_home),
                        XDG_RUNTIME_DIR=str(self.runtime_dir), PYTHONUNBUFFERED="1")
        if air is not None:
            self.env.update(OBDSYNC_BLE_BACKEND="hil.blesim", OBDSYNC_SIM_AIR=str(air))
        self.procs: list[DaemonProc] = []
        self.outputs: list[str] = []  # everything any command printed (the secrets check reads it)

    @property
    def db(self) -> Path:
        return self.data_home / "obdsync" / "obdsync.db"

    @property
    def control_socket(self) -> Path:
        return self.runtime_dir / "obdsync" / "control.sock"

    def write_config(self, text: str) -> Path:
        p = self.config_home / "obdsync" / "config.toml"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def cli(self, *args: str, timeout: float = 60.0, input: str | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run([OBDSYNC, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                           input=input, stdin=None if input is not None else subprocess.DEVNULL)
        self.outputs += [p.stdout, p.stderr]
        return p

    def pair(self, dongle: SimDongle) -> subprocess.CompletedProcess:
        p = self.cli("pair", dongle.mac, input=dongle.label + "\n")  # on stdin: not in the process list
        assert p.returncode == 0, f"pair failed:\n{p.stdout}{p.stderr}"
        return p

    def run(self, *args: str) -> DaemonProc:
        # The dashboard on a port of its own: daemons of parallel tests must not race for
        # the default 8765 (the loser logs an ERROR, which tests read as a failure).
        p = self.config_home / "obdsync" / "config.toml"
        text = p.read_text() if p.exists() else ""
        if "[web]" not in text:
            self.write_config(text + "\n[web]\nport = 0\n")
        d = DaemonProc([OBDSYNC, *args, "run"], self.env)
        self.procs.append(d)
        return d

    def close(self) -> None:
        for d in self.procs:
            d.close()
            self.outputs.append(d.output)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


# ---- records as the link delivers them (firmware tests) --------------------------------------


def fingerprint(r) -> tuple:
    """Everything a record says: two deliveries of one seq must have the same."""
    return (r.kind, r.seq, r.boot, r.t0, tuple(r.samples), r.first, r.count, r.wall_ms, r.code,
            r.millivolts, r.mode, tuple(r.codes))


class RecordingSink:
    """A link sink that keeps every delivery; `ack_limit` caps what it reports durable
    (to leave a backlog on the dongle)."""

    def __init__(self, ack_limit: int | None = None) -> None:
        self.deliveries: dict[int, list[tuple]] = {}
        self.records: dict[int, object] = {}
        self.top = -1
        self.ack_limit = ack_limit

    async def ingest(self, device: str, records: list, **_epoch: object) -> int:
        from protocol.record import KIND_GAP

        for r in records:
            self.deliveries.setdefault(r.seq, []).append(fingerprint(r))
            self.records.setdefault(r.seq, r)
            if r.kind == KIND_GAP:
                for s in range(r.first, r.first + r.count):
                    self.records.setdefault(s, r)
        while self.top + 1 in self.records:
            self.top += 1
        return self.top if self.ack_limit is None else min(self.top, self.ack_limit)

    def assert_consistent(self) -> None:
        """No hole below the top, and every re-delivery is the very record sent before."""
        assert self.top >= 0
        missing = [s for s in range(self.top + 1) if s not in self.records]
        assert not missing, missing[:20]
        for seq, got in self.deliveries.items():
            assert all(g == got[0] for g in got), f"seq {seq} delivered with different content"
