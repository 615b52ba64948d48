"""SHA-256 and HMAC-SHA256 for MicroPython: a record's MAC without the heap.

MicroPython only (protocol.auth picks it there; CPython keeps its C hmac). Why not
hashlib: its objects cannot be copied or reused after digest(), so every MAC built
two of them and two digests (~512 B a record). Here the key's inner and outer pads
are hashed once, into midstates, and a MAC works in the instance's preallocated
state: the message's blocks, the padded tail, one outer block, no allocation.

Plain bytecode (any mpy-cross, any port). A 32-bit word is kept as two 16-bit halves
(high, low) in array('H'): on the ESP32 an int of 2**30 or more is a heap object, and
here every value stays below 2**20 (a shift only ever moves bits that were masked to
fit, a sum of at most six halves carries into the next half). The rounds are written
out on the halves, with no helper returning a pair (that would be a tuple).
"""

from array import array

from micropython import const

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away
# and has no `typing`, so the names they use exist for the checker only.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from protocol._types import Bytes, WBytes

# Half-word offsets in an instance's state array (word i: high half at 2i, low at 2i+1).
_H = const(0)  # the running hash
_IN = const(16)  # midstate after the key's inner pad
_OUT = const(32)  # midstate after the key's outer pad
_W = const(48)  # message schedule, a ring of 16 words
_HALVES = const(80)
_BLOCK = const(64)


def _halves(words: tuple[int, ...]) -> array[int]:
    out = array("H", bytes(4 * len(words)))
    for i, x in enumerate(words):
        out[2 * i] = x >> 16
        out[2 * i + 1] = x & 0xFFFF
    return out


_IV = _halves((0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB,
               0x5BE0CD19))
_K = _halves((
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2))


def _compress(st: array[int], src: Bytes, off: int) -> None:
    """One 64-byte block src[off:off+64] into the running hash st[_H:_H+16]."""
    k = _K
    for i in range(16):
        p = off + 4 * i
        st[_W + 2 * i] = (src[p] << 8) | src[p + 1]
        st[_W + 2 * i + 1] = (src[p + 2] << 8) | src[p + 3]
    a_h = st[_H]
    a_l = st[_H + 1]
    b_h = st[_H + 2]
    b_l = st[_H + 3]
    c_h = st[_H + 4]
    c_l = st[_H + 5]
    d_h = st[_H + 6]
    d_l = st[_H + 7]
    e_h = st[_H + 8]
    e_l = st[_H + 9]
    f_h = st[_H + 10]
    f_l = st[_H + 11]
    g_h = st[_H + 12]
    g_l = st[_H + 13]
    h_h = st[_H + 14]
    h_l = st[_H + 15]
    for i in range(64):
        j = _W + 2 * (i & 15)
        if i < 16:
            w_h = st[j]
            w_l = st[j + 1]
        else:
            # W[i-15], W[i-2], W[i-7], W[i-16] are 1, 14, 9 and 0 places on in the ring.
            q = _W + 2 * ((i + 1) & 15)
            x_h = st[q]
            x_l = st[q + 1]
            # s0 = rotr 7 ^ rotr 18 ^ shr 3
            s_h = (((x_h >> 7) | ((x_l & 0x7F) << 9)) ^ ((x_l >> 2) | ((x_h & 3) << 14)) ^ (x_h >> 3))
            s_l = (((x_l >> 7) | ((x_h & 0x7F) << 9)) ^ ((x_h >> 2) | ((x_l & 3) << 14))
                   ^ ((x_l >> 3) | ((x_h & 7) << 13)))
            q = _W + 2 * ((i + 14) & 15)
            x_h = st[q]
            x_l = st[q + 1]
            # s1 = rotr 17 ^ rotr 19 ^ shr 10
            t_h = (((x_l >> 1) | ((x_h & 1) << 15)) ^ ((x_l >> 3) | ((x_h & 7) << 13)) ^ (x_h >> 10))
            t_l = (((x_h >> 1) | ((x_l & 1) << 15)) ^ ((x_h >> 3) | ((x_l & 7) << 13))
                   ^ ((x_l >> 10) | ((x_h & 0x3FF) << 6)))
            q = _W + 2 * ((i + 9) & 15)
            lo = st[j + 1] + s_l + t_l + st[q + 1]
            w_l = lo & 0xFFFF
            w_h = (st[j] + s_h + t_h + st[q] + (lo >> 16)) & 0xFFFF
            st[j] = w_h
            st[j + 1] = w_l
        # t1 = h + S1(e) + ch(e, f, g) + k[i] + w; S1 = rotr 6 ^ rotr 11 ^ rotr 25
        s_h = (((e_h >> 6) | ((e_l & 0x3F) << 10)) ^ ((e_h >> 11) | ((e_l & 0x7FF) << 5))
               ^ ((e_l >> 9) | ((e_h & 0x1FF) << 7)))
        s_l = (((e_l >> 6) | ((e_h & 0x3F) << 10)) ^ ((e_l >> 11) | ((e_h & 0x7FF) << 5))
               ^ ((e_h >> 9) | ((e_l & 0x1FF) << 7)))
        lo = h_l + s_l + ((e_l & f_l) ^ ((e_l ^ 0xFFFF) & g_l)) + k[2 * i + 1] + w_l
        t1_l = lo & 0xFFFF
        t1_h = h_h + s_h + ((e_h & f_h) ^ ((e_h ^ 0xFFFF) & g_h)) + k[2 * i] + w_h + (lo >> 16)
        # t2 = S0(a) + maj(a, b, c); S0 = rotr 2 ^ rotr 13 ^ rotr 22
        s_h = (((a_h >> 2) | ((a_l & 3) << 14)) ^ ((a_h >> 13) | ((a_l & 0x1FFF) << 3))
               ^ ((a_l >> 6) | ((a_h & 0x3F) << 10)))
        s_l = (((a_l >> 2) | ((a_h & 3) << 14)) ^ ((a_l >> 13) | ((a_h & 0x1FFF) << 3))
               ^ ((a_h >> 6) | ((a_l & 0x3F) << 10)))
        t2_l = s_l + ((a_l & b_l) ^ (a_l & c_l) ^ (b_l & c_l))
        t2_h = s_h + ((a_h & b_h) ^ (a_h & c_h) ^ (b_h & c_h))
        h_h = g_h
        h_l = g_l
        g_h = f_h
        g_l = f_l
        f_h = e_h
        f_l = e_l
        lo = d_l + t1_l
        e_l = lo & 0xFFFF
        e_h = (d_h + t1_h + (lo >> 16)) & 0xFFFF
        d_h = c_h
        d_l = c_l
        c_h = b_h
        c_l = b_l
        b_h = a_h
        b_l = a_l
        lo = t1_l + t2_l
        a_l = lo & 0xFFFF
        a_h = (t1_h + t2_h + (lo >> 16)) & 0xFFFF
    _add(st, 0, a_h, a_l)
    _add(st, 2, b_h, b_l)
    _add(st, 4, c_h, c_l)
    _add(st, 6, d_h, d_l)
    _add(st, 8, e_h, e_l)
    _add(st, 10, f_h, f_l)
    _add(st, 12, g_h, g_l)
    _add(st, 14, h_h, h_l)


