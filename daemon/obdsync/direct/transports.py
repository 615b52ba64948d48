"""Transports to an ELM327 adapter: BLE, Bluetooth Classic (RFCOMM), USB/serial and TCP (Wi-Fi).

Each is a byte stream behind one interface, python-can's template-method shape: the base class
`Transport` owns the receive buffer, open/close (idempotent, also as `async with`) and the
firmware's stream contract (firmware/dongle/uart.py), so `dongle.elm327.ELM327(transport)` runs
on it unchanged:

    write(buf)          queue the whole buffer for sending (never waits)
    readinto(buf) -> n  what has arrived, 0 when nothing (never waits)
    drain() -> n        discard what has arrived
    poll_ms             the driver's poll period; arriving bytes also end its waits early
                        (obdsync.direct.mpcompat.wake), so it is only a fallback

Subclasses implement `_open()`, `_close()` and `_send(data)` and hand received bytes to
`_feed()`; a lost link calls `_lost(why)`. `open_transport(spec)` picks the class from the
address's form (registry below, classes imported lazily).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from obdsync.direct import mpcompat

if TYPE_CHECKING:
    import serial

log = logging.getLogger("obdsync.direct")

RX_LIMIT = 8192  # bytes held unread; an adapter flooding us (a stuck monitor mode) cannot grow memory
DEFAULT_BAUD = 38400  # the ELM327's default (datasheet ELM327DSJ; 9600 when its pin 6 is low)
DEFAULT_WIFI_PORT = 35000  # Wi-Fi ELM327 adapters: usually 192.168.0.10:35000
CONNECT_TIMEOUT = 20.0


class TransportError(Exception):
    """The adapter cannot be reached, or the link to it broke."""


class Transport:
    kind = "?"
    poll_ms = 20

    def __init__(self, address: str) -> None:
        self.address = address
        self._rx = bytearray()
        self.is_open = False
        self.lost_reason: str | None = None
        self.overflow = 0  # bytes dropped because nobody read them
        self.on_lost: Callable[[str], None] | None = None

    # -- the life cycle (template methods) ----------------------------------------------------

    async def open(self) -> Transport:
        if self.is_open:
            return self
        self._rx.clear()
        self.lost_reason = None
        await self._open()
        self.is_open = True
        return self

    async def close(self) -> None:
        if not self.is_open and self.lost_reason is None:
            return
        self.is_open = False
        with contextlib.suppress(Exception):
            await self._close()
        if self.lost_reason is None:
            self.lost_reason = "closed"

    async def __aenter__(self) -> Transport:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    # -- the stream contract (firmware/dongle/uart.py) ----------------------------------------

    def write(self, buf: bytes | bytearray | memoryview) -> None:
        if not self.is_open:
            # The driver sees no reply and times out; the logger notices is_open and reconnects.
            return
        self._send(bytes(buf))

    def readinto(self, buf: bytearray | memoryview) -> int:
        rx = self._rx
        n = min(len(buf), len(rx))
        if n:
            buf[:n] = rx[:n]
            del rx[:n]
        return n

    def drain(self) -> int:
        n = len(self._rx)
        self._rx.clear()
        return n

    # -- for subclasses -----------------------------------------------------------------------

    def _feed(self, data: bytes | bytearray) -> None:
        room = RX_LIMIT - len(self._rx)
        if len(data) > room:
            self.overflow += len(data) - max(room, 0)
            data = data[: max(room, 0)]
        self._rx += data
        mpcompat.wake()

    def _lost(self, why: str) -> None:
        if self.lost_reason is None or self.lost_reason == "closed":
            self.lost_reason = why
        was_open = self.is_open
        self.is_open = False
        mpcompat.wake()
        if was_open and self.on_lost is not None:
            self.on_lost(why)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address}>"


class _StreamTransport(Transport):
    """Anything asyncio gives as a (StreamReader, StreamWriter) pair: TCP, RFCOMM sockets."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise NotImplementedError

    async def _open(self) -> None:
        try:
            reader, self._writer = await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as e:
            raise TransportError(f"cannot connect to {self.address}: {e or type(e).__name__}") from e
        self._reader = reader
        self._task = asyncio.create_task(self._pump(reader))

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                self._feed(data)
            self._lost("the adapter closed the connection")
        except (OSError, asyncio.IncompleteReadError) as e:
            self._lost(f"connection lost: {e}")

    def _send(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(data)

    async def _close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class TcpTransport(_StreamTransport):
    """A Wi-Fi adapter (or the ELM327 emulator's `-n PORT`): `HOST:PORT`."""

    kind = "tcp"

    def __init__(self, address: str) -> None:
        super().__init__(address)
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TransportError(f"a Wi-Fi adapter is HOST:PORT (e.g. 192.168.0.10:{DEFAULT_WIFI_PORT}), "
                                 f"not {address!r}")
        self.host, self.port = host.strip("[]"), int(port)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # 5-byte commands, answered at once
        return reader, writer


class RfcommTransport(_StreamTransport):
    """Bluetooth Classic (SPP) through a kernel RFCOMM socket: `rfcomm:AA:BB:CC:DD:EE:FF[/channel]`.
    (A bound /dev/rfcomm0 is a serial port: SerialTransport.) Linux only; untested on hardware here."""

    kind = "rfcomm"

    def __init__(self, address: str, channel: int = 1) -> None:
        super().__init__(address)
        mac, _, ch = address.partition("/")
        if not _MAC.fullmatch(mac):
            raise TransportError(f"an RFCOMM adapter is rfcomm:AA:BB:CC:DD:EE:FF[/channel], not {address!r}")
        self.mac = mac.upper()
        self.channel = int(ch) if ch.isdigit() else channel

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not hasattr(socket, "AF_BLUETOOTH"):
            raise OSError("this Python has no Bluetooth sockets (AF_BLUETOOTH)")
        sock = socket.socket(socket.AF_BLUETOOTH, socket.SOCK_STREAM, socket.BTPROTO_RFCOMM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (self.mac, self.channel))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)


