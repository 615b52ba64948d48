"""Where obdsync keeps its files (XDG base directories).

- config: ``$XDG_CONFIG_HOME/obdsync/config.toml`` (default ``~/.config``)
- secrets: ``$XDG_CONFIG_HOME/obdsync/secrets/<device>.key`` (dir 0700, files 0600)
- data: ``$XDG_DATA_HOME/obdsync/obdsync.db`` (default ``~/.local/share``)

Functions read the environment on every call, so tests can point them at ``tmp_path``
with ``monkeypatch.setenv``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

APP = "obdsync"

_DEVICE_RE = re.compile(r"[0-9a-f]{16}")


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var, "")
    # The XDG spec says relative paths are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / APP


def data_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / APP


def config_path() -> Path:
    """The default config file (it need not exist: every option has a default)."""
    return config_dir() / "config.toml"


def db_path() -> Path:
    """The default SQLite database file."""
    return data_dir() / "obdsync.db"


def secrets_dir(base: Path | None = None) -> Path:
    """The per-dongle secrets directory; ``base`` replaces the config dir."""
    return (base if base is not None else config_dir()) / "secrets"


def normalize_device_id(device: str) -> str:
    """A device id as 16 lower-case hex digits (the dongle's 8-byte id).

    Raises ``ValueError`` for anything else; the id becomes a file name, so nothing
    like ``../x`` may pass.
    """
    if not isinstance(device, str):
        raise ValueError(f"device id must be a string of 16 hex digits, got {device!r}")
    dev = device.strip().lower().replace(":", "")
    if not _DEVICE_RE.fullmatch(dev):
        raise ValueError(f"device id must be 16 hex digits, got {device!r}")
    return dev


def secret_path(device: str, base: Path | None = None) -> Path:
    return secrets_dir(base) / (normalize_device_id(device) + ".key")
