"""The control door: how other commands reach the running daemon (`obdsync run`).

A unix socket in the runtime dir (`paths.control_socket_path`), in a 0700 directory,
itself 0600: no TCP, and only its owner gets in — the server also checks the peer's uid
(SO_PEERCRED) where the OS tells it. One JSON object a line each way:

    → {"v": 1, "id": 7, "op": "dtc.read", "device": "0011223344556677", "args": {}}
    ← {"v": 1, "id": 7, "ok": true, "result": [[3, ["P0301"]], ...]}
    ← {"v": 1, "id": 7, "ok": false, "error": {"kind": "command", "message": "...", "command": 8, "status": 3}}

`op` is a dongle operation of `obdsync.ops` (run on the daemon's link to `device`) or
one of the daemon's own (`hello`, `live`). An error carries its kind, and the client
raises the very exception the direct path raises (`LinkError`, `CommandError`, ...), so
a command says the same whichever way it went.

A socket file left by a daemon killed with SIGKILL is found stale (nobody accepts on
it) and replaced; a live one means another daemon runs, and the second refuses to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obdsync import paths

log = logging.getLogger("obdsync.door")

VERSION = 1
MAX_LINE = 64 * 1024  # a request is a few hundred bytes; a bigger line is not a request
SUN_PATH_MAX = 107  # sockaddr_un.sun_path: 108 bytes with the NUL
CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 60.0  # a dongle command times out after 10 s; a health check takes longer


class DoorError(Exception):
    """The control door itself failed: unusable socket, bad request, version mismatch."""


class NoDaemon(DoorError):
    """No daemon listens: the caller connects to the dongle directly."""


class NotManaged(DoorError):
    """The running daemon does not hold this dongle (`run --device` left it out): the
    caller may connect to it directly."""


class DaemonRunning(DoorError):
    """Another daemon already listens on the socket."""


# ---- the wire -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    id: int
    op: str
    device: str | None = None
    args: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _line({"v": VERSION, "id": self.id, "op": self.op, "device": self.device, "args": self.args})

    @classmethod
    def decode(cls, line: bytes) -> Request:
        """Raises DoorError naming what is wrong (the reply says it to the client)."""
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            raise DoorError(f"a request is one JSON object a line: {e}") from None
        if not isinstance(obj, dict):
            raise DoorError("a request is a JSON object")
        if obj.get("v") != VERSION:
            raise DoorError(f"control protocol version {obj.get('v')!r} is not spoken here (this daemon speaks"
                            f" {VERSION}): is `obdsync run` the same version as this command?")
        rid, op, device, args = obj.get("id"), obj.get("op"), obj.get("device"), obj.get("args", {})
        if not isinstance(rid, int) or isinstance(rid, bool):
            raise DoorError("request id must be an integer")
        if not isinstance(op, str) or not op:
            raise DoorError("request op must be a non-empty string")
        if device is not None and not isinstance(device, str):
            raise DoorError("request device must be a string or null")
        if not isinstance(args, dict):
            raise DoorError("request args must be an object")
        return cls(rid, op, device, args)


# Exceptions that cross the door: the daemon names the kind, the client raises the class.
def _kinds() -> dict[str, type[BaseException]]:
    from obdsync.link import AuthError, CommandError, LinkError
    from obdsync.vin import VinError
    from protocol.errors import ProtocolError

    # Most specific first: the server reports the first class an exception is.
    return {"command": CommandError, "auth": AuthError, "link": LinkError, "vin": VinError,
            "protocol": ProtocolError, "not_managed": NotManaged, "request": DoorError}


def error_reply(rid: int | None, e: BaseException) -> bytes:
    from obdsync.link import CommandError

    kind = next((k for k, cls in _kinds().items() if isinstance(e, cls)), "internal")
    err: dict[str, Any] = {"kind": kind, "message": str(e) or type(e).__name__}
    if isinstance(e, CommandError):
        err.update(command=e.command, status=e.status)
    return _line({"v": VERSION, "id": rid, "ok": False, "error": err})


def raise_error(err: Any) -> None:
    if not isinstance(err, dict):
        raise DoorError(f"the daemon's error is not an object: {err!r}")
    kind, message = err.get("kind"), str(err.get("message", ""))
    if kind == "command":
        from obdsync.link import CommandError

        try:
            command, status = int(err["command"]), int(err["status"])
        except (KeyError, TypeError, ValueError):
            raise DoorError(f"the daemon's command error lacks its command and status: {err!r}") from None
        raise CommandError(command, status)
    cls = _kinds().get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise DoorError(f"the running daemon failed: {message}")
    raise cls(message)


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"


# ---- the socket's place -------------------------------------------------------------------


def socket_path() -> Path:
    return paths.control_socket_path()


def _check_length(path: Path) -> None:
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise DoorError(f"control socket path {path} is longer than a unix socket allows ({SUN_PATH_MAX} bytes):"
                        " set XDG_RUNTIME_DIR to a shorter directory")


def _private_dir(d: Path) -> None:
    """The socket's directory: ours and nobody else's (else anyone could swap the socket)."""
    paths.private_dir(d)
    st = d.stat()
    if st.st_uid != os.getuid():
        raise DoorError(f"{d} belongs to uid {st.st_uid}, not to this user: the control socket cannot live there")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(d, 0o700)


def _peer_uid(sock: socket.socket) -> int | None:
    """The connecting process's uid (Linux SO_PEERCRED); None where the OS does not say."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


