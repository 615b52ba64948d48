"""The BLE link to one dongle: connect, authenticate, sync the backlog, stream.

Delivery contract (README.md, protocol/README.md): records are acknowledged only after the sink has
stored them durably, and the ack is cumulative — the highest sequence number up
to which everything is stored. The dongle frees its log only up to that, so
whatever is lost on the air or refused by a full disk is sent again.

The link uses bleak's public API only. Which radio it talks to — BlueZ, or the
hil simulation — is decided by the backend class it is handed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol, TypeVar

from bleak import BleakClient
from bleak.exc import BleakError

from protocol import VERSION as PROTOCOL_VERSION
from protocol import auth, control, control_central, uuids
from protocol.auth import Hmac
from protocol.errors import ProtocolError
from protocol.frames import Fragmenter, Reassembler
from protocol.info import CAP_PAIRING
from protocol.info_decode import Info, VersionError, decode_info
from protocol.record_decode import Record, decode_record

log = logging.getLogger("obdsync.link")
T = TypeVar("T")

COMMAND_TIMEOUT = 10.0
BATCH_SECONDS = 0.1
BATCH_RECORDS = 512
STALL_SECONDS = 2.0  # records beyond a hole for this long: ask the dongle to resend
STATUS_SECONDS = 30.0  # how often a streaming link reads the dongle's STATUS


class LinkError(Exception):
    """The dongle could not be reached or refused us; the run loop retries."""


class AuthError(LinkError):
    """The dongle did not accept our secret, or did not prove it knows it."""


class IncompatibleError(LinkError):
    """The dongle speaks another protocol version: a firmware or daemon update is due."""


_REASON_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class CommandError(LinkError):
    def __init__(self, command: int, status: int, reason: bytes = b""):
        self.command = command
        self.status = status
        # An ADAPTER_ERROR carries the driver's reason (e.g. MALFORMED, NO_DATA) as ASCII.
        self.reason = reason.decode() if reason and all(chr(c) in _REASON_CHARS for c in reason) else ""
        why = f" ({self.reason})" if self.reason else ""
        super().__init__(f"{control.COMMAND_NAMES.get(command, command)}: {control_central.STATUS_NAMES.get(status, status)}{why}")


class Sink(Protocol):
    """Where records go. `ingest` returns the highest contiguous sequence number of
    that log epoch now durable for the device (what may be acked), or raises to refuse.
    `first_unacked` is where the dongle's log starts (STREAM): nothing below it will come."""

    async def ingest(self, device: str, records: list[Record], *, epoch: int = 0,
                     first_unacked: int | None = None) -> int: ...


class Stats:
    def __init__(self) -> None:
        self.records = 0
        self.samples = 0
        # bad MAC or malformed (forged or corrupt), or sent before the dongle authenticated
        self.rejected_records = 0
        self.broken_fragments = 0
        self.acked = -1
        self.epoch: int | None = None  # the dongle's log epoch (info, STREAM)
        self.backlog_first = 0
        self.backlog_end = 0
        self.connected_since: float | None = None
        self.last_seen: float | None = None
        self.status: dict[str, Any] = {}
        self.log_used = 0
        self.log_capacity = 0


class Reply(NamedTuple):
    """The dongle's answer to a command: its status (control.OK or why not) and payload."""

    status: int
    payload: bytes


class LinkInfo(Protocol):
    """What a ready link knows of its device: a dongle's info characteristic
    (protocol.info.Info), or what direct mode learnt from an adapter (obdsync.direct.logger.Info)."""

    @property
    def device_id(self) -> bytes: ...
    @property
    def firmware(self) -> str: ...
    @property
    def supported(self) -> bytes: ...
    @property
    def vin(self) -> bytes: ...


# Called once a link is ready, on each connection (the service's hook); may be a coroutine function.
OnReady = Callable[[LinkInfo], Awaitable[None] | None]


