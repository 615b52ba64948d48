"""`SimClient`: a bleak client backend that connects to a simulated dongle over the air."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypedDict

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError

from . import air as air_mod
from . import wire

logger = logging.getLogger(__name__)

PasskeySource = int | str | Callable[[], int | str | Awaitable[int | str]] | None

CCCD_UUID = "00002902-0000-1000-8000-00805f9b34fb"
BLUEZ_MTU = 517  # what BlueZ offers in its MTU exchange
ATT_TIMEOUT = 30.0  # Core Spec: an ATT transaction times out after 30 s
SMP_TIMEOUT = 30.0
MAX_ATTR_LEN = 512
DEFAULT_CENTRAL = "02:0B:D5:00:00:01"


class Bond(TypedDict):
    """A bond as the central keeps it (<air>/bonds/<central>-<dongle>.json)."""
    ltk: str  # hex
    authenticated: bool


class SimClient(BaseBleakClient):
    """Pass as `BleakClient(address_or_device, backend=SimClient, air=DIR)` (or set $OBDSYNC_SIM_AIR).

    It behaves as bleak on BlueZ: `connect()` offers MTU 517 and discovers the services before it
    returns; `mtu_size` is 23 until the exchange; `disconnected_callback` runs on every disconnect,
    asked for or not (the dongle's process dying included); ATT errors raise
    `BleakGATTProtocolError` (INSUFFICIENT_AUTHENTICATION before pairing when a value needs it).

    Extra keywords:
      air              the air directory (default $OBDSYNC_SIM_AIR)
      passkey          how `pair()` gets the passkey the dongle displays: an int/str, or a callable
                       (sync or async) returning one; `pair(passkey=...)` overrides it. With a passkey
                       source, a security request from the dongle (`gap_pair`) starts pairing as
                       BlueZ's agent would; without one it is ignored.
      central_address  this central's address (default $OBDSYNC_SIM_CENTRAL_MAC or 02:0B:D5:00:00:01)
      mtu              the MTU offered (517 as BlueZ); exchange_mtu=False skips the exchange (stays 23)
      conn_interval_ms connection interval asked for (30 ms, BlueZ's minimum default)
    Bonds persist in `<air>/bonds/` as BlueZ keeps them in /var/lib/bluetooth: a bonded central
    re-encrypts on the next connect without a passkey.
    """

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None = None,
        services: set[str] | None = None,
        timeout: float = 10.0,
        air: str | os.PathLike[str] | None = None,
        passkey: PasskeySource = None,
        central_address: str | None = None,
        mtu: int = BLUEZ_MTU,
        exchange_mtu: bool = True,
        conn_interval_ms: int = 30,
        **kwargs: Any,  # bluez=, winrt=: other backends' options
    ) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout)
        self.address = air_mod.normalize_address(self.address)
        self._air = air_mod.air_dir(air)
        self._path = air_mod.socket_path(self._air, self.address)
        self._name = self.address
        if isinstance(address_or_ble_device, BLEDevice):
            if isinstance(address_or_ble_device.details, str):
                self._path = Path(address_or_ble_device.details)
            if address_or_ble_device.name:
                self._name = address_or_ble_device.name
        self._service_filter = services
        self._passkey = passkey
        self._central = air_mod.normalize_address(
            central_address or os.environ.get("OBDSYNC_SIM_CENTRAL_MAC") or DEFAULT_CENTRAL
        )
        if not 23 <= mtu <= 517:
            raise ValueError(f"mtu must be 23..517, not {mtu}")
        self._offer_mtu = mtu
        self._exchange_mtu = exchange_mtu
        self._conn_interval_ms = conn_interval_ms
        self._mtu = 23
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._rx_task: asyncio.Task[None] | None = None
        self._att_lock = asyncio.Lock()
        self._att_pending: tuple[int, asyncio.Future[bytes]] | None = None
        self._smp_pending: asyncio.Future[bytes] | None = None
        self._notify: dict[int, NotifyCallback] = {}
        self._connected = False
        self._pair_task: asyncio.Task[None] | None = None
        self.conn_handle: int | None = None
        self.encrypted = False
        self.authenticated = False

    # -- connection ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu_size(self) -> int:
        return self._mtu

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if self._connected:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        # BlueZ first has to see the device advertise: wait for it as long as the timeout allows.
        while True:
            found = await air_mod.query(self._path)
            if found is not None and found[1]:
                break
            if loop.time() >= deadline:
                raise BleakDeviceNotFoundError(
                    self.address, f"Device with address {self.address} was not found."
                )
            await asyncio.sleep(0.05)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self._path)), max(0.1, deadline - loop.time())
            )
        except (TimeoutError, OSError) as e:
            raise BleakError(f"simulated BLE: connecting to {self.address} failed: {e}") from e
        addr = bytes.fromhex(self._central.replace(":", ""))
        writer.write(
            wire.frame(wire.CONNECT, struct.pack("<B6sHHH", 0, addr, self._conn_interval_ms, 0, 4000))
        )
        try:
            kind, payload = await asyncio.wait_for(
                wire.read_message(reader), max(0.1, deadline - loop.time())
            )
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as e:
            writer.close()
            raise BleakError(f"simulated BLE: {self.address} did not accept the connection") from e
        if kind != wire.CONNECTED:
            writer.close()
            raise BleakError(f"simulated BLE: {self.address} refused the connection (not connectable)")
        self.conn_handle = struct.unpack("<H", payload[:2])[0]
        self._reader, self._writer = reader, writer
        self._connected = True
        self._mtu = 23
        self.encrypted = self.authenticated = False
        self._rx_task = asyncio.create_task(self._receive())
        try:
            if self._exchange_mtu:
                rsp = await self._att(wire.MTU, struct.pack("<H", self._offer_mtu), wire.MTU_RSP)
                self._mtu = max(23, min(self._offer_mtu, struct.unpack("<H", rsp[:2])[0]))
            bond = self._load_bond()
            if bond is not None:
                await self._reencrypt(bond)
            self.services = self._build_services(await self._att(wire.DISCOVER, b"", wire.SERVICES))
            if pair:
                await self.pair()
        except BaseException:
            await self.disconnect()
            raise

    async def disconnect(self) -> None:
        writer = self._writer
        if writer is None:
            return
        writer.close()
        if self._rx_task is not None and self._rx_task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._rx_task

    async def update_connection(self, interval_ms: int, latency: int = 0, timeout_ms: int = 4000) -> None:
        """Simulation only: new connection parameters (the dongle sees IRQ 27, its send rate follows)."""
        await self._send(wire.CONN_UPDATE, struct.pack("<HHH", interval_ms, latency, timeout_ms)).drain()

    def _require_connected(self) -> asyncio.StreamWriter:
        if not self._connected or self._writer is None:
            raise BleakError("Not connected")
        return self._writer

    def _send(self, kind: int, payload: bytes = b"") -> asyncio.StreamWriter:
        """Queue one message (BleakError when the link is gone, as it may be after any await);
        the writer, to drain."""
        writer = self._require_connected()
        writer.write(wire.frame(kind, payload))
        return writer

    async def _att(self, kind: int, payload: bytes, reply: int) -> bytes:
        """One ATT transaction: one request outstanding at a time, as on the bearer."""
        self._require_connected()
        async with self._att_lock:
            self._require_connected()
            fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._att_pending = (reply, fut)
            try:
                await self._send(kind, payload).drain()
                return await asyncio.wait_for(fut, ATT_TIMEOUT)
            except (ConnectionError, OSError) as e:
                raise BleakError(f"simulated BLE: link to {self.address} lost") from e
            finally:
                self._att_pending = None

    async def _receive(self) -> None:
        assert self._reader is not None
        try:
            while True:
                kind, payload = await wire.read_message(self._reader)
                self._on_message(kind, payload)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception:
            logger.exception("simulated BLE: bad message from %s", self.address)
        finally:
            self._on_disconnected()

    def _on_message(self, kind: int, payload: bytes) -> None:
        if kind in (wire.NOTIFY, wire.INDICATE):
            handle = struct.unpack("<H", payload[:2])[0]
            callback = self._notify.get(handle)
            if kind == wire.INDICATE:
                self._send(wire.CONFIRM, payload[:2])
            # Not subscribed: BlueZ drops it, there is nobody to hand it to.
            if callback is not None:
                callback(bytearray(payload[2:]))
        elif kind == wire.PAIR_RSP:
            if self._smp_pending is not None and not self._smp_pending.done():
                self._smp_pending.set_result(payload)
        elif kind == wire.SECURITY_REQ:
            if (
                self._passkey is not None
                and not self.encrypted
                and (self._pair_task is None or self._pair_task.done())
            ):
                self._pair_task = asyncio.create_task(self._pair_quietly())
        elif kind == wire.DISCONNECT:
            if self._writer is not None:
                self._writer.close()
        elif self._att_pending is not None and self._att_pending[0] == kind:
            fut = self._att_pending[1]
            if not fut.done():
                fut.set_result(payload)
        else:
            logger.warning("simulated BLE: unexpected message 0x%02x from %s", kind, self.address)

    def _on_disconnected(self) -> None:
        was_connected = self._connected
        self._connected = False
        if self._writer is not None:
            self._writer.close()
        self._writer = self._reader = None
        lost = BleakError(f"simulated BLE: {self.address} disconnected")
        if self._att_pending is not None and not self._att_pending[1].done():
            self._att_pending[1].set_exception(lost)
        if self._smp_pending is not None and not self._smp_pending.done():
            self._smp_pending.set_exception(lost)
        self._notify.clear()
        self._mtu = 23
        if was_connected and self._disconnected_callback is not None:
            self._disconnected_callback()

    # -- services -----------------------------------------------------------------------------

    def _build_services(self, payload: bytes) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        service: BleakGATTService | None = None
        char: BleakGATTCharacteristic | None = None
        for kind, handle, extra, uuid in wire.parse_services(payload):
            if kind == wire.KIND_SVC:
                char = None
                service = None
                if self._service_filter is None or uuid in self._service_filter:
                    service = BleakGATTService(None, handle, uuid)
                    collection.add_service(service)
            elif service is None:
                continue
            elif kind == wire.KIND_CHR:
                props = [name for bit, name in CHARACTERISTIC_PROPERTIES.items() if extra & bit]
                char = BleakGATTCharacteristic(None, handle, uuid, props, lambda: self._mtu - 3, service)
                collection.add_characteristic(char)
            elif kind == wire.KIND_DSC and char is not None:
                collection.add_descriptor(BleakGATTDescriptor(None, handle, uuid, char))
        return collection

    # -- I/O ----------------------------------------------------------------------------------

    async def _read(self, handle: int) -> bytearray:
        rsp = await self._att(wire.READ, struct.pack("<H", handle), wire.READ_RSP)
        if rsp[0]:
            raise BleakGATTProtocolError(rsp[0])
        return bytearray(rsp[1:])

    async def _write(self, handle: int, data: SizedBuffer, response: bool) -> None:
        value = bytes(data)
        if response:
            if len(value) > MAX_ATTR_LEN:
                raise BleakGATTProtocolError(0x0D)  # INVALID_ATTRIBUTE_VALUE_LENGTH
            rsp = await self._att(wire.WRITE, struct.pack("<H", handle) + value, wire.WRITE_RSP)
            if rsp[0]:
                raise BleakGATTProtocolError(rsp[0])
            return
        self._require_connected()
        if len(value) > self._mtu - 3:
            raise BleakError(f"write without response of {len(value)} bytes exceeds MTU-3 ({self._mtu - 3})")
        await self._send(wire.WRITE_CMD, struct.pack("<H", handle) + value).drain()

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return await self._read(characteristic.handle)

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return await self._read(descriptor.handle)

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        await self._write(characteristic.handle, data, response)

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        await self._write(descriptor.handle, data, True)

    def _cccd(self, characteristic: BleakGATTCharacteristic) -> BleakGATTDescriptor:
        cccd = characteristic.get_descriptor(CCCD_UUID)
        if cccd is None:
            raise BleakError(
                f"characteristic {characteristic.uuid} has no CCCD (neither notify nor indicate)"
            )
        return cccd

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        props = characteristic.properties
        value = 1 if "notify" in props else 2 if "indicate" in props else 0
        cccd = self._cccd(characteristic)
        if not value:
            raise BleakError(f"characteristic {characteristic.uuid} neither notifies nor indicates")
        await self._write(cccd.handle, value.to_bytes(2, "little"), True)
        self._notify[characteristic.handle] = callback

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        cccd = self._cccd(characteristic)
        self._notify.pop(characteristic.handle, None)
        await self._write(cccd.handle, b"\x00\x00", True)

    # -- security -----------------------------------------------------------------------------

    async def pair(self, *args: Any, passkey: PasskeySource = None, **kwargs: Any) -> None:
        """Passkey entry as with BlueZ's KeyboardDisplay agent: the passkey the dongle displays
        (or shows on its label) comes from `passkey`, else the constructor's `passkey`.
        Raises BleakError when the dongle rejects it or pairing times out (30 s, SMP)."""
        self._require_connected()
        source = passkey if passkey is not None else self._passkey
        key = await _resolve_passkey(source)
        rsp = await self._smp(
            wire.PAIR,
            struct.pack(
                "<BBI",
                wire.IO_KEYBOARD_DISPLAY,
                wire.AUTH_BOND | wire.AUTH_MITM | wire.AUTH_SC,
                wire.NO_PASSKEY if key is None else key,
            ),
        )
        if rsp[0]:
            raise BleakError(f"simulated BLE: pairing with {self.address} failed (SMP reason 0x{rsp[0]:02x})")
        self.encrypted, self.authenticated, bonded = bool(rsp[1]), bool(rsp[2]), bool(rsp[3])
        if bonded and len(rsp) >= 21:
            self._save_bond(rsp[5:21], self.authenticated)

    async def _pair_quietly(self) -> None:
        try:
            await self.pair()
        except BleakError as e:
            logger.warning("%s", e)

    async def unpair(self) -> None:
        self._bond_path().unlink(missing_ok=True)
        await self.disconnect()

    async def _smp(self, kind: int, payload: bytes) -> bytes:
        if self._smp_pending is not None and not self._smp_pending.done():
            raise BleakError("pairing already in progress")
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._smp_pending = fut
        try:
            await self._send(kind, payload).drain()
            return await asyncio.wait_for(fut, SMP_TIMEOUT)
        except TimeoutError as e:
            raise BleakError(
                f"simulated BLE: pairing with {self.address} timed out (no passkey from the dongle)"
            ) from e
        finally:
            self._smp_pending = None

    async def _reencrypt(self, bond: Bond) -> None:
        rsp = await self._smp(wire.ENCRYPT, bytes.fromhex(bond["ltk"]))
        if rsp[0]:
            # The dongle lost its keys: BlueZ reports "PIN or key missing"; pair again to recover.
            logger.warning("simulated BLE: %s no longer knows our bond; forgetting it", self.address)
            self._bond_path().unlink(missing_ok=True)
            return
        self.encrypted, self.authenticated = bool(rsp[1]), bool(rsp[2])

    def _bond_path(self) -> Path:
        return self._air / "bonds" / f"{self._central.replace(':', '')}-{self.address.replace(':', '')}.json"

    def _load_bond(self) -> Bond | None:
        """The bond with this dongle; None when there is none or it is unreadable (pair again)."""
        try:
            got = json.loads(self._bond_path().read_text())
        except (FileNotFoundError, ValueError):
            return None
        if not (isinstance(got, dict) and isinstance(got.get("ltk"), str)):
            return None
        return {"ltk": got["ltk"], "authenticated": bool(got.get("authenticated"))}

    def _save_bond(self, ltk: bytes, authenticated: bool) -> None:
        path = self._bond_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"ltk": ltk.hex(), "authenticated": authenticated}))


async def _resolve_passkey(source: PasskeySource) -> int | None:
    value = source() if callable(source) else source
    if inspect.isawaitable(value):
        value = await value
    if value is None:
        return None
    key = int(value)
    if not 0 <= key <= 999999:
        raise ValueError(f"a passkey has 6 digits (0..999999), not {value!r}")
    return key
