"""BLE ELM327 adapters: a serial service found at run time, its characteristics chosen by property.

Layouts reported by open-source clients of these adapters (not checked on hardware here): FFF0 (FFF1/FFF2, sources disagree which is which),
FFE0 (FFE1 both ways), 18F0 (2AF0/2AF1), Vgate's E7810A71-… (one characteristic both ways),
WiCAN FEE0 (FEE1), Nordic-UART-style 6E400001-…. Roles are never taken from a UUID: the
receiving characteristic is the one that notifies (or indicates), the sending one the one that
is writable (without response preferred: no round trip per fragment), and one characteristic
may be both.

Replies arrive in MTU−3 byte notifications (20 at MTU 23), sometimes delivered twice; the driver
reads to the `>` prompt. The transport drops a notification that repeats the one before it within
one reply when it is a full MTU−3 fragment or ends the reply (`>`): a genuine repeat of those is
all but impossible (frame numbers differ line to line), while short fragments (the end of a UART
burst: `\r`, `41`) do repeat genuinely, so a duplicated short fragment in mid-reply is left to
the driver, which counts the broken reply (truncated / garbage) and the scheduler a miss. Adapters that refuse notifications without an
encrypted link (OBDLink CX: ATT 0x05) are paired once and the bond is kept: the OS keeps the
keys (BlueZ, or the simulated air), and the transport never unpairs — an adapter that lost its
bond refuses new pairings until unplugged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService
from bleak.exc import BleakError

from obdsync.direct.transports import CONNECT_TIMEOUT, Transport, TransportError

log = logging.getLogger("obdsync.direct")


def _u16(x: int) -> str:
    return f"0000{x:04x}-0000-1000-8000-00805f9b34fb"


# Known serial services, most common first; any other service with a notifying and a
# writable characteristic is tried after them.
SERIAL_SERVICES = {
    _u16(0xFFF0): "FFF0",
    _u16(0xFFE0): "FFE0",
    _u16(0x18F0): "18F0",
    "e7810a71-73ae-499d-8c15-faa9aef0c3f2": "Vgate",
    _u16(0xFEE0): "WiCAN",
    "6e400001-b5a3-f393-e0a9-e50e24dcca9e": "Nordic UART",
}
_STANDARD = {_u16(0x1800), _u16(0x1801), _u16(0x180A), _u16(0x180F)}  # GAP, GATT, device info, battery
_INSUFFICIENT = (0x05, 0x0F, 0x08)  # authentication, encryption, authorization


@dataclass(frozen=True)
class Layout:
    service: str
    name: str
    rx: BleakGATTCharacteristic
    tx: BleakGATTCharacteristic
    response: bool  # the sending characteristic only takes writes with response

    def describe(self) -> str:
        both = " (one characteristic)" if self.rx.handle == self.tx.handle else ""
        return f"{self.name}: receive {self.rx.uuid[4:8] if self.rx.uuid.endswith('805f9b34fb') else self.rx.uuid}" \
               f", send {self.tx.uuid[4:8] if self.tx.uuid.endswith('805f9b34fb') else self.tx.uuid}{both}"


def _can_notify(c: BleakGATTCharacteristic) -> bool:
    return "notify" in c.properties or "indicate" in c.properties


def _can_write(c: BleakGATTCharacteristic) -> bool:
    return "write" in c.properties or "write-without-response" in c.properties


def pick_layout(services: Iterable[BleakGATTService]) -> Layout:
    """The adapter's serial service and its two roles, by properties; TransportError if none."""
    ordered = sorted(services, key=lambda s: (s.uuid not in SERIAL_SERVICES,
                                              list(SERIAL_SERVICES).index(s.uuid)
                                              if s.uuid in SERIAL_SERVICES else 0))
    for svc in ordered:
        if svc.uuid in _STANDARD:
            continue
        chars = list(svc.characteristics)
        rx = [c for c in chars if _can_notify(c)]
        tx = [c for c in chars if _can_write(c)]
        if not rx or not tx:
            continue
        # Prefer separate roles where the service has them (a notify-only and a write-only
        # characteristic); else the one that does both; notify over indicate (no confirmation).
        rx.sort(key=lambda c: (_can_write(c), "notify" not in c.properties, c.handle))
        tx.sort(key=lambda c: (_can_notify(c), "write-without-response" not in c.properties, c.handle))
        r, t = rx[0], tx[0]
        return Layout(svc.uuid, SERIAL_SERVICES.get(svc.uuid, svc.uuid), r, t,
                      "write-without-response" not in t.properties)
    raise TransportError("no serial service on this device (is it an ELM327 adapter?)")


