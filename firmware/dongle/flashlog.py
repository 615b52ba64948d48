"""The dongle's lossless flash log: records wait here until the daemon acks them.

Files under `root` (littlefs `/log` on the board, any directory on the unix port):
- `XXXXXXXX.seg` segment files (hex id, oldest first), each a run of entries
  `len u16 | crc32 u32 | record`; the CRC is binascii.crc32(record, len) (seeded with the
  length, so a bent length field fails it too). A file is rotated once it reaches
  `segment_bytes`; whole files are deleted, nothing is ever rewritten.
- `state` (dongle.persist): boot counter, first unacked seq, next seq as of the last
  flush, records lost so far, one past the highest seq a gap has named.
- `epoch` (dongle.persist): the log's epoch, random (never 0) when the log is created in
  an empty directory, written before anything else and never changed. Every record's
  key is derived from it (protocol.auth.telemetry_key), so a wiped, reflashed or replaced
  log starts a new epoch whose seqs cannot be mistaken for the old one's. A directory
  holding a log but no epoch file is a protocol-1 log: epoch 0 (its records keep their key).

Usage (one owner, the main loop; never from an IRQ):
    seq = log.next_seq; n = writer.seal(seq, log.boot); log.append(writer.out, n)
    log.tick()        # at least every flush_ms: timed flush and state save
    log.ack(seq)      # the daemon's cumulative ack
    c = log.cursor(); n = c.read_into(buf)   # replay, oldest unacked first; 0 = none yet

Invariants (what makes it lossless):
1. Every seq below next_seq is, at any moment, acked (< first_unacked), or held in the
   log (RAM buffer or a segment), or named by a GAP record that is held or acked.
   Seqs are assigned by the log only (append refuses any other), contiguously.
2. A GAP written by the log names [first_unacked, x], x the highest seq lost so far, and
   takes the next fresh seq (> x). So it comes after everything it names that is still
   held, and it covers any earlier GAP that was itself dropped before delivery (that
   one named a range starting at an older first_unacked and ended below its own seq).
   The daemon's contiguous watermark cannot pass a lost seq until it holds the GAP
   naming it; the GAP is unacked until then, so it is either held or re-covered by a
   later GAP. For the daemon: a GAP says "every seq in this range that you have not
   stored is lost"; ranges can overlap earlier GAPs and name seqs already stored (both
   harmless); the lost count is the distinct seqs never stored.
3. Readers see flushed records only. A power cut loses at most the RAM buffer (records
   appended within the last flush_ms), and those seqs were never sent, so reusing them
   after reboot cannot collide with a (device, seq) the daemon already has.
4. Flash order: the boot counter is saved before anything else at boot; the state
   (first_unacked, next seq) is saved before segments are deleted; a GAP is flushed
   before the segments it accounts for are deleted. Power lost between two steps
   leaves extra records (re-sent, deduped), never missing ones.

Recovery reads every entry (boot time grows with the log): one that is short, out of
bounds, fails its CRC or does not raise the seq ends its file (a torn tail; littlefs
itself reverts unsynced data), and appends go to a new file after it. Seqs resume after
the last good record. Unacked seqs that vanished otherwise (the state saw them flushed,
a hole between files, or missing below the oldest record with no GAP naming them) get a
GAP at boot and count as dropped.

For the GATT server: send only what a Cursor returns (flushed records, so the latency is
up to flush_ms unless it calls flush()); ack() with the daemon's cumulative ACK.

Flash wear: appends go to a RAM buffer, written with one write + sync per flush (at
most every flush_ms, or when the buffer fills); on littlefs each sync reprograms the
file's last block, so flush_ms trades wear against the loss bound. The state file is
28 bytes, saved at boot, before deletions, after acks at most every state_ms and on
flush(). Allocation: tick and read_into allocate nothing; append allocates nothing on
64-bit ports, and on 32-bit ones (the ESP32) the CRC it writes when that is >= 2**30: a
32-byte int object in 3 records of 4 (binascii.crc32 has no buffer output, and no other
C checksum does either). Kept by the figures (`make bench`, figure "board"): CRC-32 in
bytecode on 16-bit halves allocates nothing but costs the board ~3 ms per 277-byte record,
against ~1 µs here in C; the record's C MAC already leaves ~440 B of garbage, so the ~26 B
this adds changes the collections' rate by a few percent, not the CPU by half a seal.
Reading checks the CRC without it becoming an int (crc32's residue, see _read). Times
are clock ticks, compared with time.ticks_diff (dongle.clock). Opening a segment
(rotation, a reader catching up) allocates a file object.
"""

