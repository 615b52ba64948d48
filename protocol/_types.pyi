# Names for annotations only, shared by protocol/ and firmware/: a stub with no module
# behind it, imported under `if TYPE_CHECKING:` (MicroPython has no `typing` and compiles
# annotations away; CPython evaluates them, so dual-interpreter modules quote them).
# Nothing here reaches the board: the manifest and hil.build_firmware take *.py only.
from typing import TypeAlias

# Bytes that are read: indexable, sized, sliceable (a buffer protocol alone is not).
Bytes: TypeAlias = bytes | bytearray | memoryview
# Bytes that are written in place.
WBytes: TypeAlias = bytearray | memoryview
