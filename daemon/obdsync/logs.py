"""Log lines for where they go: a terminal or a file gets a timestamp and the level;
journald (systemd's ``$JOURNAL_STREAM`` names our stderr) gets neither, since it stamps
each line itself, but a ``<N>`` syslog priority prefix, so ``journalctl -p warning``
filters by level (sd-daemon(3))."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "<%(priority)d>%(name)s: %(message)s"


def to_journal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is the one journald connected: its device and
    inode match ``$JOURNAL_STREAM`` (``dev:ino``), which a child with another stderr
    inherits but must not trust."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class _Priority(logging.Filter):
    """``record.priority``: the syslog level of the record's level."""

    def filter(self, record: logging.LogRecord) -> bool:
        n = record.levelno
        record.priority = 2 if n >= logging.CRITICAL else 3 if n >= logging.ERROR else \
            4 if n >= logging.WARNING else 6 if n >= logging.INFO else 7
        return True


def setup(level: int, stream: TextIO | None = None) -> logging.Handler:
    """Log at ``level`` to ``stream`` (default stderr) in the format its reader wants."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.addFilter(_Priority())
    handler.setFormatter(logging.Formatter(JOURNAL_FORMAT if to_journal(stream) else TERMINAL_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return handler
