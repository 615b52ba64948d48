"""Notifications to where drivers look, through Apprise (ntfy, Telegram, Pushover,
Gotify, e-mail, Matrix, ~100 more, each by URL), from the same outbox as MQTT and
webhooks: a notification that fails is retried with backoff and shows in ``obdsync
status`` like any other target.

One :class:`NotifySender` per URL (``[[notify]] urls = [...]``): each URL is its own
outbox target, so a phone that is reachable is not notified twice because an e-mail
server was not. What a target takes is decided when the event is stored
(:meth:`NotifySender.wants`: event types, minimum severity, openings only unless
``on_clear``); quiet hours are decided when it is delivered (held until they end,
critical events excepted). Texts come from :mod:`obdsync.messages`, in the user's
units and language.

Apprise reports success or failure per call, not why in a form a program can act on
(its log says "error=500" or "Connection error"): every failure is taken as the
target being unavailable, which backs off and keeps the entry pending. A message
is a few dozen bytes of text, so there is no message a working service would refuse
for its content. Delivery is at least once: a crash between the service's answer and
the outbox's "sent" sends that notification again after the restart.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from .. import SUPPORT_URL, messages
from ..config import SEVERITY_ORDER, DisplayConfig, NotifyTarget
from ..model import Event
from .outbox import Delivery, Hold, TargetDown

log = logging.getLogger(__name__)

# Apprise's own notification types: the icon and colour a service shows.
_APPRISE_TYPE = {"info": "info", "warning": "warning", "critical": "failure"}


def quiet_until(quiet: tuple[int, int] | None, now: dt.datetime) -> dt.datetime | None:
    """The end of the quiet hours ``now`` (local, aware) falls in, or None outside them.

    ``quiet`` is (start, end) in minutes after midnight; end < start spans midnight."""
    if quiet is None:
        return None
    start, end = quiet
    m = now.hour * 60 + now.minute
    inside = start <= m < end if start < end else (m >= start or m < end)
    if not inside:
        return None
    day = now.date() if m < end else now.date() + dt.timedelta(days=1)
    naive = dt.datetime.combine(day, dt.time(end // 60, end % 60))
    # Through a timestamp: the local zone's offset of that day (a DST change overnight).
    return naive.astimezone()


class NotifySender:
    """One notification URL. Messages stand alone, so the outbox need not keep them in
    per-device order (``ordered = False``): a held one does not hold back a critical one."""

    ordered = False

    def __init__(self, cfg: NotifyTarget, display: DisplayConfig | None = None, *,
                 clock: Callable[[], float] = time.time, vehicles: dict[str, str] | None = None):
        import apprise  # the daemon imports it only when notifications are configured

        self.cfg = cfg
        self.name = cfg.name
        display = display or DisplayConfig()
        self.units = messages.Units.of_display(display)
        self.language = display.language
        self.clock = clock
        self.vehicles = vehicles or {}
        asset = apprise.AppriseAsset(app_id="obdsync", app_desc="obdsync car reminders", app_url=SUPPORT_URL)
        self._apprise = apprise.Apprise(asset=asset)
        if not self._apprise.add(cfg.url.reveal()):
            # The config check refuses such URLs; this is a second line of defence.
            raise ValueError(f"notify {cfg.name}: not a URL Apprise can use")

    def wants(self, event: Event) -> bool:
        """Whether an outbox entry is made for ``event`` on this target."""
        if event.type not in self.cfg.events:
            return False
        if event.cleared_ms is not None and not self.cfg.on_clear:
            return False
        return _rank(event.severity) >= _rank(self.cfg.min_severity)

    def render(self, delivery: Delivery) -> tuple[str, str]:
        vehicle = self.vehicles.get(delivery.device) if len(self.vehicles) > 1 else None
        return messages.notification(delivery.message, self.units, self.language, vehicle=vehicle)

    async def send(self, delivery: Delivery) -> None:
        severity = str(delivery.message.get("severity") or "info")
        if severity != "critical":
            until = quiet_until(self.cfg.quiet_hours, dt.datetime.fromtimestamp(self.clock()).astimezone())
            if until is not None:
                raise Hold("quiet hours", int(until.timestamp() * 1000))
        title, body = self.render(delivery)
        result = await self._apprise.async_notify(
            body=body, title=title, notify_type=_APPRISE_TYPE.get(severity, "info"), timeout=self.cfg.timeout)
        if result:
            return
        why = "; ".join(e.message for e in result.logs()) or getattr(result.status, "name", "failed")
        raise TargetDown(f"notification not delivered: {why}")

    async def close(self) -> None:
        return None


def _rank(severity: str) -> int:
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else 0


def describe(cfg: NotifyTarget) -> dict[str, Any]:
    """What a target does, without its URL's secrets (for ``config check`` and status)."""
    import apprise

    plugin = apprise.Apprise.instantiate(cfg.url.reveal())
    return {"name": cfg.name, "service": plugin.service_name if plugin else "?",
            "url": plugin.url(privacy=True) if plugin else "?", "events": list(cfg.events),
            "min_severity": cfg.min_severity, "on_clear": cfg.on_clear}
