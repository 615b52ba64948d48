"""The daemon: store, rules, forwarding and one link per paired dongle, run together.

`obdsync run` builds one Daemon; the HIL scenario runner builds the same object
with the simulated radio's backend class. Nothing here knows which radio it is.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from obdsync import __version__, door, freeze, ops, paths, sdnotify, vin
from obdsync.config import Config
from obdsync.dblock import RunLock
from obdsync.devices import Paired, secret_of
from obdsync.link import DeviceLink, DongleLink, LinkError
from obdsync.pipeline import Pipeline
from obdsync.service import Backoff, DeviceRunner, run_service
from protocol import control_central

log = logging.getLogger("obdsync.daemon")

LIVE_SECONDS = 5.0
RETENTION_SECONDS = 6 * 3600.0
KEEP = 0xFFFF  # SET_PLAN: leave that state's interval as the firmware has it


def plan_from_config(config: Config) -> list[tuple[int, int, int, int]]:
    """[poll] overrides as SET_PLAN rows (seconds → 100 ms units)."""
    rows = []
    for o in config.poll:
        def units(v: float | None) -> int:
            return KEEP if v is None else min(36000, round(v * 10))

        rows.append((o.channel, units(o.driving), units(o.idle), units(o.parked)))
    return rows


def tune_runtime() -> None:
    """The daemon's process. Ingest builds and drops a tuple per sample, so the default
    gen-0 threshold (700) runs a collection every few hundred samples; what start-up
    built is frozen out of every collection. And the store's thread (aiosqlite) needs
    the GIL to hand a result back while the loop derives events: at the default 5 ms
    switch interval each BEGIN waited out most of a derivation slice, and the COMMIT's
    fsync then found nothing left to overlap with (1 ms: ingest 7 % faster)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    sys.setswitchinterval(0.001)


def live_path() -> Path:
    return paths.data_dir() / "live.json"



def _key(device: str) -> bytes:
    """A paired dongle's secret (devices.secret_of: read and checked now)."""
    value = secret_of(device).reveal()
    return value if isinstance(value, bytes) else value.encode()

