"""`obdsync hil …`: the HIL kit's commands, attached to the CLI lazily so the
daemon's run-time path never imports the simulation."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click


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


@hil.command("run")
@click.argument("scenario")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the flash, air and database here (default: a temporary directory).")
@click.option("--board", metavar="PORT", help="Run against a real dongle: the emulator on this serial port.")
@click.option("--address", envvar="OBDSYNC_BOARD_ADDRESS", help="With --board: the dongle's BLE address.")
@click.option("--secret", "label", envvar="OBDSYNC_BOARD_SECRET", help="With --board: the label text.")
def run(scenario: str, workdir: Path | None, board: str | None, address: str | None, label: str | None) -> None:
    """Run SCENARIO end to end and check the expected events (exit 1 on a miss)."""
    from hil.runner import format_report, run_scenario

    if board:
        from hil.board import run_board

        sys.exit(run_board(scenario, board, address, label))
    if workdir:
        workdir.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run_scenario(scenario, workdir=workdir, echo=click.echo))
    click.echo(format_report(report))
    sys.exit(0 if report.ok else 1)


@hil.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path))
def demo(workdir: Path | None) -> None:
    """A short simulated drive end to end (`make demo`)."""
    from hil.runner import format_report, run_scenario

    click.echo("obdsync demo: a simulated car (ELM327 emulator), the real firmware on MicroPython,\n"
               "a simulated BLE radio, the daemon storing into SQLite and deriving events.\n")
    if workdir:
        workdir.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run_scenario("demo", workdir=workdir, echo=click.echo))
    click.echo("")
    click.echo(format_report(report))
    sys.exit(0 if report.ok else 1)
