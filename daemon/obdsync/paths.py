"""Where obdsync keeps its files: the platform's own places through platformdirs (on
Linux the XDG base directories, shown here; ~/Library/Application Support/obdsync on
macOS, %LOCALAPPDATA%\\obdsync on Windows).

- config: ``$XDG_CONFIG_HOME/obdsync/config.toml`` (default ``~/.config``)
- secrets: ``$XDG_CONFIG_HOME/obdsync/secrets/<device>.key`` (dir 0700, files 0600)
- data: ``$XDG_DATA_HOME/obdsync/obdsync.db`` (default ``~/.local/share``); directories
  obdsync creates are 0700, the database and its -wal/-shm 0600: trips, the VIN and
  whereabouts-by-time are the owner's alone (:func:`private_dir`, :func:`private_file`)
- runtime: ``$XDG_RUNTIME_DIR/obdsync/control.sock``, the running daemon's control door
  (default ``/run/user/<uid>`` when it exists, else the data dir)

Functions read the environment on every call, so tests can point them at ``tmp_path``
with ``monkeypatch.setenv``.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import platformdirs

APP = "obdsync"
log = logging.getLogger(__name__)

_DEVICE_RE = re.compile(r"[0-9a-f]{16}")


def _platform(var: str, fallback: str, where: Callable[..., Path]) -> Path:
    """The directory ``where`` (platformdirs: XDG on Linux and BSD, ~/Library/Application
    Support on macOS, %LOCALAPPDATA% on Windows), except that a relative ``$XDG_…``, which
    the XDG spec calls invalid, is ignored rather than taken relative to the cwd."""
    value = os.environ.get(var, "")
    if value and not os.path.isabs(value) and sys.platform not in ("darwin", "win32"):
        return Path.home() / fallback / APP
    return where(APP, appauthor=False)


def config_dir() -> Path:
    return _platform("XDG_CONFIG_HOME", ".config", platformdirs.user_config_path)


def data_dir() -> Path:
    return _platform("XDG_DATA_HOME", ".local/share", platformdirs.user_data_path)


def config_path() -> Path:
    """The default config file (it need not exist: every option has a default)."""
    return config_dir() / "config.toml"


def db_path() -> Path:
    """The default SQLite database file."""
    return data_dir() / "obdsync.db"


def runtime_dir() -> Path:
    """Where the running daemon's control socket lives. Without $XDG_RUNTIME_DIR (a
    system unit started with User=) the daemon looks where a login shell's
    $XDG_RUNTIME_DIR points, /run/user/<uid>, so the CLI and the service agree."""
    value = os.environ.get("XDG_RUNTIME_DIR", "")
    if value and os.path.isabs(value):
        return Path(value) / APP
    run_user = Path("/run/user") / str(os.getuid())
    if run_user.is_dir():
        return run_user / APP
    return data_dir()


def control_socket_path() -> Path:
    return runtime_dir() / "control.sock"


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


def private_dir(p: Path) -> Path:
    """Make directory ``p`` (and missing parents) if it is missing, 0700. An existing one is
    left alone: it may be a place the user chose, like their home directory."""
    if not p.is_dir():
        p.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(p, 0o700)  # mkdir's mode is masked by the umask
    return p


def private_file(p: Path) -> bool:
    """Create file ``p`` empty and 0600 if it is missing; take group and others' access away
    from an existing one of ours (an older version made them 0644). Returns whether it exists."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except FileNotFoundError:  # its directory is missing
        return False
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o700)
            log.warning("%s was readable by group or others (mode %o); it is 0600 now",
                        p, stat.S_IMODE(st.st_mode))
    finally:
        os.close(fd)
    return True