import binascii
import os
import struct
import time

from micropython import const

from dongle import unload
from dongle.persist import Persist
from protocol.record import MAX_RECORD, MIN_RECORD, Signer

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away
# and has no `typing`, so the names they use exist for the checker only.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from collections.abc import Callable

    from dongle._types import Clock, LogFile
    from protocol._types import Bytes, WBytes

FRAME = const(6)  # len u16 | crc32 u32
_CRC_RESIDUE = const(0x2144DF1C)  # crc32 of any data followed by its own crc32, little-endian
MAX_ENTRY = const(518)  # FRAME + MAX_RECORD
_GAP_BUF = const(32)
SUFFIX = ".seg"

# State fields (Persist values).
S_BOOT = const(0)
S_FIRST = const(1)  # first unacked seq
S_NEXT = const(2)  # next seq as of the last flush
S_DROPPED = const(3)
S_NAMED = const(4)  # one past the highest seq any GAP has named
S_N = const(5)


def _seq(rec: Bytes) -> int:
    # peek_seq without struct.unpack_from's tuple: the append path must not allocate.
    return (rec[1] << 24) | (rec[2] << 16) | (rec[3] << 8) | rec[4]


class FlashLog:
    """A bounded, power-cut-safe log of records on a filesystem directory.

    key: the telemetry key (signs the GAP records the log writes itself), or a function
      epoch -> key (protocol.auth.telemetry_key bound to a secret): then `key` is the
      one of this log's epoch, for the caller's RecordWriter and Signer too.
    capacity_bytes: bound on the segment files' total size; at least 2 segments, and
      less than the filesystem holds (littlefs spends whole blocks per file). A write
      that fails anyway (OSError) keeps the buffered records and goes to a new file.
    clock: an object with ms() -> int, monotonic ms since boot.
    """

    def __init__(self, root: str, key: bytes | Callable[[int], bytes], capacity_bytes: int,
                 segment_bytes: int = 16384, clock: Clock | None = None, flush_ms: int = 1000,
                 buffer_bytes: int = 2048, state_ms: int = 5000,
                 random_bytes: Callable[[int], bytes] | None = None) -> None:
        if clock is None:
            raise ValueError("FlashLog needs a clock with ms()")
        # The boot-only code (its messages too), unloaded once the log is open. Its heap is
        # freed below the long-lived buffers, in one piece.
        from dongle import flashlog_boot as boot

        try:
            boot.check_sizes(capacity_bytes, segment_bytes, flush_ms, buffer_bytes)
            self._root = root
            self._cap = capacity_bytes
            self._segb = segment_bytes
            self._clock = clock
            self._flush_ms = flush_ms
            self._state_ms = state_ms
            self._gapbuf = bytearray(_GAP_BUF)
            self._ram = bytearray(buffer_bytes)
            # Any 512-byte source: sizes the scratch buffer for a read without allocating.
            self._grow = memoryview(self._ram)[:MAX_RECORD]
            # The record being copied or read, always exactly its length, so crc32 and the
            # copies need no slice objects.
            self._scratch = bytearray(MAX_RECORD + 4)  # + a CRC when checking (_read)
            self._crc = bytearray(4)
            self._hdr = bytearray(FRAME)
            # Segment table, oldest first; the last entry is the one being written.
            # Torn-tail boots can leave short segments, hence the slack over cap/seg.
            self._maxseg = capacity_bytes // segment_bytes + 8
            m = self._maxseg
            self._sid = [0] * m
            self._slast = [0] * m  # last seq put in it (the open one: including the RAM buffer)
            self._ssize = [0] * m  # bytes of good entries on flash (what readers may read)
            self._sbytes = [0] * m  # file size (what counts against capacity)
            self._nseg = 0
            self._tgen = 0  # bumped when the table changes: readers revalidate their segment
            self._next_id = 0
            self._f: LogFile | None = None
            self._pend = 0  # bytes in the RAM buffer
            self._pend_t = 0
            self._next = 0  # next seq to assign
            self._dnext = 0  # next seq after the last flushed record
            self._first = 0  # first unacked seq
            self._dropped = 0
            self._named = 0
            self._boot = 0
            self._dirty = False
            self._state_t = 0
            self._cursors: list[Cursor] = []
            # After the long-lived buffers: what opening the epoch and deriving the key leave
            # behind is freed in one piece (no holes between buffers).
            self.epoch = boot.open_epoch(root, random_bytes)
            self.key = key(self.epoch) if callable(key) else key
            self._signer = Signer(self.key)
            self._state = Persist(root + "/state", S_N)
            boot.recover(self)
        finally:
            unload("dongle.flashlog_boot")

    # -- status ------------------------------------------------------------------------

    @property
    def boot(self) -> int:
        """This boot's counter, as records carry it (u16)."""
        return self._boot & 0xFFFF

    @property
    def next_seq(self) -> int:
        return self._next

    @property
    def first_unacked(self) -> int:
        return self._first

    @property
    def flushed_seq(self) -> int:
        """Next seq after the last record on flash: readers see records below it."""
        return self._dnext

    @property
    def dropped(self) -> int:
        """Seqs lost so far (log full, or corruption found at boot), all named by GAPs."""
        return self._dropped

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def used(self) -> int:
        n = self._pend
        for i in range(self._nseg):
            n += self._sbytes[i]
        return n

    @property
    def segments(self) -> int:
        return self._nseg

    # -- writing -----------------------------------------------------------------------

    def append(self, buf: Bytes, n: int) -> int:
        """Store the record buf[:n]; its seq must be next_seq. Returns the seq.
        Refused records (ValueError) change nothing."""
        if n < MIN_RECORD or n > MAX_RECORD or n > len(buf):
            raise ValueError("record of %d bytes: must be %d..%d and within its buffer"
                             % (n, MIN_RECORD, MAX_RECORD))
        seq = _seq(buf)
        if seq != self._next:
            raise ValueError("record has seq %d, the log's next_seq is %d" % (seq, self._next))
        self._put(buf, n, seq)
        if self._ssize[self._nseg - 1] + self._pend >= self._segb:
            self._rotate()
        elif time.ticks_diff(self._clock.ms(), self._pend_t) >= self._flush_ms:
            self._flush()
        return seq

    def tick(self) -> None:
        """Call at least every flush_ms: writes out buffered records that are due, and
        the state after acks (at most every state_ms)."""
        now = self._clock.ms()
        if self._pend and time.ticks_diff(now, self._pend_t) >= self._flush_ms:
            self._flush()
        if self._dirty and time.ticks_diff(now, self._state_t) >= self._state_ms:
            self._save()

    def flush(self) -> None:
        """Write out everything buffered and the state (before sleep or shutdown)."""
        self._flush()
        v = self._state.values
        if self._dirty or v[S_NEXT] != self._dnext:
            self._save()

    def ack(self, seq: int) -> int:
        """The daemon stored every seq <= seq. Frees the segments wholly acked; returns
        how many. An ack below an earlier one is ignored; one beyond the flushed records
        (never sent) raises ValueError."""
        if seq >= self._dnext:
            raise ValueError("ack %d beyond the last flushed record %d" % (seq, self._dnext - 1))
        if seq < self._first:
            return 0
        self._first = seq + 1
        self._dirty = True
        k = 0
        while k < self._nseg - 1 and self._slast[k] <= seq:
            k += 1
        if k:
            self._save()  # the pointer reaches flash before the records leave it
            self._remove(k)
        return k

    def close(self) -> None:
        self.flush()
        if self._f is not None:
            self._f.close()
            self._f = None
        for c in self._cursors:
            c._close()

    # -- reading -----------------------------------------------------------------------

    def cursor(self, seq: int | None = None) -> "Cursor":
        """A reader from seq (default first_unacked), oldest first; see Cursor."""
        c = Cursor(self, self._first if seq is None else seq)
        self._cursors.append(c)
        return c

    # -- internals ---------------------------------------------------------------------

    def _path(self, sid: int) -> str:
        return "%s/%08x%s" % (self._root, sid, SUFFIX)

    def _put(self, buf: Bytes, n: int, seq: int) -> None:
        o = self._pend
        if o + FRAME + n > len(self._ram):
            self._flush()
            o = 0
        sc = self._scratch
        sc[0:len(sc)] = buf
        sc[n:] = b""
        ram = self._ram
        struct.pack_into(">HI", ram, o, n, binascii.crc32(sc, n))
        ram[o + FRAME:o + FRAME + n] = sc
        if o == 0:
            self._pend_t = self._clock.ms()
        self._pend = o + FRAME + n
        self._next = seq + 1
        self._slast[self._nseg - 1] = seq

    def _flush(self) -> None:
        p = self._pend
        if not p:
            return
        f = self._f
        if f is None:  # the last write failed: carry on in a fresh file
            self._slast[self._nseg - 1] = self._dnext - 1
            f = self._start_segment()
            p = self._pend
            if not p:
                return
        i = self._nseg - 1
        try:
            w = f.write(self._ram, 0, p)
            if w != p:
                raise OSError(28)  # ENOSPC: a short write
            f.flush()
        except OSError:
            self._abandon(f)
            raise
        self._ssize[i] += p
        self._sbytes[i] += p
        self._pend = 0
        self._dnext = self._next

    def _abandon(self, f: LogFile) -> None:
        # The open file may hold part of the buffer: keep the buffer, count the file
        # as written up to its good entries, and let the next flush start a new one.
        i = self._nseg - 1
        try:
            f.close()
        except OSError:
            pass
        self._f = None
        self._slast[i] = self._dnext - 1
        try:
            self._sbytes[i] = os.stat(self._path(self._sid[i]))[6]
        except OSError:
            self._sbytes[i] = self._ssize[i] + self._pend

    def _rotate(self) -> None:
        self._flush()  # leaves a file open: a failed write raises
        if self._f is not None:
            self._f.close()
            self._f = None
        self._start_segment()

    def _start_segment(self) -> LogFile:
        """Open the next segment file (self._f, also returned), dropping the oldest for room."""
        # Room for a full new segment first: drop the oldest files (acked or not).
        used = 0
        for i in range(self._nseg):
            used += self._sbytes[i]
        k = 0
        lost = -1
        while k < self._nseg and (used + self._segb + MAX_ENTRY > self._cap
                                  or self._nseg - k >= self._maxseg):
            used -= self._sbytes[k]
            if self._slast[k] >= self._first:
                lost = self._slast[k]
            k += 1
        gone = self._sid[:k]
        self._shift(k)
        sid = self._next_id
        f: LogFile
        try:
            f = open(self._path(sid), "wb")
        except OSError:
            # The filesystem is full: free the dropped files before the GAP is on flash.
            # A reboot in between finds seqs missing below the oldest record and no GAP
            # naming them, and names them then.
            for s in gone:
                self._unlink(s)
            gone = []
            f = open(self._path(sid), "wb")
        self._next_id = sid + 1
        i = self._nseg
        self._sid[i] = sid
        self._slast[i] = self._next - 1
        self._ssize[i] = 0
        self._sbytes[i] = 0
        self._nseg = i + 1
        self._tgen += 1
        self._f = f
        # Below the oldest held, every unacked seq is already named (invariant 1).
        base = self._named if self._named > self._first else self._first
        if self._lose(lost, lost + 1 - base) or k:
            self._save()
        for s in gone:
            self._unlink(s)
        return f

    def _lose(self, x: int, count: int) -> bool:
        """`count` more seqs up to x are gone: write and flush a GAP naming
        [first_unacked, x] unless one already named them. Returns whether one was written."""
        first = self._first
        if x < first or x < self._named:
            return False
        self._dropped += count
        self._named = x + 1
        seq = self._next
        n = self._signer.gap(self._gapbuf, seq, self._boot & 0xFFFF, self._clock.ms(),
                             first, x + 1 - first)
        self._put(self._gapbuf, n, seq)
        self._flush()
        return True

    def _shift(self, k: int) -> None:
        if not k:
            return
        n = self._nseg
        for lst in (self._sid, self._slast, self._ssize, self._sbytes):
            for j in range(k, n):
                lst[j - k] = lst[j]
        self._nseg = n - k
        self._tgen += 1

    def _remove(self, k: int) -> None:
        gone = self._sid[:k]
        self._shift(k)
        for s in gone:
            self._unlink(s)

    def _unlink(self, sid: int) -> None:
        for c in self._cursors:
            if c._sid == sid:
                c._close()
        try:
            os.remove(self._path(sid))
        except OSError:
            pass

    def _save(self) -> None:
        v = self._state.values
        v[S_BOOT] = self._boot
        v[S_FIRST] = self._first
        v[S_NEXT] = self._dnext
        v[S_DROPPED] = self._dropped
        v[S_NAMED] = self._named
        self._state.save()
        self._dirty = False
        self._state_t = self._clock.ms()

    def _read(self, f: LogFile, avail: int) -> int:
        """Read one entry from f into the scratch buffer; its length, or -1 if the next
        `avail` bytes do not start with an intact entry."""
        hdr = self._hdr
        if avail < FRAME + MIN_RECORD or f.readinto(hdr) != FRAME:
            return -1
        n = (hdr[0] << 8) | hdr[1]
        if n < MIN_RECORD or n > MAX_RECORD or FRAME + n > avail:
            return -1
        sc = self._scratch
        sc[0:len(sc)] = self._grow
        sc[n:] = b""
        if f.readinto(sc) != n:
            return -1
        # The check without the CRC as an int (>= 2**30 it is a heap object on the board):
        # the record followed by its CRC little-endian leaves crc32's fixed residue.
        c = self._crc
        c[0] = hdr[5]
        c[1] = hdr[4]
        c[2] = hdr[3]
        c[3] = hdr[2]
        sc[n:] = c  # within the scratch buffer's capacity: no reallocation
        ok = binascii.crc32(sc, n) == _CRC_RESIDUE
        sc[n:] = b""
        return n if ok else -1

