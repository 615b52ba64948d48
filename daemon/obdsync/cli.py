"""The `obdsync` command line (click).

Every command works with no config file (defaults everywhere); `--config` and
`--db` point elsewhere. The BLE radio is bleak's default backend unless
`--ble-backend MODULE` (or $OBDSYNC_BLE_BACKEND) names a module exposing
CLIENT_BACKEND and SCANNER_BACKEND — how the HIL kit runs the daemon on its
simulated radio without the daemon knowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import importlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from obdsync import __version__, devices, i18n, logs, paths, render
from obdsync.config import Config, ConfigError, SecretError, load_config

if TYPE_CHECKING:  # types only: the CLI imports bleak and the store when a command needs them
    from bleak.backends.client import BaseBleakClient
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData, BaseBleakScanner

    from obdsync.direct.registry import Adapter
    from obdsync.model import DeviceStatus, SampleRow
    from obdsync.model import Event as StoredEvent
    from obdsync.model import Trip as StoredTrip
    from obdsync.store import Store

T = TypeVar("T")
log = logging.getLogger("obdsync")


class Ctx:
    def __init__(self, config_path: Path | None, db: Path | None, backend: str | None) -> None:
        self.config_path = config_path
        self.db_override = db
        self.backend_spec = backend
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except ConfigError as e:
                raise click.ClickException(str(e)) from None
            i18n.use(self._config.display.language)
        return self._config

    @property
    def units(self) -> Any:
        from obdsync.messages import Units

        return Units.of_display(self.config.display)

    @property
    def db(self) -> Path:
        return self.db_override or self.config.store.db_path

    def backends(self) -> tuple[type[BaseBleakClient] | None, type[BaseBleakScanner] | None]:
        """(client backend, scanner backend); (None, None) is bleak's own choice."""
        if not self.backend_spec:
            return None, None
        try:
            mod = importlib.import_module(self.backend_spec)
            return mod.CLIENT_BACKEND, mod.SCANNER_BACKEND
        except (ImportError, AttributeError) as e:
            raise click.ClickException(f"BLE backend {self.backend_spec!r} is not usable: {e}") from None


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


fmt_ms = render.local_ms
iso_ms = render.iso_ms


def parse_when(text: str | None) -> int | None:
    """An ISO date/time, or a relative age like 2h, 3d, 30m, as Unix ms."""
    if text is None:
        return None
    t = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if t and t[-1] in units and t[:-1].replace(".", "", 1).isdigit():
        return int((dt.datetime.now().timestamp() - float(t[:-1]) * units[t[-1]]) * 1000)
    try:
        when = dt.datetime.fromisoformat(t)
    except ValueError:
        raise click.BadParameter(f"{text!r}: give an ISO date/time (2026-11-25T08:00) or an age (30m, 2h, 7d)") from None
    if when.tzinfo is None:
        when = when.astimezone()
    return int(when.timestamp() * 1000)


def store_failure(db: Path, e: Exception) -> click.ClickException:
    """One line for a store error: what is wrong, and for a damaged file what to do."""
    from obdsync.db import StoreCorruptError, StoreMissingError
    from obdsync.store import corrupt_advice

    if isinstance(e, StoreCorruptError):
        return click.ClickException(f"{db}: {e}; {corrupt_advice(db)}")
    if isinstance(e, StoreMissingError):
        return click.ClickException(f"{db}: no such database file (nothing was created; a typo in --db?"
                                    " `obdsync run` creates it once a dongle is paired)")
    return click.ClickException(str(e))


async def open_store(ctx: Ctx, *, create: bool = False) -> Store:
    """The database; only writers (create=True) make a new file, readers are told it is missing."""
    from obdsync.db import StoreError
    from obdsync.schema import SchemaError
    from obdsync.store import Store

    cfg = ctx.config
    try:
        return await Store.open(ctx.db, max_bytes=(cfg.store.max_size_mb * 2**20) or None,
                                outbox_max=cfg.outbox.max_entries, create=create)
    except (StoreError, SchemaError) as e:
        raise store_failure(ctx.db, e) from None


def with_store(ctx: Ctx, fn: Callable[[Store], Awaitable[T]], *, create: bool = False) -> T:
    from obdsync.db import StoreError

    async def go() -> T:
        store = await open_store(ctx, create=create)
        try:
            return await fn(store)
        except StoreError as e:
            raise store_failure(ctx.db, e) from None
        finally:
            await store.close()

    return run_async(go())


def resolve_device(store_status: Sequence[DeviceStatus], device: str | None) -> str:
    ids: list[str] = [s.device for s in store_status]
    if device is None:
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise click.ClickException("no device has sent anything yet")
        raise click.ClickException("several devices: name one with --device (" + ", ".join(ids) + ")")
    try:
        d = paths.normalize_device_id(device)
    except ValueError:
        matches = [i for i in ids if i.endswith(device.lower())]
        if len(matches) == 1:
            return matches[0]
        raise click.ClickException(f"unknown device {device!r}") from None
    return d


