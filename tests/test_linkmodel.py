"""The link model between a client and the emulator: byte counts, pacing, ECU latency,
and every injected fault as the client sees it, in-process and as a subprocess."""

from __future__ import annotations

import os
import threading
import time

import pytest
from test_emulator import Port, gone, lines, start_cli, stop

from hil import scenario
from hil.emulator import Emulator
from hil.linkmodel import BITS_PER_BYTE, FAULT_KINDS, FaultPlan, LinkControl, LinkError, LinkModel


@pytest.fixture
def emu():
    # One emulator a test: a chip's state (echo, the protocol search, a reset the link
    # injected, a reply still on its way) must not leak from one test into the next.
    scn = scenario.load("city")
    with Emulator(scn, clock=scn.schedule(time.time() - 5)) as e:
        yield e


@pytest.fixture
def link(emu):
    with LinkModel(emu.pty, latency_s=0.005) as lk:
        yield lk


@pytest.fixture
def client(link):
    p = Port(link.pty)
    p.cmd("ATZ")
    p.cmd("ATE0")
    p.cmd("0100")  # the search, out of the way
    yield p
    p.close()


def test_byte_counts_are_what_the_client_sent_and_received(emu):
    with LinkModel(emu.pty, latency_s=0.0) as lk:
        p = Port(lk.pty)
        try:
            sent = received = 0
            for cmd in ("ATZ", "ATE0", "0100", "010C", "010D", "0902", "ATRV", "010C0D05"):
                reply = p.cmd(cmd)
                received += len(reply)
                sent += len(cmd) + 1
            multi = len(reply) + len("010C0D05\r")
            stats = lk.stats()
            singles = sum(len(p.cmd(c)) + len(c) + 1 for c in ("010C", "010D", "0105"))
            after = lk.stats()
        finally:
            p.close()
    assert stats["bytes_to_elm"] == sent
    assert stats["bytes_from_elm"] == received
    assert stats["obd_requests"] == 5 and stats["at_commands"] == 3
    assert after["bytes_to_elm"] + after["bytes_from_elm"] - stats["bytes_to_elm"] - stats["bytes_from_elm"] == singles
    # what the benchmarks measure: one multi-PID request costs fewer UART bytes than singles
    assert multi < singles


def test_pacing_never_delivers_faster_than_the_baud_rate_allows(emu):
    baud, latency = 9600, 0.02
    with LinkModel(emu.pty, baud=baud, latency_s=latency) as lk:
        p = Port(lk.pty)
        try:
            p.cmd("ATE0")
            p.cmd("0100")
            t0 = time.monotonic()
            reply = p.cmd("0902")
            elapsed = time.monotonic() - t0
        finally:
            p.close()
    assert lines(reply)[0] == "014"
    floor = (len("0902\r") + len(reply)) * BITS_PER_BYTE / baud + latency
    assert elapsed >= floor * 0.99  # a lower bound only: a slow machine cannot break it


def test_unpaced_link_still_relays_everything(emu):
    with LinkModel(emu.pty, baud=0, latency_s=0) as lk:
        p = Port(lk.pty)
        try:
            p.cmd("ATE0")
            p.cmd("0100")
            assert lines(p.cmd("0902"))[0] == "014"
            assert all(lines(p.cmd("010D"))[0].startswith("41 0D") for _ in range(20))
        finally:
            p.close()


@pytest.mark.parametrize("kind,shown", [("can_error", ["CAN ERROR"]), ("bus_init_error", ["BUS INIT: ...ERROR"]),
                                        ("stopped", ["STOPPED"]), ("unknown", ["?"])])
def test_error_faults_print_as_the_elm327_prints_them(link, client, kind, shown):
    link.inject(kind)
    assert lines(client.cmd("010C")) == shown
    assert lines(client.cmd("010C"))[0].startswith("41 0C")  # one reply only
    assert link.stats()["fault_" + kind] == 1


def test_faults_spare_at_commands(link, client):
    link.inject("can_error")
    assert lines(client.cmd("ATRV"))[0].endswith("V")
    assert lines(client.cmd("010D")) == ["CAN ERROR"]


def test_a_dropped_reply_never_arrives_and_the_next_one_does(link, client):
    link.inject("drop")
    assert client.cmd("0902", timeout=0.5) == b""
    assert lines(client.cmd("0902"))[0] == "014"


def test_garbage_lands_inside_the_reply(link, client):
    clean = client.cmd("0902")
    link.inject("garbage")
    dirty = client.cmd("0902")
    assert dirty.endswith(b"\r\r>") and dirty != clean
    assert 2 <= len(dirty) - len(clean) <= 6
    assert b">" not in dirty[:-1]


