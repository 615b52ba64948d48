"""One `obdsync run` per database: an exclusive lock on a file beside it.

Two daemons on one database would both ingest and ack, both derive and both forward
every event; a user starting `obdsync run` by hand while the systemd unit runs is
how it happens. The lock is `fcntl.flock` on ``<db>.lock``: the kernel drops it when
the process ends (kill -9 included), so a stale file never blocks a restart. The
file holds the holder's PID, for the message the second one gives. Readers (status,
export, ...) do not take it: SQLite's own locking keeps them consistent beside a
running daemon.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DatabaseInUse(Exception):
    """Another process holds the database's run lock."""

    def __init__(self, db: Path, pid: int | None) -> None:
        self.db = db
        self.pid = pid
        who = f"obdsync run (PID {pid})" if pid else "another obdsync run"
        super().__init__(f"{db} is in use by {who}: one daemon per database (stop that one first,"
                         f" e.g. `systemctl --user stop obdsync`, or give this one another --db)")


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


class RunLock:
    """Held from `acquire()` until `release()` (or the process ends)."""

    def __init__(self, db: Path) -> None:
        self.db = Path(db)
        self.path = lock_path(self.db)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DatabaseInUse(self.db, holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)  # the PID of a process no longer holding it would mislead
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