class LazyGroup(click.Group):
    """Subcommands whose code loads only when used: `hil` lives in the HIL kit,
    which the daemon's run-time path must not import; `fuel` and `import`
    (obdsync/cli_fuel.py) are loaded as they are used too."""

    lazy = {"hil": ("hil.cli", "hil"), "provision": ("hil.provision", "provision"),
            "fuel": ("obdsync.cli_fuel", "fuel"), "import": ("obdsync.cli_fuel", "import_csv")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def invoke(self, ctx: click.Context) -> Any:
        from obdsync import jsontable

        try:
            return super().invoke(ctx)
        except (devices.PairingError, jsontable.TableError) as e:  # a damaged paired.json / adapters.json
            raise click.ClickException(str(e)) from None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name]
            try:
                command: click.Command = getattr(importlib.import_module(module), attr)
                return command
            except ImportError as e:
                raise click.ClickException(f"`obdsync {name}` needs the HIL kit: {e}") from None
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="obdsync")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Config file (default: $XDG_CONFIG_HOME/obdsync/config.toml).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="SQLite database file.")
@click.option("--ble-backend", envvar="OBDSYNC_BLE_BACKEND", hidden=True,
              help="Module with CLIENT_BACKEND/SCANNER_BACKEND (HIL simulation).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, db: Path | None, ble_backend: str | None,
        verbose: int) -> None:
    """obdsync: keep every sample your car's dongle sends, and tell you what matters."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logs.setup(level)
    if verbose < 2:
        logging.getLogger("bleak").setLevel(logging.WARNING)
    logging.getLogger("pint").setLevel(logging.ERROR)  # python-OBD redefines units at import
    ctx.obj = Ctx(config_path, db, ble_backend)


# ---- the service ---------------------------------------------------------------------


@cli.command()
@click.option("--device", "only", multiple=True, help="Only these paired dongles (device id or address).")
@click.pass_obj
def run(ctx: Ctx, only: tuple[str, ...]) -> None:
    """Run the background service: stay connected to the paired dongles."""
    from obdsync.daemon import Daemon

    ctx.config  # noqa: B018 - a bad config is the first thing to hear about, paired or not
    paired = every = devices.load()
    from obdsync.direct import registry as adapter_registry

    adapters = all_adapters = adapter_registry.load()
    if not paired and not adapters:
        raise click.ClickException("no paired dongle: run `obdsync scan`, then `obdsync pair ADDRESS` (or, for an"
                                   " ELM327 adapter of your own, `obdsync add ADDRESS`)")
    if only:
        def adapter_named(a: Adapter, o: str) -> bool:
            return a.address.lower() == o.strip().lower()

        paired = [p for p in every if any(_names(p, o) for o in only)]
        adapters = [a for a in all_adapters if any(adapter_named(a, o) for o in only)]
        unmatched = [o for o in only if not any(_names(p, o) for p in every)
                     and not any(adapter_named(a, o) for a in all_adapters)]
        if unmatched:
            raise click.ClickException(
                f"--device {', '.join(unmatched)}: no paired dongle has that id or address (paired: "
                + ", ".join([f"{p.device} at {p.address}" for p in every] + [f"adapter {a.address}" for a in all_adapters])
                + ")")
    client_backend, _ = ctx.backends()
    interactive = sys.stderr.isatty()
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger("obdsync").setLevel(logging.INFO)
    from obdsync.db import StoreError
    from obdsync.dblock import DatabaseInUse
    from obdsync.door import DoorError
    from obdsync.schema import SchemaError

    try:
        daemon = Daemon(ctx.config, ctx.db, paired, backend=client_backend, interactive=interactive,
                        all_paired={p.device for p in every}, control_socket=paths.control_socket_path(),
                        adapters=adapters, web=True)
        run_async(daemon.run())
    except (SecretError, DoorError, DatabaseInUse) as e:
        raise click.ClickException(str(e)) from None
    except (StoreError, SchemaError) as e:
        raise store_failure(ctx.db, e) from None


@cli.group()
def web() -> None:
    """The dashboard `obdsync run` serves ([web] in the config: address and port)."""


@web.command("login")
@click.option("--token", "show_token", is_flag=True, help="Print the API token (Bearer) instead of a link.")
def web_login(show_token: bool) -> None:
    """A one-time login link for the dashboard (10 minutes to open it): needed to act
    (mark a service done, clear codes) and for any access from another machine."""
    from obdsync import door

    try:
        got = run_async(door.call("web.login"))
    except door.NoDaemon:
        raise click.ClickException("no `obdsync run` is running: the dashboard is served by it") from None
    except door.DoorError as e:
        raise click.ClickException(str(e)) from None
    click.echo(got["token"] if show_token else got["url"])


@web.command("serve")
@click.pass_obj
def web_serve(ctx: Ctx) -> None:
    """Serve the dashboard on a database without the daemon (a copy, the demo's): no live
    gauges, no dongle to clear codes on. `obdsync run` serves it itself."""
    from obdsync.web.server import Dashboard

    async def go() -> None:
        store = await open_store(ctx)
        try:
            w = ctx.config.web
            dash = Dashboard(store, ctx.config, host=w.host, port=w.port)
            try:
                await dash.start()
            except OSError as e:
                raise click.ClickException(f"cannot listen on {w.host}:{w.port}: {e} (set [web] port)") from None
            click.echo(f"dashboard: {dash.url}  (to act, open once: {dash.login_url()})  Ctrl-C stops")
            try:
                await asyncio.Event().wait()
            finally:
                await dash.stop()
        finally:
            await store.close()

    with contextlib.suppress(KeyboardInterrupt):
        run_async(go())


def _names(p: devices.Paired, text: str) -> bool:
    """Whether ``text`` names paired dongle ``p``: its id (whole, with colons, or its end) or address."""
    t = text.strip().lower()
    return bool(t) and (p.device == t.replace(":", "") or p.device.endswith(t) or p.address.lower() == t)


@cli.command()
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to listen.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines.")
@click.pass_obj
def scan(ctx: Ctx, timeout: float, as_json: bool) -> None:
    """List nearby obdsync dongles and ELM327 adapters (BLE, and serial ports), saying which is which."""
    from bleak import BleakScanner

    from protocol import uuids

    _, scanner = ctx.backends()

    async def go() -> dict[str, tuple[BLEDevice, AdvertisementData]]:
        # No service filter: ELM327 adapters advertise other services, or none.
        if scanner is not None:
            return await BleakScanner.discover(timeout=timeout, return_adv=True, backend=scanner)
        return await BleakScanner.discover(timeout=timeout, return_adv=True)

    from bleak.exc import BleakError

    from obdsync.direct.registry import looks_like_adapter
    from obdsync.direct.transports import serial_ports

    try:
        found = run_async(go())
    except (BleakError, OSError) as e:
        # No adapter, no BlueZ, no D-Bus (a container, a server): one line, not a traceback.
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise click.ClickException(f"Bluetooth is not available here ({why}): is there an adapter, and is"
                                   " bluetoothd running (systemctl status bluetooth)?") from None
    rows: list[tuple[str, str, int | None, str, str]] = []  # RSSI: None for a serial port
    for d, a in found.values():
        name = a.local_name or d.name or ""
        if uuids.SERVICE in [u.lower() for u in a.service_uuids] or name.startswith(uuids.NAME_PREFIX):
            rows.append((d.address, name, a.rssi, "dongle", f"obdsync pair {d.address}"))
        elif looks_like_adapter(name, a.service_uuids):
            rows.append((d.address, name, a.rssi, "ELM327 BLE", f"obdsync add {d.address}"))
    rows.sort(key=lambda r: -(r[2] or 0))
    rows += [(port, desc, None, "serial", f"obdsync add {port}") for port, desc in serial_ports()]
    if as_json:
        render.json_lines({"address": a, "name": n, "rssi": r, "kind": k, "to_use": u} for a, n, r, k, u in rows)
        return
    if not rows:
        click.echo("no dongle or adapter found (is it powered, and not connected to another phone?)")
        return
    render.table(["ADDRESS", "NAME", "RSSI", "KIND", "TO USE"],
                 [(a, n, "" if r is None else r, k, u) for a, n, r, k, u in rows], right=["RSSI"])


@cli.command()
@click.argument("address")
@click.option("--secret-file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Read the label / QR text from this file (readable by you alone), or from stdin with '-'.")
@click.option("--secret", "label", help="The label text on the command line: every local user can read it in the "
                                        "process list, and it stays in your shell history. Prefer the prompt.")
@click.pass_obj
def pair(ctx: Ctx, address: str, secret_file: Path | None, label: str | None) -> None:
    """Pair a dongle: check its secret against it, then remember both.

    The secret is the text on the dongle's label or QR code (obdsync:<device id>:<secret>, or the
    secret's 64 hex digits). It is asked for without echo; piped in on stdin; or read with
    --secret-file."""
    from obdsync.link import DongleLink, LinkError

    label = _label_text(secret_file, label)
    try:
        device, secret = devices.parse_label(label)
    except devices.PairingError as e:
        raise click.ClickException(str(e)) from None
    client_backend, _ = ctx.backends()

    async def go() -> str:
        async with DongleLink(address, secret, backend=client_backend) as link:
            assert link.info is not None
            return link.info.device_id.hex()

    try:
        found = run_async(go())
    except LinkError as e:
        raise click.ClickException(f"pairing failed: {e}") from None
    if device is not None and device != found:
        raise click.ClickException(f"the label is for dongle {device}, but {address} is dongle {found}")
    devices.add(found, address, secret)
    click.echo(f"paired dongle {found} at {address}; the secret is stored in {paths.secret_path(found)} (0600)")


def _label_text(secret_file: Path | None, label: str | None) -> str:
    """The label text for `pair`, from wherever the user gave it: never the process list unless
    they insist (--secret, with a warning)."""
    from obdsync.config import _read_private

    if secret_file is not None and label is not None:
        raise click.UsageError("give the secret once: --secret-file or --secret")
    if label is not None:
        click.echo("warning: --secret shows the dongle's secret to every local user (the process list) and "
                   "keeps it in your shell history; leave it out to be asked for it, or use --secret-file",
                   err=True)
        return label
    if secret_file is not None and str(secret_file) != "-":
        try:
            raw = _read_private(secret_file.expanduser())
        except SecretError as e:
            raise click.ClickException(f"--secret-file: {e}") from None
        text = raw.decode("utf-8", "replace")
    elif secret_file is None and sys.stdin.isatty():
        text = click.prompt("Secret from the dongle's label", hide_input=True)
    else:
        text = sys.stdin.readline()  # piped in (or --secret-file -): the first line
    text = text.strip()
    if not text:
        raise click.ClickException("no secret given (the text on the dongle's label: obdsync:<device id>:<secret>)")
    return text


@cli.command()
@click.argument("address")
@click.option("--name", default="", help="A name for it (shown in status and Home Assistant).")
@click.pass_obj
def add(ctx: Ctx, address: str, name: str) -> None:
    """Add an ELM327 adapter: ADDRESS (BLE), PORT (/dev/ttyUSB0, /dev/rfcomm0), HOST:PORT (Wi-Fi)
    or rfcomm:ADDRESS. `obdsync run` then logs from it as from a dongle (direct mode)."""
    from obdsync.direct import registry as adapter_registry
    from obdsync.direct.transports import TransportError

    try:
        a = adapter_registry.add(address, name)
    except (TransportError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"added {a.kind} adapter {a.address}; `obdsync run` logs from it (each car it is plugged "
               f"into is a device of its own, named by adapter and VIN)")


@cli.command()
@click.argument("device")
@click.pass_obj
def unpair(ctx: Ctx, device: str) -> None:
    """Forget a dongle (its secret and its pairing) or an added adapter (by its address); the data
    stays in the database."""
    matches = [p for p in devices.load() if p.device.endswith(device.lower()) or p.address.lower() == device.lower()]
    if not matches:
        from obdsync.direct import registry as adapter_registry

        gone = adapter_registry.remove(device)
        if gone is not None:
            click.echo(f"removed {gone.kind} adapter {gone.address}; its data stays in {ctx.db}.")
            return
    if len(matches) != 1:
        known = ", ".join(p.device for p in devices.load()) or "none"
        raise click.ClickException(f"no single paired dongle matches {device!r} (paired: {known})")
    devices.remove(matches[0].device)
    click.echo(f"unpaired dongle {matches[0].device}; its data stays in {ctx.db}. The next `obdsync run`"
               " removes it from Home Assistant.")


@cli.command("systemd-unit")
def systemd_unit() -> None:
    """Print a systemd user unit that runs this very obdsync (install it as
    ~/.config/systemd/user/obdsync.service)."""
    click.echo(unit_text(), nl=False)


def unit_text() -> str:
    """The unit template (obdsync.service beside this module) with ExecStart= where this
    obdsync is installed (a venv's
    bin/ from `make setup`, ~/.local/bin from `pip install --user`, ...)."""
    import shlex
    from importlib import resources

    script = Path(sys.executable).parent / "obdsync"
    start = shlex.join([str(script), "run"]) if script.exists() else \
        shlex.join([sys.executable, "-m", "obdsync.cli", "run"])
    template = resources.files("obdsync").joinpath("obdsync.service").read_text()
    return template.replace("@EXEC_START@", start)


# ---- what is stored ------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--live", is_flag=True, help="Ask each paired dongle for its status now (supply, log, power, rates).")
@click.pass_obj
def status(ctx: Ctx, as_json: bool, live: bool) -> None:
    """Each dongle: last seen, records, gaps, latest values; forwarding backlog."""
    from obdsync.decode import signal_name
    from obdsync.status import gather, live_fields

    if ctx.db_override is None and ctx.config.store.path is None and not ctx.db.exists():
        # The default database before the first `obdsync run`: nothing stored yet, which
        # is what status is for saying (a --db that names no file stays an error).
        info = run_async(gather(None, ctx.config))
    else:
        info = with_store(ctx, lambda store: gather(store, ctx.config))
    if live:
        paired = {p.device for p in devices.load()}
        for d in info["devices"]:
            if d["device"] in paired:
                d["live"] = {**(d.get("live") or {}), **live_fields(dongle_request(ctx, d["device"], "status"))}
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str, ensure_ascii=False))
        return
    from obdsync.i18n import _

    running = info["daemon"]["running"]
    if not info["paired"] and not info["devices"]:
        click.echo(_("no dongle paired yet: `obdsync scan`, then `obdsync pair ADDRESS`"))
    elif running is False:
        click.echo(_("obdsync run is not running: nothing is connected (start it: `obdsync run`, or"
                     " `systemctl --user start obdsync`)"))
    seen = {d["device"] for d in info["devices"]}
    for p in info["paired"]:
        if p["device"] not in seen:
            click.echo(_("dongle {device} at {address}: paired, nothing received from it yet").format(
                device=p["device"], address=p["address"]))
    for d in info["devices"]:
        now: dict[str, Any] = d.get("live") or {}  # the running daemon's view of the dongle
        conn = _("connected") if now.get("connected") else _("not connected")
        click.echo(_("dongle {device}  {name}  {state}  last seen {when}").format(
            device=d["device"], name=d.get("name") or "", state=conn, when=fmt_ms(d["last_seen_ms"])))
        if d.get("vin"):
            v = d.get("vehicle") or {}
            click.echo(f"  VIN {d['vin']}" + ("  " + _("{maker}, {country}, model year {year}, check digit {check}").format(
                maker=v["manufacturer"] or _("unknown maker"), country=v["country"] or "?",
                year=v["model_year"] or "?", check=_(v["check_digit"])) if v else ""))
        click.echo("  " + _("records {records}  acked up to seq {seq}  waiting for {missing}  gaps {gaps}"
                            " ({lost} records lost on the dongle)").format(
            records=d["records"], seq=d["contiguous"], missing=d["missing"], gaps=d["gaps"], lost=d["lost"]))
        if (d.get("log_epochs") or 0) > 1:
            click.echo("  " + _("the dongle's log started over {n} times (wiped, reflashed or replaced);"
                                " the current one since {when}, every earlier record kept").format(
                n=d["log_epochs"] - 1, when=fmt_ms(d.get("log_epoch_since_ms"))))
        if now:
            def shown(k: str, now: dict[str, Any] = now) -> Any:
                v = now.get(k)
                return "-" if v is None else v

            click.echo(f"  dongle: battery {shown('volts')} V  log {shown('log_fill')}"
                       f"  backlog {shown('backlog')}  power {shown('power')}")
            if now.get("rates"):
                click.echo("  poll rates: " + ", ".join(f"{signal_name(int(ch))} {hz:.1f} Hz"
                                                        for ch, hz in sorted(now["rates"].items(),
                                                                             key=lambda kv: int(kv[0]))))
        for name, v in d["last_values"].items():
            if v["value"] is not None and v["unit"] in ("km/h", "°C", "km", "L"):
                num, unit = ctx.units.quantity(v["value"], v["unit"])  # in the user's units
            elif v["unit"] == "bool":  # the MIL
                num, unit = {True: _("lit"), False: _("off"), None: "-"}[v["value"]], ""
            else:
                num, unit = render.number(v["value"]), v["unit"]
            click.echo(f"    {name:<28} {num:>10} {unit:<6} {fmt_ms(v['time_ms'])}")
        if d.get("service"):
            first, *rest = service_lines(d["service"], ctx.units)
            click.echo("  " + _("service: {line}").format(line=first))
            for line in rest:
                click.echo("  " + line)
    for t in info.get("forwarding", []):
        click.echo(f"forward {t['target']}: backlog {t['pending']}  dead letters {t['dead']}  dropped {t['dropped']}"
                   f"  last success {fmt_ms(t.get('last_success_ms'))}  last error {t.get('last_error') or '-'}")


@cli.command()
@click.option("--device")
@click.option("--signal", "signal", default="speed", show_default=True, help="Signal name or PID (0x0D).")
@click.option("--since", help="ISO time or age (2h, 7d).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), help="The newest this many.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines.")
@click.pass_obj
def samples(ctx: Ctx, device: str | None, signal: str, since: str | None, limit: int, as_json: bool) -> None:
    """Stored samples of one signal: the newest LIMIT, oldest first (~ marks an estimated time)."""
    from obdsync.decode import display_value, signal_by_name, signal_name

    try:
        sig = signal_by_name(signal)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None

    async def go(store: Store) -> tuple[str, list[SampleRow], str]:
        sts = await store.status()
        dev = resolve_device(sts, device)
        unit = next((u for s in sts if s.device == dev for k, (_t, _v, u) in s.last_values.items() if k == sig), "")
        return dev, await store.samples(dev, sig, since_ms=parse_when(since), limit=limit, newest=True), unit

    dev, rows, unit = with_store(ctx, go)
    name = signal_name(sig)
    if as_json:
        render.json_lines({"time": iso_ms(r.time_ms), "time_ms": r.time_ms, "device": dev, "signal": name,
                           "value": display_value(sig, r.value, unit), "unit": unit, "raw": r.raw.hex(),
                           "approx": r.approx} for r in rows)
        return
    click.echo(f"{name}: {len(rows)} samples" + (f" (the newest {limit})" if len(rows) == limit else ""))
    render.table(["TIME", unit or "VALUE"],
                 [(fmt_ms(r.time_ms) + ("~" if r.approx else ""),
                   r.raw.hex() if r.value is None else render.number(display_value(sig, r.value, unit)))
                  for r in rows], right=[unit or "VALUE"])


@cli.command()
@click.option("--device")
@click.option("--since", help="ISO time or age (2h, 7d).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines.")
@click.pass_obj
def events(ctx: Ctx, device: str | None, since: str | None, as_json: bool) -> None:
    """Events: low fuel, refuel, fuel drop, trouble codes, overheating, battery, service."""

    async def go(store: Store) -> list[StoredEvent]:
        return await store.events(None if device is None else resolve_device(await store.status(), device),
                                  since_ms=parse_when(since))

    evs = with_store(ctx, go)
    if as_json:
        render.json_lines({"id": e.id, "device": e.device, "type": e.type, "severity": e.severity,
                           "opened": iso_ms(e.opened_ms), "cleared": iso_ms(e.cleared_ms),
                           "opened_ms": e.opened_ms, "cleared_ms": e.cleared_ms, "values": e.values,
                           "message": e.message} for e in evs)
        return
    from obdsync.i18n import _
    from obdsync.messages import line

    if not evs:
        click.echo(_("no events"))
        return
    # The same rendering as notifications: the user's language and units (the stored
    # English message where an event type has no text of its own).
    units, lang = ctx.units, i18n.current()
    render.table([_("OPENED"), _("SEVERITY"), _("TYPE"), _("MESSAGE"), _("CLEARED")],
                 [(fmt_ms(e.opened_ms), _(e.severity), e.type,
                   line({"type": e.type, "severity": e.severity, "values": e.values, "message": e.message}, units,
                        lang), fmt_ms(e.cleared_ms) if e.cleared_ms else "")
                  for e in evs])


@cli.command()
@click.option("--device")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--since", help="ISO time or age.")
@click.option("--until", help="ISO time or age.")
@click.option("--output", "-o", type=click.File("w"), default="-")
@click.pass_obj
def export(ctx: Ctx, device: str | None, fmt: str, since: str | None, until: str | None, output: Any) -> None:
    """Export samples as CSV or JSON Lines (decoded values with units, times ISO 8601 with the zone)."""
    from obdsync.decode import display_value, signal_name

    async def go(store: Store) -> int:
        sts = await store.status()
        dev = resolve_device(sts, device)
        # The unit each signal was stored with (a fresh Decoder knows none before it decodes).
        units = {sig: unit for s in sts if s.device == dev for sig, (_t, _v, unit) in s.last_values.items()}
        vin = next((s.vin for s in sts if s.device == dev), None) or ""
        n = 0
        writer = csv.writer(output) if fmt == "csv" else None
        if writer:
            writer.writerow(["time", "time_ms", "device", "vin", "signal", "value", "unit", "raw", "approx"])
        async for r in store.export(dev, since_ms=parse_when(since), until_ms=parse_when(until)):
            name = signal_name(r.channel)
            unit = units.get(r.channel, "")
            value = display_value(r.channel, r.value, unit)
            if writer:
                writer.writerow([iso_ms(r.time_ms), r.time_ms, dev, vin, name, "" if value is None else value,
                                 unit, r.raw.hex(), int(r.approx)])
            else:
                output.write(json.dumps({"time": iso_ms(r.time_ms), "time_ms": r.time_ms, "device": dev,
                                         "vin": vin or None, "signal": name, "value": value,
                                         "unit": unit, "raw": r.raw.hex(), "approx": r.approx},
                                        ensure_ascii=False) + "\n")
            n += 1
        return n

    try:
        n = with_store(ctx, go)
        output.flush()
    except OSError as e:
        # A full disk (ENOSPC) or a closed pipe: the file is incomplete, and must not look done.
        name = getattr(output, "name", "the output")
        raise click.ClickException(f"writing {name} failed: {e.strerror or e}; the export is incomplete") from None
    click.echo(f"exported {n} samples", err=True)


@cli.command()
@click.option("--days", type=click.FloatRange(min=0), help="Keep raw samples this many days, 0 or more"
              " (default: store.retention_days).")
@click.pass_obj
def vacuum(ctx: Ctx, days: float | None) -> None:
    """Apply retention to raw samples (events and trips stay) and compact the file."""
    keep = ctx.config.store.retention_days if days is None else days

    async def go(store: Store) -> int:
        n = await store.retain(keep)
        await store.vacuum()
        return n

    n = with_store(ctx, go)
    if keep <= 0:
        click.echo(f"retention off (0 days keeps every sample); {ctx.db} compacted")
    else:
        click.echo(f"deleted {n} samples older than {keep:g} days; {ctx.db} compacted")


# ---- trips, replay, service --------------------------------------------------------------


@cli.group(invoke_without_command=True)
@click.option("--device")
@click.option("--since", help="ISO time or age (7d).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines.")
@click.pass_context
def trips(click_ctx: click.Context, device: str | None, since: str | None, as_json: bool) -> None:
    """Trips: distance, time, fuel and L/100 km, hard braking (`trips show ID` for one)."""
    if click_ctx.invoked_subcommand is not None:
        return
    ctx: Ctx = click_ctx.obj

    async def go(store: Store) -> list[StoredTrip]:
        dev = None if device is None else resolve_device(await store.status(), device)
        return await store.trips(dev, since_ms=parse_when(since))

    from obdsync.i18n import _

    rows = with_store(ctx, go)
    if as_json:
        render.json_lines(trip_json(t) for t in rows)
        return
    if not rows:
        click.echo(_("no trips yet"))
        return
    u = ctx.units
    render.table(
        [_("TRIP"), _("STARTED"), _("DISTANCE"), _("MIN"), _("FUEL"), _("ECONOMY"), _("HARD BRAKES"), _("SCORE")],
        [(t.id[:12], fmt_ms(t.started_ms), u.distance(t.distance_km or 0), f"{t.values.get('duration_s', 0) / 60:.1f}",
          u.volume(t.fuel_l) if t.fuel_l else "-",
          u.economy(t.values["l_per_100km"]) if t.values.get("l_per_100km") else "-",
          t.values.get("hard_brakes", 0), t.values["score"]["score"] if t.values.get("score") else "-")
         for t in rows], right=[_("DISTANCE"), _("MIN"), _("FUEL"), _("ECONOMY"), _("HARD BRAKES"), _("SCORE")])


def trip_json(t: StoredTrip) -> dict[str, Any]:
    return {"id": t.id, "device": t.device, "started": iso_ms(t.started_ms), "ended": iso_ms(t.ended_ms),
            "started_ms": t.started_ms, "ended_ms": t.ended_ms,
            "distance_km": None if t.distance_km is None else round(t.distance_km, 2),
            "fuel_l": None if t.fuel_l is None else round(t.fuel_l, 2), **t.values}


@trips.command("show")
@click.argument("trip_id")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG of speed and fuel.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def trips_show(ctx: Ctx, trip_id: str, plot: Path | None, as_json: bool) -> None:
    """One trip with a sparkline of its speed and fuel level."""
    from obdsync import plot as plotting

    async def go(store: Store) -> tuple[StoredTrip, list[float], list[float]]:
        found = [t for t in await store.trips(limit=100000) if t.id.startswith(trip_id)]
        if len(found) != 1:
            raise click.ClickException(f"no single trip matches {trip_id!r}")
        t = found[0]
        # A trip without an end (the store allows one; the dashboard shows it to now): up to now.
        until = (t.ended_ms if t.ended_ms is not None else int(dt.datetime.now().timestamp() * 1000)) + 1
        speed = await store.samples(t.device, 0x0D, since_ms=t.started_ms, until_ms=until, limit=1000000)
        fuel = await store.samples(t.device, 0x2F, since_ms=t.started_ms, until_ms=until, limit=1000000)
        return t, [r.value for r in speed if r.value is not None], [r.value for r in fuel if r.value is not None]

    from obdsync.i18n import _

    t, speed, fuel = with_store(ctx, go)
    v = t.values
    if as_json:
        click.echo(json.dumps(trip_json(t), indent=2, ensure_ascii=False))
        return
    u = ctx.units
    click.echo(_("trip {id}  {start} → {end}").format(id=t.id, start=fmt_ms(t.started_ms), end=fmt_ms(t.ended_ms)))
    click.echo("  " + _("{distance} in {min} min (idle {idle}), avg {avg}, max {max}").format(
        distance=" ".join(u.quantity(t.distance_km or 0, "km")), min=f"{v.get('duration_s', 0) / 60:.1f}",
        idle=f"{v.get('idle_s', 0) / 60:.1f}", avg=u.speed(v.get("avg_speed_kmh", 0)),
        max=u.speed(v.get("max_speed_kmh", 0))))
    l100 = v.get("l_per_100km")
    click.echo("  " + _("fuel {volume}").format(volume=u.volume(t.fuel_l or 0))
               + (" " + _("({economy}, from {source})").format(economy=u.economy(l100), source=v.get("fuel_source"))
                  if l100 else "")
               + "; " + _("hard brakes {n}, hard accelerations {m}").format(n=v.get("hard_brakes", 0),
                                                                           m=v.get("hard_accels", 0)))
    if v.get("score"):
        from obdsync.driving import score_lines

        for line in score_lines(v["score"], ctx.units, ctx.config):
            click.echo("  " + line)
    if speed:
        click.echo("  " + _("speed {line}  max {max}").format(line=plotting.sparkline(speed), max=u.speed(max(speed))))
    if fuel:
        click.echo(f"  fuel  {plotting.sparkline(fuel)}  {fuel[0]:.0f} → {fuel[-1]:.0f} %")
    if plot:
        plot.write_bytes(plotting.png([(speed, (30, 90, 200)), (fuel, (220, 120, 20))]))
        click.echo(f"  plot written to {plot} (speed above, fuel level below)")


@trips.command("week")
@click.option("--device")
@click.option("--weeks", default=8, show_default=True, help="How many weeks back.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def trips_week(ctx: Ctx, device: str | None, weeks: int, as_json: bool) -> None:
    """The driving score week by week (distance-weighted), with the trend."""
    from obdsync.driving import week_lines
    from obdsync.rules.score import weekly

    async def go(store: Store) -> list[StoredTrip]:
        dev = None if device is None else resolve_device(await store.status(), device)
        since = int((dt.datetime.now() - dt.timedelta(weeks=weeks)).timestamp() * 1000)
        return await store.trips(dev, since_ms=since, limit=100000)

    summary = weekly(with_store(ctx, go))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for line in week_lines(summary, ctx.units):
        click.echo(line)


@cli.command()
@click.option("--device")
@click.option("--since-seq", type=int, default=-1, help="Start after this record (default: all history).")
@click.pass_obj
def replay(ctx: Ctx, device: str | None, since_seq: int) -> None:
    """Re-derive events and trips from the stored samples (same ids as live)."""
    from obdsync.pipeline import replay as do_replay

    async def go(store: Store) -> tuple[str, int]:
        dev = resolve_device(await store.status(), device)
        changes = await do_replay(store, ctx.config, dev, since_seq=since_seq)
        return dev, len(changes)

    dev, n = with_store(ctx, go)
    click.echo(f"replayed dongle {dev}: {n} event changes derived (stored events with the same id were kept)")


@cli.group()
def service() -> None:
    """The service schedule: items due by distance and time, whichever comes first."""


def _add_service(ctx: Ctx, device: str | None, km: float | None, at: str | None, note: str,
                 need_km: bool = False) -> tuple[str, int]:
    """Store a service or baseline after checking it against what is known: no date in
    the future, no odometer reading below an earlier one (the odometer now included)."""
    from obdsync.pipeline import Pipeline

    async def go(store: Store) -> tuple[str, int]:
        dev = resolve_device(await store.status(), device)
        now = int(dt.datetime.now().timestamp() * 1000)
        when = parse_when(at) or now
        engine = await Pipeline(store, ctx.config).service_engine(dev)
        try:
            engine.service.check_entry(when, km, now)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--km" if "km" in str(e) else "--at") from None
        if need_km and km is None and engine.service.odo is None:
            raise click.UsageError("the odometer is not known yet: give --km KM (or set it first with"
                                   " `obdsync service baseline KM`)")
        await store.add_service(dev, when, km, note)
        return dev, when

    return with_store(ctx, go)


@service.command("baseline")
@click.argument("odometer_km", type=click.FloatRange(0, 5_000_000))
@click.option("--device")
@click.option("--at", help="When you read it (default: now).")
@click.pass_obj
def service_baseline(ctx: Ctx, odometer_km: float, device: str | None, at: str | None) -> None:
    """The odometer reading now (cars without an odometer PID count from it)."""
    from obdsync.pipeline import NOTE_BASELINE

    dev, when = _add_service(ctx, device, odometer_km, at, NOTE_BASELINE)
    click.echo(f"dongle {dev}: odometer {odometer_km:g} km at {fmt_ms(when)}")


@service.command("done")
@click.argument("items", nargs=-1, required=True, metavar="ITEM... | all")
@click.option("--km", type=click.FloatRange(0, 5_000_000), help="Odometer at the service (default: estimated).")
@click.option("--device")
@click.option("--at", help="When (default: now).")
@click.pass_obj
def service_done(ctx: Ctx, items: tuple[str, ...], km: float | None, device: str | None, at: str | None) -> None:
    """Record a service of ITEMs (`all`: the whole schedule); their intervals restart."""
    from obdsync.pipeline import service_note
    from obdsync.rules.service import label

    names = [i.name for i in ctx.config.service.schedule]
    chosen = None if "all" in items else list(dict.fromkeys(items))
    unknown = [i for i in chosen or () if i not in names]
    if unknown:
        raise click.BadParameter(f"unknown item {', '.join(unknown)}; the schedule has: {', '.join(names)}, all",
                                 param_hint="ITEM")
    dev, when = _add_service(ctx, device, km, at, service_note(chosen), need_km=True)
    what = ", ".join(label(n) for n in chosen or names)
    click.echo(f"dongle {dev}: {what} done at {fmt_ms(when)}" + (f", {km:g} km" if km is not None else ""))


@service.command("history")
@click.option("--device")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines.")
@click.pass_obj
def service_history(ctx: Ctx, device: str | None, as_json: bool) -> None:
    """Services and odometer baselines entered, newest first."""
    from obdsync.pipeline import NOTE_BASELINE, NOTE_FUEL_PRICE, NOTE_SERVICE
    from obdsync.rules.service import label

    async def go(store: Store) -> list[tuple[int, int, float | None, str]]:
        return await store.services(resolve_device(await store.status(), device))

    rows = with_store(ctx, go)
    if as_json:
        render.json_lines({"at": iso_ms(when), "at_ms": when, "km": km,
                           "kind": "baseline" if note == NOTE_BASELINE else "service",
                           "items": note[len(NOTE_SERVICE) + 1:].split(",") if note.startswith(NOTE_SERVICE + ":")
                           else ([] if note == NOTE_BASELINE else ["all"])} for _sid, when, km, note in rows)
        return
    from obdsync.i18n import _

    if not rows:
        click.echo(_("no service or baseline entered yet"))
    baseline, done, every = _("odometer baseline"), _("service"), _("every item")
    for _sid, when, km, note in rows:
        at = "" if km is None else f"{km:g} km"
        if note == NOTE_FUEL_PRICE:
            continue  # `obdsync fuel price`: a user input kept beside the services
        if note == NOTE_BASELINE:
            click.echo(f"{fmt_ms(when)}  {baseline}  {at}")
        elif note.startswith(NOTE_SERVICE + ":"):
            click.echo(f"{fmt_ms(when)}  {done}  {at:>10}  " + ", ".join(_(label(n)) for n in note[8:].split(",")))
        else:
            click.echo(f"{fmt_ms(when)}  {done}  {at:>10}  {every}")


@service.command("show")
@click.option("--device")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def service_show(ctx: Ctx, device: str | None, as_json: bool) -> None:
    """Every item: when it was last done, km and days to due."""
    from obdsync.status import service_state

    async def go(store: Store) -> dict[str, Any]:
        return await service_state(store, ctx.config, resolve_device(await store.status(), device))

    svc = with_store(ctx, go)
    if as_json:
        click.echo(json.dumps(svc, indent=2))
        return
    for line in service_lines(svc, ctx.units):
        click.echo(line)


def service_lines(svc: dict[str, Any], units: Any) -> list[str]:
    """The service schedule as text (`status`, `service show`), in the user's units."""
    from obdsync.i18n import _
    from obdsync.rules.service import SOURCES

    if "unavailable" in svc:
        return [_("service schedule unavailable: {why}").format(why=svc["unavailable"])]
    odo = svc.get("odometer_km")
    out = [_("odometer {distance}, from {source}").format(distance=units.distance(odo),
                                                          source=_(SOURCES[svc["distance_source"]]))
           if odo is not None else
           _("odometer unknown: the car has no odometer PID; set it with `obdsync service baseline KM`")]
    status = {"ok": _("OK"), "soon": _("SOON"), "due": _("DUE"), "unknown": _("UNKNOWN")}
    for it in svc.get("items", []):
        parts = []
        if it["km_to_due"] is not None:
            k = it["km_to_due"]
            parts.append(_("{distance} to due").format(distance=units.distance(k)) if k >= 0 else
                         _("{distance} overdue").format(distance=units.distance(-k)))
        elif it["interval_km"] is not None:
            parts.append(_("distance unknown"))
        if it["days_to_due"] is not None:
            d = it["days_to_due"]
            parts.append(_("{days} days to due").format(days=d) if d >= 0 else
                         _("{days} days overdue").format(days=-d))
        every = " / ".join(x for x in (units.distance(it["interval_km"]) if it["interval_km"] else "",
                                        _("{n} months").format(n=it["interval_months"]) if it["interval_months"]
                                        else "") if x)
        day = fmt_ms(it["last_ms"])[:10] if it["last_ms"] is not None else ""
        last = "-" if not day else (_("done {date}") if it["serviced"] else _("counted from {date}")).format(date=day)
        out.append(f"  {_(it['label']):<15} {status[it['status']]:<7} {', '.join(parts) or '-':<32} "
                   + _("every {interval}").format(interval=every) + f"  {last}")
    return out


# ---- forwarding ---------------------------------------------------------------------------


@cli.group()
def outbox() -> None:
    """Events waiting to be forwarded, and dead letters."""


@outbox.command("retry")
@click.option("--target", help="One target (default: all).")
@click.pass_obj
def outbox_retry(ctx: Ctx, target: str | None) -> None:
    """Make dead letters and backed-off entries due now."""
    from obdsync.forward import outbox_retry as retry

    n = with_store(ctx, lambda store: retry(store, target))
    click.echo(f"{n} entries due now (a running daemon sends them within 30 s)")


@outbox.command("purge")
@click.option("--target", help="One target (default: all).")
@click.option("--pending", is_flag=True, help="Also drop entries not delivered yet (they are lost).")
@click.option("--yes", is_flag=True)
@click.pass_obj
def outbox_purge(ctx: Ctx, target: str | None, pending: bool, yes: bool) -> None:
    """Delete dead letters (and with --pending, undelivered entries)."""
    from obdsync.forward import outbox_purge as purge

    states = ("dead", "pending") if pending else ("dead",)
    if pending and not yes:
        click.confirm("Undelivered events will never reach the platform. Purge them?", abort=True)
    n = with_store(ctx, lambda store: purge(store, target, states=states))
    click.echo(f"purged {n} entries")


@outbox.command("dead")
@click.option("--target")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines.")
@click.pass_obj
def outbox_dead(ctx: Ctx, target: str | None, as_json: bool) -> None:
    """Entries a target refused, with the reason."""
    from obdsync.forward import dead_letters

    rows = with_store(ctx, lambda store: dead_letters(store, target))
    if as_json:
        render.json_lines({"id": d.id, "target": d.target, "device": d.device, "event_id": d.event_id,
                           "created": iso_ms(d.created_ms), "dead": iso_ms(d.dead_ms), "created_ms": d.created_ms,
                           "dead_ms": d.dead_ms, "attempts": d.attempts, "reason": d.reason} for d in rows)
        return
    if not rows:
        click.echo("no dead letters")
        return
    render.table(["ID", "TARGET", "REFUSED", "DEVICE", "EVENT", "ATTEMPTS", "REASON"],
                 [(d.id, d.target, fmt_ms(d.dead_ms), d.device, d.event_id or "-", d.attempts, d.reason)
                  for d in rows], right=["ID", "ATTEMPTS"])


# ---- the health check --------------------------------------------------------------------


@cli.command("check")
@click.option("--device")
@click.option("--json", "as_json", is_flag=True, help="The findings as data.")
@click.option("--live", is_flag=True, help="Also ask the dongle now: codes, protocol, supported PIDs"
              " (not while `obdsync run` holds it; then what the daemon knows is used).")
@click.pass_obj
def check(ctx: Ctx, device: str | None, as_json: bool, live: bool) -> None:
    """Vehicle health check: trouble codes explained, readiness, fuel trims, cooling, battery."""
    from obdsync import health
    from obdsync.status import live_view

    cfg = ctx.config  # the language and units first
    now: health.Live | None = None
    if live:
        now = _live_check(ctx, device)

    async def go(store: Store) -> Any:
        dev = resolve_device(await store.status(), device)
        seen = now
        if seen is None:
            d = (await live_view()).get(dev) or {}  # a running daemon's knowledge of the dongle
            if d.get("elm_protocol") or d.get("supported"):
                seen = health.Live(protocol=health.Live.protocol_name(d.get("elm_protocol")),
                                   supported=health.Live.pids_of(bytes.fromhex(d["supported"]))
                                   if d.get("supported") else None, fresh=False)
        if now is not None and now.freeze and "error" not in now.freeze:
            # the frames just read are kept with the codes: a later check without the car shows them
            import time

            read_ms = int(time.time() * 1000)
            now.freeze = {code: {**f, "read_ms": read_ms} for code, f in now.freeze.items()}
            await store.put_freeze_frames(dev, now.freeze, read_ms)
        return await health.check(store, cfg, dev, live=seen)

    report = with_store(ctx, go)
    if as_json:
        click.echo(json.dumps(report.json(), indent=2, ensure_ascii=False))
    else:
        for line in health.render(report):
            click.echo(line)
    if report.worst == health.CRITICAL:
        sys.exit(2)  # scripts can tell "go to a garage now" from "fine"


def _live_check(ctx: Ctx, device: str | None) -> Any:
    from obdsync import health
    from obdsync.link import CommandError

    try:
        got = dongle_request(ctx, device, "check.live")
    except CommandError as e:
        raise click.ClickException(f"the dongle could not read the car: {e}") from None
    return health.Live(dtcs={m: codes for m, codes, *_ecus in got["dtcs"]},
                       ecus={m: ecus for m, _codes, ecus in got["dtcs"]},
                       protocol=health.Live.protocol_name(got["elm_protocol"]),
                       supported=health.Live.pids_of(bytes.fromhex(got["supported"])) if got["supported"] else None,
                       freeze=got.get("freeze") or {})


# ---- trouble codes -----------------------------------------------------------------------


@cli.group()
def dtc() -> None:
    """Diagnostic trouble codes (check-engine light)."""


@dtc.command("read")
@click.option("--device")
@click.option("--live", is_flag=True, help="Ask the dongle now instead of showing the last reads.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one per mode.")
@click.pass_obj
def dtc_read(ctx: Ctx, device: str | None, live: bool, as_json: bool) -> None:
    """Stored, pending and permanent codes with their descriptions."""
    from obdsync.decode import describe_dtc

    names = {3: "stored", 7: "pending", 10: "permanent"}
    reads: list[tuple[int | None, int, list[str], list[str]]]  # (read at, mode, codes, their ECUs)
    if live:
        from obdsync.link import CommandError

        try:
            reads = [(None, m, codes, ecus) for m, codes, ecus in dongle_request(ctx, device, "dtc.read")]
        except CommandError as e:
            raise click.ClickException(f"the dongle could not read the codes: {e}") from None
    else:
        async def stored(store: Store) -> list[tuple[int | None, int, list[str], list[str]]]:
            dev = resolve_device(await store.status(), device)
            latest: dict[int, tuple[int | None, int, list[str], list[str]]] = {}
            for t, mode, codes, _ in await store.dtcs(dev, limit=50):
                latest.setdefault(mode, (t, mode, codes, [""] * len(codes)))
            return list(latest.values())

        reads = with_store(ctx, stored)
    if as_json:
        render.json_lines({"mode": names.get(mode, mode), "read": iso_ms(t), "read_ms": t,
                           "codes": [{"code": c, "description": describe_dtc(c), **({"ecu": e} if e else {})}
                                     for c, e in zip(codes, ecus, strict=True)]}
                          for t, mode, codes, ecus in sorted(reads, key=lambda r: r[1]))
        return
    from obdsync.i18n import _

    if not reads:
        click.echo(_("no trouble codes read yet (they are read when the MIL or code count changes and at trip start)"))
    for t, mode, codes, ecus in sorted(reads, key=lambda r: r[1]):
        when = "" if t is None else " " + _("(read {when})").format(when=fmt_ms(t))
        none = _("none") if not codes else ""
        click.echo(f"{_(names.get(mode, str(mode)))}{when}: {none}")
        for c, ecu in zip(codes, ecus, strict=True):
            click.echo(f"  {c}  {describe_dtc(c)}" + (f"  [{ecu}]" if ecu else ""))


@dtc.command("clear")
@click.option("--device")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def dtc_clear(ctx: Ctx, device: str | None, yes: bool) -> None:
    """Clear trouble codes (mode 04). The dongle asks the car for its speed first and refuses
    unless it answers 0 km/h."""
    from obdsync.link import CommandError
    from protocol import control

    if not yes:
        click.confirm("Clearing codes also resets the emissions readiness monitors. Clear now?", abort=True)

    try:
        dongle_request(ctx, device, "dtc.clear")
    except CommandError as e:
        if e.status == control.REFUSED_MOVING:
            raise click.ClickException("the dongle refused: the vehicle is moving (or did not say its speed when"
                                       " asked). Stop the car, ignition on, and try again.") from None
        raise click.ClickException(f"the dongle refused: {e}") from None
    click.echo("trouble codes cleared")


@cli.command()
@click.option("--device")
@click.option("--live", is_flag=True, help="Ask the car now (mode 09) instead of showing the stored VIN.")
@click.pass_obj
def vin(ctx: Ctx, device: str | None, live: bool) -> None:
    """The vehicle identification number and what it says about the car."""
    from obdsync.vin import VinError, decode

    if live:
        from obdsync.link import CommandError

        try:
            number = dongle_request(ctx, device, "vin.read")
        except (CommandError, VinError) as e:
            raise click.ClickException(f"the car did not give its VIN: {e}") from None
    else:
        async def stored(store: Store) -> str | None:
            sts = await store.status()
            dev = resolve_device(sts, device)
            return next((s.vin for s in sts if s.device == dev), None)

        number = with_store(ctx, stored)
        if not number:
            raise click.ClickException("no VIN stored yet (the dongle reports it once the car answers;"
                                       " `obdsync vin --live` asks now)")
    v = decode(number)
    click.echo(f"{number}  {v.title}  ({v.country or '?'}, check digit {v.check_digit})")


@cli.group()
def plan() -> None:
    """The dongle's poll plan (how often it reads each signal)."""


@plan.command("set")
@click.option("--device")
@click.pass_obj
def plan_set(ctx: Ctx, device: str | None) -> None:
    """Send the config's [poll] intervals to the dongle now (a running daemon keeps them
    for its next connections)."""
    from obdsync.daemon import plan_from_config
    from obdsync.link import CommandError

    rows = plan_from_config(ctx.config)
    if not rows:
        raise click.ClickException("the config has no [poll] section: the dongle's own plan stays")
    try:
        n = dongle_request(ctx, device, "plan.set", rows=[list(r) for r in rows])
    except CommandError as e:
        raise click.ClickException(f"the dongle refused the plan: {e}") from None
    click.echo(f"poll plan sent: {n} channel(s)")


def paired_one(device: str | None) -> devices.Paired:
    """The one paired dongle `device` names (id, its tail, or address), or the only one."""
    paired = devices.load()
    if device:
        paired = [p for p in paired if p.device.endswith(device.lower()) or p.address.lower() == device.lower()]
    if len(paired) != 1:
        raise click.ClickException("name one paired dongle with --device" if paired else "no paired dongle")
    return paired[0]


def dongle_request(ctx: Ctx, device: str | None, op: str, **args: Any) -> Any:
    """Run the dongle operation `op` (obdsync.ops): through the running daemon's control
    door when one runs (it holds the dongle), else on a short connection of our own.
    Either way a refusal by the dongle raises CommandError for the caller to explain;
    every other failure is a ClickException."""
    from obdsync import door
    from obdsync.link import CommandError, LinkError

    try:
        p = paired_one(device)
    except click.ClickException:
        from obdsync.direct.runner import adapter_request

        return adapter_request(device, op, args)  # an ELM327 adapter's device, else this error again
    try:
        return run_async(door.call(op, p.device, args))
    except (door.NoDaemon, door.NotManaged):
        pass  # nobody holds the dongle: ask it ourselves
    except CommandError:
        raise
    except (LinkError, door.DoorError) as e:
        raise click.ClickException(str(e)) from None
    return _direct(ctx, p, op, args)


def _direct(ctx: Ctx, p: devices.Paired, op: str, args: dict[str, Any]) -> Any:
    from obdsync import ops
    from obdsync.link import CommandError, DongleLink, LinkError

    try:
        secret = devices.secret_of(p.device).reveal()
    except SecretError as e:
        raise click.ClickException(str(e)) from None
    client_backend, _ = ctx.backends()

    async def go() -> Any:
        async with DongleLink(p.address, secret, backend=client_backend) as link:
            return await ops.OPS[op](link, **args)

    try:
        return run_async(go())
    except CommandError:
        raise  # the dongle answered: its refusal is the caller's to explain, not a busy link
    except LinkError as e:
        raise click.ClickException(f"{e} (is another phone connected to it? one at a time)") from None


# ---- config --------------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """The configuration file."""


@config.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def config_check(ctx: Ctx, file: Path | None) -> None:
    """Validate a config file (default: the one in use); exits 1 on errors."""
    explicit = file or ctx.config_path
    path = explicit or paths.config_path()
    if explicit is None and not path.exists():
        click.echo(f"{path}: no file: all defaults")
        return
    try:
        cfg = load_config(path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{cfg.source or path}: OK")
    for t in cfg.forward.mqtt:
        click.echo(f"  forward {t.name}: MQTT {'TLS ' if t.tls else ''}{t.host}:{t.port}"
                   + (f", Home Assistant discovery under {t.discovery_prefix}/" if t.ha_discovery else ""))
    for w in cfg.forward.webhook:
        click.echo(f"  forward {w.name}: webhook {w.url}" + (", signed" if w.secret else ", NOT signed"))
    if cfg.forward.notify:
        from obdsync.forward.notify import describe

        for n in cfg.forward.notify:
            d = describe(n)
            click.echo(f"  notify {d['name']}: {d['service']}, {d['min_severity']} and up"
                       + (f", quiet {n.quiet_hours[0] // 60:02d}:{n.quiet_hours[0] % 60:02d}-"
                          f"{n.quiet_hours[1] // 60:02d}:{n.quiet_hours[1] % 60:02d}" if n.quiet_hours else ""))
    for dev in sorted(cfg.per_device):
        click.echo(f"  dongle {dev}: its own vehicle settings ({cfg.per_device[dev].vehicle.tank_litres:g} L tank,"
                   f" {cfg.per_device[dev].vehicle.fuel_type})")


@config.command("defaults")
def config_defaults() -> None:
    """Every option with its default, as a config file would set it."""
    from obdsync.config import defaults

    for section, options in defaults().items():
        click.echo(f"[{section}]")
        for key, value in options.items():
            if value is None:
                click.echo(f"# {key} =  (unset by default)")
            elif isinstance(value, (bool, int, float, str)):
                click.echo(f"{key} = {json.dumps(value)}")  # a JSON scalar is the TOML one
            else:
                click.echo(f"# {key}: a table, see README.md")
        click.echo("")


def main() -> None:
    cli(prog_name="obdsync")


if __name__ == "__main__":
    main()