def test_a_truncated_reply_is_a_prefix_then_the_prompt(link, client):
    clean = client.cmd("0902")
    link.inject("truncate")
    cut = client.cmd("0902")
    assert cut.endswith(b"\r\r>")
    body = cut[:-3]
    assert body and clean.startswith(body) and len(body) < len(clean.rstrip(b">").rstrip(b"\r"))


def test_a_reset_mid_reply_prints_the_banner_and_forgets_the_settings(link, client):
    clean = client.cmd("0902")
    link.inject("reset")
    reply = client.cmd("0902")
    head, banner = reply.split(b"\r\rELM327 v1.5\r\r>")[0], reply[-len(b"\r\rELM327 v1.5\r\r>"):]
    assert banner == b"\r\rELM327 v1.5\r\r>"
    assert head and clean.startswith(head) and len(head) < len(clean) - 3
    # ATE0 is gone: the next command is echoed; the protocol is searched for again
    assert lines(client.cmd("0100"))[:2] == ["0100", "SEARCHING..."]


def test_the_ptys_are_asked_for_only_once_they_exist():
    # A pty path of None handed on would open as a confusing error somewhere else.
    emu = Emulator("demo")
    with pytest.raises(RuntimeError, match="not started"):
        emu.pty  # noqa: B018
    link = LinkModel("/nonexistent-upstream")
    with pytest.raises(LinkError, match="not started"):
        link.pty  # noqa: B018


def test_a_seeded_fault_plan_repeats_itself():
    a = FaultPlan(0.3, seed=7)
    b = FaultPlan(0.3, seed=7)
    seq = [a.draw() for _ in range(200)]
    assert seq == [b.draw() for _ in range(200)]
    assert 30 < sum(1 for k in seq if k) < 90 and {k for k in seq if k} <= set(FAULT_KINDS)
    with pytest.raises(ValueError, match="nope"):
        FaultPlan(0.1, kinds=("nope",))
    with pytest.raises(ValueError, match="rate"):
        FaultPlan(2.0)


def test_a_fault_plan_applies_to_obd_replies_while_running(emu):
    with LinkModel(emu.pty, latency_s=0, plan=FaultPlan(1.0, seed=1, kinds=("can_error",))) as lk:
        p = Port(lk.pty)
        try:
            assert lines(p.cmd("ATE0")) == ["ATE0", "OK"]  # a fresh emulator: echo on
            assert [lines(p.cmd("010C")) for _ in range(3)] == [["CAN ERROR"]] * 3
            assert lk.stats()["fault_can_error"] == 3
        finally:
            p.close()


def test_unknown_fault_kind_is_refused(link):
    with pytest.raises(ValueError, match="garbage"):
        link.inject("gremlins")


def test_close_stops_the_relay_thread(emu):
    lk = LinkModel(emu.pty).start()
    lk.close()
    assert not any(t.name == "linkmodel" and t.is_alive() for t in threading.enumerate())
    lk.close()  # twice is harmless


def test_python_obd_sees_an_injected_fault_as_a_failed_query_then_recovers(emu, link):
    obd = pytest.importorskip("obd")
    conn = obd.OBD(portstr=link.pty, baudrate=38400, fast=False, timeout=2)
    try:
        assert conn.is_connected()
        assert not conn.query(obd.commands.RPM).is_null()
        link.inject("can_error")
        assert conn.query(obd.commands.RPM).is_null()
        assert not conn.query(obd.commands.RPM).is_null()
    finally:
        conn.close()


def test_subprocess_relay_with_control_socket_and_no_process_left(tmp_path):
    emu_proc, emu_out = start_cli(["-m", "hil.emulator", "city"])
    sock = str(tmp_path / "link.sock")
    link_proc = None
    try:
        link_proc, link_out = start_cli(["-m", "hil.linkmodel", "--upstream", emu_out[0], "--latency-ms", "5",
                                         "--control", sock])
        p = Port(link_out[0])
        try:
            ctl = LinkControl(sock)  # bound before the relay printed its pty
            p.cmd("ATE0")
            ctl.inject("stopped")
            assert lines(p.cmd("010C")) == ["STOPPED"]  # the whole reply, SEARCHING... too
            assert lines(p.cmd("010C"))[0].startswith("41 0C")
            stats = ctl.stats()
            assert stats["fault_stopped"] == 1 and stats["obd_requests"] == 2
        finally:
            p.close()
    finally:
        if link_proc is not None:
            stop(link_proc)
        stop(emu_proc)
    assert link_proc.returncode == 0 and emu_proc.returncode == 0
    assert gone(link_proc.pid) and gone(emu_proc.pid)
    assert not os.path.exists(sock)


def test_subprocess_relay_refuses_a_bad_upstream():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "hil.linkmodel", "--upstream", "/dev/no-such-pty"],
                       capture_output=True, text=True, timeout=30, cwd=str(scenario.SCENARIO_DIR.parent.parent))
    assert r.returncode == 2 and "no-such-pty" in r.stderr
