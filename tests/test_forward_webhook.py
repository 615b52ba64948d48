"""The webhook target against a real local HTTP(S) server (http.server in a thread):
Standard Webhooks signatures (checked with the `standardwebhooks` package too) and key
rotation, retries on 5xx, Retry-After, dead letters on 4xx, timeouts, a kept-alive
connection, TLS with a private CA; the payload against its JSON Schema."""

from __future__ import annotations

import base64
import contextlib
import email.utils
import http.server
import json
import shutil
import ssl
import subprocess
import threading

import jsonschema
import pytest
from forward_util import DEV_A, FAST, event, rows, wait_until
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from obdsync.config import ConfigError, ForwardConfig, Secret, WebhookTarget, parse_config
from obdsync.forward import (
    Delivery,
    Forwarder,
    RetryLater,
    TargetDown,
    WebhookSender,
    dead_letters,
    verify_signature,
)
from obdsync.forward.payloads import SCHEMA_FILE, VERSION, decode, dropped_message, event_payload
from obdsync.forward.webhook import retry_after_s
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
        self.peers: list[tuple[str, int]] = []  # the client's address of each request
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
            srv.peers.append(self.client_address)
        if status == "hang":
            srv.release.wait(30)
            return
        extra = {}
        if isinstance(status, tuple):
            status, extra = status
        reply = b"unknown device" if status == 400 else b"ok"
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        for k, v in extra.items():
            self.send_header(k, v)
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
    return WebhookTarget(url=url, name="hook", **{"secret": Secret(SECRET), "timeout": 5.0, **kw})


@contextlib.asynccontextmanager
async def forwarder(store, url, **kw):
    fwd = Forwarder(store, ForwardConfig(webhook=(hook(url, **kw),)), backoff=FAST, idle_poll_s=5)
    await fwd.start()
    try:
        yield fwd
    finally:
        await fwd.stop()


def whsec(secret: str) -> str:
    """The Standard Webhooks form of a text secret, as a receiver configures it."""
    return "whsec_" + base64.b64encode(secret.encode()).decode()


async def test_post_is_signed_the_standard_webhooks_way(store):
    ev = event(1)
    with receiver() as srv:
        async with forwarder(store, srv.url) as fwd:
            await fwd.put_event(ev)
            await wait_until(lambda: rows(store.path, "SELECT state FROM outbox") == [("sent",)], what="delivered")
    [(path, headers, body, _)] = srv.requests
    assert path == "/hook?fleet=7"
    assert body == event_payload(ev) and decode(body)["id"] == ev.id
    assert headers["content-type"] == "application/json"
    assert headers["idempotency-key"] == headers["webhook-id"] == f"{ev.id}:open:warning"
    assert headers["x-obdsync-event-id"] == ev.id
    # The reference verifier, as a receiver in any language would check it.
    assert Webhook(whsec(SECRET)).verify(body, headers) == decode(body)
    for wrong in (whsec("another secret"),):
        with pytest.raises(WebhookVerificationError):
            Webhook(wrong).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(whsec(SECRET)).verify(body.replace(b"event 1", b"event 2"), headers)
    assert verify_signature(SECRET, headers, body)
    assert not verify_signature("another secret", headers, body)
    assert not verify_signature(SECRET, {**headers, "webhook-id": "other:open"}, body)
    assert not verify_signature(SECRET, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)},
                                body)
    assert not verify_signature(SECRET, headers, body, now=int(headers["webhook-timestamp"]) + 301)  # a replay
    assert not verify_signature(SECRET, {**headers, "webhook-timestamp": "yesterday"}, body)


async def test_key_rotation_signs_with_both_secrets(store):
    new = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    ev = event(7)
    with receiver() as srv:
        async with forwarder(store, srv.url, secret=Secret(new), previous_secret=Secret(SECRET)) as fwd:
            await fwd.put_event(ev)
            await wait_until(lambda: rows(store.path, "SELECT state FROM outbox") == [("sent",)], what="delivered")
    [(_, headers, body, _)] = srv.requests
    assert len(headers["webhook-signature"].split()) == 2
    # A receiver still on the old key and one already on the new key both accept it.
    Webhook(whsec(SECRET)).verify(body, headers)
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(whsec("a third key")).verify(body, headers)
    with pytest.raises(ConfigError, match="previous_secret is for a key rotation"):
        parse_config({"forward": {"webhook": [{"url": "https://x/", "previous_secret": "old"}]}})