class Daemon:
    def __init__(self, config: Config, db: Path, paired: list[Paired], *, backend: type | None = None,
                 backend_kwargs: dict[str, Any] | None = None, interactive: bool = False,
                 wall_clock: Callable[[], float] = time.time, secrets: dict[str, bytes] | None = None,
                 live_file: Path | None = None, all_paired: set[str] | None = None,
                 control_socket: Path | None = None, adapters: list[Any] | None = None,
                 web: bool = False) -> None:
        self.config = config
        self.db = db
        self.paired = paired
        # Every paired device, also those this run leaves alone (`run --device`): the
        # store's other devices were unpaired, and leave Home Assistant.
        self.all_paired = all_paired if all_paired is not None else {p.device for p in paired}
        self._backend = backend
        self._backend_kwargs = backend_kwargs or {}
        self._interactive = interactive
        self._wall = wall_clock
        # Secrets are read now: a bad secret file is an error at start, not at 3 a.m.
        self._secrets = secrets or {p.device: _key(p.device) for p in paired}
        self._live_file = live_file or live_path()
        # The control door (`obdsync run` passes paths.control_socket_path()); None: none,
        # as for the HIL runners, which start daemons side by side.
        self._door = door.Server(self._request, control_socket) if control_socket is not None else None
        self._runner_of: dict[str, DeviceRunner] = {}  # paired device id -> its runner
        self.adapters = adapters or []  # obdsync.direct.registry.Adapter: ELM327 adapters logged directly
        self.direct_options: dict[str, Any] = {}  # DirectLink keywords (hil: the simulation's clock)
        self.store: Any = None
        self.pipeline: Pipeline | None = None
        self.forwarder: Any = None
        self.runners: list[DeviceRunner] = []
        self.started = asyncio.Event()
        self._stop: asyncio.Event | None = None
        self._progress_last: dict[str, int] = {}
        self._bars: Any = None  # rich Progress while a backlog syncs on a terminal
        self._bar_of: dict[str, Any] = {}
        self._console: Any = None  # rich's Console for the bars (None: stderr)
        self._connected: dict[str, bool] = {}
        self._names: dict[str, str] = {}  # address -> the user's name for the dongle
        # The dashboard ([web]; `obdsync run` and the demo ask for it, the HIL runners do not).
        self._web_wanted = web and config.web.enabled
        self.dashboard: Any = None
        self.web_tried = asyncio.Event()  # set once the dashboard is up or failed to start

    def _progress(self, device: str, done: int, total: int) -> None:
        """Backlog sync progress: a bar on a terminal, a log line per 10 % otherwise."""
        if done == 0:
            self._progress_last.pop(device, None)  # a new connection, a new backlog
        if total <= 0 or self._progress_last.get(device) == 100:
            return  # no backlog, or synced: live records are not progress
        pct = max(0, min(100, done * 100 // total))
        if self._interactive:
            self._bar(device, min(done, total), total)
        else:
            step = pct // 10
            if self._progress_last.get(device) != step:
                log.info("dongle %s: backlog %d%% (%d of %d records)", device, pct, min(done, total), total)
        self._progress_last[device] = 100 if pct == 100 else pct // 10

    def _bar(self, device: str, done: int, total: int) -> None:
        """One rich progress bar per dongle syncing its backlog, on stderr."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn

        if self._bars is None:
            self._bars = Progress(TextColumn("sync {task.description}"), BarColumn(), TaskProgressColumn(),
                                  MofNCompleteColumn(), TextColumn("records"), console=self._console)
            self._bars.start()
        task = self._bar_of.get(device)
        if task is None or done == 0:
            task = self._bar_of[device] = self._bars.add_task(device, total=total)
        self._bars.update(task, completed=done, total=total)
        if done >= total:
            self._bar_of.pop(device, None)
            if not self._bar_of:  # every backlog synced: the bars stay as they ended
                self._bars.stop()
                self._bars = None

    async def run(self, install_signals: bool = True) -> None:
        if self._door is not None:
            await self._door.start()  # first: a second daemon refuses before it touches anything
        try:
            # One daemon per database, whatever its data directory (raises DatabaseInUse naming
            # the holder), held until the end.
            lock = RunLock(self.db).acquire()
            try:
                await self._run(install_signals)
            finally:
                lock.release()
        finally:
            if self._door is not None:
                await self._door.close()

    async def _run(self, install_signals: bool) -> None:
        from obdsync.forward import Forwarder
        from obdsync.store import Store

        cfg = self.config
        tune_runtime()
        self.store = await Store.open(self.db, max_bytes=(cfg.store.max_size_mb * 2**20) or None,
                                      outbox_max=cfg.outbox.max_entries)
        try:
            await vin.load(self.store)  # before discovery names the devices
            self.forwarder = Forwarder(self.store, cfg.forward, display=cfg.display)
            await self.forwarder.start()
            self.pipeline = Pipeline(self.store, cfg, forwarder=self.forwarder)
            plan = plan_from_config(cfg)
            for p in self.paired:
                link = DongleLink(p.address, self._secrets[p.device], self.pipeline, backend=self._backend,
                                  backend_kwargs=self._backend_kwargs, plan=plan, wall_clock=self._wall,
                                  progress=self._progress)
                runner = DeviceRunner(link, Backoff(cfg.link.backoff_base_s, cfg.link.backoff_cap_s))
                link.on_ready = self._on_ready(link, p, link.on_ready)
                self.runners.append(runner)
                self._runner_of[p.device] = runner
                vin.watch(link, self.store)
                freeze.watch(link, self.store)
            if self.adapters:
                from obdsync.direct.runner import direct_runners

                for runner in direct_runners(self, plan):
                    self.runners.append(runner)
                    vin.watch(runner.link, self.store)
            for s in await self.store.status():
                if s.device not in self.all_paired:
                    self.forwarder.forget(s.device)
            chores = [asyncio.create_task(self._live_loop()), asyncio.create_task(self._retention_loop()),
                      asyncio.create_task(sdnotify.watchdog())]
            if self._web_wanted:  # beside the links: the screens never delay the car's data
                chores.append(asyncio.create_task(self._start_dashboard()))
            self.started.set()
            log.info("obdsync running: %d dongle(s), database %s", len(self.runners), self.db)
            sdnotify.notify("READY=1", "STATUS=" + self._status_line())
            try:
                await run_service(self.runners, install_signals=install_signals, stop=self._stop_event())
            finally:
                sdnotify.notify("STOPPING=1", "STATUS=stopping: storing and acknowledging what is in hand")
                for c in chores:
                    c.cancel()
                await asyncio.gather(*chores, return_exceptions=True)
                await self._write_live()
                if self.dashboard is not None:
                    await self.dashboard.stop()
        finally:
            # Each step whatever the one before it raised: an open database keeps
            # aiosqlite's thread, and with it the process, alive after SIGTERM.
            try:
                if self.pipeline is not None:
                    await self.pipeline.close()  # derive and store what is in hand first
            finally:
                try:
                    if self.forwarder is not None:
                        await self.forwarder.stop()
                finally:
                    await self.store.close()

    async def _start_dashboard(self) -> None:
        """The dashboard on this loop, fed by the pipeline after each stored batch. A port
        in use is logged, not fatal: the car's data matters more than its screens."""
        try:
            # aiohttp's import is the slow part: in a thread, so the links connect meanwhile.
            server = await asyncio.to_thread(importlib.import_module, "obdsync.web.server")
            w = self.config.web

            async def dongle_op(name: str, device: str | None) -> Any:
                return await self._request(door.Request(0, name, device, {}))

            dash = server.Dashboard(self.store, self.config, host=w.host, port=w.port, live=self.live,
                                    dongle_op=dongle_op)
            self.dashboard = dash  # stopped at the end even if cancelled while starting
            try:
                await dash.start()
            except OSError as e:
                log.error("dashboard not served on %s:%d: %s", w.host, w.port, e)
                self.dashboard = None
                await dash.stop()
                return
            if self.pipeline is not None:  # made before the dashboard starts
                self.pipeline.listeners.append(dash.hub.feed)
        finally:
            self.web_tried.set()

    def _on_ready(self, link: DeviceLink, paired: Paired, then: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
        self._names[link.address] = paired.name

        def ready(info: Any) -> Any:
            self._tell_device(link)
            if link.device is not None:  # known once ready: the dongle's info names it
                self._connected[link.device] = True
                self.forwarder.set_connected(link.device, True)
            return then(info) if then is not None else None

        return ready

    def _tell_device(self, link: DeviceLink) -> None:
        """Home Assistant's device block: firmware from the dongle's info, the VIN once
        learnt (at connect or later, `vin.watch`), the user's name for the dongle."""
        if link.device is None:  # not connected yet: nothing to tell
            return
        known = vin.known(link.device)
        self.forwarder.set_device_info(link.device, firmware=link.info.firmware if link.info else None,
                                       vin=known.vin if known else None, name=self._names.get(link.address) or None)

    def _tell_connected(self) -> None:
        """The connectivity of each dongle, to Home Assistant and to systemd's status
        line: on a change, and from the live loop (a dropped link raises no callback
        here); a VIN learnt meanwhile too."""
        changed = False
        for r in self.runners:
            dev = r.link.device
            if dev is None:
                continue
            self._tell_device(r.link)
            if self._connected.get(dev) != r.link.connected:
                self._connected[dev] = r.link.connected
                self.forwarder.set_connected(dev, r.link.connected)
                changed = True
        if changed:
            sdnotify.notify("STATUS=" + self._status_line())

    def _status_line(self) -> str:
        """`systemctl status`'s one line: how many dongles, how many connected."""
        up = sum(1 for r in self.runners if r.link.connected)
        return f"{len(self.runners)} dongle(s), {up} connected; database {self.db}"

    def _stop_event(self) -> asyncio.Event:
        if self._stop is None:
            self._stop = asyncio.Event()
        return self._stop

    def stop(self) -> None:
        """Stop as SIGTERM would: store and ack what is in hand, close the links."""
        self._stop_event().set()

    # -- the control door ----------------------------------------------------------

    async def _request(self, req: door.Request) -> Any:
        """A request through the control door: the daemon's own, or a dongle operation
        run on the link this daemon holds (`obdsync.ops`)."""
        if req.op == "hello":
            return {"pid": os.getpid(), "version": __version__, "devices": sorted(self._runner_of)}
        await self.started.wait()
        if req.op == "live":
            return self.live()
        if req.op == "web.login":
            if self.dashboard is None:
                raise door.DoorError("the running daemon serves no dashboard ([web] enabled = false, or its port"
                                     " was taken: see its log)")
            return {"url": self.dashboard.login_url(), "token": self.dashboard.token, "home": self.dashboard.url}
        fn = ops.OPS.get(req.op)
        if fn is None:
            raise door.DoorError(f"unknown request {req.op!r}; this daemon knows: hello, live, web.login, "
                                 + ", ".join(sorted(ops.OPS)))
        try:
            inspect.signature(fn).bind(None, **req.args)
        except TypeError as e:
            raise door.DoorError(f"{req.op}: {e}") from None
        runner = self._runner_for(req.device)
        link = runner.link
        if not link.connected:
            why = runner.last_error or "connecting"
            raise LinkError(f"the running daemon is not connected to dongle {link.device or link.address}"
                            f" ({why}); it keeps trying")
        log.info("control request %s for dongle %s", req.op, link.device)  # a user's action on the car
        return await fn(link, **req.args)

    def _runner_for(self, device: str | None) -> DeviceRunner:
        if device is None:
            if len(self.runners) == 1:
                return self.runners[0]
            raise door.DoorError("the running daemon holds several dongles: name one with --device")
        runner = self._runner_of.get(device)
        if runner is None:
            raise door.NotManaged(f"the running daemon does not hold dongle {device}")
        return runner

    # -- chores ------------------------------------------------------------------

    def live(self) -> dict[str, Any]:
        out = {}
        for r in self.runners:
            link = r.link
            st = link.stats
            s = st.status
            dev = link.device or link.address
            out[dev] = {
                "address": link.address,
                "connected": link.connected,
                "available": r.available,
                "last_error": r.last_error,
                "records_received": st.records,
                "rejected_records": st.rejected_records,
                "acked": st.acked,
                "backlog": max(0, st.backlog_end - st.acked - 1) if st.connected_since else None,
                "volts": round(s["millivolts"] / 1000, 2) if s.get("millivolts") else None,
                "log_fill": f"{100 * st.log_used / st.log_capacity:.1f}%" if st.log_capacity else None,
                "power": control_central.POWER_NAMES.get(s.get("power_state", -1)) if s else None,
                "rates": s.get("rates", {}),
                "elm_protocol": s.get("elm_protocol") if s else None,  # for `obdsync check`
                "supported": link.info.supported.hex() if link.info is not None else None,
                "updated": time.time(),
            }
        return out

    async def _write_live(self) -> None:
        """`obdsync status` runs in another process: leave it what only we know."""
        data = json.dumps({"pid": os.getpid(), "devices": self.live()}, default=str)
        p = self._live_file
        try:
            paths.private_dir(p.parent)
            tmp = p.with_name(p.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            os.fchmod(fd, 0o600)  # what the dongles do now: the owner's alone
            with os.fdopen(fd, "w") as f:
                f.write(data)
            os.replace(tmp, p)
        except OSError as e:
            log.debug("live status not written: %s", e)

    async def _live_loop(self) -> None:
        while True:
            self._tell_connected()
            await self._write_live()
            await asyncio.sleep(LIVE_SECONDS)

    async def _retention_loop(self) -> None:
        days = self.config.store.retention_days
        if days <= 0:
            return
        while True:
            try:
                await self.store.retain(days)
            except Exception as e:  # noqa: BLE001 - retention is housekeeping; ingest goes on
                log.warning("retention failed: %s", e)
            await asyncio.sleep(RETENTION_SECONDS)
