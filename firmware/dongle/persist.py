"""A few u32 counters kept on flash and replaced atomically.

The file is rewritten whole through a temporary file and a rename, so a power cut
leaves either the old or the new values, never a mix: littlefs and POSIX both make
rename over an existing file atomic. Layout: magic, n x u32, CRC-32 of the rest.
Where rename cannot replace a file (FAT), save() removes the old one first and load()
then finds the complete temporary file.

Written rarely (the flash log saves at boot, before deleting segments, on ack at most
every few seconds and on an explicit flush), so nothing here is on a hot path.
"""

import binascii
import os
import struct

from micropython import const

_MAGIC = b"OBS1"
_HEAD = const(4)


class Persist:
    """`values` (a list of n ints, 0 until loaded) mirrors the file."""

    def __init__(self, path: str, n: int) -> None:
        self.path = path
        self._tmp = path + ".tmp"
        self.values = [0] * n
        self._n = n
        self._buf = bytearray(_HEAD + 4 * n + 4)
        self._fmt = ">" + "I" * n

    def load(self) -> bool:
        """Read the values; False (and values left as they were) when no intact file exists."""
        return self._load(self.path) or self._load(self._tmp)

    def _load(self, path: str) -> bool:
        buf = self._buf
        try:
            with open(path, "rb") as f:
                got = f.readinto(buf)
                extra = f.read(1)
        except OSError:
            return False
        end = len(buf) - 4
        if got != len(buf) or extra or buf[:_HEAD] != _MAGIC:
            return False
        if binascii.crc32(memoryview(buf)[:end]) != struct.unpack_from(">I", buf, end)[0]:
            return False
        vals = struct.unpack_from(self._fmt, buf, _HEAD)
        for i in range(self._n):
            self.values[i] = vals[i]
        return True

    def save(self) -> None:
        buf = self._buf
        buf[:_HEAD] = _MAGIC
        for i in range(self._n):
            v = self.values[i]
            if v < 0 or v > 0xFFFFFFFF:
                raise ValueError("persisted counter %d out of u32 range: %d" % (i, v))
            struct.pack_into(">I", buf, _HEAD + 4 * i, v)
        end = len(buf) - 4
        struct.pack_into(">I", buf, end, binascii.crc32(memoryview(buf)[:end]))
        with open(self._tmp, "wb") as f:
            f.write(buf)
            f.flush()
        try:
            os.rename(self._tmp, self.path)
        except OSError:
            # A filesystem whose rename will not replace: load() falls back to the tmp file.
            try:
                os.remove(self.path)
            except OSError:
                pass
            os.rename(self._tmp, self.path)
