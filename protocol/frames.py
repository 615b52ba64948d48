"""Messages larger than one ATT payload, split into fragments and put back.

Each notification or write is `[header][chunk]`; header = FIRST | LAST | a 6-bit
counter per characteristic and direction. A fragment lost on the way (the
counter jumps) or arriving without its start drops the partial message with a
ProtocolError rather than gluing two messages together.
"""

from protocol import MICROPYTHON

if MICROPYTHON:
    from micropython import const
else:  # CPython: the same names, without the compiler's folding
    def const(x: int) -> int:
        return x

from protocol.errors import ProtocolError

FIRST = const(0x80)
LAST = const(0x40)
COUNTER_MASK = const(0x3F)
MAX_MESSAGE = const(1024)
MIN_MTU = const(23)
ATT_OVERHEAD = const(3)


def payload_size(mtu: int) -> int:
    """Message bytes per fragment at this ATT MTU (one byte goes to the header)."""
    if mtu < MIN_MTU:
        mtu = MIN_MTU
    return mtu - ATT_OVERHEAD - 1


class Fragmenter:
    """The sending side. `fill` writes one fragment into a caller's buffer, so a
    dongle can notify from a preallocated buffer without allocating."""

    def __init__(self) -> None:
        self.counter = 0

    def fill(self, out: bytearray | memoryview, msg: bytes | bytearray | memoryview, length: int, offset: int,
             mtu: int) -> int:
        """Write the fragment of msg[:length] that starts at `offset` into `out`;
        return its size (header included). The next offset is offset + size - 1."""
        room = payload_size(mtu)
        n = length - offset
        if n > room:
            n = room
        header = self.counter & COUNTER_MASK
        if offset == 0:
            header |= FIRST
        if offset + n >= length:
            header |= LAST
        out[0] = header
        for i in range(n):
            out[1 + i] = msg[offset + i]
        self.counter = (self.counter + 1) & COUNTER_MASK
        return n + 1

    def split(self, msg: bytes | bytearray | memoryview, mtu: int) -> list[bytes]:
        """All fragments of `msg` as a list of bytes (the daemon's side)."""
        if len(msg) > MAX_MESSAGE:
            raise ProtocolError("message longer than %d bytes" % MAX_MESSAGE)
        out: list[bytes] = []
        buf = bytearray(payload_size(mtu) + 1)
        offset = 0
        while True:
            k = self.fill(buf, msg, len(msg), offset, mtu)
            out.append(bytes(buf[:k]))
            offset += k - 1
            if offset >= len(msg):
                return out


class Reassembler:
    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._expect = -1  # next counter; -1: none yet (any counter may start)
        self._open = False
        self.dropped = 0  # partial messages discarded

    def reset(self) -> None:
        """Forget any partial message (a new connection starts clean)."""
        self._buf = bytearray()
        self._open = False
        self._expect = -1

    def feed(self, fragment: bytes | bytearray | memoryview) -> bytes | None:
        """Take one fragment; return a whole message (bytes) or None.

        Raises ProtocolError for an empty fragment, a lost fragment, a middle
        fragment without a start, or an oversized message. The reassembler
        stays usable: the next FIRST fragment starts afresh."""
        if len(fragment) < 1:
            raise ProtocolError("empty fragment")
        header = fragment[0]
        counter = header & COUNTER_MASK
        expected = self._expect
        self._expect = (counter + 1) & COUNTER_MASK
        if header & FIRST:
            if self._open:
                # The rest of the previous message was lost: it is counted, and
                # the new message is still good.
                self.dropped += 1
            self._buf = bytearray(fragment[1:])
            self._open = True
        else:
            if not self._open:
                raise ProtocolError("fragment without the start of its message")
            if counter != expected:
                self._drop()
                raise ProtocolError("fragment lost (counter %d, expected %d)" % (counter, expected))
            self._buf.extend(fragment[1:])
        if len(self._buf) > self._limit:
            self._drop()
            raise ProtocolError("message longer than %d bytes" % self._limit)
        if header & LAST:
            return self._take()
        return None

    def _take(self) -> bytes:
        msg = bytes(self._buf)
        self._buf = bytearray()
        self._open = False
        return msg

    def _drop(self) -> None:
        self.dropped += 1
        self._buf = bytearray()
        self._open = False
