"""systemd's service notification protocol (sd_notify(3)), for ``Type=notify`` units.

A datagram of ``KEY=value`` lines to the unix socket named in ``$NOTIFY_SOCKET`` (a
path, or ``@name`` in the abstract namespace). Written here rather than taken from a
package: it is one ``sendto``, and the PyPI clients for it (``sdnotify``, last release
2017) add nothing but an unmaintained dependency. Outside systemd (no
``$NOTIFY_SOCKET``) every call is a no-op.

The daemon says ``READY=1`` once the store is open and the links are started,
``STATUS=…`` as dongles come and go, ``STOPPING=1`` on the way out, and ``WATCHDOG=1``
from a task on its event loop every half ``$WATCHDOG_USEC``: a loop that hangs stops
pinging, and systemd restarts the service (``WatchdogSec=`` in the unit).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    if path.startswith("@"):
        return "\0" + path[1:]  # the abstract namespace
    return path if path.startswith("/") else None


def enabled() -> bool:
    return _address() is not None


def notify(*lines: str) -> bool:
    """Send ``lines`` (``READY=1``, ``STATUS=…``) as one datagram; False when not under
    systemd or the socket refuses (systemd gone: the service carries on)."""
    addr = _address()
    if addr is None:
        return False
    data = "\n".join(lines).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(data)
        return True
    except OSError as e:
        log.debug("sd_notify %r not sent: %s", lines, e)
        return False


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings systemd asked for (half ``WatchdogSec``), or None.
    ``$WATCHDOG_PID``, when set, must be this process (not a child that inherited it)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


async def watchdog() -> None:
    """Ping systemd's watchdog from the event loop until cancelled (returns at once
    when no watchdog is configured)."""
    interval = watchdog_interval()
    if interval is None or not enabled():
        return
    log.debug("systemd watchdog: a ping every %.1f s", interval)
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)  # the ping's period, as systemd asked: the loop must run to send the next
