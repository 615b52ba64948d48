"""`bluetooth` for the MicroPython unix port: a simulated NimBLE peripheral (simulation only).

The same API as the ESP32 build (peripheral role), and NimBLE's behaviour where firmware bites:
- the central starts the MTU exchange; until it does the MTU is 23; IRQ 21 reports the result,
  min(central's, `config(mtu=)`);
- notifications longer than MTU-3 are cut silently;
- values hold 20 bytes until `gatts_set_buffer`; remote writes are cut to the buffer (a local
  `gatts_write` grows it, as `mp_bluetooth_gatts_db_write` does);
- a CCCD write (subscribe) raises no IRQ, and `gatts_notify`/`gatts_indicate` send whether or not the
  central subscribed (NimBLE's `ble_gattc_notify_custom` does not look at the CCCD); the central side
  drops notifications it did not subscribe to, as BlueZ does. The CCCD itself needs no encryption
  (NimBLE registers it READ|WRITE whatever the characteristic's flags): the firmware must gate what it
  notifies on IRQ 28, not on the subscription;
- the `addr` memoryview in an IRQ tuple is valid only during the handler: it points into one buffer,
  zeroed when the handler returns and rewritten for the next IRQ;
- `gatts_notify` faster than the link drains raises OSError(ENOMEM): each connection has
  OBDSYNC_SIM_TX_BUFFERS buffers (12, ESP-IDF's msys default), refilled by OBDSYNC_SIM_PKTS_PER_EVENT
  (4) every connection interval (set by the central, 30 ms unless it asks otherwise);
- READ/WRITE_ENCRYPTED and _AUTHENTICATED are enforced with ATT error 0x05, as ble_att_svr_check_perms does;
- `gatts_notify` sends from the caller's buffer: no heap allocation per notification (on the board
  NimBLE's buffers live outside the MicroPython heap).

- `active(True)` fails as on a board without PSRAM when the firmware has already grown the GC heap
  (see _radio_fits): OSError(EIO), what NimBLE's failed nimble_port_init gives since upstream
  b3d88cf (issue 14293; before that the board crashed). Activate the radio first.

Frames to the central are written whole and in order (`BLE._tx`), although IRQs may run while a
frame is half written.

IRQs run in the MicroPython thread: one reader thread per socket hands each message over with
`micropython.schedule` (retrying while the queue is full) and waits until the main thread handled it,
so the handler runs as the sync-event IRQs of the ESP32 build do, one at a time. The main thread runs
scheduled callbacks while it executes bytecode or while asyncio polls; a schedule does NOT interrupt
a blocking poll()/read() on file descriptors, so `active(True)` queues an asyncio task that waits on a
ThreadSafeFlag, which keeps asyncio's poll in its 1 ms polling mode. Firmware that blocks outside
asyncio sees its IRQs when it next runs Python code.

The "air": the directory named by OBDSYNC_SIM_AIR. While advertising, the dongle listens on the
unix socket `<air>/<AABBCCDDEEFF>.sock` (its address without colons): a scanner connects, asks
for the advertisement and hangs up; a central connects and stays. The address comes from
OBDSYNC_SIM_MAC ("AA:BB:CC:DD:EE:FF", public) or is random per process (random static).
OBDSYNC_SIM_RSSI (default -60) is the RSSI scanners report. hil/blesim/ is the central's side.

Only the module constants the real module has are exported (FLAG_READ, FLAG_WRITE,
FLAG_WRITE_NO_RESPONSE, FLAG_NOTIFY, FLAG_INDICATE): firmware defines the security flags as its own
`const()`s, as it must on the board.
"""

import _thread
import gc
import os
import socket
import sys
import time

import blewire  # the wire to hil/blesim, defined once for both interpreters (hil/blesim/wire.py loads it too)
import micropython
from micropython import const

# Annotations are for the type check (hil/mpy/mypy.ini): MicroPython compiles them away and
# has no `typing`, so the names they use exist for the checker only.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any

    from protocol._types import Bytes

    IrqHandler = Callable[[int, tuple[Any, ...]], Any]

FLAG_READ = const(0x0002)
FLAG_WRITE_NO_RESPONSE = const(0x0004)
FLAG_WRITE = const(0x0008)
FLAG_NOTIFY = const(0x0010)
FLAG_INDICATE = const(0x0020)

_F_READ_ENC = const(0x0200)
_F_READ_AUTHEN = const(0x0400)
_F_WRITE_ENC = const(0x1000)
_F_WRITE_AUTHEN = const(0x2000)

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_GATTS_READ_REQUEST = const(4)
_IRQ_GATTS_INDICATE_DONE = const(20)
_IRQ_MTU_EXCHANGED = const(21)
_IRQ_CONNECTION_UPDATE = const(27)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)
_IRQ_PASSKEY_ACTION = const(31)

_IO_DISPLAY_ONLY = const(0)
_IO_DISPLAY_YESNO = const(1)
_IO_KEYBOARD_ONLY = const(2)
_IO_NO_INPUT_OUTPUT = const(3)
_PASSKEY_ACTION_INPUT = const(2)
_PASSKEY_ACTION_DISPLAY = const(3)
_PASSKEY_ACTION_NUMCMP = const(4)

_SEC_OUR = const(1)  # NimBLE's BLE_STORE_OBJ_TYPE_OUR_SEC / PEER_SEC, passed through as sec_type
_SEC_PEER = const(2)

