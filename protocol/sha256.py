"""SHA-256 and HMAC-SHA256 in viper for MicroPython: a record's MAC without the heap.

MicroPython only (protocol.auth picks it there; CPython keeps its C hmac). Why not
hashlib: its objects cannot be copied or reused after digest(), so every MAC built
two of them and two digests (~512 B a record). Here the key's inner and outer pads
are hashed once, into midstates, and a MAC works in the instance's preallocated
words: the message's blocks, the padded tail, one outer block, no allocation.

Viper's `uint` is the machine word: 64 bits on the unix port, 32 on the ESP32. So
sums are masked to 32 bits before they are shifted right or stored as a working
variable, shifts are on `uint` (logical), and 32-bit words are never read from
Python (a word >= 2**30 is a heap int on the ESP32): they stay behind ptr32.
"""

# ruff: noqa: F821 -- uint, ptr8 and ptr32 are viper's types, names only its compiler knows

from array import array

import micropython
from micropython import const

# Word offsets in an instance's state array.
_H = const(0)  # the running hash
_IN = const(8)  # midstate after the key's inner pad
_OUT = const(16)  # midstate after the key's outer pad
_W = const(24)  # message schedule, a ring of 16 words
_WORDS = const(40)
_BLOCK = const(64)

_IV = array("I", (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB,
                  0x5BE0CD19))
_K = array("I", (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2))


@micropython.viper
def _compress(st: ptr32, src: ptr8, off: int):
    """One 64-byte block src[off:off+64] into the running hash st[_H:_H+8]."""
    k = ptr32(_K)
    m = uint(0xFFFF) << 16 | uint(0xFFFF)
    for i in range(16):
        p = off + 4 * i
        st[_W + i] = (uint(src[p]) << 24) | (uint(src[p + 1]) << 16) | (uint(src[p + 2]) << 8) | uint(src[p + 3])
    a = uint(st[_H])
    b = uint(st[_H + 1])
    c = uint(st[_H + 2])
    d = uint(st[_H + 3])
    e = uint(st[_H + 4])
    f = uint(st[_H + 5])
    g = uint(st[_H + 6])
    h = uint(st[_H + 7])
    for i in range(64):
        if i < 16:
            w = uint(st[_W + i])
        else:
            # W[i-15], W[i-2], W[i-7], W[i-16] are 1, 14, 9 and 0 places on in the ring.
            x = uint(st[_W + ((i + 1) & 15)])
            y = uint(st[_W + ((i + 14) & 15)])
            s0 = ((x >> 7) | (x << 25)) ^ ((x >> 18) | (x << 14)) ^ (x >> 3)
            s1 = ((y >> 17) | (y << 15)) ^ ((y >> 19) | (y << 13)) ^ (y >> 10)
            w = (uint(st[_W + (i & 15)]) + s0 + s1 + uint(st[_W + ((i + 9) & 15)])) & m
            st[_W + (i & 15)] = w
        # Bits above 32 (on a 64-bit port) only ever reach the masked sums below.
        t1 = h + (((e >> 6) | (e << 26)) ^ ((e >> 11) | (e << 21)) ^ ((e >> 25) | (e << 7))) \
            + ((e & f) ^ ((e ^ m) & g)) + uint(k[i]) + w
        t2 = (((a >> 2) | (a << 30)) ^ ((a >> 13) | (a << 19)) ^ ((a >> 22) | (a << 10))) \
            + ((a & b) ^ (a & c) ^ (b & c))
        h = g
        g = f
        f = e
        e = (d + t1) & m
        d = c
        c = b
        b = a
        a = (t1 + t2) & m
    st[_H] = uint(st[_H]) + a
    st[_H + 1] = uint(st[_H + 1]) + b
    st[_H + 2] = uint(st[_H + 2]) + c
    st[_H + 3] = uint(st[_H + 3]) + d
    st[_H + 4] = uint(st[_H + 4]) + e
    st[_H + 5] = uint(st[_H + 5]) + f
    st[_H + 6] = uint(st[_H + 6]) + g
    st[_H + 7] = uint(st[_H + 7]) + h


@micropython.viper
def _copy8(dst: ptr32, d: int, src: ptr32, s: int):
    for i in range(8):
        dst[d + i] = src[s + i]


@micropython.viper
def _tail(blk: ptr8, src: ptr8, off: int, total: int) -> int:
    """The last total % 64 bytes of a message, at src[off:], padded into blk for a
    message of `total` bytes in all; returns how many blocks that makes (1 or 2)."""
    n = total & 63
    for i in range(n):
        blk[i] = src[off + i]
    blk[n] = 0x80
    end = 64 if n < 56 else 128
    for i in range(n + 1, end - 5):
        blk[i] = 0
    blk[end - 5] = total >> 29
    blk[end - 4] = total >> 21
    blk[end - 3] = total >> 13
    blk[end - 2] = total >> 5
    blk[end - 1] = total << 3
    return end >> 6


@micropython.viper
def _put(st: ptr32, out: ptr8, off: int, n: int):
    """The first n bytes of the running hash, big-endian, into out[off:]."""
    for i in range(n):
        out[off + i] = uint(st[_H + (i >> 2)]) >> (24 - ((i & 3) << 3))


def _absorb(st, blk, msg, length, prefix):
    """Hash msg[:length] on from the state in st[_H:], which has taken `prefix` bytes
    (0 or whole blocks), to the end of the message."""
    end = length - (length & 63)
    off = 0
    while off < end:
        _compress(st, msg, off)
        off += _BLOCK
    n = _tail(blk, msg, end, prefix + length)
    _compress(st, blk, 0)
    if n == 2:
        _compress(st, blk, _BLOCK)


def sha256(msg):
    """The SHA-256 digest of msg (bytes-like), as bytes."""
    st = array("I", [0] * _WORDS)
    blk = bytearray(2 * _BLOCK)
    _copy8(st, _H, _IV, 0)
    _absorb(st, blk, msg, len(msg), 0)
    out = bytearray(32)
    _put(st, out, 0, 32)
    return bytes(out)


class Hmac:
    """HMAC-SHA256 with one key. mac_into allocates nothing: the per-MAC cost is the
    message's blocks and one outer block."""

    def __init__(self, key):
        if len(key) > _BLOCK:
            key = sha256(key)
        self._st = array("I", [0] * _WORDS)
        self._blk = bytearray(2 * _BLOCK)
        pad = bytearray(_BLOCK)
        for byte, mid in ((0x36, _IN), (0x5C, _OUT)):
            for i in range(_BLOCK):
                pad[i] = (key[i] if i < len(key) else 0) ^ byte
            _copy8(self._st, _H, _IV, 0)
            _compress(self._st, pad, 0)
            _copy8(self._st, mid, self._st, _H)

    def mac_into(self, msg, length, out, offset, n):
        """Write the first n (<= 32) bytes of the MAC of msg[:length] to out[offset:].
        out may be msg itself, past length."""
        st = self._st
        blk = self._blk
        _copy8(st, _H, st, _IN)
        _absorb(st, blk, msg, length, _BLOCK)
        _put(st, blk, 0, 32)
        _copy8(st, _H, st, _OUT)
        _absorb(st, blk, blk, 32, _BLOCK)
        _put(st, out, offset, n)

    def digest(self, a, b=None, c=None):
        """The MAC of a + b + c, as bytes (allocates: for the control session)."""
        msg = bytearray(a)
        if b is not None:
            msg.extend(b)
        if c is not None:
            msg.extend(c)
        out = bytearray(32)
        self.mac_into(msg, len(msg), out, 0, 32)
        return bytes(out)
