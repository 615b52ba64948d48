"""A small JSON file of named entries: ``{"<section>": {"<key>": {"<field>": "<text>", …}}}``.

The paired dongles (``paired.json``, section ``dongles``) and the added adapters
(``adapters.json``, section ``adapters``) are such files. Written whole through a
temporary file and ``os.replace``, so a reader sees the old file or the new one, never
half of one; the directory is made 0700 (it is the config directory, secrets beside it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from obdsync import paths

Entries = dict[str, dict[str, str]]


class TableError(ValueError):
    """The file exists but is not such a table (unreadable, not JSON, or another shape)."""


def load(path: Path, section: str) -> Entries:
    """The entries of ``section``; none when the file does not exist (nothing added yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise TableError(f"{path} is unreadable ({e})") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise TableError(f"{path} is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise TableError(f"{path} holds {type(data).__name__}, not an object")
    table = data.get(section, {})
    if not isinstance(table, dict):
        raise TableError(f"{path}: {section!r} is {type(table).__name__}, not an object")
    out: Entries = {}
    for key, entry in table.items():
        if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
            raise TableError(f"{path}: {section}.{key} is not an object of strings")
        out[key] = dict(entry)
    return out


def save(path: Path, section: str, entries: Entries) -> None:
    write_atomic(path, {section: entries})


def write_atomic(path: Path, obj: dict[str, Any]) -> None:
    """``obj`` as the whole of ``path`` (any JSON object: direct mode's state file is one too)."""
    paths.private_dir(path.parent)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")  # two writers never share a temporary
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
