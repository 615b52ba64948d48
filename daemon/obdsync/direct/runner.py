"""The daemon's hook for direct mode: one reconnect loop per added adapter, beside the dongles'."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from obdsync.devices import Paired
from obdsync.direct.logger import DirectLink, _state_path
from obdsync.service import Backoff, DeviceRunner

if TYPE_CHECKING:
    from obdsync.daemon import Daemon
    from obdsync.link import LinkInfo, OnReady


def known_devices(state_file: Path | None = None) -> set[str]:
    """Device ids the added adapters have logged as (so the daemon does not 'forget' them)."""
    try:
        data = json.loads((state_file or _state_path()).read_text())
    except (FileNotFoundError, ValueError):
        return set()
    return {d for entry in data.values() if isinstance(entry, dict) for d in entry.get("devices", {})}


def direct_runners(daemon: Daemon, plan: list[tuple[int, int, int, int]]) -> list[DeviceRunner]:
    cfg = daemon.config
    sink = daemon.pipeline
    if sink is None:
        raise RuntimeError("direct_runners: the daemon's pipeline is made first (Daemon.run)")
    extra = dict(daemon.direct_options)
    daemon.all_paired = daemon.all_paired | known_devices(extra.get("state_file"))
    out = []
    for a in daemon.adapters:
        opts: dict[str, Any] = {}
        if a.kind == "ble" and daemon._backend is not None:
            opts = {"backend": daemon._backend, "backend_kwargs": daemon._backend_kwargs}
        link = DirectLink(a.address, sink, transport_options=opts, plan=plan, wall_clock=daemon._wall,
                          **extra)
        runner = DeviceRunner(link, Backoff(cfg.link.backoff_base_s, cfg.link.backoff_cap_s))
        link.on_ready = daemon._on_ready(link, Paired("0" * 16, a.address, a.name or a.address),
                                         _held(daemon, runner, link.on_ready))
        out.append(runner)
    return out


def _held(daemon: Daemon, runner: DeviceRunner, then: OnReady | None) -> OnReady:
    """Once the adapter's device is known (its car's VIN), the control door can name it."""

    def ready(info: LinkInfo) -> Awaitable[None] | None:
        if runner.link.device is not None:  # known once ready: the VIN was read or remembered
            daemon._runner_of[runner.link.device] = runner
        return then(info) if then is not None else None

    return ready


def adapter_request(device: str | None, op: str, args: dict[str, Any]) -> Any:
    """`obdsync vin --live` / `dtc read --live` for an adapter's device: through the running
    daemon's door (it holds the adapter; an ELM327 serves one client at a time)."""
    import click

    from obdsync import door
    from obdsync.cli import run_async
    from obdsync.link import CommandError, LinkError

    dev = (device or "").strip().lower()
    if not dev or dev not in known_devices():
        raise click.ClickException("name one paired dongle or adapter device with --device"
                                   if dev else "no paired dongle (name an adapter's device with --device)")
    try:
        return run_async(door.call(op, dev, args))
    except (door.NoDaemon, door.NotManaged):
        raise click.ClickException(f"device {dev} is an ELM327 adapter's: live requests go through "
                                   f"`obdsync run`, which is not holding it now") from None
    except CommandError:
        raise
    except (LinkError, door.DoorError) as e:
        raise click.ClickException(str(e)) from None