_EPERM = const(1)
_ENOENT = const(2)
_EIO = const(5)
_ENOMEM = const(12)
_EBUSY = const(16)
_ENODEV = const(19)
_EINVAL = const(22)
_ENOTCONN = const(107)
_ETIMEDOUT = const(110)

_ATT_INVALID_HANDLE = const(0x01)
_ATT_READ_NOT_PERMITTED = const(0x02)
_ATT_WRITE_NOT_PERMITTED = const(0x03)
_ATT_INSUFFICIENT_AUTHEN = const(0x05)
_ATT_REQ_NOT_SUPPORTED = const(0x06)
_ATT_INVALID_ATTR_VALUE_LEN = const(0x0D)
_SMP_PASSKEY_ENTRY_FAILED = const(0x01)
_SMP_CONFIRM_VALUE_FAILED = const(0x04)
_SMP_PAIRING_NOT_SUPPORTED = const(0x05)

_MSG_EOF = const(0xFF)  # local only: the central hung up

_RX_MAX = const(600)  # a write of 512 bytes plus its handle, with room to spare
_ATT_MTU_MIN = const(23)
_ATT_MTU_MAX = const(527)  # BLE_ATT_MTU_MAX
_DEFAULT_ATTR_LEN = const(20)  # MP_BLUETOOTH_DEFAULT_ATTR_LEN
_FIRST_USER_HANDLE = const(10)  # NimBLE's GAP (1-5) and GATT (6-9) services come first
_KIND_CCCD = const(4)  # local: the shim's own attribute kind, never on the wire


def _env_int(name: str, default: int) -> int:
    v = os.getenv(name)
    return int(v) if v else default


def _parse_mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError("OBDSYNC_SIM_MAC must look like AA:BB:CC:DD:EE:FF, not " + text)
    return bytes(int(p, 16) for p in parts)


def _sockaddr(path: str) -> bytes:
    """struct sockaddr_un for the unix port's socket, which takes raw sockaddrs."""
    raw = path.encode()
    if len(raw) > 107:
        raise ValueError("air path too long for a unix socket: " + path)
    b = bytearray(3 + len(raw))
    b[0] = 1  # AF_UNIX, little-endian sa_family_t
    b[2:2 + len(raw)] = raw
    return bytes(b)


class UUID:
    """A Bluetooth UUID: an int (16-bit), 2/4/16 bytes (little-endian) or a 128-bit string."""

    def __init__(self, value: "int | str | Bytes | UUID") -> None:
        if isinstance(value, int):
            if not 0 <= value <= 0xFFFF:
                raise ValueError("invalid UUID")
            self._data = bytes((value & 0xFF, value >> 8))
        elif isinstance(value, UUID):
            self._data = value._data
        elif isinstance(value, (bytes, bytearray, memoryview)) and len(value) in (2, 4, 16):
            self._data = bytes(value)
        elif isinstance(value, str):
            digits = value.replace("-", "")
            if len(digits) != 32:
                raise ValueError("UUID too short" if len(digits) < 32 else "UUID too long")
            try:
                self._data = bytes(reversed(bytes.fromhex(digits)))
            except ValueError:
                raise ValueError("invalid char in UUID") from None
        else:
            raise ValueError("invalid UUID")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UUID) and self._data == other._data

    def __hash__(self) -> int:
        return hash(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[int]:
        # bytes(uuid) works on the board (buffer protocol); here through iteration.
        return iter(self._data)

    def __repr__(self) -> str:
        h = bytes(reversed(self._data)).hex()
        if len(h) <= 8:
            return "UUID(0x" + h + ")"
        return "UUID('" + "-".join((h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])) + "')"


class _Attr:
    """One attribute the central can address: a characteristic value, a descriptor or a CCCD."""

    def __init__(self, kind: int, handle: int, flags: int, value_handle: int) -> None:
        self.kind = kind
        self.handle = handle
        self.flags = flags
        self.value_handle = value_handle  # for a CCCD: the characteristic it configures
        # A CCCD's state is per connection (_Conn.cccd): it holds no value of its own.
        self.buf = bytearray(0 if kind == _KIND_CCCD else _DEFAULT_ATTR_LEN)
        self.len = 0
        self.append = False


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.handle = 0
        self.addr_type = 0
        self.addr = bytes(6)
        self.mtu = _ATT_MTU_MIN
        self.interval_ms = 30
        self.latency = 0
        self.timeout_ms = 4000
        self.encrypted = False
        self.authenticated = False
        self.bonded = False
        self.key_size = 0
        self.cccd: dict[int, int] = {}
        self.pairing: tuple[int, int, bool] | None = None  # (action, central's passkey, bond, authenticated) while one waits on gap_passkey
        self.hdr = bytearray(3)
        self.rx = bytearray(_RX_MAX)
        self.rx_len = 0
        self.rx_type = 0
        self.tx_hdr = bytearray(5)
        self.tx_busy = False  # a frame is being written (see BLE._tx)
        self.tx_later: list[bytearray] = []  # frames sent by an IRQ while tx_busy, written once the frame ends
        self.tx_dead = False  # a write failed, maybe mid-frame: nothing more goes on this stream
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.credits = 0
        self.refilled = 0
        self.alive = True  # False once the main thread dropped it (disconnect seen)


def _u16(b: Bytes, i: int) -> int:
    return b[i] | (b[i + 1] << 8)


