"""MQTT over TLS with a username and password, against a real Mosquitto that
requires both: a certificate from a CA the config names, and credentials.
The wrong password is refused by the broker: nothing is lost, the entry waits,
and status says why."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from pathlib import Path

import aiomqtt
import mosquitto
import pytest
from forward_util import FAST, event, rows, wait_until

from obdsync.config import ForwardConfig, MqttTarget, Secret
from obdsync.forward import Forwarder, outbox_status
from obdsync.store import Store

TARGET = "mqtt-tls"
USER, PASSWORD = "car", "s3cret-pass"


def make_certs(d: Path) -> None:
    """A CA, and a server certificate for 127.0.0.1 signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make the test certificates")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=obdsync test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.cnf", "-out", "server.pem")


class TlsBroker(mosquitto.Broker):
    def __init__(self, workdir: Path):
        super().__init__(workdir)
        make_certs(workdir)
        passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        pw = workdir / "passwd"
        subprocess.run([passwd, "-b", "-c", str(pw), USER, PASSWORD], check=True, capture_output=True)
        pw.chmod(0o600)
        conf = self.conf.read_text().replace("allow_anonymous true\n", "allow_anonymous false\n")
        conf += (f"password_file {pw}\ncafile {workdir / 'ca.pem'}\ncertfile {workdir / 'server.pem'}\n"
                 f"keyfile {workdir / 'server.key'}\n")
        self.conf.write_text(conf)


@pytest.fixture
def tls_broker(tmp_path):
    b = TlsBroker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def target(port: int, ca: Path, password: str) -> ForwardConfig:
    return ForwardConfig(mqtt=(MqttTarget(host="127.0.0.1", port=port, name=TARGET, tls=True, ca=str(ca),
                                          username=USER, password=Secret(password)),))


async def test_tls_and_password_deliver_and_a_wrong_password_waits(tls_broker, tmp_path):
    ca = tmp_path / "ca.pem"
    ctx = ssl.create_default_context(cafile=str(ca))
    async with await Store.open(tmp_path / "f.db") as store:
        ev = event(1)
        # The wrong password first: refused by the broker, the entry stays pending.
        bad = Forwarder(store, target(tls_broker.port, ca, "wrong"), backoff=FAST, idle_poll_s=5, mqtt_timeout_s=5)
        await bad.start()
        try:
            await bad.put_event(ev)
            await wait_until(lambda: rows(store.path, "SELECT attempts FROM outbox")[0][0] >= 1,
                             what="a refused attempt")
        finally:
            await bad.stop()
        [st] = await outbox_status(store, [TARGET])
        assert (st.pending, st.sent) == (1, 0)
        assert st.last_error, "status says why the entry waits"

        async with aiomqtt.Client("127.0.0.1", tls_broker.port, username=USER, password=PASSWORD,
                                  tls_context=ctx, identifier="tls-sub") as sub:
            await sub.subscribe("obdsync/#", qos=1)
            good = Forwarder(store, target(tls_broker.port, ca, PASSWORD), backoff=FAST, idle_poll_s=5,
                             mqtt_timeout_s=5)
            await good.start()
            try:
                async with asyncio.timeout(30):
                    async for msg in sub.messages:
                        if str(msg.topic).endswith("/event/low_fuel"):
                            assert json.loads(msg.payload)["id"] == ev.id
                            break
                await wait_until(lambda: rows(store.path, "SELECT state FROM outbox")[0][0] == "sent",
                                 what="the entry marked sent")
            finally:
                await good.stop()
        [st] = await outbox_status(store, [TARGET])
        assert (st.pending, st.sent) == (0, 1)
