"""Nothing from a peer that did not authenticate reaches the store (issue 13).

The peer is a bleak backend written here (bleak's `backend=` seam), playing a hostile dongle:
it notifies records with valid MACs (replayed from a sniff of the real dongle, say) the moment
the daemon subscribes and again between HELLO and AUTH, then fails the handshake — by refusing
the daemon's proof, or by answering with a proof it cannot make. Before the fix, the link stored
those records when it closed the failed session."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection

from obdsync.link import AuthError, DongleLink
from protocol import auth, control, uuids
from protocol.frames import Fragmenter, Reassembler
from protocol.info import encode_info
from protocol.record import RecordWriter

SECRET = bytes(range(32))
DEVICE = bytes.fromhex("d0116e0000000042")
MTU = 247


def sniffed_records(n: int) -> list[bytes]:
    """Records as the real dongle made them (valid MACs under the secret's telemetry key)."""
    w = RecordWriter(auth.telemetry_key(SECRET))
    out = []
    for seq in range(n):
        w.group(1000 * seq)
        w.add(0x0D, bytes([42]), 0, 1)
        k = w.seal(seq, 1)
        out.append(bytes(w.out[:k]))
    return out


class HostilePeer(BaseBleakClient):
    """`mode`: "refuse" answers AUTH with AUTH_FAILED; "impostor" answers OK with a made-up proof;
    "genuine" completes the handshake (its early records are still not the daemon's to keep:
    the dongle resends everything unacknowledged once asked to STREAM)."""

    def __init__(self, address: Any, *, mode: str, records: list[bytes], **kw: Any) -> None:
        kw.pop("services", None)
        super().__init__(address, **kw)
        self.mode = mode
        self._records = records
        self._sent = 0
        self._connected = False
        self._notify: dict[str, Any] = {}
        self._rx = Reassembler()
        self._tx = Fragmenter()
        self._nonce_c = b""
        self._nonce_d = os.urandom(auth.NONCE_LEN)
        self._session: auth.Session | None = None
        svc = BleakGATTService(None, 1, uuids.SERVICE)
        self.services = BleakGATTServiceCollection()
        self.services.add_service(svc)
        self._chars = {}
        for handle, (uuid, props) in enumerate(((uuids.INFO, ["read"]), (uuids.TELEMETRY, ["notify"]),
                                                (uuids.CONTROL, ["write", "notify"])), start=2):
            c = BleakGATTCharacteristic(None, handle, uuid, props, lambda: MTU - 3, svc)
            self.services.add_characteristic(c)
            self._chars[uuid] = c

    # -- what a dongle would do -----------------------------------------------------------

    def _telemetry(self, k: int) -> None:
        cb = self._notify.get(uuids.TELEMETRY)
        for raw in self._records[self._sent:self._sent + k]:
            for frag in self._tx.split(raw, MTU):
                cb(bytearray(frag))
        self._sent += k

    def _reply(self, msg: control.Message, status: int, payload: bytes = b"") -> None:
        session = self._session if msg.type not in control.UNAUTHENTICATED else None
        raw = control.encode(msg.type, msg.req, payload, session, status)
        for frag in Fragmenter().split(raw, MTU):
            self._notify[uuids.CONTROL](bytearray(frag))

    def _command(self, raw: bytes) -> None:
        msg = control.decode(raw, self._session if raw[0] not in control.UNAUTHENTICATED else None)
        if msg.type == control.HELLO:
            self._nonce_c = control.parse_hello(msg.payload)
            self._reply(msg, control.OK, control.hello_reply(DEVICE, self._nonce_d))
            self._telemetry(3)  # between HELLO and AUTH
        elif msg.type == control.AUTH:
            self._telemetry(3)
            if self.mode == "refuse":
                self._reply(msg, control.AUTH_FAILED)
            elif self.mode == "impostor":
                self._reply(msg, control.OK, bytes(auth.PROOF_LEN))
            else:
                self._session = auth.Session(auth.session_key(SECRET, self._nonce_c, self._nonce_d),
                                             auth.DIR_DONGLE)
                self._reply(msg, control.OK, auth.proof_dongle(SECRET, self._nonce_c, self._nonce_d))
        else:
            self._reply(msg, control.OK)

    # -- bleak's backend interface ----------------------------------------------------------

    @property
    def mtu_size(self) -> int:
        return MTU

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        self._connected = True

    async def disconnect(self) -> None:
        if self._connected:
            self._connected = False
            if self._disconnected_callback is not None:
                self._disconnected_callback()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def unpair(self) -> None:
        pass

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, **kwargs: Any) -> bytearray:
        assert characteristic.uuid == uuids.INFO
        return bytearray(encode_info(DEVICE, "0.1.0", bytes(32), b"", 0))

    async def read_gatt_descriptor(self, *a: Any, **kw: Any) -> bytearray:
        raise NotImplementedError

    async def write_gatt_descriptor(self, *a: Any, **kw: Any) -> None:
        raise NotImplementedError

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: Any, response: bool) -> None:
        msg = self._rx.feed(bytes(data))
        if msg is not None:
            asyncio.get_running_loop().call_soon(self._command, msg)

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: Any, **kwargs: Any) -> None:
        self._notify[characteristic.uuid] = callback
        if characteristic.uuid == uuids.TELEMETRY:
            self._telemetry(3)  # the moment the daemon subscribes

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        self._notify.pop(characteristic.uuid, None)


class Sink:
    def __init__(self) -> None:
        self.ingested: list = []

    async def ingest(self, device: str, records: list, **_epoch: object) -> int:
        self.ingested += records
        return max((r.seq for r in records), default=-1)


@pytest.mark.parametrize("mode", ["refuse", "impostor"])
async def test_records_from_a_peer_that_fails_authentication_are_not_stored(mode):
    sink = Sink()
    link = DongleLink("AA:BB:CC:DD:EE:FF", SECRET, sink, backend=HostilePeer,
                      backend_kwargs={"mode": mode, "records": sniffed_records(9)})
    with pytest.raises(AuthError):
        await link.session()
    assert sink.ingested == []
    assert link.stats.records == 0
    assert link.stats.rejected_records == 9  # refused, and counted: visible in `obdsync status`


async def test_records_before_the_handshake_are_dropped_even_when_it_then_succeeds():
    # Nothing is lost by that: the dongle keeps every unacknowledged record and resends it on STREAM.
    sink = Sink()
    link = DongleLink("AA:BB:CC:DD:EE:FF", SECRET, sink, backend=HostilePeer,
                      backend_kwargs={"mode": "genuine", "records": sniffed_records(9)})
    async with link:
        pass  # authenticated, never streamed
    assert link.info is not None and link.info.device_id == DEVICE  # the handshake did complete
    assert sink.ingested == []
    assert link.stats.rejected_records == 9
