"""HTTPS webhook target: one signed JSON POST per outbox message.

Headers (besides ``Content-Type: application/json``)::

    Idempotency-Key: <key of the message, "<event id>:<state>">
    X-Obdsync-Event-Id: <event id>            (absent on ``dropped`` records)
    X-Obdsync-Timestamp: <Unix seconds>
    X-Obdsync-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

The timestamp is signed with the body so a receiver can refuse replays older than its
tolerance (:func:`verify_signature`). Each attempt is signed afresh; the body is the
outbox payload, byte for byte.

Outcomes: 2xx delivered; 408, 429 and 5xx retried with backoff (entry-level); other
statuses (4xx, and 1xx/3xx: redirects are not followed) dead-letter the entry with the
status and the start of the body; no connection, TLS failure or timeout: the target is
down. The HTTP/1.1 client is a minimal one on asyncio streams (one request per
connection), enough for a POST with a bounded reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from ..config import Secret, WebhookTarget
from .outbox import Delivery, Rejected, RetryLater, TargetDown

log = logging.getLogger(__name__)

USER_AGENT = "obdsync-webhook/1"
MAX_REPLY_HEAD = 16 * 1024
MAX_REPLY_BODY = 2048  # kept for the dead-letter reason only


def _key_bytes(secret: Secret | str | bytes) -> bytes:
    if isinstance(secret, Secret):
        secret = secret.reveal()
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def sign(secret: Secret | str | bytes, timestamp: int | str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, ``timestamp + "." + body``)."""
    mac = hmac.new(_key_bytes(secret), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: Secret | str | bytes, timestamp: str | int, body: bytes, signature: str,
                     tolerance_s: float = 300.0, *, now: float | None = None) -> bool:
    """True if ``signature`` (the ``X-Obdsync-Signature`` header) signs ``body`` with
    ``timestamp`` (the ``X-Obdsync-Timestamp`` header) and the timestamp is within
    ``tolerance_s`` of ``now`` (default: the clock). Compares in constant time."""
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    if not isinstance(signature, str) or not signature.startswith("sha256="):
        return False
    return hmac.compare_digest(sign(secret, ts, body).encode(), signature.strip().encode())


class HttpError(Exception):
    pass


def ssl_context(ca: str | None = None) -> ssl.SSLContext:
    """Verifying TLS context: the system CAs, or only ``ca`` (a PEM file or directory)."""
    if ca is None:
        return ssl.create_default_context()
    if os.path.isdir(ca):
        return ssl.create_default_context(capath=ca)
    return ssl.create_default_context(cafile=ca)


async def post(url: str, body: bytes, headers: dict[str, str], *, timeout_s: float,
               ssl_ctx: ssl.SSLContext | None = None) -> tuple[int, str, bytes]:
    """POST ``body``; returns ``(status, reason, start of the reply body)``.

    Raises ``OSError`` (connection, TLS), ``TimeoutError`` or :class:`HttpError` (not HTTP)."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise HttpError(f"not an http(s) URL: {url!r}")
    tls = u.scheme == "https"
    port = u.port or (443 if tls else 80)
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    host = u.hostname if ":" not in u.hostname else f"[{u.hostname}]"
    host_header = host if u.port is None else f"{host}:{port}"
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(
            u.hostname, port, ssl=(ssl_ctx or ssl_context()) if tls else None,
            server_hostname=u.hostname if tls else None, limit=MAX_REPLY_HEAD)
        try:
            head = [f"POST {target} HTTP/1.1", f"Host: {host_header}", f"User-Agent: {USER_AGENT}",
                    "Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            try:
                status_line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
                parts = status_line.split(" ", 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                    raise HttpError(f"not an HTTP reply: {status_line[:80]!r}")
                status, reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
                length = None
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length" and value.strip().isdigit():
                        length = int(value.strip())
            except ValueError as e:  # a header line over the limit
                raise HttpError(f"reply header too long: {e}") from e
            want = MAX_REPLY_BODY if length is None else min(length, MAX_REPLY_BODY)
            reply = await reader.read(want) if want else b""
            return status, reason, reply
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass


class WebhookSender:
    """A ``[[forward.webhook]]`` target."""

    def __init__(self, cfg: WebhookTarget, *, ca: str | None = None, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        # The CA to trust instead of the system's.
        self.ca = ca if ca is not None else cfg.ca
        self.name = cfg.name or f"webhook:{urlsplit(cfg.url).hostname}"
        self.clock = clock
        self._ssl: ssl.SSLContext | None = None
        if cfg.secret is None:
            log.warning("webhook %s: no secret configured, requests are not signed", self.name)

    def _context(self) -> ssl.SSLContext | None:
        if self._ssl is None and urlsplit(self.cfg.url).scheme == "https":
            ca = self.ca
            try:
                self._ssl = ssl_context(ca)
            except (OSError, ssl.SSLError) as e:
                raise TargetDown(f"cannot load CA {ca}: {e}") from e
        return self._ssl

    def headers(self, delivery: Delivery) -> dict[str, str]:
        ts = int(self.clock())
        h = {"Idempotency-Key": delivery.key, "X-Obdsync-Timestamp": str(ts)}
        event_id = delivery.message.get("id")
        if event_id is not None:
            h["X-Obdsync-Event-Id"] = str(event_id)
        if self.cfg.secret is not None:
            h["X-Obdsync-Signature"] = sign(self.cfg.secret, ts, delivery.payload)
        for k, v in h.items():
            if any(c in v for c in "\r\n\0"):
                raise Rejected(f"header {k} would hold a line break")
        return h

    async def send(self, delivery: Delivery) -> None:
        headers = self.headers(delivery)
        try:
            status, reason, reply = await post(self.cfg.url, delivery.payload, headers,
                                               timeout_s=self.cfg.timeout, ssl_ctx=self._context())
        except TimeoutError as e:
            raise TargetDown(f"no reply within {self.cfg.timeout:g} s") from e
        except (OSError, ssl.SSLError, HttpError, asyncio.IncompleteReadError) as e:
            raise TargetDown(f"{type(e).__name__}: {e}") from e
        what = f"HTTP {status} {reason}".strip()
        if 200 <= status < 300:
            return
        text = reply.decode("utf-8", "replace").strip()
        if text:
            what += f": {text[:300]}"
        if status >= 500 or status in (408, 429):
            raise RetryLater(what)
        raise Rejected(what)

    async def close(self) -> None:
        return None
