"""Trip pictures without a plotting library: a text sparkline for the terminal and
a small PNG (zlib + struct, as the PNG spec lays it out) for `--plot FILE`."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

BARS = "▁▂▃▄▅▆▇█"


def resample(values: Sequence[float], width: int) -> list[float]:
    """Mean of each of `width` equal slices (or the values themselves if fewer)."""
    if len(values) <= width:
        return list(values)
    out = []
    for i in range(width):
        lo = i * len(values) // width
        hi = max(lo + 1, (i + 1) * len(values) // width)
        chunk = values[lo:hi]
        out.append(sum(chunk) / len(chunk))
    return out


def sparkline(values: Sequence[float], width: int = 60) -> str:
    vals = resample(values, width)
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    return "".join(BARS[min(len(BARS) - 1, int((v - lo) / span * (len(BARS) - 1) + 0.5))] for v in vals)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(series: Sequence[tuple[Sequence[float], tuple[int, int, int]]], width: int = 800,
        height: int = 300) -> bytes:
    """Line charts stacked in panels, one per (values, colour), on white; RGB PNG bytes."""
    px = bytearray(b"\xff" * (width * height * 3))
    n = max(1, len(series))
    panel = height // n

    def put(x: int, y: int, c: tuple[int, int, int]) -> None:
        if 0 <= x < width and 0 <= y < height:
            i = (y * width + x) * 3
            px[i:i + 3] = bytes(c)

    for k, (values, colour) in enumerate(series):
        top, bottom = k * panel + 4, (k + 1) * panel - 4
        for x in range(width):  # panel frame: a grey baseline
            put(x, bottom, (200, 200, 200))
        vals = resample(values, width)
        if not vals:
            continue
        lo, hi = min(vals), max(vals)
        span = hi - lo or 1.0
        prev = None
        for i, v in enumerate(vals):
            x = i * (width - 1) // max(1, len(vals) - 1)
            y = bottom - int((v - lo) / span * (bottom - top))
            if prev is not None:
                (x0, y0) = prev
                steps = max(abs(x - x0), abs(y - y0), 1)
                for s in range(steps + 1):
                    put(x0 + (x - x0) * s // steps, y0 + (y - y0) * s // steps, colour)
            prev = (x, y)
    raw = b"".join(b"\x00" + bytes(px[y * width * 3:(y + 1) * width * 3]) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b""))