class BleTransport(Transport):
    """`AA:BB:CC:DD:EE:FF`. `backend`/`backend_kwargs` are bleak's seam (the simulated radio in
    tests); `device` a BLEDevice from a scan, which lets bleak-retry-connector retry and cache."""

    kind = "ble"
    poll_ms = 20

    def __init__(self, address: str, *, backend: type[BaseBleakClient] | None = None,
                 backend_kwargs: dict[str, Any] | None = None, device: BLEDevice | None = None,
                 pair: bool | None = None) -> None:
        super().__init__(address)
        self._backend = backend
        self._backend_kwargs = dict(backend_kwargs or {})
        self._device = device
        self._pair = pair  # None: pair only when the adapter refuses without it
        self._client: BleakClient | None = None
        self.layout: Layout | None = None
        self.mtu = 23
        self.duplicates = 0
        self.paired = False
        self._last: bytes | None = None
        self._queue: asyncio.Queue[bytes] | None = None
        self._writer_task: asyncio.Task[None] | None = None

    async def _connect(self) -> BleakClient:
        """bleak-retry-connector's establish_connection (retries with backoff, a service cache, and
        on BlueZ the known workarounds for a device that vanished or wedged) on a BLEDevice: the
        one a scan gave, else found now by address. A backend of our own (the simulated radio) finds
        the device itself, from the address alone."""
        from bleak import BleakScanner
        from bleak_retry_connector import BleakClientWithServiceCache, establish_connection

        kw: dict[str, Any] = dict(self._backend_kwargs)
        device = self._device
        if self._backend is not None:
            kw["backend"] = self._backend
            if device is None:
                device = BLEDevice(self.address, None, None)
        elif device is None:
            device = await BleakScanner.find_device_by_address(self.address, timeout=CONNECT_TIMEOUT)
            if device is None:
                raise TransportError(f"{self.address} is not advertising (out of range, unpowered, or connected"
                                     " to another phone?)")
        return await establish_connection(BleakClientWithServiceCache, device, self.address,
                                          disconnected_callback=self._on_disconnect, **kw)

    async def _open(self) -> None:
        try:
            client = await self._connect()
        except (BleakError, OSError, TimeoutError) as e:
            raise TransportError(f"cannot connect to {self.address}: {e or type(e).__name__}") from e
        self._client = client
        try:
            self.layout = pick_layout(client.services)
            self.mtu = client.mtu_size
            if self._pair:
                await self._bond(client)
            try:
                await client.start_notify(self.layout.rx, self._on_notify)
            except BleakError as e:
                if getattr(e, "code", None) not in _INSUFFICIENT and "auth" not in str(e).lower():
                    raise
                # Encrypted link required (OBDLink CX): pair once, the bond is kept for next time.
                log.info("%s wants an encrypted link: pairing", self.address)
                await self._bond(client)
                await client.start_notify(self.layout.rx, self._on_notify)
        except (BleakError, OSError, TimeoutError, TransportError) as e:
            with contextlib.suppress(Exception):
                await client.disconnect()
            self._client = None
            if isinstance(e, TransportError):
                raise
            raise TransportError(f"{self.address}: {e or type(e).__name__}") from e
        log.info("%s: %s, MTU %d", self.address, self.layout.describe(), self.mtu)
        self._queue = asyncio.Queue()
        self._writer_task = asyncio.create_task(self._write_loop(client, self.layout, self._queue))

    async def _bond(self, client: BleakClient) -> None:
        await client.pair()
        self.paired = True

    def _on_notify(self, _char: Any, data: bytearray) -> None:
        b = bytes(data)
        if b == self._last and (len(b) >= self.mtu - 3 or b.endswith(b">")):
            self.duplicates += 1
            return
        self._last = b
        self._feed(b)

    def _on_disconnect(self, _client: Any) -> None:
        self._lost(f"{self.address} disconnected")

    def _send(self, data: bytes) -> None:
        self._last = None  # a new request: its first fragment may repeat the last one legitimately
        if self._queue is not None:
            self._queue.put_nowait(data)

    async def _write_loop(self, client: BleakClient, layout: Layout, queue: asyncio.Queue[bytes]) -> None:
        try:
            while True:
                data = await queue.get()
                size = max(20, (client.mtu_size or 23) - 3)
                for i in range(0, len(data), size):
                    await client.write_gatt_char(layout.tx, data[i:i + size], response=layout.response)
        except (BleakError, OSError) as e:
            self._lost(f"{self.address}: write failed: {e}")

    async def _close(self) -> None:
        task, self._writer_task = self._writer_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            with contextlib.suppress(Exception):
                await client.disconnect()
