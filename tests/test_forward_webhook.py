"""The webhook target against a real local HTTP(S) server (http.server in a thread):
signature, retries on 5xx, dead letters on 4xx, timeouts, TLS with a private CA."""

from __future__ import annotations

import contextlib
import http.server
import shutil
import ssl
import subprocess
import threading

import pytest
from forward_util import DEV_A, FAST, event, rows, wait_until

from obdsync.config import ForwardConfig, Secret, WebhookTarget
from obdsync.forward import (
    Delivery,
    Forwarder,
    RetryLater,
    TargetDown,
    WebhookSender,
    dead_letters,
    verify_signature,
)
from obdsync.forward.payloads import decode, event_payload
from obdsync.store import Store

SECRET = "a-shared-secret"


class Receiver(http.server.ThreadingHTTPServer):
    """Answers each POST with the next scripted status (then 200); ``"hang"`` never answers."""

    daemon_threads = True

    def __init__(self, statuses=(), tls: ssl.SSLContext | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.statuses = list(statuses)
        self.requests: list[tuple[str, dict[str, str], bytes, object]] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}/hook?fleet=7"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv: Receiver = self.server
        with srv.lock:
            status = srv.statuses.pop(0) if srv.statuses else 200
            srv.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body, status))
        if status == "hang":
            srv.release.wait(30)
            return
        reply = b"unknown device" if status == 400 else b"ok"
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def receiver(statuses=(), tls=None):
    srv = Receiver(statuses, tls)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        t.join(10)


@pytest.fixture
async def store(tmp_path):
    st = await Store.open(tmp_path / "obdsync.db")
    yield st
    await st.close()


def hook(url: str, **kw) -> WebhookTarget:
    return WebhookTarget(url=url, name="hook", secret=Secret(SECRET), **{"timeout": 5.0, **kw})


@contextlib.asynccontextmanager
async def forwarder(store, url, **kw):
    fwd = Forwarder(store, ForwardConfig(webhook=(hook(url, **kw),)), backoff=FAST, idle_poll_s=5)
    await fwd.start()
    try:
        yield fwd
    finally:
        await fwd.stop()


async def test_post_is_signed_and_the_signature_verifies(store):
    ev = event(1)
    with receiver() as srv:
        async with forwarder(store, srv.url) as fwd:
            await fwd.put_event(ev)
            await wait_until(lambda: rows(store.path, "SELECT state FROM outbox") == [("sent",)], what="delivered")
    [(path, headers, body, _)] = srv.requests
    assert path == "/hook?fleet=7"
    assert body == event_payload(ev) and decode(body)["id"] == ev.id
    assert headers["content-type"] == "application/json"
    assert headers["idempotency-key"] == f"{ev.id}:open"
    assert headers["x-obdsync-event-id"] == ev.id
    ts, sig = headers["x-obdsync-timestamp"], headers["x-obdsync-signature"]
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify_signature(SECRET, ts, body, sig)
    assert not verify_signature(SECRET, ts, body.replace(b"event 1", b"event 2"), sig)
    assert not verify_signature("another secret", ts, body, sig)
    assert not verify_signature(SECRET, str(int(ts) + 1), body, sig)
    assert not verify_signature(SECRET, ts, body, sig, tolerance_s=300, now=int(ts) + 301)  # a replay
    assert not verify_signature(SECRET, "yesterday", body, sig)


async def test_500_is_retried_until_200(store):
    ev = event(2)
    with receiver([500, 500]) as srv:
        async with forwarder(store, srv.url) as fwd:
            await fwd.put_event(ev)
            await wait_until(lambda: rows(store.path, "SELECT state, attempts FROM outbox") == [("sent", 3)],
                             what="delivered on the third attempt")
    assert [r[3] for r in srv.requests] == [500, 500, 200]
    # Every attempt carries the same key and body, signed afresh.
    assert {r[1]["idempotency-key"] for r in srv.requests} == {f"{ev.id}:open"}
    assert {r[2] for r in srv.requests} == {event_payload(ev)}
    assert all(verify_signature(SECRET, r[1]["x-obdsync-timestamp"], r[2], r[1]["x-obdsync-signature"])
               for r in srv.requests)


async def test_400_dead_letters_with_the_reason_and_shows_in_status(store):
    bad, good = event(3), event(4)
    with receiver([400]) as srv:
        async with forwarder(store, srv.url) as fwd:
            await fwd.put_event(bad)
            await fwd.put_event(good)
            await wait_until(lambda: rows(store.path, "SELECT state FROM outbox ORDER BY id") == [("dead",), ("sent",)],
                             what="dead letter, then the next event delivered")
            [st] = await fwd.status()
    assert [r[3] for r in srv.requests] == [400, 200]  # not retried
    assert (st.target, st.dead, st.sent, st.pending) == ("hook", 1, 1, 0)
    assert st.last_error.startswith("HTTP 400") and "unknown device" in st.last_error
    [dl] = await dead_letters(store, "hook")
    assert (dl.event_id, dl.device) == (bad.id, DEV_A) and "HTTP 400" in dl.reason


async def test_no_reply_refused_connection_and_429_are_retried(store):
    d = Delivery(1, DEV_A, "k", event_payload(event(5)), decode(event_payload(event(5))))
    with receiver(["hang", 429]) as srv:
        with pytest.raises(TargetDown, match="no reply"):
            await WebhookSender(hook(srv.url, timeout=0.3)).send(d)
        with pytest.raises(RetryLater, match="HTTP 429"):
            await WebhookSender(hook(srv.url)).send(d)
        url = srv.url
    with pytest.raises(TargetDown, match="Connection"):
        await WebhookSender(hook(url)).send(d)  # the server is gone


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; the HTTPS test needs it to make a certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return d / "cert.pem", d / "key.pem"


async def test_https_with_the_configured_ca(store, cert):
    crt, key = cert
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    ev = event(6)
    with receiver(tls=ctx) as srv:
        assert srv.url.startswith("https://")
        d = Delivery(1, DEV_A, f"{ev.id}:open", event_payload(ev), decode(event_payload(ev)))
        # Not trusted by the system CAs: the target counts as down (retried), not as a refusal.
        with pytest.raises(TargetDown, match="CERTIFICATE_VERIFY_FAILED"):
            await WebhookSender(hook(srv.url)).send(d)
        fwd = Forwarder(store, senders=[WebhookSender(hook(srv.url), ca=str(crt))], backoff=FAST, idle_poll_s=5)
        await fwd.start()
        try:
            await fwd.put_event(ev)
            await wait_until(lambda: rows(store.path, "SELECT state FROM outbox") == [("sent",)], what="delivered")
        finally:
            await fwd.stop()
    body = srv.requests[-1][2]
    assert body == event_payload(ev)
    assert verify_signature(SECRET, srv.requests[-1][1]["x-obdsync-timestamp"], body,
                            srv.requests[-1][1]["x-obdsync-signature"])
