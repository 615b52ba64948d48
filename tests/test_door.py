"""The control door on its own (no dongle): the socket's place and permissions, the
versioned JSON-lines requests, errors crossing it as the exceptions the direct path
raises, a stale socket file replaced and a live one respected. With `obdsync run` and
the simulated dongle: tests/test_door_e2e.py."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from obdsync import door, paths
from obdsync.link import AuthError, CommandError, LinkError
from obdsync.vin import VinError
from protocol import control


@pytest.fixture
def sock_path():
    d = Path(tempfile.mkdtemp(prefix="obdsync-door-"))  # short: a socket path has 107 bytes
    yield d / "obdsync" / "control.sock"
    shutil.rmtree(d, ignore_errors=True)


async def echo(req: door.Request):
    if req.op == "echo":
        return {"device": req.device, "args": req.args}
    if req.op == "refuse":
        raise CommandError(control.CLEAR_DTC, control.REFUSED_MOVING)
    if req.op == "away":
        raise LinkError("dongle 0011 is not connected")
    if req.op == "auth":
        raise AuthError("dongle refused authentication")
    if req.op == "vin":
        raise VinError("not a VIN")
    if req.op == "bug":
        raise RuntimeError("boom")
    raise door.DoorError(f"unknown request {req.op!r}")


def test_requests_and_errors_cross_the_door_as_the_direct_path_raises_them(sock_path):
    async def go():
        server = door.Server(echo, sock_path)
        await server.start()
        try:
            assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
            assert stat.S_IMODE(sock_path.parent.stat().st_mode) == 0o700
            assert sock_path.stat().st_uid == os.getuid()
            got = await door.call("echo", "0011223344556677", {"rows": [[12, 1, 2, 3]]}, path=sock_path)
            assert got == {"device": "0011223344556677", "args": {"rows": [[12, 1, 2, 3]]}}
            with pytest.raises(CommandError) as e:
                await door.call("refuse", path=sock_path)
            assert (e.value.command, e.value.status) == (control.CLEAR_DTC, control.REFUSED_MOVING)
            assert str(e.value) == str(CommandError(control.CLEAR_DTC, control.REFUSED_MOVING))
            with pytest.raises(LinkError, match="dongle 0011 is not connected") as e:
                await door.call("away", path=sock_path)
            assert type(e.value) is LinkError
            with pytest.raises(AuthError, match="refused authentication"):
                await door.call("auth", path=sock_path)
            with pytest.raises(VinError, match="not a VIN"):
                await door.call("vin", path=sock_path)
            with pytest.raises(door.DoorError, match="the running daemon failed: boom"):
                await door.call("bug", path=sock_path)
            with pytest.raises(door.DoorError, match="unknown request 'nope'"):
                await door.call("nope", path=sock_path)
        finally:
            await server.close()
        assert not sock_path.exists(), "the socket file outlived the server"

    asyncio.run(go())


async def raw_exchange(path: Path, data: bytes) -> dict:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return json.loads(line)


@pytest.mark.parametrize("line, error", [
    (b"not json\n", "one JSON object a line"),
    (b"[1, 2]\n", "a request is a JSON object"),
    (b'{"v": 2, "id": 1, "op": "echo"}\n', "control protocol version 2 is not spoken here"),
    (b'{"id": 1, "op": "echo"}\n', "control protocol version None"),
    (b'{"v": 1, "id": "1", "op": "echo"}\n', "request id must be an integer"),
    (b'{"v": 1, "id": 1, "op": ""}\n', "request op must be a non-empty string"),
    (b'{"v": 1, "id": 1, "op": "echo", "device": 5}\n', "request device must be a string or null"),
    (b'{"v": 1, "id": 1, "op": "echo", "args": [1]}\n', "request args must be an object"),
])
def test_a_malformed_request_gets_a_named_error_and_the_door_stays_open(sock_path, line, error):
    async def go():
        server = door.Server(echo, sock_path)
        await server.start()
        try:
            reply = await raw_exchange(sock_path, line)
            assert reply["v"] == door.VERSION and reply["ok"] is False
            assert reply["error"]["kind"] == "request" and error in reply["error"]["message"], reply
            assert await door.call("echo", path=sock_path) == {"device": None, "args": {}}
        finally:
            await server.close()

    asyncio.run(go())


def test_an_oversized_request_is_refused(sock_path):
    async def go():
        server = door.Server(echo, sock_path)
        await server.start()
        try:
            reply = await raw_exchange(sock_path, b"x" * (door.MAX_LINE + 10) + b"\n")
            assert reply["ok"] is False and "longer than" in reply["error"]["message"]
        finally:
            await server.close()

    asyncio.run(go())


def test_no_daemon_without_a_socket_file(sock_path):
    with pytest.raises(door.NoDaemon):
        asyncio.run(door.call("hello", path=sock_path))


def stale_socket(path: Path) -> None:
    """What a daemon killed with SIGKILL leaves: the socket file, nobody listening."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()