class DeviceLink(Protocol):
    """One device's link as the service's reconnect loop, the daemon and the control door's
    operations (obdsync.ops) drive it: a dongle's DongleLink or an ELM327 adapter's DirectLink."""

    address: str
    on_ready: OnReady | None

    @property
    def device(self) -> str | None: ...
    @property
    def info(self) -> LinkInfo | None: ...
    @property
    def stats(self) -> Stats: ...
    @property
    def connected(self) -> bool: ...
    async def session(self) -> None: ...
    def stop(self) -> None: ...
    async def command(self, type_: int, payload: bytes = b"", timeout: float = ...) -> bytes: ...


class DongleLink:
    """One dongle, one connection at a time, as an async context manager:

        async with DongleLink(address, secret) as link:   # connected and authenticated
            payload = await link.command(control.STATUS)   # a one-off command
            await link.stream()                             # the service: sync, then stream

    Leaving the block stores and acks what is in hand and disconnects. The service's
    reconnect loop runs `session()` (exactly that block with `stream()`) again and again.
    """

    def __init__(
        self,
        address: str,
        secret: bytes,
        sink: Sink | None = None,
        *,
        backend: type | None = None,
        backend_kwargs: dict[str, Any] | None = None,
        plan: list[tuple[int, int, int, int]] | None = None,
        wall_clock: Callable[[], float] = time.time,
        progress: Callable[[str, int, int], None] | None = None,
        on_ready: OnReady | None = None,
        status_s: float = STATUS_SECONDS,
    ) -> None:
        auth.check_secret(secret)
        self.address = address
        self._secret = secret
        self._tkey: Hmac | None = None  # of the dongle's log epoch, known from its info
        self._sink = sink
        self._backend = backend
        self._backend_kwargs = dict(backend_kwargs or {})
        self.plan = plan
        self._wall = wall_clock
        self._progress = progress
        self.on_ready: OnReady | None = on_ready  # called once authenticated, each connection (the service's hook)
        self.info: Info | None = None
        self.device: str | None = None
        self.stats = Stats()
        self._client: BleakClient | None = None
        self._session: auth.Session | None = None
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._req = random.randrange(256)
        self._cmd_lock = asyncio.Lock()
        self._ctl_rx = Reassembler()
        self._ctl_tx = Fragmenter()
        self._tel_rx = Reassembler()
        self._records: list[Record] = []
        self._preauth = 0
        self._wake = asyncio.Event()
        self._gone = asyncio.Event()
        self._stop = asyncio.Event()
        self._max_seen = -1
        self._stalled_since: float | None = None
        self._status_s = status_s
        self._seen_at_status: int | None = None  # _max_seen at the last STATUS (None: none yet)
        self._silent_polls = 0  # STATUS reads in a row that found the dongle ahead and nothing sent
        self._store_error: str | None = None  # the kind of the last ingest failure, logged once
        self._store_failures = 0

    # -- public ------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the batch in hand, ack it, disconnect."""
        self._stop.set()
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected and self._session is not None

    @property
    def mtu(self) -> int | None:
        """The negotiated ATT MTU of the open connection (what notifications are cut to)."""
        return self._client.mtu_size if self._client is not None else None

    @property
    def client(self) -> BleakClient | None:
        """The BleakClient of the open connection, None between connections (fault
        injection drops it from under the link)."""
        return self._client

    async def __aenter__(self) -> DongleLink:
        """Connect and authenticate (then `on_ready`); LinkError/AuthError if not."""
        self._reset_connection_state()
        client = BleakClient(self.address, disconnected_callback=self._on_disconnect,
                             timeout=COMMAND_TIMEOUT, backend=self._backend, **self._backend_kwargs)
        try:
            await client.connect()
        except (TimeoutError, BleakError, OSError) as e:
            raise LinkError(f"cannot connect to {self.address}: {e or type(e).__name__}") from e
        self._client = client
        try:
            await self._radio(self._handshake(client))
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def stream(self) -> None:
        """Sync the backlog, then stream until the link drops or stop(); records go to
        the sink and are acked once it has stored them."""
        if self._sink is None:
            raise TypeError("DongleLink.stream needs a sink to store the records in")
        try:
            await self._radio(self._start_stream())
            await self._radio(self._stream_loop())
        except LinkError:
            if not self._gone.is_set():
                raise
        # the link dropped: the session is over, not failed

    async def session(self) -> None:
        """One connection lifetime of the service: connect, authenticate, sync, stream."""
        async with self:
            await self.stream()

    async def _radio(self, work: Awaitable[T]) -> T:
        """Radio failures as LinkError; after a disconnect, whatever failed says so."""
        try:
            return await work
        except (BleakError, OSError) as e:
            if self._gone.is_set():
                raise LinkError(f"{self.address}: disconnected") from e
            raise LinkError(f"{self.address}: {e or type(e).__name__}") from e

    async def _close(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            await self._flush()
        finally:
            self._session = None
            self._client = None
            self.stats.connected_since = None
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(LinkError("disconnected"))
            self._pending.clear()
            if client.is_connected:
                try:
                    await client.disconnect()
                except (BleakError, OSError):
                    pass

    async def command(self, type_: int, payload: bytes = b"", timeout: float = COMMAND_TIMEOUT) -> bytes:
        """Send a command in the authenticated session; return the reply payload
        or raise CommandError with the dongle's status."""
        if self._session is None:
            raise LinkError("not connected")
        reply = await self._request(type_, payload, timeout)
        if reply.status != control.OK:
            raise CommandError(type_, reply.status, reply.payload[:32])
        return reply.payload

    # -- handshake -------------------------------------------------------------

    def _reset_connection_state(self) -> None:
        self._ctl_rx.reset()
        self._tel_rx.reset()
        self._gone.clear()
        self._session = None
        self._records = []
        self._preauth = 0  # telemetry messages dropped before the handshake on this connection
        self._max_seen = -1
        self._stalled_since = None
        self._seen_at_status = None
        self._silent_polls = 0

    async def _handshake(self, client: BleakClient) -> None:
        try:
            self.info = decode_info(await client.read_gatt_char(uuids.INFO))
        except VersionError as e:
            older = e.proto < PROTOCOL_VERSION
            raise IncompatibleError(
                f"{self.address}: the dongle speaks wire protocol {e.proto}, this obdsync speaks"
                f" {PROTOCOL_VERSION}: {'update the dongle firmware' if older else 'update obdsync'}"
                f" (nothing is read from it until then)") from None
        except ProtocolError as e:
            raise LinkError(f"{self.address}: unreadable info characteristic: {e}") from None
        self.device = self.info.device_id.hex()
        if self.stats.epoch != self.info.epoch:
            self.stats.acked = -1  # a new log counts its seqs from its own start
        self.stats.epoch = self.info.epoch
        self._tkey = Hmac(auth.telemetry_key(self._secret, self.info.epoch))
        if self.info.caps & CAP_PAIRING:
            # LE Secure Connections with the passkey from the label. On BlueZ the
            # system's agent asks for it; backends that can take it do.
            try:
                await client.pair(passkey=auth.passkey(self._secret))
            except BleakError as e:
                if self._gone.is_set():
                    raise
                # The passkey is derived from the secret: a refusal here is a wrong
                # secret far more often than a radio problem, so say that first.
                raise AuthError(f"the dongle refused BLE pairing with the passkey of this secret "
                                f"(wrong secret?): {e}") from e
        await client.start_notify(uuids.CONTROL, self._on_control)
        await client.start_notify(uuids.TELEMETRY, self._on_telemetry)
        nonce_c = os.urandom(auth.NONCE_LEN)
        reply = await self._request(control.HELLO, nonce_c)
        if reply.status != control.OK:
            raise CommandError(control.HELLO, reply.status)
        device_id, nonce_d = control_central.parse_hello_reply(reply.payload)
        if device_id != self.info.device_id:
            raise AuthError("dongle changed its device id between info and hello")
        reply = await self._request(control.AUTH, auth.proof_central(self._secret, nonce_c, nonce_d))
        if reply.status != control.OK:
            raise AuthError(f"dongle refused authentication: {control_central.STATUS_NAMES.get(reply.status)}")
        if not auth.equal(reply.payload, auth.proof_dongle(self._secret, nonce_c, nonce_d)):
            raise AuthError("dongle could not prove it holds the secret (impostor?)")
        # Whatever arrived on telemetry before this point came from a peer that had not proved
        # anything (a genuine dongle sends only after STREAM): dropped, fragments included.
        self._tel_rx.reset()
        self._session = auth.Session(auth.session_key(self._secret, nonce_c, nonce_d), auth.DIR_CENTRAL)
        await self.command(control.TIME, control_central.pack_u64(int(self._wall() * 1000)))
        if self.plan:
            await self.command(control.SET_PLAN, control_central.pack_plan(self.plan))
        self.stats.connected_since = time.monotonic()
        if self.on_ready is not None:
            r = self.on_ready(self.info)
            if asyncio.iscoroutine(r):
                await r

    async def _start_stream(self) -> None:
        first, end, epoch = control_central.parse_stream(await self.command(control.STREAM))
        if epoch != self.stats.epoch:
            # The log was created anew since the info was read (the dongle rebooted into an
            # empty log between the two): reconnect, read the new epoch and its key.
            raise LinkError(f"{self.device}: log epoch {epoch:08x} in STREAM, {self.stats.epoch:08x} in info")
        self.stats.backlog_first = first
        self.stats.backlog_end = end
        if self._progress is not None:
            self._progress(self.device or self.address, 0, max(0, end - first))

    # -- streaming ---------------------------------------------------------------

    async def _stream_loop(self) -> None:
        next_status = time.monotonic()
        while not self._stop.is_set() and not self._gone.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), BATCH_SECONDS)
            except TimeoutError:
                pass
            self._wake.clear()
            await self._flush()
            now = time.monotonic()
            if self._stalled_since is not None and now - self._stalled_since > STALL_SECONDS:
                # A record went missing on the air: ask for a resend from the
                # first unacked one (duplicates are dropped by the store).
                log.info("%s: hole after seq %d, asking the dongle to resend", self.device, self.stats.acked)
                self._stalled_since = None
                await self._start_stream()
            if now >= next_status and not self._gone.is_set():
                next_status = now + self._status_s
                await self._refresh_status()

    async def _refresh_status(self) -> None:
        try:
            self.stats.status = control_central.parse_status(await self.command(control.STATUS))
        except (TimeoutError, CommandError, ProtocolError) as e:
            log.debug("%s: status not available: %s", self.device, e)
            return
        await self._check_stream(self.stats.status["next_seq"])

    async def _check_stream(self, next_seq: int) -> None:
        """A dongle that logs records but streams none (a dead sender task, notifications lost
        below bleak) looks connected and healthy: STATUS answers, nothing arrives, nothing is
        said. Two STATUS reads in a row that find the dongle ahead of the last record received
        and nothing received in between: ask for the stream again once; still silent at the
        next read, reconnect (LinkError: the run loop logs it and retries)."""
        ahead = next_seq - 1 > self._max_seen
        silent = ahead and self._seen_at_status is not None and self._max_seen == self._seen_at_status
        self._seen_at_status = self._max_seen
        self._silent_polls = self._silent_polls + 1 if silent else 0
        if self._silent_polls == 1:
            log.warning("%s: the dongle has logged up to seq %d but sent nothing since seq %d: asking it to"
                        " stream again", self.device, next_seq - 1, self._max_seen)
            await self._start_stream()
        elif self._silent_polls >= 2:
            raise LinkError(f"{self.device}: the dongle logs records (up to seq {next_seq - 1}) but streams none"
                            f" (the last came with seq {self._max_seen}): reconnecting")

    async def _flush(self) -> None:
        if not self._records or self.device is None:
            return
        if self._sink is None:  # a one-off command's connection: nothing streamed, nothing acked
            self._records = []
            return
        batch, self._records = self._records, []
        try:
            contiguous = await self._sink.ingest(self.device, batch, epoch=self.stats.epoch or 0,
                                                 first_unacked=self.stats.backlog_first)
        except Exception as e:  # noqa: BLE001 - the store says why; nothing is acked
            # Once per cause, not once per batch: a full disk overnight must not fill the journal.
            if type(e).__name__ != self._store_error:
                log.error("%s: could not store %d records, not acknowledging them (the dongle keeps them;"
                          " retrying): %s", self.device, len(batch), e)
                self._store_error = type(e).__name__
            self._store_failures += 1
            self._stalled_since = time.monotonic()  # ask for them again later
            return
        if self._store_error is not None and contiguous > self.stats.acked:  # duplicates prove nothing
            log.warning("%s: storing again after %d failed batches", self.device, self._store_failures)
            self._store_error = None
            self._store_failures = 0
        if contiguous > self.stats.acked:
            self.stats.acked = contiguous
            if self._session is not None and not self._gone.is_set():
                try:
                    used, cap = control_central.parse_pair(await self.command(control.ACK, control_central.pack_u32(contiguous)))
                    self.stats.log_used, self.stats.log_capacity = used, cap
                except (TimeoutError, LinkError, ProtocolError, BleakError, OSError) as e:
                    log.debug("%s: ack %d not delivered: %s", self.device, contiguous, e)
            if self._progress is not None:
                self._progress(self.device, contiguous - self.stats.backlog_first + 1,
                               self.stats.backlog_end - self.stats.backlog_first)
        if self._max_seen > self.stats.acked:
            if self._stalled_since is None:
                self._stalled_since = time.monotonic()
        else:
            self._stalled_since = None

    # -- notifications (called in the event loop by bleak) ---------------------

    def _on_telemetry(self, _char: Any, data: bytearray) -> None:
        try:
            raw = self._tel_rx.feed(bytes(data))
        except ProtocolError:
            self.stats.broken_fragments += 1
            return
        if raw is None:
            return
        if self._session is None:
            # Keep nothing from a peer that has not authenticated (an impostor replaying sniffed
            # records with valid MACs, say). Nothing is lost: the dongle resends what is unacked.
            self.stats.rejected_records += 1
            self._preauth += 1
            if self._preauth == 1:  # once a connection: a flood must not flood the journal
                log.warning("%s: dropped telemetry sent before the dongle authenticated", self.device or self.address)
            return
        try:
            rec = decode_record(raw, self._tkey)
        except ProtocolError as e:
            self.stats.rejected_records += 1
            log.warning("%s: rejected a telemetry record: %s", self.device, e)
            return
        self.stats.records += 1
        self.stats.samples += len(rec.samples)
        self.stats.last_seen = time.time()
        if rec.seq > self._max_seen:
            self._max_seen = rec.seq
        self._records.append(rec)
        if len(self._records) >= BATCH_RECORDS:
            self._wake.set()

    def _on_control(self, _char: Any, data: bytearray) -> None:
        try:
            raw = self._ctl_rx.feed(bytes(data))
            if raw is None:
                return
            msg = control.decode(raw, self._session)
        except ProtocolError as e:
            log.warning("%s: dropped a control reply: %s", self.device, e)
            return
        fut = self._pending.pop(msg.req, None)
        if fut is not None and not fut.done() and msg.status is not None:  # a reply, not a command
            fut.set_result(Reply(msg.status, msg.payload))

    def _on_disconnect(self, _client: Any) -> None:
        self._gone.set()
        self._wake.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LinkError("disconnected"))

    # -- requests ----------------------------------------------------------------

    async def _request(self, type_: int, payload: bytes, timeout: float = COMMAND_TIMEOUT) -> Reply:
        client = self._client
        if client is None or self._gone.is_set():
            raise LinkError("not connected")
        async with self._cmd_lock:
            self._req = (self._req + 1) & 0xFF
            req = self._req
            msg = control.encode(type_, req, payload, self._session if type_ not in control.UNAUTHENTICATED else None)
            fut = asyncio.get_running_loop().create_future()
            self._pending[req] = fut
            try:
                for frag in self._ctl_tx.split(msg, client.mtu_size):
                    await client.write_gatt_char(uuids.CONTROL, frag, response=True)
                return await asyncio.wait_for(fut, timeout)
            finally:
                self._pending.pop(req, None)