class SerialTransport(Transport):
    """USB serial adapters, a bound RFCOMM tty, or a pseudo-terminal: `/dev/ttyUSB0`, `COM3`.

    pyserial opens and configures the port (raw, baud, 8N1); the event loop watches its file
    descriptor, so reading costs nothing while the adapter is silent."""

    kind = "serial"
    poll_ms = 20

    def __init__(self, address: str, baudrate: int = DEFAULT_BAUD) -> None:
        super().__init__(address)
        self.baudrate = baudrate
        self._serial: serial.Serial | None = None

    async def _open(self) -> None:
        import serial

        try:
            self._serial = serial.serial_for_url(self.address, baudrate=self.baudrate, timeout=0,
                                                 exclusive=True)
        except (serial.SerialException, OSError, ValueError) as e:
            raise TransportError(f"cannot open {self.address}: {e}") from e
        asyncio.get_running_loop().add_reader(self._serial.fileno(), self._readable)

    def _readable(self) -> None:
        if self._serial is None:  # closed while the loop held this callback
            return
        try:
            data = os.read(self._serial.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError as e:
            self._unwatch()
            self._lost(f"{self.address}: {e}")
            return
        if not data:
            self._unwatch()
            self._lost(f"{self.address} was unplugged")
            return
        self._feed(data)

    def _unwatch(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._serial.fileno())

    def _send(self, data: bytes) -> None:
        if self._serial is None:
            return
        try:
            self._serial.write(data)  # a command is < 30 bytes: the tty's buffer takes it at once
        except Exception as e:  # noqa: BLE001 - pyserial raises SerialException or OSError
            self._unwatch()
            self._lost(f"{self.address}: {e}")

    async def _close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(ser.fileno())
            ser.close()


_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
# kind -> (module, class): imported when used (bleak only for BLE)
REGISTRY = {
    "ble": ("obdsync.direct.ble", "BleTransport"),
    "tcp": ("obdsync.direct.transports", "TcpTransport"),
    "serial": ("obdsync.direct.transports", "SerialTransport"),
    "rfcomm": ("obdsync.direct.transports", "RfcommTransport"),
}


def classify(spec: str) -> tuple[str, str]:
    """(kind, address) of an adapter as the user writes it: `AA:BB:CC:DD:EE:FF` (BLE),
    `rfcomm:AA:BB:…[/ch]`, `/dev/ttyUSB0` or `COM3` (serial), `HOST:PORT` (Wi-Fi), or any of
    them prefixed with its kind (`ble:`, `tcp:`, `serial:`)."""
    s = spec.strip()
    kind, sep, rest = s.partition(":")
    if sep and kind.lower() in REGISTRY and not _MAC.fullmatch(s):
        return kind.lower(), rest
    if _MAC.fullmatch(s) or re.fullmatch(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f-]{27}", s):  # macOS gives UUIDs
        return "ble", s.upper()
    if s.startswith("/") or re.fullmatch(r"COM\d+", s, re.I) or "://" in s:
        return "serial", s
    host, sep, port = s.rpartition(":")
    if sep and host and port.isdigit():
        return "tcp", s
    raise TransportError(f"not an adapter address: {spec!r} (want AA:BB:CC:DD:EE:FF, /dev/ttyUSB0, "
                         f"HOST:PORT or rfcomm:AA:BB:CC:DD:EE:FF)")


def open_transport(spec: str, **options: Any) -> Transport:
    """The transport for `spec` (not opened yet); `options` go to its constructor."""
    import importlib

    kind, address = classify(spec)
    module, name = REGISTRY[kind]
    cls: type[Transport] = getattr(importlib.import_module(module), name)
    return cls(address, **options)


def serial_ports() -> list[tuple[str, str]]:
    """(device, description) of the serial ports present (USB adapters, bound RFCOMM ttys)."""
    try:
        from serial.tools import list_ports
    except ImportError:
        return []
    return [(p.device, p.description or "") for p in list_ports.comports()]