class BLE:
    _instance: "BLE | None" = None

    def __new__(cls, *args: object) -> "BLE":
        # A singleton, as on the board: BLE() returns the same object every time.
        if BLE._instance is None:
            BLE._instance = object.__new__(cls)
            BLE._instance._init()
        return BLE._instance

    def __init__(self, *args: object) -> None:
        pass

    def _init(self) -> None:
        self._active = False
        self._handler: IrqHandler | None = None
        self._addr_buf = bytearray(6)
        self._addr_mv = memoryview(self._addr_buf)
        self._gap_name = b"MPY NIMBLE"
        self._mtu = 256  # CONFIG_BT_NIMBLE_ATT_PREFERRED_MTU on ESP-IDF
        self._rxbuf = 1024
        self._bond = False
        self._mitm = False
        self._le_secure = False
        self._io = _IO_NO_INPUT_OUTPUT
        self._attrs: dict[int, _Attr] = {}
        self._services = b""
        self._conns: dict[int, _Conn] = {}
        self._next_conn = 1
        self._adv_gen = 0
        self._advertising = False
        self._adv_data = b""
        self._resp_data = b""
        self._adv_reply: bytes | bytearray = b""
        self._connectable = True
        self._listener: socket.socket | None = None
        self._air: str | None = None
        self._path: str | None = None
        self._mac: bytes | None = None
        self._mac_type = 0
        self._tx_buffers = _env_int("OBDSYNC_SIM_TX_BUFFERS", 12)
        self._pkts_per_event = _env_int("OBDSYNC_SIM_PKTS_PER_EVENT", 4)
        self._rssi = _env_int("OBDSYNC_SIM_RSSI", -60)
        self._pump: object = None
        self._dispatch_cb = self._dispatch  # bound once: scheduling it allocates nothing

    # -- general -------------------------------------------------------------------------------

    def active(self, *args: bool) -> bool:
        if args:
            if args[0]:
                if not self._active:
                    self._start()
            elif self._active:
                self._stop()
        return self._active

    def _start(self) -> None:
        if not _radio_fits():
            raise OSError(_EIO)
        air = os.getenv("OBDSYNC_SIM_AIR")
        if not air:
            raise RuntimeError("bluetooth (simulated): set OBDSYNC_SIM_AIR to the air directory")
        try:
            os.mkdir(air)
        except OSError:
            pass
        self._air = air
        if self._mac is None:
            mac = os.getenv("OBDSYNC_SIM_MAC")
            if mac:
                self._mac = _parse_mac(mac)
                self._mac_type = 0
            else:
                r = bytearray(os.urandom(6))
                r[0] |= 0xC0  # a random static address has its two top bits set
                self._mac = bytes(r)
                self._mac_type = 1
        self._path = air + "/" + self._mac.hex().upper() + ".sock"
        self._attrs = {}
        self._services = b""
        self._active = True
        self._start_pump()

    def _start_pump(self) -> None:
        # micropython.schedule from another thread does not interrupt a poll() on file descriptors
        # (measured: a callback scheduled while asyncio waits on a socket runs only when that wait
        # ends). A task waiting on a ThreadSafeFlag keeps asyncio's poll in its polling mode, which
        # runs scheduled callbacks within a millisecond, so IRQs arrive as promptly as on the board.
        # The task is queued even before asyncio.run(); asyncio.new_event_loop() drops it.
        if self._pump is not None:
            return
        try:
            import asyncio
        except ImportError:
            return
        flag = asyncio.ThreadSafeFlag()

        async def pump() -> None:
            while True:
                await flag.wait()

        self._pump = asyncio.create_task(pump())

    def _stop(self) -> None:
        self._adv_stop()
        for conn in list(self._conns.values()):
            self._send_msg(conn, blewire.DISCONNECT, b"\x13")
        self._conns = {}
        self._active = False

    def _check_active(self) -> None:
        if not self._active:
            raise OSError(_ENODEV)

    def _sock_path(self) -> str:
        """Where this radio listens on the air (set by active(True))."""
        if self._path is None:
            raise OSError(_ENODEV)
        return self._path

    def config(self, *args: str, **kwargs: Any) -> Any:
        if args and kwargs:
            raise TypeError("can't specify pos and kw args")
        if args:
            if len(args) != 1:
                raise TypeError("must query one param")
            key = args[0]
            if key == "mac":
                self._check_active()
                return (self._mac_type, self._mac)
            if key == "gap_name":
                return self._gap_name
            if key == "mtu":
                self._check_active()
                return self._mtu
            if key == "rxbuf":
                return self._rxbuf
            raise ValueError("unknown config param")
        for key, value in kwargs.items():
            if key == "gap_name":
                self._gap_name = bytes(value, "utf-8") if isinstance(value, str) else bytes(value)
            elif key == "mtu":
                self._check_active()
                if not _ATT_MTU_MIN <= value <= _ATT_MTU_MAX:
                    raise OSError(_EINVAL)
                self._mtu = value
            elif key == "rxbuf":
                if not 16 <= value <= 0xFFFF:
                    raise ValueError
                self._rxbuf = value
            elif key == "bond":
                self._bond = bool(value)
            elif key == "mitm":
                self._mitm = bool(value)
            elif key == "le_secure":
                self._le_secure = bool(value)
            elif key == "io":
                self._io = value
            elif key == "addr_mode":
                self._check_active()
            else:
                raise ValueError("unknown config param")
        return None

    def irq(self, handler: IrqHandler | None) -> None:
        if handler is not None and not callable(handler):
            raise ValueError("invalid handler")
        self._handler = handler

    def _irq(self, event: int, data: tuple[Any, ...], with_addr: Bytes | None = None) -> Any:
        handler = self._handler
        if handler is None:
            return None
        if with_addr is not None:
            self._addr_buf[:] = with_addr
        try:
            return handler(event, data)
        except Exception as e:
            print("Unhandled exception in IRQ callback handler")
            sys.print_exception(e)
            return None
        finally:
            if with_addr is not None:
                # The board's memoryview points at NimBLE's event, gone after the handler returns.
                for i in range(6):
                    self._addr_buf[i] = 0

    # -- GAP -----------------------------------------------------------------------------------

    def gap_advertise(self, interval_us: int | None, adv_data: Bytes | None = None, *, resp_data: Bytes | None = None,
                      connectable: bool = True) -> None:
        self._check_active()
        self._adv_stop()
        if interval_us is None:
            return
        if adv_data is not None:
            if len(adv_data) > 31:
                raise OSError(_EINVAL)
            self._adv_data = bytes(adv_data)
        if resp_data is not None:
            if len(resp_data) > 31:
                raise OSError(_EINVAL)
            self._resp_data = bytes(resp_data)
        adv, resp = self._adv_data, self._resp_data
        payload = bytearray(3 + len(adv) + len(resp))
        payload[0] = self._rssi & 0xFF
        payload[1] = 1 if connectable else 0
        payload[2] = len(adv)
        payload[3:3 + len(adv)] = adv
        payload[3 + len(adv):] = resp
        self._adv_reply = self._frame(blewire.ADV, payload)
        self._connectable = connectable
        try:
            os.unlink(self._sock_path())  # left by an earlier process with this address, killed
        except OSError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(_sockaddr(self._sock_path()))
        listener.listen(8)
        self._adv_gen += 1
        self._advertising = True
        self._listener = listener
        _thread.start_new_thread(self._accept_loop, (listener, self._adv_gen))

    def _adv_stop(self) -> None:
        if not self._advertising:
            return
        self._advertising = False
        self._adv_gen += 1
        self._listener = None
        # Wake the accept thread (closing a socket does not interrupt accept() in another thread);
        # it sees the new generation and closes the listener.
        try:
            wake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                wake.connect(_sockaddr(self._sock_path()))
            finally:
                wake.close()
        except OSError:
            pass
        try:
            os.unlink(self._sock_path())
        except OSError:
            pass

    def gap_disconnect(self, conn_handle: int) -> bool:
        self._check_active()
        conn = self._conns.get(conn_handle)
        if conn is None:
            return False
        # The central drops the link; its EOF raises IRQ 2 as on the board.
        self._send_msg(conn, blewire.DISCONNECT, b"\x13")
        return True

    def gap_pair(self, conn_handle: int) -> None:
        self._check_active()
        conn = self._conn(conn_handle)
        self._send_msg(conn, blewire.SECURITY_REQ, b"")

    def gap_passkey(self, conn_handle: int, action: int, passkey: int) -> None:
        self._check_active()
        conn = self._conn(conn_handle)
        pending = conn.pairing
        if pending is None or pending[0] != action:
            raise OSError(_ENOENT)
        conn.pairing = None
        want, central_key, bond = pending[0], pending[1], pending[2]
        if want == _PASSKEY_ACTION_NUMCMP:
            ok = passkey != 0
        else:
            ok = central_key >= 0 and passkey == central_key
        if ok:
            self._pair_done(conn, True, bond)
        else:
            self._pair_failed(conn, _SMP_CONFIRM_VALUE_FAILED)

    # -- GATT server -----------------------------------------------------------------------------

    def gatts_register_services(self, services_definition: Sequence[Any]) -> tuple[tuple[int, ...], ...]:
        self._check_active()
        if self._advertising or self._conns:
            raise OSError(_EBUSY)  # NimBLE's service table is immutable while in use
        attrs: dict[int, _Attr] = {}
        table = bytearray()
        result: list[tuple[int, ...]] = []
        h = _FIRST_USER_HANDLE
        for service in services_definition:
            s_uuid, chars = service[0], service[1]
            if not isinstance(s_uuid, UUID):
                raise ValueError("invalid service UUID")
            s_handle = h
            h += 1
            entries = bytearray()
            handles: list[int] = []
            for ch in chars:
                c_uuid, flags = ch[0], ch[1]
                if not isinstance(c_uuid, UUID):
                    raise ValueError("invalid characteristic UUID")
                value = h + 1  # h is the declaration
                h += 2
                attrs[value] = _Attr(blewire.KIND_CHR, value, flags, value)
                handles.append(value)
                entries += self._entry(blewire.KIND_CHR, value, flags & 0xFF, c_uuid)
                if flags & (FLAG_NOTIFY | FLAG_INDICATE):
                    attrs[h] = _Attr(_KIND_CCCD, h, flags, value)
                    entries += self._entry(blewire.KIND_DSC, h, 0, UUID(0x2902))
                    h += 1
                for d in (ch[2] if len(ch) > 2 else ()):
                    d_uuid, d_flags = d[0], d[1]
                    if not isinstance(d_uuid, UUID):
                        raise ValueError("invalid descriptor UUID")
                    # NimBLE keeps only read/write on descriptors: no security flags.
                    d_flags &= FLAG_READ | FLAG_WRITE | FLAG_WRITE_NO_RESPONSE
                    attrs[h] = _Attr(blewire.KIND_DSC, h, d_flags, value)
                    handles.append(h)
                    entries += self._entry(blewire.KIND_DSC, h, 0, d_uuid)
                    h += 1
            table += self._entry(blewire.KIND_SVC, s_handle, h - 1, s_uuid)
            table += entries
            result.append(tuple(handles))
        self._attrs = attrs
        self._services = bytes(table)
        return tuple(result)

    @staticmethod
    def _entry(kind: int, handle: int, extra: int, uuid: UUID) -> bytearray:
        d = uuid._data
        e = bytearray(6 + len(d))
        e[0] = kind
        e[1] = handle & 0xFF
        e[2] = handle >> 8
        e[3] = extra & 0xFF
        e[4] = extra >> 8
        e[5] = len(d)
        e[6:] = d
        return e

    def _attr(self, value_handle: int) -> _Attr:
        a = self._attrs.get(value_handle)
        if a is None or a.kind == _KIND_CCCD:
            raise OSError(_EINVAL)
        return a

    def gatts_read(self, value_handle: int) -> bytes:
        self._check_active()
        a = self._attr(value_handle)
        data = bytes(a.buf[:a.len])
        if a.append:
            a.len = 0
        return data

    def gatts_write(self, value_handle: int, data: Bytes, send_update: bool = False) -> None:
        self._check_active()
        a = self._attr(value_handle)
        n = len(data)
        if n > len(a.buf):
            a.buf = bytearray(n)
        a.buf[:n] = data
        a.len = n
        if send_update:
            # ble_gatts_chr_updated: this one does honour the CCCDs.
            for conn in self._conns.values():
                flags = conn.cccd.get(value_handle, 0)
                try:
                    if flags & 1:
                        self.gatts_notify(conn.handle, value_handle)
                    elif flags & 2:
                        self.gatts_indicate(conn.handle, value_handle)
                except OSError:
                    pass

    def gatts_set_buffer(self, value_handle: int, len: int, append: bool = False) -> None:
        self._check_active()
        a = self._attr(value_handle)
        a.buf = bytearray(len)
        a.len = 0
        a.append = bool(append)

    def gatts_notify(self, conn_handle: int, value_handle: int, data: Bytes | None = None) -> None:
        # Hot path: no allocation (the firmware's heap figures must not include the radio's).
        self._send_value(conn_handle, value_handle, data, blewire.NOTIFY)

    def gatts_indicate(self, conn_handle: int, value_handle: int, data: Bytes | None = None) -> None:
        self._send_value(conn_handle, value_handle, data, blewire.INDICATE)

    def _send_value(self, conn_handle: int, value_handle: int, data: Bytes | None, kind: int) -> None:
        if not self._active:
            raise OSError(_ENODEV)
        conn = self._conns.get(conn_handle)
        if conn is None:
            raise OSError(_ENOTCONN)
        if data is None:
            a = self._attr(value_handle)
            data = a.buf
            n = a.len
        else:
            n = len(data)
        self._take_credit(conn)
        limit = conn.mtu - 3
        if n > limit:
            n = limit  # NimBLE truncates silently
        # An IRQ that notifies while a frame is being written must not reuse the header being written.
        h = bytearray(5) if conn.tx_busy else conn.tx_hdr
        size = n + 2
        h[0] = size & 0xFF
        h[1] = size >> 8
        h[2] = kind
        h[3] = value_handle & 0xFF
        h[4] = value_handle >> 8
        self._tx(conn, h, 5, data, n)

    def _take_credit(self, conn: _Conn) -> None:
        now = time.ticks_ms()
        elapsed = time.ticks_diff(now, conn.refilled)
        if conn.credits >= self._tx_buffers:
            conn.refilled = now
        elif elapsed >= conn.interval_ms:
            events = elapsed // conn.interval_ms
            conn.credits += events * self._pkts_per_event
            if conn.credits >= self._tx_buffers:
                conn.credits = self._tx_buffers
                conn.refilled = now
            else:
                conn.refilled = time.ticks_add(conn.refilled, events * conn.interval_ms)
        if conn.credits <= 0:
            raise OSError(_ENOMEM)
        conn.credits -= 1

    # -- the socket side -------------------------------------------------------------------------

    def _conn(self, conn_handle: int) -> _Conn:
        conn = self._conns.get(conn_handle)
        if conn is None:
            raise OSError(_ENOTCONN)
        return conn

    @staticmethod
    def _frame(kind: int, payload: Bytes) -> bytearray:
        n = len(payload)
        m = bytearray(3 + n)
        m[0] = n & 0xFF
        m[1] = n >> 8
        m[2] = kind
        m[3:] = payload
        return m

    def _send_msg(self, conn: _Conn, kind: int, payload: Bytes) -> None:
        m = self._frame(kind, payload)
        self._tx(conn, m, len(m), None, 0)

    def _tx(self, conn: _Conn, head: Bytes, head_len: int, body: Bytes | None, body_len: int) -> None:
        """Writes head[:head_len] + body[:body_len] to the central as one frame, whole and after
        every frame sent before it.

        IRQs run on this thread at any jump in the bytecode and inside a write the kernel interrupts
        (the unix port runs scheduled callbacks on EINTR), so a handler may send while a frame is half
        out: a WRITE_RSP landed inside a notification and put the central's reader out of step. Such a
        frame is copied (NimBLE copies into an mbuf too) and follows the one being written."""
        if conn.tx_dead:
            return
        if conn.tx_busy:
            m = bytearray(head_len + body_len)
            m[:head_len] = head[:head_len]
            if body is not None and body_len:
                m[head_len:] = body[:body_len]
            conn.tx_later.append(m)
            return
        conn.tx_busy = True
        later = conn.tx_later
        try:
            self._write_all(conn, head, head_len)
            if body is not None and body_len:
                self._write_all(conn, body, body_len)
            while later:
                m = later.pop(0)
                self._write_all(conn, m, len(m))
        except OSError:
            # The link is gone (the reader's EOF raises IRQ 2) and part of a frame may be out: writing
            # more would only hand the central bytes out of step. What was queued is lost, as on air.
            conn.tx_dead = True
            while later:
                later.pop()
        finally:
            conn.tx_busy = False

    @staticmethod
    def _write_all(conn: _Conn, buf: Bytes, n: int) -> None:
        """buf[:n] on the central's stream, all of it. The socket blocks, so one write takes it all
        or raises; a stream may also take part (a short count) or nothing (None: non-blocking and
        full), and then the rest follows, never dropped. A stream that takes nothing for the
        supervision timeout has lost its central, as on air: OSError(ETIMEDOUT)."""
        sock = conn.sock
        off = 0
        stalled = 0
        while off < n:
            w = sock.write(buf, off, n - off)
            if w:
                off += w
                stalled = 0
            elif stalled >= conn.timeout_ms:
                raise OSError(_ETIMEDOUT)
            else:
                stalled += 1
                time.sleep_ms(1)

    def _accept_loop(self, listener: socket.socket, gen: int) -> None:
        """Thread: answers scanners and hands connecting centrals to the main thread."""
        hdr = bytearray(3)
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                break
            if gen != self._adv_gen:
                sock.close()
                break
            try:
                sock.settimeout(2)  # a peer that connects and says nothing must not stall advertising
                n = sock.readinto(hdr, 3)
                sock.settimeout(None)
            except OSError:
                n = 0
            if n != 3:
                sock.close()  # a scanner that gave up, or our own wake-up
                continue
            length = _u16(hdr, 0)
            if hdr[2] == blewire.SCAN and length == 0:
                try:
                    sock.write(self._adv_reply)
                except OSError:
                    pass
                sock.close()
                continue
            if hdr[2] != blewire.CONNECT or length > _RX_MAX or not self._connectable:
                try:
                    sock.write(self._frame(blewire.REJECT, b""))
                except OSError:
                    pass
                sock.close()
                continue
            conn = _Conn(sock)
            if length and sock.readinto(conn.rx, length) != length:
                sock.close()
                continue
            conn.rx_len = length
            conn.rx_type = blewire.CONNECT
            self._hand_over(conn)
            if conn.alive:
                # Connectable advertising ends with the connection (the main thread stopped it).
                try:
                    listener.close()
                except OSError:
                    pass
                self._read_loop(conn)
                return
        try:
            listener.close()
        except OSError:
            pass

    def _read_loop(self, conn: _Conn) -> None:
        sock, hdr, rx = conn.sock, conn.hdr, conn.rx
        while True:
            try:
                n = sock.readinto(hdr, 3)
            except OSError:
                n = 0
            if n != 3:
                break
            length = _u16(hdr, 0)
            if length > _RX_MAX:
                break  # not our peer: drop the link
            if length:
                try:
                    n = sock.readinto(rx, length)
                except OSError:
                    n = 0
                if n != length:
                    break
            conn.rx_len = length
            conn.rx_type = hdr[2]
            self._hand_over(conn)
        conn.rx_type = _MSG_EOF
        conn.rx_len = 0
        self._hand_over(conn)

    def _hand_over(self, conn: _Conn) -> None:
        while True:
            try:
                micropython.schedule(self._dispatch_cb, conn)
                break
            except RuntimeError:
                time.sleep_ms(1)  # schedule queue full: let the main thread drain it
        conn.done.acquire()

    def _dispatch(self, conn: _Conn) -> None:
        """Main thread: one message from a central."""
        try:
            if conn.alive or conn.rx_type == _MSG_EOF:
                self._handle(conn, conn.rx_type, conn.rx, conn.rx_len)
        except Exception as e:
            print("bluetooth (simulated): error handling message", conn.rx_type)
            sys.print_exception(e)
        finally:
            conn.done.release()

    def _handle(self, conn: _Conn, kind: int, rx: bytearray, n: int) -> None:
        if kind == _MSG_EOF:
            was_alive = conn.alive
            conn.alive = False
            try:
                conn.sock.close()
            except OSError:
                pass
            if was_alive and self._conns.get(conn.handle) is conn:
                del self._conns[conn.handle]
                if self._active:
                    self._irq(_IRQ_CENTRAL_DISCONNECT, (conn.handle, conn.addr_type, self._addr_mv), conn.addr)
            return
        if kind == blewire.CONNECT:
            self._on_connect(conn, rx, n)
        elif kind == blewire.MTU:
            self._on_mtu(conn, _u16(rx, 0))
        elif kind == blewire.DISCOVER:
            self._send_msg(conn, blewire.SERVICES, self._services)
        elif kind == blewire.READ:
            self._on_read(conn, _u16(rx, 0))
        elif kind == blewire.WRITE or kind == blewire.WRITE_CMD:
            self._on_write(conn, _u16(rx, 0), rx, n, kind == blewire.WRITE)
        elif kind == blewire.CONFIRM:
            self._irq(_IRQ_GATTS_INDICATE_DONE, (conn.handle, _u16(rx, 0), 0))
        elif kind == blewire.PAIR:
            self._on_pair(conn, rx)
        elif kind == blewire.ENCRYPT:
            self._on_encrypt(conn, bytes(rx[:n]))
        elif kind == blewire.CONN_UPDATE:
            conn.interval_ms = _u16(rx, 0)
            conn.latency = _u16(rx, 2)
            conn.timeout_ms = _u16(rx, 4)
            self._irq(_IRQ_CONNECTION_UPDATE,
                      (conn.handle, conn.interval_ms * 4 // 5, conn.latency, conn.timeout_ms // 10, 0))

    def _on_connect(self, conn: _Conn, rx: bytearray, n: int) -> None:
        if not self._active or not self._advertising:
            conn.alive = False
            self._send_msg(conn, blewire.REJECT, b"")
            return
        self._adv_stop()
        conn.addr_type = rx[0]
        conn.addr = bytes(rx[1:7])
        conn.interval_ms = _u16(rx, 7) or 30
        conn.latency = _u16(rx, 9)
        conn.timeout_ms = _u16(rx, 11) or 4000
        conn.credits = self._tx_buffers
        conn.refilled = time.ticks_ms()
        conn.handle = self._next_conn
        self._next_conn += 1
        self._conns[conn.handle] = conn
        self._send_msg(conn, blewire.CONNECTED, bytes((conn.handle & 0xFF, conn.handle >> 8)))
        self._irq(_IRQ_CENTRAL_CONNECT, (conn.handle, conn.addr_type, self._addr_mv), conn.addr)

    def _on_mtu(self, conn: _Conn, central_mtu: int) -> None:
        mtu = min(max(central_mtu, _ATT_MTU_MIN), self._mtu)
        self._send_msg(conn, blewire.MTU_RSP, bytes((self._mtu & 0xFF, self._mtu >> 8)))
        conn.mtu = mtu
        self._irq(_IRQ_MTU_EXCHANGED, (conn.handle, mtu))

    def _reply_status(self, conn: _Conn, kind: int, status: int, payload: Bytes = b"") -> None:
        m = bytearray(1 + len(payload))
        m[0] = status
        m[1:] = payload
        self._send_msg(conn, kind, m)

    def _security_error(self, conn: _Conn, flags: int, enc_flag: int, authen_flag: int) -> int:
        if flags & enc_flag and not conn.encrypted:
            return _ATT_INSUFFICIENT_AUTHEN
        if flags & authen_flag and not (conn.encrypted and conn.authenticated):
            return _ATT_INSUFFICIENT_AUTHEN
        return 0

    def _on_read(self, conn: _Conn, handle: int) -> None:
        a = self._attrs.get(handle)
        if a is None:
            return self._reply_status(conn, blewire.READ_RSP, _ATT_INVALID_HANDLE)
        if a.kind == _KIND_CCCD:
            f = conn.cccd.get(a.value_handle, 0)
            return self._reply_status(conn, blewire.READ_RSP, 0, bytes((f & 0xFF, f >> 8)))
        if not a.flags & FLAG_READ:
            return self._reply_status(conn, blewire.READ_RSP, _ATT_READ_NOT_PERMITTED)
        err = self._security_error(conn, a.flags, _F_READ_ENC, _F_READ_AUTHEN)
        if err:
            return self._reply_status(conn, blewire.READ_RSP, err)
        # The firmware may refuse (non-zero ATT error) or refresh the value with gatts_write first.
        r = self._irq(_IRQ_GATTS_READ_REQUEST, (conn.handle, handle))
        if isinstance(r, int) and r:
            return self._reply_status(conn, blewire.READ_RSP, r & 0xFF)
        self._reply_status(conn, blewire.READ_RSP, 0, a.buf[:a.len])

    def _on_write(self, conn: _Conn, handle: int, rx: bytearray, n: int, respond: bool) -> None:
        a = self._attrs.get(handle)
        data_len = n - 2
        err = 0
        if a is None:
            err = _ATT_INVALID_HANDLE
        elif a.kind == _KIND_CCCD:
            if data_len != 2:
                err = _ATT_INVALID_ATTR_VALUE_LEN
            else:
                f = _u16(rx, 2)
                allowed = (1 if a.flags & FLAG_NOTIFY else 0) | (2 if a.flags & FLAG_INDICATE else 0)
                if f & ~allowed:
                    err = _ATT_REQ_NOT_SUPPORTED
                else:
                    conn.cccd[a.value_handle] = f  # a subscribe: no IRQ on NimBLE
        elif not a.flags & (FLAG_WRITE | FLAG_WRITE_NO_RESPONSE):
            err = _ATT_WRITE_NOT_PERMITTED
        else:
            err = self._security_error(conn, a.flags, _F_WRITE_ENC, _F_WRITE_AUTHEN)
            if not err:
                offset = a.len if a.append else 0
                take = min(len(a.buf) - offset, data_len)  # cut to the buffer, silently
                a.buf[offset:offset + take] = rx[2:2 + take]
                a.len = offset + take
                self._irq(_IRQ_GATTS_WRITE, (conn.handle, handle))
        if respond:
            self._reply_status(conn, blewire.WRITE_RSP, err)

    def _on_pair(self, conn: _Conn, rx: bytearray) -> None:
        auth = rx[1]
        passkey = rx[2] | (rx[3] << 8) | (rx[4] << 16) | (rx[5] << 24)
        if passkey == blewire.NO_PASSKEY:
            passkey = -1
        bond = self._bond and bool(auth & blewire.AUTH_BOND)
        mitm = self._mitm or bool(auth & blewire.AUTH_MITM)
        sc = self._le_secure and bool(auth & blewire.AUTH_SC)
        io = self._io
        if not mitm or io == _IO_NO_INPUT_OUTPUT:
            self._pair_done(conn, False, bond)  # Just Works: encrypted, not authenticated
            return
        if io == _IO_DISPLAY_ONLY or (io == _IO_DISPLAY_YESNO and not sc):
            action = _PASSKEY_ACTION_DISPLAY
        elif io == _IO_KEYBOARD_ONLY or not sc:
            action = _PASSKEY_ACTION_INPUT
        else:
            action = _PASSKEY_ACTION_NUMCMP
        if action != _PASSKEY_ACTION_NUMCMP and passkey < 0:
            self._pair_failed(conn, _SMP_PASSKEY_ENTRY_FAILED)
            return
        conn.pairing = (action, passkey, bond)
        number = 0
        if action == _PASSKEY_ACTION_NUMCMP:
            r = os.urandom(3)
            number = (r[0] | (r[1] << 8) | (r[2] << 16)) % 1000000
        self._irq(_IRQ_PASSKEY_ACTION, (conn.handle, action, number))

    def _pair_done(self, conn: _Conn, authenticated: bool, bond: bool) -> None:
        conn.encrypted = True
        conn.authenticated = authenticated
        conn.key_size = 16
        ltk = b""
        if bond:
            ltk = os.urandom(16)
            key = bytes((conn.addr_type,)) + conn.addr
            value = ltk + bytes((1 if authenticated else 0, 16))
            self._irq(_IRQ_SET_SECRET, (_SEC_PEER, key, value))
            self._irq(_IRQ_SET_SECRET, (_SEC_OUR, key, value))
        conn.bonded = bond
        self._reply_status(conn, blewire.PAIR_RSP, 0, bytes((1, 1 if authenticated else 0, 1 if bond else 0, 16)) + ltk)
        self._irq(_IRQ_ENCRYPTION_UPDATE, (conn.handle, True, authenticated, bond, 16))

    def _pair_failed(self, conn: _Conn, reason: int) -> None:
        conn.pairing = None
        self._reply_status(conn, blewire.PAIR_RSP, reason, b"\x00\x00\x00\x00")
        self._irq(_IRQ_ENCRYPTION_UPDATE,
                  (conn.handle, conn.encrypted, conn.authenticated, conn.bonded, conn.key_size))

    def _on_encrypt(self, conn: _Conn, ltk: bytes) -> None:
        """A bonded central comes back: encryption from the stored key, no passkey."""
        key = bytes((conn.addr_type,)) + conn.addr
        value = self._irq(_IRQ_GET_SECRET, (_SEC_OUR, 0, key))
        if value is None or len(value) < 18 or bytes(value[:16]) != ltk:
            self._reply_status(conn, blewire.PAIR_RSP, 0x06, b"\x00\x00\x00\x00")  # key missing
            self._irq(_IRQ_ENCRYPTION_UPDATE, (conn.handle, False, False, False, 0))
            return
        conn.encrypted = True
        conn.authenticated = bool(value[16])
        conn.bonded = True
        conn.key_size = value[17]
        self._reply_status(conn, blewire.PAIR_RSP, 0,
                           bytes((1, 1 if conn.authenticated else 0, 1, conn.key_size)))
        self._irq(_IRQ_ENCRYPTION_UPDATE, (conn.handle, True, conn.authenticated, True, conn.key_size))


# -- the board's memory at active(True) ---------------------------------------------------------
#
# From the ESP32 port (micropython 1c3c2011): the GC heap starts as one 56 KB area
# (MICROPY_GC_INITIAL_HEAP_SIZE, ports/esp32/mpconfigport.h, no-PSRAM ESP32) and, when an
# allocation fails after a collection, gains an area as large as the whole heap so far, taken
# from ESP-IDF's heap (gc_try_add_heap, py/gc.c: "aim to double the total heap size"). ESP-IDF
# keeps about 96 KB of internal RAM beside the first area, so about 40 KB after one growth
# (measured on boards). NimBLE takes its memory from there at active(True):
# host task stack 6 KB (CONFIG_BT_NIMBLE_TASK_STACK_SIZE, boards/sdkconfig.ble), mbuf pools and
# the controller's buffers; on boards with ~40 KB left it has failed (issue 14293). The figure
# it needs is OBDSYNC_SIM_RADIO_KB (default 48: more than a grown heap leaves, so a firmware
# that grows the heap before activating the radio fails here as it can on the board).
#
# The firmware's heap is measured against the moment this module was imported, so the unix
# interpreter and this shim (C on the board) do not count: import `bluetooth` first.
_GC_FIRST_AREA = const(56 * 1024)
_IDF_FREE = const(96 * 1024)
gc.collect()
_BASE = gc.mem_alloc()


def _radio_fits() -> bool:
    gc.collect()
    used = gc.mem_alloc() - _BASE
    heap = _GC_FIRST_AREA
    while used > heap:
        heap *= 2  # one more area, as large as the heap so far
    left = _IDF_FREE - (heap - _GC_FIRST_AREA)
    return left >= _env_int("OBDSYNC_SIM_RADIO_KB", 48) * 1024
