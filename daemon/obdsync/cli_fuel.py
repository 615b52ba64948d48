"""``obdsync fuel price`` and ``obdsync import``: the fuel price per litre as the user
enters it, and a recorded drive from a CSV log (obdsync/csvimport.py). Loaded lazily
by the top-level group (cli.LazyGroup), like ``hil``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from obdsync.cli import Ctx, fmt_ms, parse_when, resolve_device, with_store


@click.group()
def fuel() -> None:
    """Fuel: the price per litre that refuel and trip costs use."""


@fuel.command("price")
@click.argument("per_litre", type=click.FloatRange(0, 10_000, min_open=True))
@click.option("--device")
@click.option("--at", help="From when (default: now; give the refuel's time to cost that refuel).")
@click.pass_obj
def fuel_price(ctx: Ctx, per_litre: float, device: str | None, at: str | None) -> None:
    """The price per litre from now (or --at) on: refuels and trips after it carry their
    cost (`obdsync replay` re-costs the past). Overrides fuel.price_per_litre."""
    from obdsync.pipeline import NOTE_FUEL_PRICE

    async def go(store: Any) -> tuple[str, int]:
        dev = resolve_device(await store.status(), device)
        when = parse_when(at) or int(dt.datetime.now().timestamp() * 1000)
        # a user input at its place in time, fed to the rules like a service record
        await store.add_service(dev, when, per_litre, NOTE_FUEL_PRICE)
        return dev, when

    dev, when = with_store(ctx, go)
    click.echo(f"dongle {dev}: fuel at {per_litre:g} per litre from {fmt_ms(when)}")


@click.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--device", help="Device id to store it as (16 hex digits; default: one of its own, from the file).")
@click.pass_obj
def import_csv(ctx: Ctx, csv_file: Path, device: str | None) -> None:
    """Store a recorded drive from a CSV log as a device of its own (then `obdsync
    replay --device ID`). Columns: a time (ISO 8601 or Unix s/ms), signals by
    python-OBD name (SPEED, RPM, FUEL_LEVEL, …) or PID (0x2F); or Torque Pro's CSV."""
    from obdsync.csvimport import CsvFormatError, Parsed, load
    from obdsync.csvimport import import_csv as do_import
    from obdsync.paths import normalize_device_id

    if device is not None:
        try:
            device = normalize_device_id(device)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--device") from None

    try:
        loaded = load(csv_file)  # a bad file is refused before any database is touched
    except CsvFormatError as e:
        raise click.ClickException(f"{csv_file}: {e}") from None

    async def go(store: Any) -> tuple[str, int, Parsed]:
        try:
            return await do_import(store, csv_file, device, loaded)
        except CsvFormatError as e:
            raise click.ClickException(f"{csv_file}: {e}") from None

    dev, n, parsed = with_store(ctx, go, create=True)  # an import is a writer: it may start the database
    first, last = parsed.rows[0][0], parsed.rows[-1][0]
    click.echo(f"{csv_file.name}: {len(parsed.rows)} rows from {fmt_ms(first)} to {fmt_ms(last)} -> device {dev}"
               f" ({n} records stored)")
    click.echo("  signals: " + ", ".join(f"{c} (0x{s:02X})" for c, s in parsed.columns.items()))
    if parsed.ignored:
        click.echo("  ignored columns: " + ", ".join(parsed.ignored))
    click.echo(f"  now: obdsync replay --device {dev}")
