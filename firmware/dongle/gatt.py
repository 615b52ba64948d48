"""The dongle's GATT server on MicroPython's raw `bluetooth` API.

One service, three characteristics (protocol.uuids): `info` (read, open),
`telemetry` (notify) and `control` (write + notify). The IRQ handler does the
least it can: it copies what it must and wakes the application's tasks.

NimBLE facts this relies on (hil/mpy/bluetooth.py simulates each, with its source): the MTU stays 23 until the central
exchanges it; a notification longer than MTU-3 is truncated silently, so every
message is fragmented to the negotiated MTU; values hold 20 bytes unless
gatts_set_buffer enlarges them; notifying faster than the link drains raises
OSError(ENOMEM), which we answer by pacing, never by dropping; the addr in an IRQ
tuple is reused, so it is copied.
"""

import asyncio
from collections import deque

import bluetooth
from micropython import const

from protocol.errors import ProtocolError
from protocol.frames import Fragmenter, Reassembler

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away
# and has no `typing`, so the names they use exist for the checker only.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from typing import Any

    from dongle.bonds import Bonds
    from protocol._types import Bytes

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)
_IRQ_PASSKEY_ACTION = const(31)

_FLAG_READ = const(0x0002)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)
_FLAG_READ_AUTHENTICATED = const(0x0400)
_FLAG_WRITE_AUTHENTICATED = const(0x2000)

_PASSKEY_ACTION_DISPLAY = const(3)
_IO_DISPLAY_ONLY = const(0)
_ENOMEM = const(12)

_ADV_INTERVAL_US = const(250000)
_CONTROL_BUFFER = const(512)
_INFO_BUFFER = const(160)
_RX_QUEUE = const(16)
_MAX_MTU = const(247)


_ADV_MAX = const(31)  # legacy advertising: longer payloads are refused or cut by the controller
_AD_NAME_SHORT = const(0x08)
_AD_NAME_COMPLETE = const(0x09)


def _ad_name(n: bytes, room: int) -> bytes:
    # The name as one AD structure in `room` bytes: complete if it fits, else the longest
    # prefix that ends on a whole UTF-8 character, marked shortened.
    if len(n) + 2 <= room:
        return bytes((len(n) + 1, _AD_NAME_COMPLETE)) + n
    k = room - 2
    while k > 0 and (n[k] & 0xC0) == 0x80:
        k -= 1
    return bytes((k + 1, _AD_NAME_SHORT)) + n[:k] if k > 0 else b""


def _adv_payloads(name: str, service_uuid: bluetooth.UUID) -> tuple[bytes, bytes]:
    """(advertisement, scan response), each <= 31 bytes whatever the name: flags (general
    discoverable, BR/EDR unsupported) and the 128-bit service UUID (21 bytes), then as much of
    the name as fits; the scan response carries it complete (or as much as 31 bytes hold)."""
    p = bytearray(b"\x02\x01\x06")
    u = bytes(service_uuid)
    p += bytes((len(u) + 1, 0x07)) + u
    n = name.encode()
    p += _ad_name(n, _ADV_MAX - len(p))
    return bytes(p), _ad_name(n, _ADV_MAX)


class _Channel:
    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.frag = Fragmenter()
        self.out = bytearray(_MAX_MTU)
        # The view of `out` a full fragment uses (every fragment of a message but its last has
        # the link's MTU-2 bytes), made once per length. A tail's view is made per message:
        # one memoryview, a single GC block, garbage per record and not per sample. A cache of
        # every tail length held ~4 KB per channel for the whole drive (a list of MTU slots
        # plus ~240 views); a dict of them also needed large blocks as it grew (MemoryError in
        # the sender on a fragmented heap, tests/mpy/fw_gatt_send.py). The notify path needs
        # only one small block at a time.
        self._fk = 0
        self._fv = memoryview(self.out)[:0]

    def view(self, k: int, full: bool) -> memoryview:
        if not full:
            return memoryview(self.out)[:k]
        if k != self._fk:
            self._fv = memoryview(self.out)[:k]
            self._fk = k
        return self._fv


