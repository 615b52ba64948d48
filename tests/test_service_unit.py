"""`obdsync run` as a systemd service: sd_notify readiness, status and watchdog pings
received on a real unix datagram socket named in $NOTIFY_SOCKET; log lines without a
timestamp of their own but with their priority when stderr is journald's stream; a unit
whose ExecStart is this installation's obdsync (checked by systemd-analyze when it is
there); the directories through platformdirs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from obdsync import logs, paths, sdnotify
from obdsync.cli import unit_text
from obdsync.config import Config
from obdsync.daemon import Daemon


@contextlib.contextmanager
def notify_socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.setblocking(False)
    try:
        yield s
    finally:
        s.close()


async def receive(sock, want, got, timeout=15.0):
    """Datagrams until ``want(got)`` holds."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while not want(got):
            got.append((await loop.sock_recv(sock, 4096)).decode())
    return got


async def test_ready_watchdog_and_stopping_reach_the_notify_socket(tmp_path, monkeypatch):
    addr = tmp_path / "notify.sock"
    monkeypatch.setenv("NOTIFY_SOCKET", str(addr))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    with notify_socket(addr) as sock:
        daemon = Daemon(Config(), tmp_path / "obdsync.db", [], live_file=tmp_path / "live.json")
        task = asyncio.create_task(daemon.run(install_signals=False))
        try:
            got = await receive(sock, lambda g: sum(m == "WATCHDOG=1" for m in g) >= 3, [])
            [ready] = [m for m in got if m.startswith("READY=1")]
            assert re.fullmatch(r"READY=1\nSTATUS=0 dongle\(s\), 0 connected; database .*obdsync\.db", ready)
        finally:
            daemon.stop()
            await asyncio.wait_for(task, 30)
        got = await receive(sock, lambda g: any(m.startswith("STOPPING=1") for m in g), got)
    # Nothing after the watchdog's task was cancelled but what the stop said.
    assert got[-1].startswith("STOPPING=1\nSTATUS=stopping")


def test_outside_systemd_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    assert not sdnotify.notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", "/x")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # another process's watchdog
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 0.5


def test_abstract_socket_names(tmp_path, monkeypatch):
    name = f"obdsync-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STATUS=hello")
        assert s.recv(100) == b"STATUS=hello"
    finally:
        s.close()


def test_under_journald_lines_have_a_priority_and_no_timestamp(tmp_path, monkeypatch):
    with open(tmp_path / "stderr", "w+") as journal, open(tmp_path / "other", "w+") as other:
        st = os.fstat(journal.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        try:
            logs.setup(logging.INFO, journal)
            logging.getLogger("obdsync.test").warning("battery low")
            logging.getLogger("obdsync.test").info("connected")
            logs.setup(logging.INFO, other)  # a stream journald did not give us: timestamps
            logging.getLogger("obdsync.test").warning("battery low")
        finally:
            logging.basicConfig(force=True, handlers=[logging.NullHandler()])
        journal.seek(0)
        other.seek(0)
        assert journal.read().splitlines() == ["<4>obdsync.test: battery low", "<6>obdsync.test: connected"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING obdsync.test: battery low\n", other.read())


def test_the_unit_starts_this_installations_obdsync(tmp_path):
    text = unit_text()
    [start] = re.findall(r"^ExecStart=(.*)$", text, re.M)
    exe = start.split()[0]
    assert os.access(exe, os.X_OK) and start.endswith(" run"), start
    assert os.path.dirname(exe) == os.path.dirname(sys.executable)  # the venv `make setup` made
    assert re.search(r"^Type=notify$", text, re.M) and re.search(r"^WatchdogSec=\d+$", text, re.M)
    unit = tmp_path / "obdsync.service"
    unit.write_text(text)
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax was not checked by systemd")
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    # The check bites: the old unit's %h/.local/bin/obdsync, which `make setup` never made.
    unit.write_text(text.replace(start, "/nonexistent/.local/bin/obdsync run"))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "not executable" in p.stderr


def test_directories_come_from_platformdirs(tmp_path, monkeypatch):
    import platformdirs

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "d"))
    assert paths.config_dir() == platformdirs.user_config_path("obdsync", appauthor=False) == tmp_path / "c/obdsync"
    assert paths.data_dir() == platformdirs.user_data_path("obdsync", appauthor=False) == tmp_path / "d/obdsync"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")  # invalid by the XDG spec: ignored
    assert paths.data_dir() == paths.Path.home() / ".local/share/obdsync"


def test_backlog_sync_progress_on_a_terminal_is_a_rich_bar(tmp_path):
    import io

    from rich.console import Console

    daemon = Daemon(Config(), tmp_path / "obdsync.db", [], live_file=tmp_path / "live.json", interactive=True)
    out = io.StringIO()
    daemon._console = Console(file=out, force_terminal=True, width=100, color_system=None)
    dev = "0011223344556677"
    for done in (0, 1200, 3600):
        daemon._progress(dev, done, 3600)
    text = out.getvalue()
    assert f"sync {dev}" in text and "100%" in text and "3600/3600 records" in text
    assert daemon._bars is None  # stopped once every backlog is synced
