"""FlashLog's boot half (dongle.flashlog): the log's epoch opened or created, and every
segment read back to rebuild the table, the seqs and the losses (the module doc of
dongle.flashlog says what recovery keeps). Apart because it runs once: FlashLog imports it
for the boot and unloads it after (dongle.unload), so on a board running .mpy its bytecode (~1.2 KB of
the GC heap) does not stay in RAM for the rest of the drive. It works on the log's own
fields: it is the log's code, only kept in another file.
"""

import os

from micropython import const

from dongle.flashlog import FRAME, MAX_ENTRY, S_BOOT, S_DROPPED, S_FIRST, S_NAMED, S_NEXT, SUFFIX, _seq
from dongle.persist import Persist

# Annotations are for the type check (firmware/mypy.ini), as in dongle.flashlog.
_TYPE_CHECKING = const(0)
if _TYPE_CHECKING:
    from collections.abc import Callable

    from dongle.flashlog import FlashLog


def check_sizes(capacity_bytes: int, segment_bytes: int, flush_ms: int, buffer_bytes: int) -> None:
    """FlashLog's arguments, refused with a named error before anything is allocated."""
    if not 0 < flush_ms <= 1000:
        raise ValueError("flush_ms must be 1..1000, got %d" % flush_ms)
    if segment_bytes < 2 * MAX_ENTRY:
        raise ValueError("segment_bytes must be at least %d" % (2 * MAX_ENTRY))
    if capacity_bytes < 2 * (segment_bytes + MAX_ENTRY):
        raise ValueError("capacity_bytes must hold two segments: at least %d" % (2 * (segment_bytes + MAX_ENTRY)))
    if buffer_bytes < MAX_ENTRY:
        raise ValueError("buffer_bytes must be at least %d" % MAX_ENTRY)


def open_epoch(root: str, random_bytes: Callable[[int], bytes] | None) -> int:
    try:
        os.mkdir(root)
    except OSError:
        os.stat(root)  # exists already: fine; anything else raises here
    p = Persist(root + "/epoch", 1)
    if p.load():
        return p.values[0]
    epoch = 0
    for name in os.listdir(root):
        if name.startswith("state") or name.endswith(SUFFIX):
            break  # a log from before epochs: keep it (epoch 0, the protocol-1 key)
    else:
        if random_bytes is None:
            random_bytes = os.urandom
        while epoch == 0:
            b = random_bytes(4)
            epoch = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]
    p.values[0] = epoch
    p.save()  # before the first record: every record of this log carries its key
    return epoch


def recover(log: FlashLog) -> None:
    ok = log._state.load()
    v = log._state.values
    ids = []
    for name in os.listdir(log._root):
        if len(name) == 12 and name.endswith(SUFFIX):
            try:
                ids.append(int(name[:8], 16))
            except ValueError:
                pass
    ids.sort()
    first = v[S_FIRST] if ok else -1
    named = v[S_NAMED] if ok else 0
    garbage = []
    holes = []  # (lo, hi): seqs that went missing from the log
    prev = -1
    last_boot = -1
    firsts: list[int] = []
    last_clean = False
    for sid in ids:
        s_first, s_last, good, size, boot = _scan(log, sid, prev)
        log._next_id = sid + 1
        if s_first < 0:
            garbage.append(sid)
            continue
        if log._nseg == log._maxseg:
            # More files than this capacity allows (it shrank): the oldest go.
            holes.append((firsts.pop(0), log._slast[0]))
            garbage.append(log._sid[0])
            log._shift(1)
        if prev >= 0 and s_first > prev + 1:
            holes.append((prev + 1, s_first - 1))  # a corrupt entry cut a segment short
        firsts.append(s_first)
        i = log._nseg
        log._sid[i] = sid
        log._slast[i] = s_last
        log._ssize[i] = good
        log._sbytes[i] = size
        log._nseg = i + 1
        prev = s_last
        last_boot = boot
        last_clean = good == size
    oldest = firsts[0] if firsts else -1
    if first < 0:
        first = oldest if oldest >= 0 else 0
    nxt = v[S_NEXT] if ok else 0
    if prev + 1 >= nxt:
        nxt = prev + 1
    else:
        holes.append((prev + 1, nxt - 1))  # flushed records missing from the tail
    if first > nxt:
        first = nxt
    if oldest > first and named < oldest:
        holes.append((first, oldest - 1))  # gone before the oldest held, and no GAP named them
    lost = -1
    count = 0
    low = named if named > first else first
    for lo, hi in holes:
        if hi > lost:
            lost = hi
        if lo < low:
            lo = low
        if hi >= lo:
            count += hi + 1 - lo
    log._first = first
    log._next = nxt
    log._dnext = nxt
    log._named = named
    log._dropped = v[S_DROPPED] if ok else 0
    base = v[S_BOOT] if ok else (last_boot if last_boot > 0 else 0)
    log._boot = base + 1
    log._save()  # the boot counter first
    for sid in garbage:
        try:
            os.remove(log._path(sid))
        except OSError:
            pass
    log._tgen += 1
    i = log._nseg - 1
    if i >= 0 and last_clean and log._ssize[i] < log._segb:
        log._f = open(log._path(log._sid[i]), "ab")
    else:
        # A torn tail stays behind as garbage past the segment's good bytes.
        log._start_segment()
    if log._lose(lost, count):
        log._save()


def _scan(log: FlashLog, sid: int, prev: int) -> tuple[int, int, int, int, int]:
    """(first, last, good bytes, file size, boot of last) of a segment's intact
    prefix whose seqs rise above prev; first is -1 when none."""
    first = -1
    last = prev
    boot = -1
    good = 0
    try:
        f = open(log._path(sid), "rb")
    except OSError:
        return -1, prev, 0, 0, -1
    with f:
        size = f.seek(0, 2)
        f.seek(0)
        while True:
            n = log._read(f, size - good)
            if n < 0:
                break
            sc = log._scratch
            seq = _seq(sc)
            if seq <= last:
                break
            if first < 0:
                first = seq
            last = seq
            boot = (sc[5] << 8) | sc[6]
            good += FRAME + n
    return first, last, good, size, boot