class Gatt:
    """The GATT server. `ble` is a bluetooth.BLE() (the hil shim on the unix
    port); `bonds` stores pairing keys (an object with get(key) / set(key, value))."""

    def __init__(self, ble: bluetooth.BLE, name: str, info: Bytes, pairing: bool = True, passkey: int = 0,
                 bonds: Bonds | None = None, mtu: int = _MAX_MTU) -> None:
        self._ble = ble
        self._name = name
        self._pairing = pairing
        self._passkey = passkey
        self._bonds = bonds
        ble.active(True)
        ble.config(gap_name=name, mtu=mtu)
        if pairing:
            ble.config(bond=True, mitm=True, le_secure=True, io=_IO_DISPLAY_ONLY)
        ble.irq(self._irq)
        # Boot-only: the Dongle unloads protocol.uuids once it is built (dongle.app).
        from protocol import uuids

        secured = (_FLAG_READ_AUTHENTICATED | _FLAG_WRITE_AUTHENTICATED) if pairing else 0
        service = (
            bluetooth.UUID(uuids.SERVICE),
            (
                (bluetooth.UUID(uuids.INFO), _FLAG_READ),
                (bluetooth.UUID(uuids.TELEMETRY), _FLAG_NOTIFY | (_FLAG_READ_AUTHENTICATED if pairing else 0)),
                (bluetooth.UUID(uuids.CONTROL), _FLAG_WRITE | _FLAG_NOTIFY | secured),
            ),
        )
        ((self._h_info, self._h_tel, self._h_ctl),) = ble.gatts_register_services((service,))
        ble.gatts_set_buffer(self._h_info, _INFO_BUFFER)
        # Fragments of a command arrive as writes of up to MTU-3 bytes.
        ble.gatts_set_buffer(self._h_ctl, _CONTROL_BUFFER)
        self.set_info(info)
        self._adv, self._resp = _adv_payloads(name, bluetooth.UUID(uuids.SERVICE))
        self.conn: int | None = None
        # Connections and disconnections so far. Connection handles are reused by NimBLE, so
        # these counts (not the handle) tell the application that the central changed, even
        # when a central came and went between two looks.
        self.connects = 0
        self.disconnects = 0
        self.mtu = 23
        self.link_authenticated = False
        self.peer = b""
        self._rx: deque[bytes] = deque((), _RX_QUEUE)
        # Control writes dropped unread: the queue was full (a flood), the fragments did not
        # make a message, or the central left before they were read. STATUS shows them.
        self.rx_dropped = 0
        self.changed = asyncio.ThreadSafeFlag()  # connect/disconnect/MTU
        self.rx_ready = asyncio.ThreadSafeFlag()
        # Telemetry and control replies are sent by different tasks: each has
        # its own fragment counter and buffer.
        self._tel = _Channel(self._h_tel)
        self._ctl = _Channel(self._h_ctl)
        self._ctl_rx = Reassembler()
        self.notified_bytes = 0
        self.notifications = 0
        self.enomem = 0
        self.advertise()

    def set_info(self, info: Bytes) -> None:
        self._ble.gatts_write(self._h_info, info)

    def advertise(self) -> None:
        self._ble.gap_advertise(_ADV_INTERVAL_US, adv_data=self._adv, resp_data=self._resp)

    def disconnect(self) -> None:
        if self.conn is not None:
            try:
                self._ble.gap_disconnect(self.conn)
            except OSError:
                pass

    # -- IRQ: copy, queue, wake; nothing slow ---------------------------------

    def _irq(self, event: int, data: tuple[Any, ...]) -> Any:
        if event == _IRQ_CENTRAL_CONNECT:
            conn, _, addr = data
            if self.conn is not None:
                # One central at a time: a second one is turned away.
                self._ble.gap_disconnect(conn)
                return
            self.conn = conn
            self.connects += 1
            self.peer = bytes(addr)
            self.mtu = 23
            self.link_authenticated = False
            self._ctl_rx.reset()
            while self._rx:
                self._rx.popleft()  # the previous central's unread commands are not this one's
                self.rx_dropped += 1
            self.changed.set()
        elif event == _IRQ_CENTRAL_DISCONNECT:
            conn = data[0]
            if conn != self.conn:
                return
            self.conn = None
            self.disconnects += 1
            self.mtu = 23
            self.link_authenticated = False
            self.changed.set()
            self.advertise()
        elif event == _IRQ_GATTS_WRITE:
            conn, handle = data[0], data[1]
            if conn == self.conn and handle == self._h_ctl:
                if len(self._rx) >= _RX_QUEUE:
                    self.rx_dropped += 1
                    return
                self._rx.append(self._ble.gatts_read(self._h_ctl))
                self.rx_ready.set()
        elif event == _IRQ_MTU_EXCHANGED:
            conn, mtu = data
            if conn == self.conn:
                self.mtu = mtu if mtu <= _MAX_MTU else _MAX_MTU
                self.changed.set()
        elif event == _IRQ_ENCRYPTION_UPDATE:
            conn, encrypted, authenticated, bonded, key_size = data
            if conn == self.conn:
                # Encrypted is not enough: Just Works is encrypted too. MITM
                # (passkey) pairing is what `authenticated` says.
                self.link_authenticated = bool(encrypted and authenticated)
        elif event == _IRQ_PASSKEY_ACTION:
            conn, action, _ = data
            if action == _PASSKEY_ACTION_DISPLAY:
                self._ble.gap_passkey(conn, action, self._passkey)
        elif event == _IRQ_GET_SECRET:
            if self._bonds is None:
                return None
            sec_type, index, key = data
            return self._bonds.get(sec_type, index, None if key is None else bytes(key))
        elif event == _IRQ_SET_SECRET:
            if self._bonds is None:
                return False
            sec_type, key, value = data
            return self._bonds.set(sec_type, bytes(key), None if value is None else bytes(value))

    # -- control ---------------------------------------------------------------

    def next_command(self) -> bytes | None:
        """A whole control message from the central, or None. Broken fragment
        streams are dropped here (the central times out and retries)."""
        while self._rx:
            frag = self._rx.popleft()
            try:
                msg = self._ctl_rx.feed(frag)
            except ProtocolError:
                self.rx_dropped += 1
                continue
            if msg is not None:
                return msg
        return None

    @property
    def dropped(self) -> int:
        """Control writes dropped unread, and partial messages abandoned (STATUS shows them)."""
        return self.rx_dropped + self._ctl_rx.dropped

    async def reply(self, msg: Bytes) -> None:
        await self._send(self._ctl, msg, len(msg))

    # -- telemetry -------------------------------------------------------------

    async def send_record(self, buf: Bytes, n: int) -> bool:
        """Notify one record (buf[:n]) in fragments sized to the MTU. Returns
        False when the central went away before all of it was sent."""
        return await self._send(self._tel, buf, n)

    @property
    def generation(self) -> int:
        """Changes whenever the central does (see connects)."""
        return self.connects + self.disconnects

    async def _send(self, ch: _Channel, msg: Bytes, n: int) -> bool:
        off = 0
        backoff = 2
        gen = self.generation
        while off < n:
            conn = self.conn
            if conn is None or self.generation != gen:
                return False  # the rest of a message is never another central's
            k = ch.frag.fill(ch.out, msg, n, off, self.mtu)
            view = ch.view(k, off + k - 1 < n)  # full: more of the message follows
            while True:
                try:
                    self._ble.gatts_notify(conn, ch.handle, view)
                    break
                except OSError as e:
                    if e.args[0] != _ENOMEM or self.conn != conn:
                        return False
                    # The controller's buffers are full: let the link drain.
                    self.enomem += 1
                    await asyncio.sleep_ms(backoff)
                    if backoff < 64:
                        backoff <<= 1
            backoff = 2
            self.notifications += 1
            self.notified_bytes += k
            off += k - 1
        return True
