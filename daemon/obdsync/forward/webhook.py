"""HTTPS webhook target: one signed JSON POST per outbox message, in the Standard
Webhooks form (https://www.standardwebhooks.com; verifiers exist in many languages,
e.g. PyPI ``standardwebhooks``).

Headers (besides ``Content-Type: application/json``)::

    webhook-id: <key of the message, "<event id>:<state>">   (the same on every retry)
    webhook-timestamp: <Unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + body)> [v1,<…> …]
    Idempotency-Key: <the same key>
    X-Obdsync-Event-Id: <event id>            (absent on ``dropped`` records)

The key: a secret written ``whsec_<base64>`` (Standard Webhooks' own form) is those
bytes; any other secret is its UTF-8 bytes (a receiver then verifies with
``whsec_`` + base64 of it). During a key rotation (``previous_secret``) every request
carries a signature by each key, so the receiver can switch when it likes. Each attempt
is signed afresh; the body is the outbox payload, byte for byte (its JSON Schema:
``event.v2.schema.json`` beside this module).

Outcomes: 2xx delivered; 408, 429 and 5xx retried with backoff (entry-level), after
``Retry-After`` when the reply says so; other statuses (4xx, and 1xx/3xx: redirects are
not followed) dead-letter the entry with the status and the start of the body; no
connection, TLS failure or timeout: the target is down. One httpx client per target
keeps its connection alive between deliveries.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import logging
import os
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

import httpx

from .. import __version__
from ..config import Secret, WebhookTarget
from .outbox import Delivery, Rejected, RetryLater, TargetDown

log = logging.getLogger(__name__)

USER_AGENT = f"obdsync-webhook/{__version__}"
MAX_REPLY_BODY = 2048  # kept for the dead-letter reason only
SECRET_PREFIX = "whsec_"


# A signing key as configured (a Secret) or as a receiver holds it.
SigningKey = Secret[str] | Secret[bytes] | str | bytes


def key_bytes(secret: SigningKey) -> bytes:
    """The HMAC key of a configured secret (see the module docstring)."""
    if isinstance(secret, Secret):
        secret = secret.reveal()
    if isinstance(secret, str):
        if secret.startswith(SECRET_PREFIX):
            return base64.b64decode(secret[len(SECRET_PREFIX):] + "==")
        return secret.encode()
    return bytes(secret)


def sign(secret: SigningKey, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """``v1,<base64>``: the Standard Webhooks signature of ``body``."""
    mac = hmac.new(key_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def verify_signature(secrets: SigningKey | Iterable[SigningKey], headers: Mapping[str, str],
                     body: bytes, tolerance_s: float = 300.0, *, now: float | None = None) -> bool:
    """True if the ``webhook-*`` ``headers`` sign ``body`` with one of ``secrets`` and the
    timestamp is within ``tolerance_s`` of ``now`` (default: the clock; an older one is a
    replay). Compares in constant time."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (msg_id and ts and sigs):
        return False
    try:
        t = int(ts.strip())
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    keys = [secrets] if isinstance(secrets, (Secret, str, bytes)) else list(secrets)
    given = [s.encode() for s in sigs.split()]
    return any(hmac.compare_digest(sign(k, msg_id, t, body).encode(), g) for k in keys for g in given)


def ssl_context(ca: str | None = None) -> ssl.SSLContext:
    """Verifying TLS context: the system CAs, or only ``ca`` (a PEM file or directory)."""
    if ca is None:
        return ssl.create_default_context()
    if os.path.isdir(ca):
        return ssl.create_default_context(capath=ca)
    return ssl.create_default_context(cafile=ca)


def retry_after_s(value: str | None, now: float) -> float | None:
    """``Retry-After``: seconds, or an HTTP date (RFC 9110 §10.2.3); None if absent or neither."""
    if not value:
        return None
    v = value.strip()
    if v.isdigit():
        return float(v)
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _why(e: BaseException) -> str:
    """What went wrong, from the innermost cause: httpx says "All connection attempts
    failed" where the socket said "Connection refused"."""
    inner = e
    while (deeper := inner.__cause__ or inner.__context__) is not None:
        inner = deeper
    text = f"{type(e).__name__}: {e}"
    if inner is not e and str(inner):
        text += f" ({type(inner).__name__}: {inner})"
    return text


class WebhookSender:
    """A ``[[forward.webhook]]`` target."""

    def __init__(self, cfg: WebhookTarget, *, ca: str | None = None, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        # The CA to trust instead of the system's.
        self.ca = ca if ca is not None else cfg.ca
        self.name = cfg.name or f"webhook:{urlsplit(cfg.url).hostname}"
        self.clock = clock
        self._client: httpx.AsyncClient | None = None
        if cfg.secret is None:
            log.warning("webhook %s: no secret configured, requests are not signed", self.name)

    @property
    def secrets(self) -> list[Secret[str]]:
        """The signing keys: the current one, and the previous one during a rotation."""
        return [s for s in (self.cfg.secret, self.cfg.previous_secret) if s is not None]

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            verify: ssl.SSLContext | bool = True
            if urlsplit(self.cfg.url).scheme == "https":
                try:
                    verify = ssl_context(self.ca)
                except (OSError, ssl.SSLError) as e:
                    raise TargetDown(f"cannot load CA {self.ca}: {e}") from e
            self._client = httpx.AsyncClient(
                verify=verify, timeout=httpx.Timeout(self.cfg.timeout), follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
                # One connection per target is plenty: deliveries to it go one at a time.
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=60.0))
        return self._client

    def headers(self, delivery: Delivery) -> dict[str, str]:
        ts = int(self.clock())
        h = {"Content-Type": "application/json", "Idempotency-Key": delivery.key,
             "webhook-id": delivery.key, "webhook-timestamp": str(ts)}
        event_id = delivery.message.get("id")
        if event_id is not None:
            h["X-Obdsync-Event-Id"] = str(event_id)
        if self.secrets:
            h["webhook-signature"] = " ".join(sign(s, delivery.key, ts, delivery.payload) for s in self.secrets)
        for k, v in h.items():
            if any(c in v for c in "\r\n\0"):
                raise Rejected(f"header {k} would hold a line break")
        return h

    async def send(self, delivery: Delivery) -> None:
        headers = self.headers(delivery)
        client = self._http()
        try:
            async with client.stream("POST", self.cfg.url, content=delivery.payload, headers=headers) as reply:
                status, reason = reply.status_code, reply.reason_phrase
                after = retry_after_s(reply.headers.get("retry-after"), self.clock())
                # Read the reply to its end, so the connection can carry the next request;
                # a reply longer than we keep is cut off (and that connection closed).
                body = b""
                async for chunk in reply.aiter_bytes():
                    body += chunk
                    if len(body) >= MAX_REPLY_BODY:
                        break
        except httpx.TimeoutException as e:
            raise TargetDown(f"no reply within {self.cfg.timeout:g} s") from e
        except httpx.HTTPError as e:  # connection refused or reset, TLS, not HTTP
            raise TargetDown(_why(e)) from e
        except (OSError, ssl.SSLError) as e:
            raise TargetDown(f"{type(e).__name__}: {e}") from e
        what = f"HTTP {status} {reason}".strip()
        if 200 <= status < 300:
            return
        text = body[:MAX_REPLY_BODY].decode("utf-8", "replace").strip()
        if text:
            what += f": {text[:300]}"
        if status >= 500 or status in (408, 429):
            raise RetryLater(what, after_s=after)
        raise Rejected(what)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