class Cursor:
    """Reads records oldest first, from seq on, while the log keeps growing.

    read_into(buf) copies the next flushed record into buf[:n] and returns n, or 0
    when there is none yet (call again later). A record longer than buf raises
    ValueError and stays next. When the segment under the cursor is freed or dropped,
    it moves on to the oldest record still held past its position (a GAP tells the
    daemon what went). close() when done.
    """

    def __init__(self, log: FlashLog, seq: int) -> None:
        self._log = log
        self.seq = seq  # the next seq wanted: records below it are skipped
        self._sid = -1
        self._i = -1
        self._tgen = -1
        self._off = 0
        self._f: LogFile | None = None
        self._known = 0  # bytes of the file that existed when it was opened

    def read_into(self, buf: WBytes) -> int:
        log = self._log
        while True:
            i = self._index()
            if i < 0:
                i = 0
                while i < log._nseg and log._slast[i] < self.seq:
                    i += 1
                if i == log._nseg:
                    return 0
                self._move(i)
            limit = log._ssize[i]
            off = self._off
            if off >= limit:
                if i == log._nseg - 1:
                    return 0
                self._move(i + 1)
                continue
            f = self._f
            if f is None or off >= self._known:
                # Reopened to see what the writer flushed since: littlefs handles do
                # not pick up another handle's appends.
                self._close()
                f = open(log._path(self._sid), "rb")
                f.seek(off)
                self._f = f
                self._known = limit
            n = log._read(f, limit - off)
            if n < 0:
                # Corrupt on flash: never delivered; skip the rest of this segment.
                self._off = limit
                continue
            sc = log._scratch
            seq = _seq(sc)
            if seq < self.seq:
                self._off = off + FRAME + n
                continue
            if n > len(buf):
                f.seek(off)
                raise ValueError("buffer of %d bytes for a %d-byte record" % (len(buf), n))
            buf[0:n] = sc
            self._off = off + FRAME + n
            self.seq = seq + 1
            return n

    def close(self) -> None:
        self._close()
        cs = self._log._cursors
        if self in cs:
            cs.remove(self)

    def _index(self) -> int:
        log = self._log
        if self._tgen != log._tgen:
            self._tgen = log._tgen
            self._i = -1
            for j in range(log._nseg):
                if log._sid[j] == self._sid:
                    self._i = j
                    break
        return self._i

    def _move(self, i: int) -> None:
        log = self._log
        self._close()
        self._sid = log._sid[i]
        self._i = i
        self._tgen = log._tgen
        self._off = 0

    def _close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