# ---- the daemon's side --------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Any]]


class Server:
    """Serves requests with `handle(request) -> result` until closed; the socket file is
    removed on close (if it is still ours)."""

    def __init__(self, handle: Handler, path: Path | None = None) -> None:
        self.path = path or socket_path()
        self._handle = handle
        self._server: asyncio.base_events.Server | None = None
        self._inode: int | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        _check_length(self.path)
        _private_dir(self.path.parent)
        await self._replace_stale()
        old = os.umask(0o177)  # the socket is born 0600 (the directory is 0700 anyway)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._inode = self.path.stat().st_ino
        log.info("control socket %s", self.path)

    async def _replace_stale(self) -> None:
        if not self.path.exists() and not self.path.is_symlink():
            return
        if not stat.S_ISSOCK(self.path.lstat().st_mode):
            raise DoorError(f"{self.path} exists and is not a socket: remove it if it is not needed")
        try:
            hello = await call("hello", path=self.path)
        except NoDaemon:
            log.info("removing the stale control socket %s (its daemon ended without closing it)", self.path)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        except DoorError:
            hello = {}
        raise DaemonRunning(f"another obdsync run (pid {hello.get('pid', '?')}) listens on {self.path}:"
                            " one daemon a user; stop it first, or use it — every command goes through it")

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for t in list(self._clients):
            t.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:  # not a successor's socket
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()  # the server runs each client in a task of its own
        if me is not None:
            self._clients.add(me)
        try:
            sock = writer.get_extra_info("socket")
            uid = _peer_uid(sock) if sock is not None else None
            if uid is not None and uid != os.getuid():
                log.warning("control socket: refused a connection from uid %d", uid)
                writer.write(error_reply(None, DoorError("only the user running obdsync may use its control socket")))
                await writer.drain()
                return
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return  # the client is done
                except asyncio.LimitOverrunError:
                    writer.write(error_reply(None, DoorError(f"request longer than {MAX_LINE} bytes")))
                    await writer.drain()
                    return
                writer.write(await self._answer(line))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if me is not None:
                self._clients.discard(me)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> bytes:
        rid = None
        try:
            req = Request.decode(line)
            rid = req.id
            result = await self._handle(req)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure is the client's answer, the daemon goes on
            if not isinstance(e, tuple(_kinds().values())):
                log.exception("control request failed")
            return error_reply(rid, e)
        return _line({"v": VERSION, "id": rid, "ok": True, "result": result})


# ---- a command's side ---------------------------------------------------------------------


async def call(op: str, device: str | None = None, args: dict[str, Any] | None = None,
               path: Path | None = None, timeout: float = REPLY_TIMEOUT) -> Any:
    """One request to the running daemon; its result, or the exception its error names.
    Raises NoDaemon when none listens (no socket file, or a stale one)."""
    path = path or socket_path()
    _check_length(path)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=MAX_LINE),
                                                CONNECT_TIMEOUT)
    except (FileNotFoundError, ConnectionRefusedError):
        raise NoDaemon(f"no daemon listens on {path}") from None
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
            raise NoDaemon(f"no daemon listens on {path}") from None
        raise DoorError(f"cannot reach the running daemon at {path}: {e}") from e
    except TimeoutError:
        raise DoorError(f"the running daemon at {path} does not accept connections (hung?)") from None
    try:
        writer.write(Request(1, op, device, args or {}).encode())
        await writer.drain()
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
        except asyncio.IncompleteReadError:
            raise DoorError("the running daemon closed the control socket without answering") from None
        except TimeoutError:
            raise DoorError(f"the running daemon did not answer {op!r} within {timeout:g} s") from None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    try:
        reply = json.loads(line)
    except ValueError as e:
        raise DoorError(f"the running daemon's answer is not JSON: {e}") from None
    if not isinstance(reply, dict) or reply.get("v") != VERSION:
        raise DoorError(f"the running daemon speaks another control protocol version ({reply.get('v')!r},"
                        f" this command {VERSION}): restart `obdsync run` after an upgrade")
    if not reply.get("ok"):
        raise_error(reply.get("error"))
    return reply.get("result")

