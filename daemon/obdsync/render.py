"""How the CLI shows data: tables through rich, times in the local zone, JSON with ISO
8601 times (zone included) beside the Unix milliseconds they come from."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click


def iso_ms(ms: int | None) -> str | None:
    """Unix ms as ISO 8601 in the local zone, with its offset (``2026-12-04T18:00:00.250+01:00``)."""
    if ms is None:
        return None
    t = dt.datetime.fromtimestamp(ms / 1000).astimezone()
    return t.isoformat(timespec="milliseconds" if ms % 1000 else "seconds")


def local_ms(ms: int | None) -> str:
    """Unix ms for a person: local date and time to the second, ``-`` for none."""
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def number(value: float | int | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) or not float(value).is_integer() else f"{value:g}"


def json_lines(objects: Iterable[dict[str, Any]]) -> None:
    """One JSON object a line (JSON Lines): what `--json` prints for a list."""
    for obj in objects:
        click.echo(json.dumps(obj, ensure_ascii=False, default=str))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Sequence[str] = (),
          title: str | None = None) -> None:
    """Rows under a header, columns aligned (``right``: the numeric ones)."""
    from rich.console import Console
    from rich.table import Table

    # sys.stdout (where click.echo writes, and what CliRunner swaps): click.get_text_stream is
    # deprecated since click 8.5 and goes in 9.0 (mypy saw it through click's module __getattr__).
    out = sys.stdout
    # Not a terminal (a pipe, a test): wide enough that no cell wraps, and no colours.
    console = Console(file=out, highlight=False, width=None if out.isatty() else 200,
                      no_color=not out.isatty(), soft_wrap=False)
    t = Table(*(), box=None, pad_edge=False, show_edge=False, title=title, title_justify="left",
              header_style="bold")
    for c in columns:
        t.add_column(c, justify="right" if c in right else "left", no_wrap=True)
    for r in rows:
        t.add_row(*("-" if v is None else str(v) for v in r))
    console.print(t)
    out.flush()
