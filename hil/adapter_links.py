"""Off-the-shelf ELM327 adapters, simulated in front of the ELM327 emulator (direct mode's rig).

    daemon (obdsync.direct) ⇄ BLE air / TCP / pty ⇄ adapter ⇄ [upstream pty] ⇄ ELM327-emulator

- `BleAdapter`: a BLE peripheral on the simulated air (hil/blesim's wire, the same bleak
  `backend=` seam as the dongle) with one of the GATT layouts open-source clients report (`LAYOUTS`). As
  the cheap ones' UART-to-BLE bridge chips do, it buffers the chip's output and notifies it in
  MTU−3 byte fragments (20 at MTU 23; a shorter one at the end of a burst), delivers a full
  or final fragment twice now and then (`dup_rate`, seeded), stops advertising while a
  central is connected, and, with `bond_required` (OBDLink CX), refuses to enable notifications
  (ATT 0x05) on a link that is not encrypted; pairing is Just Works and bonds, and a bonded
  central re-encrypts with its key. `conn_interval_ms` / `per_event` model the radio: data
  moves only at connection events, at most `per_event` packets each way per event.
- `TcpAdapter`: a Wi-Fi adapter (HOST:PORT on 127.0.0.1) relaying to the upstream pty.
The upstream is the emulator's pty, or a `hil.linkmodel.LinkModel`'s (baud, ECU latency, faults).
Both run in the caller's event loop: `async with BleAdapter(pty, air, addr) as a: ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import struct
import termios
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hil.blesim import air as air_mod
from hil.blesim import wire

_NOTIFY, _INDICATE, _WRITE, _WRITE_NR, _READ = 0x10, 0x20, 0x08, 0x04, 0x02


@dataclass(frozen=True)
class Layout:
    name: str
    service: int | str  # 16-bit, or a 128-bit UUID string
    chars: tuple[tuple[int | str, int], ...]  # (uuid, properties)
    adv_name: str


LAYOUTS = {
    # OBDLink CX / Veepeak / clones: FFF1 notifies, FFF2 takes writes (some swap them: fff0_swapped)
    "fff0": Layout("fff0", 0xFFF0, ((0xFFF1, _NOTIFY | _READ), (0xFFF2, _WRITE | _WRITE_NR)), "OBDBLE"),
    "fff0_swapped": Layout("fff0_swapped", 0xFFF0, ((0xFFF1, _WRITE | _WRITE_NR), (0xFFF2, _NOTIFY)), "OBDII"),
    "ffe0": Layout("ffe0", 0xFFE0, ((0xFFE1, _NOTIFY | _WRITE_NR | _READ),), "LELink"),
    "18f0": Layout("18f0", 0x18F0, ((0x2AF0, _NOTIFY), (0x2AF1, _WRITE | _WRITE_NR)), "vLinker MC-IOS"),
    "vgate": Layout("vgate", "e7810a71-73ae-499d-8c15-faa9aef0c3f2",
                    (("bef8d6c9-9c21-4c9e-b632-bd58c1009f9f", _NOTIFY | _WRITE | _WRITE_NR | _READ),), "IOS-Vlink"),
    "wican": Layout("wican", 0xFEE0, ((0xFEE1, _NOTIFY | _WRITE),), "WiCAN"),
}


def _uuid_le(u: int | str) -> bytes:
    if isinstance(u, int):
        return u.to_bytes(2, "little")
    return bytes.fromhex(u.replace("-", ""))[::-1]


def _raw_pty(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    attr = termios.tcgetattr(fd)
    attr[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attr)
    return fd


class _Upstream:
    """The chip's serial line (a pty), read by the event loop."""

    def __init__(self, path: str, on_data: Callable[[bytes], None]) -> None:
        self.fd = _raw_pty(path)
        self._on_data = on_data
        asyncio.get_running_loop().add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._on_data(data)
        else:
            asyncio.get_running_loop().remove_reader(self.fd)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                continue  # a pty's buffer holds kilobytes; a command is a few bytes
            view = view[n:]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _chip(up: _Upstream | None) -> _Upstream:
    """The chip behind an adapter; ConnectionError (an OSError: the link's handlers end the
    connection on it) when the adapter is not started or already closed."""
    if up is None:
        raise ConnectionError("the adapter is not running: no ELM327 behind it")
    return up