async def test_the_payload_follows_its_versioned_json_schema(store):
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$id"].endswith(f":v{VERSION}") and f"v{VERSION}" in SCHEMA_FILE.name
    for ev in (event(1), event(2, cleared=True)):
        jsonschema.validate(decode(event_payload(ev)), schema)
    jsonschema.validate(dropped_message(DEV_A, 3, 10, 12, 1, 2), schema)
    for broken in ({**decode(event_payload(event(3))), "extra": 1},
                   {k: v for k, v in decode(event_payload(event(3))).items() if k != "key"},
                   {**decode(event_payload(event(3))), "type": "no_such_type"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


async def test_500_is_retried_until_200(store):
    ev = event(2)
    with receiver([500, 500]) as srv:
        async with forwarder(store, srv.url) as fwd:
            await fwd.put_event(ev)
            await wait_until(lambda: rows(store.path, "SELECT state, attempts FROM outbox") == [("sent", 3)],
                             what="delivered on the third attempt")
    assert [r[3] for r in srv.requests] == [500, 500, 200]
    # Every attempt carries the same key and body, signed afresh.
    assert {r[1]["idempotency-key"] for r in srv.requests} == {f"{ev.id}:open:warning"}
    assert {r[2] for r in srv.requests} == {event_payload(ev)}
    assert all(verify_signature(SECRET, r[1], r[2]) for r in srv.requests)
    assert len({r[1]["webhook-id"] for r in srv.requests}) == 1


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


async def test_retry_after_is_honoured(store):
    ev = event(8)
    with receiver([(429, {"Retry-After": "120"})]) as srv:
        async with forwarder(store, srv.url) as fwd:
            t0 = store._now_ms()
            await fwd.put_event(ev)
            await wait_until(lambda: rows(store.path, "SELECT attempts FROM outbox") == [(1,)], what="one attempt")
            [(state, next_attempt, error)] = rows(store.path, "SELECT state, next_attempt, last_error FROM outbox")
    # Not the backoff's tens of milliseconds: the two minutes the server asked for.
    assert state == "pending" and "HTTP 429" in error
    assert next_attempt >= t0 + 120_000
    assert len(srv.requests) == 1
    now = 1_800_000_000.0
    assert retry_after_s("120", now) == 120.0
    assert retry_after_s(email.utils.formatdate(now + 90, usegmt=True), now) == 90.0
    assert retry_after_s("soon", now) is None and retry_after_s(None, now) is None


async def test_the_connection_is_kept_alive_between_deliveries(store):
    with receiver() as srv:
        async with forwarder(store, srv.url) as fwd:
            for i in range(3):
                await fwd.put_event(event(20 + i))
            await wait_until(lambda: rows(store.path, "SELECT DISTINCT state FROM outbox") == [("sent",)]
                             and len(srv.requests) == 3, what="three deliveries")
    assert len(set(srv.peers)) == 1, srv.peers  # one TCP connection, from one client port


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
        d = Delivery(1, DEV_A, f"{ev.id}:open:warning", event_payload(ev), decode(event_payload(ev)))
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
    assert verify_signature(SECRET, srv.requests[-1][1], body)


@pytest.mark.parametrize("name", ["demo", "theft_overnight", "overheat", "dtc", "weak_battery"])
def test_every_event_the_rules_derive_follows_the_schema(name):
    from test_rules_scenarios import DEVICE, config_for, feed, trace_of

    from obdsync.rules import RuleEngine

    schema = json.loads(SCHEMA_FILE.read_text())
    scn, trace = trace_of(name)
    changes = feed(RuleEngine(config_for(scn), DEVICE), trace.items)
    assert changes
    for ch in changes:
        jsonschema.validate(decode(event_payload(ch.event)), schema)