def _add(st: array[int], i: int, x_h: int, x_l: int) -> None:
    lo = st[_H + i + 1] + x_l
    st[_H + i + 1] = lo & 0xFFFF
    st[_H + i] = (st[_H + i] + x_h + (lo >> 16)) & 0xFFFF


def _copy8(dst: array[int], d: int, src: array[int], s: int) -> None:
    for i in range(16):
        dst[d + i] = src[s + i]


def _tail(blk: bytearray, src: Bytes, off: int, total: int) -> int:
    """The last total % 64 bytes of a message, at src[off:], padded into blk for a
    message of `total` bytes in all; returns how many blocks that makes (1 or 2)."""
    n = total & 63
    for i in range(n):
        blk[i] = src[off + i]
    blk[n] = 0x80
    end = 64 if n < 56 else 128
    for i in range(n + 1, end - 5):
        blk[i] = 0
    blk[end - 5] = (total >> 29) & 0xFF
    blk[end - 4] = (total >> 21) & 0xFF
    blk[end - 3] = (total >> 13) & 0xFF
    blk[end - 2] = (total >> 5) & 0xFF
    blk[end - 1] = (total << 3) & 0xFF
    return end >> 6


def _put(st: array[int], out: WBytes, off: int, n: int) -> None:
    """The first n bytes of the running hash, big-endian, into out[off:]."""
    for i in range(n):
        x = st[_H + (i >> 1)]
        out[off + i] = x >> 8 if not i & 1 else x & 0xFF


def _absorb(st: array[int], blk: bytearray, msg: Bytes, length: int, prefix: int) -> None:
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


def sha256(msg: Bytes) -> bytes:
    """The SHA-256 digest of msg (bytes-like), as bytes."""
    st = array("H", bytes(2 * _HALVES))
    blk = bytearray(2 * _BLOCK)
    _copy8(st, _H, _IV, 0)
    _absorb(st, blk, msg, len(msg), 0)
    out = bytearray(32)
    _put(st, out, 0, 32)
    return bytes(out)


class Hmac:
    """HMAC-SHA256 with one key. mac_into allocates nothing: the per-MAC cost is the
    message's blocks and one outer block."""

    def __init__(self, key: Bytes) -> None:
        if len(key) > _BLOCK:
            key = sha256(key)
        self._st = array("H", bytes(2 * _HALVES))
        self._blk = bytearray(2 * _BLOCK)
        pad = bytearray(_BLOCK)
        for byte, mid in ((0x36, _IN), (0x5C, _OUT)):
            for i in range(_BLOCK):
                pad[i] = (key[i] if i < len(key) else 0) ^ byte
            _copy8(self._st, _H, _IV, 0)
            _compress(self._st, pad, 0)
            _copy8(self._st, mid, self._st, _H)

    def mac_into(self, msg: Bytes, length: int, out: WBytes, offset: int,
                 n: int) -> None:
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

    def digest(self, a: Bytes, b: Bytes | None = None,
               c: Bytes | None = None) -> bytes:
        """The MAC of a + b + c, as bytes (allocates: for the control session)."""
        msg = bytearray(a)
        if b is not None:
            msg.extend(b)
        if c is not None:
            msg.extend(c)
        out = bytearray(32)
        self.mac_into(msg, len(msg), out, 0, 32)
        return bytes(out)
