"""The ELM327's serial line behind one small interface, on the board and on the unix port.

    write(buf)              send the whole buffer
    readinto(buf) -> n      never waits: 0 when nothing is there, else what was waiting (<= len(buf))
    drain() -> n            discard pending input; returns how many bytes were dropped
    await wait(ms)          give the event loop ms milliseconds (allocation-free)
    await readinto_wait(buf, timeout_ms) -> n   first bytes or 0 at the deadline (convenience, allocates)

Why polling and not asyncio.StreamReader: StreamReader(uart) is the documented way to wait on a
UART and select.poll accepts the unix port's FileIO too, but every wait through asyncio's IOQueue
allocates (a list per queued stream, a coroutine per readinto), and the driver's hot path must
not. Reads that never block plus `asyncio.sleep_ms` (a preallocated singleton) cost no heap; the
UART driver's ring buffer (rxbuf) holds the bytes meanwhile. At 38400 baud a 1-2 ms poll period
adds under one ms per request.
"""

import asyncio
import time

from micropython import const

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away
# and has no `typing`, so the names they use exist for the checker only.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from dongle._types import RawIO
    from protocol._types import Bytes, WBytes

# Linux c_cc indices (the unix port's termios exports no names for them); defined before use,
# as const() only replaces names the compiler has already seen.
_VTIME = const(5)
_VMIN = const(6)


class Stream:
    """Base: subclasses give `_raw`, an object with write(buf) and readinto(buf)."""

    def __init__(self, raw: RawIO, poll_ms: int = 1) -> None:
        self._raw = raw
        self.poll_ms = poll_ms
        self._junk = bytearray(32)

    def write(self, buf: Bytes) -> None:
        n = self._raw.write(buf)
        if n is None or n < len(buf):
            # A short write (non-blocking line congested): finish it; only this rare path allocates.
            mv = memoryview(buf)
            n = n or 0
            while n < len(mv):
                n += self._raw.write(mv[n:]) or 0

    def readinto(self, buf: WBytes) -> int:
        n = self._raw.readinto(buf)
        return n if n else 0  # UART gives None, FileIO 0 or None when empty

    def drain(self) -> int:
        total = 0
        while True:
            n = self.readinto(self._junk)
            if not n:
                return total
            total += n

    async def wait(self, ms: int) -> None:
        await asyncio.sleep_ms(ms)

    async def readinto_wait(self, buf: WBytes, timeout_ms: int) -> int:
        t0 = time.ticks_ms()
        while True:
            n = self.readinto(buf)
            if n or time.ticks_diff(time.ticks_ms(), t0) >= timeout_ms:
                return n
            await asyncio.sleep_ms(self.poll_ms)

    def close(self) -> None:
        close = getattr(self._raw, "close", None)  # a pty's file has one, machine.UART not
        if close is not None:
            close()


class UartStream(Stream):
    """A `machine.UART` built by the caller with timeout=0 (reads return at once) and a
    generous rxbuf (e.g. 512) so a whole reply waits in the driver while we sleep."""


class PtyStream(Stream):
    """A pseudo-terminal path (the ELM327 emulator) on the unix port.

    The unix FileIO.readinto loops until the buffer is full on a blocking tty; in raw mode with
    VMIN=0 and VTIME=0 a read returns what is waiting (0 when nothing) instead, which is the
    UART's timeout=0 behaviour. The unix `os` has no `open`, so the builtin one opens the path."""

    def __init__(self, path: str, poll_ms: int = 1) -> None:
        import termios

        f = open(path, "r+b")
        fd = f.fileno()
        termios.setraw(fd)
        attr = termios.tcgetattr(fd)
        attr[6][_VMIN] = 0
        attr[6][_VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attr)
        Stream.__init__(self, f, poll_ms)


def open_pty(path: str, poll_ms: int = 1) -> PtyStream:
    return PtyStream(path, poll_ms)


def from_uart(uart: RawIO, poll_ms: int = 2) -> UartStream:
    return UartStream(uart, poll_ms)
