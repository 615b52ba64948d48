"""Authentication: HMAC-SHA256 (the C `hmac` on CPython; on MicroPython, which has
no `hmac` module, HMAC over its C `hashlib.sha256`, and protocol.sha256 in bytecode
only where a build lacks that), the keys derived from a dongle's 32-byte secret, the
challenge-response proofs, and the per-message counters of a control session.

Why C on the dongle although it allocates (~450 B of hashlib objects and digests per
MAC, which cannot be reset or copied) and protocol.sha256 allocates nothing: the
dongle seals a record a second, and the figures of `make bench` (figure "board", on
the 32-bit build, translated to the ESP32's speed) are ~1 ms of board CPU per record
for the C MAC against ~100 ms or more for bytecode SHA-256, a stall of the poll loop
once a second; the garbage is < 1 KB/s, and a collection of the board's heap costs
~2 ms. Per sample nothing is allocated either way.

Why a counter and not a timestamp: the dongle has no clock worth trusting, and a
strictly increasing counter rejects replayed and reordered commands alike.
"""

from protocol import MICROPYTHON
from protocol.errors import ProtocolError

SECRET_LEN = 32
NONCE_LEN = 16
PROOF_LEN = 16
CONTROL_MAC_LEN = 8
DIR_CENTRAL = 0x43  # 'C': daemon -> dongle
DIR_DONGLE = 0x44  # 'D': dongle -> daemon


# Annotations: MicroPython has no `typing` and ignores them; CPython 3.11 evaluates
# them at definition time, so they name only builtins.
if MICROPYTHON:

    class Hmac:
        """HMAC-SHA256 with one key on MicroPython's C hashlib (mbedTLS on the ESP32).
        The same methods as protocol.sha256.Hmac and the CPython class."""

        def __init__(self, key: bytes | bytearray | memoryview) -> None:
            k = bytes(key)
            if len(k) > 64:
                k = _sha256(k).digest()
            k = k + bytes(64 - len(k))
            self._ipad = bytes(b ^ 0x36 for b in k)
            self._opad = bytes(b ^ 0x5C for b in k)

        def _outer(self, inner: "_sha256") -> bytes:
            h = _sha256(self._opad)
            h.update(inner.digest())
            return h.digest()

        def digest(self, a: bytes | bytearray | memoryview, b: bytes | bytearray | memoryview | None = None,
                   c: bytes | bytearray | memoryview | None = None) -> bytes:
            """The MAC of a + b + c, as bytes."""
            h = _sha256(self._ipad)
            h.update(a)
            if b is not None:
                h.update(b)
            if c is not None:
                h.update(c)
            return self._outer(h)

        def mac_into(self, msg: bytes | bytearray | memoryview, length: int, out: bytearray | memoryview,
                     offset: int, n: int) -> None:
            """Write the first n bytes of the MAC of msg[:length] to out[offset:]."""
            h = _sha256(self._ipad)
            h.update(msg if length == len(msg) else memoryview(msg)[:length])
            d = self._outer(h)
            for i in range(n):
                out[offset + i] = d[i]

    try:
        from hashlib import sha256 as _sha256
    except ImportError:
        # A build without hashlib.sha256: SHA-256 in bytecode, the same methods. The one
        # name stands for either class; the checker knows the one the board has.
        from protocol.sha256 import Hmac  # type: ignore[assignment]
else:
    from hmac import digest as _c_hmac

    class Hmac:  # type: ignore[no-redef]  # never beside the MicroPython one: `if MICROPYTHON`
        """HMAC-SHA256 with one key, on the C implementation (the daemon checks a MAC
        per record). The same methods as protocol.sha256.Hmac."""

        def __init__(self, key: bytes | bytearray | memoryview) -> None:
            self._key = bytes(key)

        def digest(self, a: bytes | bytearray | memoryview, b: bytes | bytearray | memoryview | None = None,
                   c: bytes | bytearray | memoryview | None = None) -> bytes:
            """The MAC of a + b + c, as bytes."""
            if b is not None:
                a = bytes(a) + bytes(b) + (bytes(c) if c is not None else b"")
            return _c_hmac(self._key, a, "sha256")

        def mac_into(self, msg: bytes | bytearray | memoryview, length: int, out: bytearray | memoryview,
                     offset: int, n: int) -> None:
            """Write the first n bytes of the MAC of msg[:length] to out[offset:]."""
            out[offset:offset + n] = _c_hmac(self._key, memoryview(msg)[:length], "sha256")[:n]