class TcpAdapter:
    """A Wi-Fi ELM327: one client at a time on 127.0.0.1:`port` (0: any free port)."""

    def __init__(self, upstream: str, port: int = 0) -> None:
        self.upstream = upstream
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._up: _Upstream | None = None
        self._client: asyncio.StreamWriter | None = None
        self.connections = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> TcpAdapter:
        self._up = _Upstream(self.upstream, self._from_chip)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _from_chip(self, data: bytes) -> None:
        if self._client is not None and not self._client.is_closing():
            self._client.write(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._client is not None:
            writer.close()  # one client at a time, as the adapters do
            return
        self._client = writer
        self.connections += 1
        try:
            while data := await reader.read(4096):
                _chip(self._up).write(data)
        except OSError:
            pass
        finally:
            self._client = None
            writer.close()

    def drop(self) -> None:
        """The Wi-Fi link breaks (the car's ignition cut the adapter, say)."""
        if self._client is not None:
            self._client.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        if self._up is not None:
            self._up.close()
            self._up = None

    async def __aenter__(self) -> TcpAdapter:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class BleAdapter:
    """An ELM327 BLE adapter at `address` on the simulated `air` (see the module doc)."""

    def __init__(self, upstream: str, air: str | os.PathLike[str], address: str, layout: str = "fff0", *,
                 mtu: int = 23, dup_rate: float = 0.0, seed: int = 1, bond_required: bool = False,
                 conn_interval_ms: float = 0.0, per_event: int = 4, rssi: int = -60) -> None:
        self.upstream = upstream
        self.air = Path(air)
        self.address = air_mod.normalize_address(address)
        self.layout = LAYOUTS[layout]
        self.mtu = mtu
        self.dup_rate = dup_rate
        self.bond_required = bond_required
        self.interval = conn_interval_ms / 1000
        self.per_event = per_event
        self.rssi = rssi
        self._rng = random.Random(seed)
        self._server: asyncio.base_events.Server | None = None
        self._up: _Upstream | None = None
        self._conn: asyncio.StreamWriter | None = None
        self._mtu = 23
        self._encrypted = False
        self._subscribed = False
        self._bonds: dict[str, bytes] = {}  # central address -> LTK
        self._central = ""
        self._buf = bytearray()  # the chip's output waiting for a connection event
        self._in: list[bytes] = []  # writes waiting for a connection event
        self._ticker: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self.notifications = 0
        self.duplicated = 0
        self.refused_unencrypted = 0
        self.connections = 0
        self._handles()

    # -- GATT table ---------------------------------------------------------------------------

    def _handles(self) -> None:
        h = 1
        entries = []
        self._svc_handle = h
        entries.append(struct.pack("<BHHB", wire.KIND_SVC, h, 0, 2 if isinstance(self.layout.service, int) else 16)
                       + _uuid_le(self.layout.service))
        h += 1
        self.rx_handle = self.tx_handle = self.cccd_handle = 0
        self._indicate = False
        for uuid, props in self.layout.chars:
            ul = _uuid_le(uuid)
            ch = h
            entries.append(struct.pack("<BHHB", wire.KIND_CHR, ch, props, len(ul)) + ul)
            if props & (_WRITE | _WRITE_NR):
                self.tx_handle = ch
            if props & (_NOTIFY | _INDICATE):
                self.rx_handle = ch
                self._indicate = not props & _NOTIFY
                h += 1
                entries.append(struct.pack("<BHHB", wire.KIND_DSC, h, 0, 2) + (0x2902).to_bytes(2, "little"))
                self.cccd_handle = h
            h += 1
        self._services = b"".join(entries)
        name = self.layout.adv_name.encode()
        svc = self.layout.service
        if isinstance(svc, int):
            uuids = bytes((3, 0x03)) + svc.to_bytes(2, "little")
        else:
            uuids = bytes((17, 0x07)) + _uuid_le(svc)
        self._adv = bytes((2, 0x01, 0x06)) + uuids
        self._resp = bytes((len(name) + 1, 0x09)) + name

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> BleAdapter:
        self.air.mkdir(parents=True, exist_ok=True)
        path = air_mod.socket_path(self.air, self.address)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._up = _Upstream(self.upstream, self._from_chip)
        self._server = await asyncio.start_unix_server(self._serve, str(path))
        self._path = path
        if self.interval > 0:
            self._ticker = asyncio.create_task(self._events())
        return self

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._server is not None:
            self._server.close()
            self.drop()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
        if self._up is not None:
            self._up.close()
            self._up = None

    async def __aenter__(self) -> BleAdapter:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def drop(self) -> None:
        """The radio link breaks (out of range, the adapter lost power)."""
        if self._conn is not None:
            self._conn.transport.abort()

    def forget_bonds(self) -> None:
        """The adapter lost its keys (a factory reset)."""
        self._bonds.clear()

    # -- the air ------------------------------------------------------------------------------

    def _send(self, w: asyncio.StreamWriter, kind: int, payload: bytes = b"") -> None:
        w.write(wire.frame(kind, payload))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            kind, payload = await wire.read_message(reader)
        except (asyncio.IncompleteReadError, OSError):
            writer.close()
            return
        if kind == wire.SCAN:
            if self._conn is None:  # adapters stop advertising while a central is connected
                self._send(writer, wire.ADV, struct.pack("<bBB", self.rssi, 1, len(self._adv)) + self._adv
                           + self._resp)
            writer.close()
            return
        if kind != wire.CONNECT or self._conn is not None:
            self._send(writer, wire.REJECT)
            writer.close()
            return
        self._central = payload[1:7].hex()
        self._conn = writer
        self._mtu = 23
        self._encrypted = self._subscribed = False
        self._buf.clear()
        self._in.clear()
        self.connections += 1
        self._send(writer, wire.CONNECTED, struct.pack("<H", 1))
        try:
            while True:
                kind, payload = await wire.read_message(reader)
                self._on_message(writer, kind, payload)
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self._conn = None
            self._subscribed = False
            writer.close()

    def _on_message(self, w: asyncio.StreamWriter, kind: int, payload: bytes) -> None:
        if kind == wire.MTU:
            self._mtu = max(23, min(self.mtu, struct.unpack("<H", payload[:2])[0]))
            self._send(w, wire.MTU_RSP, struct.pack("<H", self.mtu))
        elif kind == wire.DISCOVER:
            self._send(w, wire.SERVICES, self._services)
        elif kind == wire.READ:
            self._send(w, wire.READ_RSP, bytes((0,)))  # the serial characteristics read empty
        elif kind in (wire.WRITE, wire.WRITE_CMD):
            handle = struct.unpack("<H", payload[:2])[0]
            status = self._write(handle, payload[2:])
            if kind == wire.WRITE:
                self._send(w, wire.WRITE_RSP, bytes((status,)))
        elif kind == wire.PAIR:
            ltk = os.urandom(16)
            self._bonds[self._central] = ltk  # Just Works, bonded
            self._encrypted = True
            self._send(w, wire.PAIR_RSP, bytes((0, 1, 0, 1, 16)) + ltk)
        elif kind == wire.ENCRYPT:
            if self._bonds.get(self._central) == payload[:16]:
                self._encrypted = True
                self._send(w, wire.PAIR_RSP, bytes((0, 1, 0, 1, 16)))
            else:
                self._send(w, wire.PAIR_RSP, bytes((0x06, 0, 0, 0, 0)))  # key missing
        # CONFIRM, CONN_UPDATE: nothing to do

    def _write(self, handle: int, data: bytes) -> int:
        if handle == self.cccd_handle:
            if self.bond_required and not self._encrypted and data[:1] != b"\x00":
                self.refused_unencrypted += 1
                return 0x05  # INSUFFICIENT_AUTHENTICATION
            self._subscribed = data[:1] != b"\x00"
            return 0
        if handle == self.tx_handle:
            if self.interval > 0:
                self._in.append(bytes(data))
                self._kick.set()
            else:
                _chip(self._up).write(bytes(data))
            return 0
        return 0x03  # WRITE_NOT_PERMITTED

    def _from_chip(self, data: bytes) -> None:
        if self._conn is None or not self._subscribed:
            return  # nobody listens: the adapter's output goes nowhere
        self._buf += data
        if self.interval > 0:
            self._kick.set()
        else:
            self._flush(1 << 30)

    def _flush(self, n: int) -> None:
        """Up to n notifications from what the chip said: full fragments, the rest at the end."""
        w = self._conn
        kind = wire.INDICATE if self._indicate else wire.NOTIFY
        size = self._mtu - 3
        while n > 0 and self._buf:
            frag = bytes(self._buf[:size])
            del self._buf[:size]
            frags = [frag]
            if (self.dup_rate and (len(frag) == size or frag.endswith(b">"))
                    and self._rng.random() < self.dup_rate):
                frags.append(frag)
                self.duplicated += 1
            for f in frags:
                if w is not None:
                    self._send(w, kind, struct.pack("<H", self.rx_handle) + f)
                    self.notifications += 1
            n -= len(frags)

    async def _events(self) -> None:
        """Connection events every `interval`: packets move only then, `per_event` each way."""
        loop = asyncio.get_running_loop()
        t = loop.time()
        while True:
            if not self._buf and not self._in:
                self._kick.clear()
                await self._kick.wait()
                now = loop.time()
                t += ((now - t) // self.interval + 1) * self.interval  # the next event after now
            else:
                t += self.interval
            await asyncio.sleep(max(0.0, t - loop.time()))
            ins, self._in = self._in[:self.per_event], self._in[self.per_event:]
            for data in ins:
                _chip(self._up).write(data)
            self._flush(self.per_event)
