# Names for annotations only, shared by protocol/ and firmware/: a stub with no module
# behind it, imported under `if _TYPE_CHECKING:` (MicroPython has no `typing` and compiles
# annotations away; CPython evaluates them, so dual-interpreter modules quote them).
# Nothing here reaches the board: the manifest and hil.build_firmware take *.py only.
from typing import Protocol, TypeAlias

# Bytes that are read: indexable, sized, sliceable (a buffer protocol alone is not).
Bytes: TypeAlias = bytes | bytearray | memoryview
# Bytes that are written in place.
WBytes: TypeAlias = bytearray | memoryview

class Mac(Protocol):
    """An HMAC-SHA256 with its key: protocol.auth.Hmac (C hashlib or CPython's hmac) or
    protocol.sha256.Hmac (bytecode, allocation-free), which stand for each other."""
    def digest(self, a: Bytes, b: Bytes | None = None, c: Bytes | None = None) -> bytes: ...
    def mac_into(self, msg: Bytes, length: int, out: WBytes, offset: int, n: int) -> None: ...