def test_a_stale_socket_file_means_no_daemon_and_is_replaced(sock_path):
    stale_socket(sock_path)
    with pytest.raises(door.NoDaemon):
        asyncio.run(door.call("hello", path=sock_path))

    async def go():
        server = door.Server(echo, sock_path)
        await server.start()
        try:
            assert await door.call("echo", path=sock_path) == {"device": None, "args": {}}
        finally:
            await server.close()

    asyncio.run(go())


def test_a_second_server_refuses_while_the_first_listens(sock_path):
    async def hello(req):
        if req.op == "hello":
            return {"pid": 4242}
        return await echo(req)

    async def go():
        first = door.Server(hello, sock_path)
        await first.start()
        try:
            second = door.Server(echo, sock_path)
            with pytest.raises(door.DaemonRunning, match="pid 4242"):
                await second.start()
            assert await door.call("echo", path=sock_path) == {"device": None, "args": {}}
        finally:
            await first.close()

    asyncio.run(go())


def test_something_else_at_the_socket_path_is_left_alone(sock_path):
    sock_path.parent.mkdir(parents=True, mode=0o700)
    sock_path.write_text("mine")

    async def go():
        with pytest.raises(door.DoorError, match="is not a socket"):
            await door.Server(echo, sock_path).start()

    asyncio.run(go())
    assert sock_path.read_text() == "mine"


@pytest.mark.parametrize("err", [
    {"kind": ["link"], "message": "m"},  # an unhashable kind: was a TypeError from the lookup
    {"kind": {"x": 1}, "message": "m"},
    {"kind": "command", "message": "m"},  # no command/status: was a KeyError
    {"kind": "command", "command": "READ_VIN", "status": 2},  # was a ValueError
])
def test_a_malformed_error_from_the_daemon_is_a_door_error(err):
    with pytest.raises(door.DoorError):
        door.raise_error(err)


def test_a_too_long_socket_path_is_a_named_error(tmp_path):
    long = tmp_path / ("d" * 120) / "control.sock"
    with pytest.raises(door.DoorError, match="set XDG_RUNTIME_DIR to a shorter directory"):
        asyncio.run(door.call("hello", path=long))


def test_the_socket_lives_in_the_runtime_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert paths.control_socket_path() == tmp_path / "obdsync" / "control.sock"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative/dir")  # invalid by the XDG spec: ignored
    assert paths.control_socket_path() != Path("relative/dir/obdsync/control.sock")


def test_the_peer_is_known_to_be_this_user():
    a, b = socket.socketpair(socket.AF_UNIX)
    try:
        uid = door._peer_uid(a)
        assert uid is None or uid == os.getuid()
        if hasattr(socket, "SO_PEERCRED"):
            assert uid == os.getuid()
    finally:
        a.close()
        b.close()


@pytest.mark.skipif(not hasattr(socket, "SO_PEERCRED") or os.getuid() != 0 or not os.path.exists("/usr/bin/python3"),
                    reason="needs SO_PEERCRED, root (to connect as another user) and a python3 that user may run")
def test_another_user_is_refused_even_through_loosened_permissions(sock_path):
    """The file modes keep others out; should they be loosened (a careless chmod), the
    peer's uid still does."""
    import subprocess

    # Refused at once, before any request is read: the client only listens.
    client = "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print(s.makefile().readline())"

    async def go():
        server = door.Server(echo, sock_path)
        await server.start()
        try:
            os.chmod(sock_path.parent.parent, 0o755)
            os.chmod(sock_path.parent, 0o755)
            os.chmod(sock_path, 0o666)
            p = await asyncio.create_subprocess_exec(
                "/usr/bin/python3", "-c", client, str(sock_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                user=65534, group=65534, extra_groups=[])
            out, err = await asyncio.wait_for(p.communicate(), 30)
            assert p.returncode == 0, err.decode()
            reply = json.loads(out)
            assert reply["ok"] is False and "only the user running obdsync" in reply["error"]["message"], reply
        finally:
            await server.close()

    asyncio.run(go())