def hmac_sha256(key: bytes | bytearray | memoryview, msg: bytes | bytearray | memoryview) -> bytes:
    return Hmac(key).digest(msg)


def equal(a: bytes | bytearray | memoryview, b: bytes | bytearray | memoryview) -> bool:
    """Constant-time comparison: a MAC check must not leak how many bytes matched."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def check_secret(secret: object) -> None:
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_LEN:
        raise ProtocolError("secret must be 32 bytes")


def telemetry_key(secret: bytes | bytearray, epoch: int = 0) -> bytes:
    """The key of a flash log's records. `epoch` (u32) is random at the log's creation
    and bound in here, so records of a wiped and re-created log can never pass for the
    old one's (same seqs, other MACs). Epoch 0 is the log a protocol-1 firmware wrote
    (no epoch then): its key is the protocol-1 key, so an upgrade keeps that log."""
    check_secret(secret)
    if not 0 <= epoch <= 0xFFFFFFFF:
        raise ProtocolError("epoch must be a u32")
    if epoch == 0:
        return hmac_sha256(secret, b"obdsync/telemetry")
    return Hmac(secret).digest(b"obdsync/telemetry", bytes(((epoch >> 24) & 0xFF, (epoch >> 16) & 0xFF,
                                                             (epoch >> 8) & 0xFF, epoch & 0xFF)))


def session_key(secret: bytes | bytearray, nonce_c: bytes | bytearray | memoryview,
                nonce_d: bytes | bytearray | memoryview) -> bytes:
    return Hmac(secret).digest(b"obdsync/session", nonce_c, nonce_d)


def proof_central(secret: bytes | bytearray, nonce_c: bytes | bytearray | memoryview,
                  nonce_d: bytes | bytearray | memoryview) -> bytes:
    """What the daemon sends to prove it knows the secret (bound to both nonces)."""
    return Hmac(secret).digest(b"obdsync/auth/central", nonce_d, nonce_c)[:PROOF_LEN]


def proof_dongle(secret: bytes | bytearray, nonce_c: bytes | bytearray | memoryview,
                 nonce_d: bytes | bytearray | memoryview) -> bytes:
    """What the dongle answers: the daemon learns it talks to the real dongle."""
    return Hmac(secret).digest(b"obdsync/auth/dongle", nonce_c, nonce_d)[:PROOF_LEN]


def passkey(secret: bytes | bytearray) -> int:
    """The 6-digit BLE passkey (LE Secure Connections, MITM) printed on the label."""
    d = hmac_sha256(secret, b"obdsync/passkey")
    return ((d[0] << 24) | (d[1] << 16) | (d[2] << 8) | d[3]) % 1000000


class Session:
    """One authenticated control session, from one side's point of view.

    `tx_dir` is the direction byte this side sends with, so a message can't be
    reflected back to its sender. Counters start at 1 and must strictly increase.
    """

    def __init__(self, key: bytes | bytearray | memoryview, tx_dir: int) -> None:
        self._hmac = Hmac(key)
        self.tx_dir = tx_dir
        self.rx_dir = DIR_DONGLE if tx_dir == DIR_CENTRAL else DIR_CENTRAL
        self._dirbuf = bytearray(1)
        self.tx_counter = 0
        self.rx_counter = 0

    def next_counter(self) -> int:
        self.tx_counter += 1
        return self.tx_counter

    def mac(self, direction: int, msg: bytes | bytearray | memoryview) -> bytes:
        self._dirbuf[0] = direction
        return self._hmac.digest(self._dirbuf, msg)[:CONTROL_MAC_LEN]

    def verify(self, msg: bytes | bytearray | memoryview, counter: int, mac: bytes | bytearray | memoryview) -> None:
        """Accept a received message (its bytes without the MAC) or raise."""
        if not equal(self.mac(self.rx_dir, msg), mac):
            raise ProtocolError("control message MAC mismatch")
        if counter <= self.rx_counter:
            raise ProtocolError("control message replayed or out of order")
        self.rx_counter = counter
