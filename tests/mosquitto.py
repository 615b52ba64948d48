"""A real Mosquitto broker for tests, on a free loopback port, and an MQTT collector.

``running(dir)`` starts one and always stops it. The broker can be stopped and started
again on the same port (its persistence file keeps sessions and retained messages across
that, like a broker restart in production) and paused with SIGSTOP, so a publish can
be left without its PUBACK. Tests skip, saying so, when the binary is absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

BINARY = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


def need_mosquitto() -> str:
    if BINARY is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); MQTT tests need a real broker")
    return BINARY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, workdir: Path):
        self.binary = need_mosquitto()
        self.dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # Run as root, it would switch to user mosquitto and could not write its persistence file here.
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\n")

    def start(self, deadline_s: float = 10.0) -> None:
        assert self.proc is None
        log = open(self.dir / "mosquitto.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()
        end = time.monotonic() + deadline_s
        while True:  # wait until it accepts connections
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > end:
                    self.stop()
                    raise RuntimeError(f"mosquitto does not accept connections: {self.log_tail()}") from None
                time.sleep(0.02)  # polling a port, not timing a test

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)  # a paused broker can't act on SIGTERM
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL (works on a paused broker too): connections drop without a word."""
        proc, self.proc = self.proc, None
        proc.kill()
        proc.wait()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def log_tail(self) -> str:
        try:
            return (self.dir / "mosquitto.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""


@contextlib.contextmanager
def running(workdir: Path):
    b = Broker(workdir)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int


@dataclass
class Collector:
    """Subscribes (QoS 1, persistent session so nothing is missed across a broker restart)
    and keeps every message; ``wait_for`` waits for a condition on them with a deadline."""

    port: int
    topics: tuple[str, ...] = ("#",)
    ident: str = "collector"
    clean: bool = False
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self):
        self._changed = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Collector:
        self._task = asyncio.get_running_loop().create_task(self._run())
        async with asyncio.timeout(10):
            await self._subscribed.wait()
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=self.ident,
                                          clean_session=self.clean, timeout=5) as c:
                    for t in self.topics:
                        await c.subscribe(t, qos=1)
                    self._subscribed.set()
                    async for m in c.messages:
                        self.messages.append(Received(str(m.topic), bytes(m.payload), bool(m.retain), m.qos))
                        self._changed.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)  # reconnect interval while the broker is away

    async def wait_for(self, cond, timeout: float = 15.0, what: str = "condition"):
        """Wait until ``cond(messages)`` is truthy; returns its value."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    v = cond(self.messages)
                    if v:
                        return v
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; got {[(m.topic, m.payload[:80]) for m in self.messages]}") from None

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]


async def retained(port: int, topics: tuple[str, ...] = ("#",), ident: str = "c-retained") -> dict[str, bytes]:
    """Every retained message the broker holds under ``topics``, as a subscriber that
    connects now sees them (topic -> payload). A marker published after the subscription
    arrives after them: the broker sends the retained messages while subscribing."""
    marker = f"zz-marker/{ident}"
    async with Collector(port, (*topics, marker), ident=ident, clean=True) as col:
        async with aiomqtt.Client("127.0.0.1", port, identifier=ident + "-marker", timeout=5) as c:
            await c.publish(marker, b"end", qos=1)
        await col.wait_for(lambda ms: any(m.topic == marker for m in ms), what="the marker")
    return {m.topic: m.payload for m in col.messages if m.retain}
