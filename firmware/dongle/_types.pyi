# Interfaces the firmware's constructors take, for annotations only: a stub with no module
# behind it, imported under `if TYPE_CHECKING:` (MicroPython has no `typing` and compiles
# annotations away; the manifest and hil.build_firmware take *.py only). On the board
# these are machine.WDT, machine.UART...; on the unix port hil/mpy's stand-ins.
from typing import Protocol

class Clock(Protocol):
    """The dongle's clock: ms since boot as a small int, wrapping like ticks
    (dongle.clock.TicksClock; hil/mpy/simclock.SimClock)."""
    def ms(self) -> int: ...

class Wdt(Protocol):
    """machine.WDT once started (hil/mpy/simwdt.WDT on the unix port)."""
    def feed(self) -> None: ...

class RawIO(Protocol):
    """What dongle.uart.Stream wraps: machine.UART (timeout=0) or the unix port's FileIO
    on a pty. write returns None when nothing could be written; readinto None or 0 when
    nothing waits."""
    def write(self, buf: bytes | bytearray | memoryview, /) -> int | None: ...
    def readinto(self, buf: bytearray | memoryview, /) -> int | None: ...

class ElmStream(Protocol):
    """What dongle.elm327.ELM327 talks through: dongle.uart.Stream on the board, the
    daemon's async transport adapter in direct mode (obdsync.direct)."""
    poll_ms: int
    def write(self, buf: bytes | bytearray | memoryview) -> None: ...
    def readinto(self, buf: bytearray | memoryview) -> int: ...
    def drain(self) -> int: ...

class LogFile(Protocol):
    """A file from open(path, "rb"/"wb") as dongle.flashlog uses it. The stubs type
    open() as Any, so this says which methods, with MicroPython's stream forms:
    write(buf, off, n) writes buf[off:off + n] without a slice object (py/stream.c,
    mp_stream_write_method takes up to three arguments)."""
    def write(self, buf: bytes | bytearray | memoryview, off: int = ..., n: int = ..., /) -> int: ...
    def readinto(self, buf: bytearray | memoryview, /) -> int | None: ...
    def seek(self, offset: int, whence: int = ..., /) -> int: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
