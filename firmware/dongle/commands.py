"""The dongle's side of the control channel: authentication, then commands.

Every command maps to one action the dongle performs itself; none carries bytes
for the adapter, so nothing from BLE reaches the car unfiltered. Until a peer has
proved it holds the dongle's secret it gets only HELLO/AUTH; failed proofs are
rate-limited with a doubling lock-out that survives reconnects (Drivelog's PIN was
brute-forced offline; here every guess costs the attacker time on the air).
"""

import time

from micropython import const

from protocol import auth, control
from protocol.errors import ProtocolError

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away
# and has no `typing`, so the names they use exist for the checker only.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from collections.abc import Callable

    from dongle._types import Clock
    from protocol._types import Bytes

    Reply = tuple[int, bytes]  # (status, payload)

_LOCK_BASE_MS = const(1000)
_LOCK_MAX_MS = const(300000)
_FREE_FAILURES = const(3)  # typos happen: the first few failures cost nothing


class Actions:
    """What the commands do; the application implements these. Each returns a
    (status, payload) pair."""

    def time_sync(self, wall_ms: int) -> Reply:
        raise NotImplementedError

    def ack(self, seq: int) -> Reply:
        raise NotImplementedError

    def stream(self) -> Reply:
        raise NotImplementedError

    def set_plan(self, entries: list[tuple[int, int, int, int]]) -> Reply:
        raise NotImplementedError

    async def read_dtc(self, mode: int) -> Reply:
        raise NotImplementedError

    async def clear_dtc(self) -> Reply:
        raise NotImplementedError

    async def read_vin(self) -> Reply:
        raise NotImplementedError

    async def read_freeze(self) -> Reply:
        raise NotImplementedError

    def status(self) -> Reply:
        raise NotImplementedError


class CommandHandler:
    def __init__(self, secret: bytes, device_id: Bytes, clock: Clock, actions: Actions,
                 random_bytes: Callable[[int], bytes]) -> None:
        auth.check_secret(secret)
        self._secret = secret
        self._device_id = bytes(device_id)
        self._clock = clock
        self._actions = actions
        self._random = random_bytes
        self.session: auth.Session | None = None
        self._nonce_c: bytes | None = None
        self._nonce_d: bytes | None = None
        self.auth_failures = 0  # since the last success; drives the lock-out
        self.total_failures = 0
        self._locked = False  # a lock-out runs until _locked_until (ticks: compared with ticks_diff)
        self._locked_until = 0
        self.rejected = 0  # commands refused: unauthenticated, bad MAC, replayed, malformed

    @property
    def authenticated(self) -> bool:
        return self.session is not None

    def disconnected(self) -> None:
        """The peer went away: its session and any half-done handshake end."""
        self.session = None
        self._nonce_c = None
        self._nonce_d = None

    def _refuse(self, data: Bytes, status: int) -> bytes | None:
        self.rejected += 1
        head = control.peek(data)
        if head is None:
            return None
        return control.encode(head[0], head[1], b"", None, status)

    async def handle(self, data: Bytes) -> bytes | None:
        """One reassembled control message in; the reply bytes out (or None)."""
        head = control.peek(data)
        if head is None:
            self.rejected += 1
            return None
        kind = head[0]
        if kind == control.HELLO or kind == control.AUTH:
            try:
                msg = control.decode(data, None)
            except ProtocolError:
                return self._refuse(data, control.BAD_REQUEST)
            if msg.is_reply:
                return self._refuse(data, control.BAD_REQUEST)
            if kind == control.HELLO:
                return self._hello(msg)
            return self._auth(msg)
        if self.session is None:
            return self._refuse(data, control.NOT_AUTHENTICATED)
        try:
            msg = control.decode(data, self.session)
        except ProtocolError:
            # Forged, bit-flipped, replayed or reordered: not executed.
            return self._refuse(data, control.NOT_AUTHENTICATED)
        if msg.is_reply:
            return self._refuse(data, control.BAD_REQUEST)
        try:
            status, payload = await self._dispatch(msg)
        except ProtocolError:
            status, payload = control.BAD_REQUEST, b""
        return control.encode(msg.type, msg.req, payload, self.session, status)

    def _hello(self, msg: control.Message) -> bytes | None:
        try:
            nonce_c = control.parse_hello(msg.payload)
        except ProtocolError:
            return self._refuse(msg_bytes(msg), control.BAD_REQUEST)
        self.session = None  # a new handshake ends any old session
        self._nonce_c = nonce_c
        self._nonce_d = self._random(auth.NONCE_LEN)
        return control.encode(control.HELLO, msg.req, control.hello_reply(self._device_id, self._nonce_d),
                              None, control.OK)

    def _auth(self, msg: control.Message) -> bytes:
        now = self._clock.ms()
        if self._locked:
            if time.ticks_diff(self._locked_until, now) > 0:
                self.rejected += 1
                return control.encode(control.AUTH, msg.req, b"", None, control.RATE_LIMITED)
            self._locked = False  # over: ticks_diff is only meaningful within half a period
        nonce_c = self._nonce_c
        nonce_d = self._nonce_d
        # One guess per HELLO: the dongle's nonce is spent either way.
        self._nonce_c = None
        self._nonce_d = None
        if (nonce_c is None or nonce_d is None or len(msg.payload) != auth.PROOF_LEN
                or not auth.equal(auth.proof_central(self._secret, nonce_c, nonce_d), msg.payload)):
            self.auth_failures += 1
            self.total_failures += 1
            if self.auth_failures > _FREE_FAILURES:
                lock = _LOCK_BASE_MS << min(self.auth_failures - _FREE_FAILURES - 1, 16)
                self._locked = True
                self._locked_until = time.ticks_add(now, min(lock, _LOCK_MAX_MS))
            return control.encode(control.AUTH, msg.req, b"", None, control.AUTH_FAILED)
        self.auth_failures = 0
        self.session = auth.Session(auth.session_key(self._secret, nonce_c, nonce_d), auth.DIR_DONGLE)
        return control.encode(control.AUTH, msg.req, auth.proof_dongle(self._secret, nonce_c, nonce_d),
                              None, control.OK)

    async def _dispatch(self, msg: control.Message) -> Reply:
        a = self._actions
        t = msg.type
        p = msg.payload
        if t == control.TIME:
            return a.time_sync(control.parse_u64(p))
        if t == control.ACK:
            return a.ack(control.parse_u32(p))
        if t == control.STREAM:
            if p:
                raise ProtocolError("stream takes no payload")
            return a.stream()
        if t == control.SET_PLAN:
            return a.set_plan(control.parse_plan(p))
        if t == control.READ_DTC:
            if len(p) != 1 or p[0] not in (0x03, 0x07, 0x0A):
                raise ProtocolError("read_dtc takes mode 03, 07 or 0A")
            return await a.read_dtc(p[0])
        if t == control.CLEAR_DTC:
            if p:
                raise ProtocolError("clear_dtc takes no payload")
            return await a.clear_dtc()
        if t == control.READ_VIN:
            if p:
                raise ProtocolError("read_vin takes no payload")
            return await a.read_vin()
        if t == control.READ_FREEZE:
            if p:
                raise ProtocolError("read_freeze takes no payload")
            return await a.read_freeze()
        if t == control.STATUS:
            if p:
                raise ProtocolError("status takes no payload")
            return a.status()
        return control.UNSUPPORTED, b""


def msg_bytes(msg: control.Message) -> bytes:
    # Only its type and request id matter to a refusal.
    return bytes((msg.type, msg.req))
