"""`obdsync hil …`: the HIL kit's commands, attached to the CLI lazily so the
daemon's run-time path never imports the simulation."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # imported where used: `obdsync --help` loads none of the simulation
    from hil.scenario import Scenario
    from obdsync.config import Config


@click.group()
def hil() -> None:
    """Hardware-in-the-loop: simulated drives against the real firmware."""


@hil.command("list")
def list_scenarios() -> None:
    """The built-in scenarios."""
    from hil.scenario import load, names

    for n in names():
        sc = load(n)
        first = sc.description.strip().splitlines()[0] if sc.description else ""
        click.echo(f"{n:<16} {sc.total_real_s:6.0f} s real  {first}")


def _scenario(name: str) -> Scenario:
    from hil.scenario import ScenarioError, load

    try:
        return load(name)
    except ScenarioError as e:  # names the shipped scenarios
        raise click.ClickException(str(e)) from None


def _config(sc: Scenario, config: Path | None) -> Config:
    """The daemon's config for a simulated drive: the file's (forwarding, notifications,
    rules) with the simulated car's tank and fuel type."""
    import dataclasses

    from hil.runner import scenario_config
    from obdsync.config import ConfigError, load_config

    ctx = click.get_current_context().find_root().obj
    path = config or getattr(ctx, "config_path", None)
    if path is None:
        return scenario_config(sc)
    try:
        cfg = load_config(path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    return dataclasses.replace(cfg, vehicle=scenario_config(sc).vehicle)


_CONFIG = click.option("--config", "config", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                       help="A config file to run the daemon with (forwarding, notifications, thresholds);"
                            " the simulated car brings its own tank and fuel type.")


@hil.command("adapters")
def list_adapters() -> None:
    """The adapter/ECU profiles (`hil run --adapter NAME`)."""
    from hil.adapter import all_profiles

    for p in all_profiles():
        click.echo(f"{p.name:<18} {p.protocol:<10} {p.family_name:<14} {p.description}")


@hil.command("run")
@click.argument("scenario")
@click.option("--adapter", metavar="PROFILE", help="Adapter/ECU profile (`obdsync hil adapters`; default: a "
              "genuine ELM327 on CAN 11-bit 500k).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the flash, air and database here (default: a temporary directory).")
@_CONFIG
@click.option("--board", metavar="PORT", help="Run against a real dongle: the emulator on this serial port.")
@click.option("--address", envvar="OBDSYNC_BOARD_ADDRESS", help="With --board: the dongle's BLE address.")
@click.option("--secret", "label", envvar="OBDSYNC_BOARD_SECRET", help="With --board: the label text.")
def run(scenario: str, adapter: str | None, workdir: Path | None, config: Path | None, board: str | None,
        address: str | None, label: str | None) -> None:
    """Run SCENARIO end to end and check the expected events (exit 1 on a miss)."""
    from hil.runner import format_report, run_scenario

    sc = _scenario(scenario)
    if board:
        from hil.board import run_board

        sys.exit(run_board(scenario, board, address, label))
    cfg = _config(sc, config)
    if adapter:
        from hil.adapter import ProfileError, load_profile

        try:
            load_profile(adapter)
        except ProfileError as e:
            raise click.BadParameter(str(e), param_hint="--adapter") from None
    if workdir:
        workdir.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run_scenario(sc, workdir=workdir, echo=click.echo, config=cfg, adapter=adapter))
    click.echo(format_report(report))
    if workdir:
        _where(workdir)
    sys.exit(0 if report.ok else 1)


def _where(workdir: Path) -> None:
    db = (workdir / "obdsync.db").resolve()
    click.echo(f"\nthe database is kept in {db}; look around with:\n"
               f"  obdsync --db {db} events\n  obdsync --db {db} trips\n  obdsync --db {db} status")


@hil.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to keep the flash, air and database (default: the data directory's demo/).")
@_CONFIG
def demo(workdir: Path | None, config: Path | None) -> None:
    """A short simulated drive end to end (`make demo`)."""
    import shutil

    from hil.runner import format_report, run_scenario
    from obdsync import paths

    sc = _scenario("demo")
    cfg = _config(sc, config)
    workdir = workdir or paths.data_dir() / "demo"
    # A fresh drive each time (an old run's flash would replay its records); the
    # database stays afterwards for `obdsync --db ... events`.
    for name in ("obdsync.db", "obdsync.db-wal", "obdsync.db-shm", "live.json"):
        (workdir / name).unlink(missing_ok=True)
    for sub in [workdir / "air", *workdir.glob("flash*")]:
        shutil.rmtree(sub, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    click.echo("obdsync demo: a simulated car (ELM327 emulator), the real firmware on MicroPython,\n"
               "a simulated BLE radio, the daemon storing into SQLite and deriving events.\n"
               f"database: {(workdir / 'obdsync.db').resolve()}\n")
    report = asyncio.run(run_scenario(sc, workdir=workdir, echo=click.echo, config=cfg, web=True))
    click.echo("")
    click.echo(format_report(report))
    _where(workdir)
    click.echo(f"the drive in the dashboard: obdsync --db {(workdir / 'obdsync.db').resolve()} web serve")
    sys.exit(0 if report.ok else 1)
