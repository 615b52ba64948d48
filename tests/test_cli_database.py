"""The database file as real installations meet it: a second `obdsync run` on it, a
`--db` that does not exist, a file damaged mid-way, a full disk under `export`. Each
command is a subprocess with its own XDG directories (tests/e2e.py `Home`)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from e2e import Home

from hil.bench.ingest import DEVICE, SECRET, backlog
from obdsync import devices
from obdsync.store import Store
from protocol.auth import telemetry_key
from protocol.record_decode import decode_record

# `make test` tries three readers; `make soak` every one.
_MORE = pytest.mark.soak
READERS = [("status",), pytest.param(("events",), marks=_MORE), pytest.param(("samples",), marks=_MORE),
           pytest.param(("trips",), marks=_MORE), ("export",), pytest.param(("service", "history"), marks=_MORE),
           pytest.param(("outbox", "dead"), marks=_MORE), pytest.param(("dtc", "read"), marks=_MORE), ("vacuum",),
           pytest.param(("replay",), marks=_MORE)]


@pytest.fixture
def home(tmp_path):
    h = Home(tmp_path / "home")
    yield h
    h.close()


def one_line_error(p, *texts: str) -> str:
    assert p.returncode != 0, f"exit 0\n{p.stdout}{p.stderr}"
    assert "Traceback" not in p.stderr, p.stderr
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(err) == 1, p.stderr
    for t in texts:
        assert t in err[0], err[0]
    return err[0]


def filled_db(path, n=600):
    """A database with n records of one dongle."""
    raws, _ = backlog(n)
    key = telemetry_key(SECRET)

    async def go():
        store = await Store.open(path)
        try:
            await store.ingest(DEVICE, [decode_record(r, key) for r in raws])
        finally:
            await store.close()

    asyncio.run(go())
    return path


@pytest.mark.parametrize("cmd", READERS, ids=lambda c: " ".join(c) if isinstance(c, tuple) else None)
def test_a_reader_given_a_missing_db_says_so_and_creates_nothing(home, tmp_path, cmd):
    db = tmp_path / "typo" / "obdsync.db"
    one_line_error(home.cli("--db", str(db), *cmd), str(db), "no such database")
    assert not db.parent.exists()
    p = home.cli(*cmd)  # the default place, before the first `obdsync run`
    if cmd == ("status",):
        assert p.returncode == 0, p.stderr  # status says nothing is there yet: that is its answer
    else:
        one_line_error(p, str(home.db), "no such database")
    assert not home.db.exists()


def test_a_damaged_database_gets_one_line_and_is_never_written(home, tmp_path):
    db = filled_db(tmp_path / "car.db")
    data = bytearray(db.read_bytes())
    page = 4096
    for o in range(2 * page, len(data), page):  # every page past the schema: b-tree headers gone
        data[o:o + 16] = b"\xa5" * 16
    db.write_bytes(bytes(data))
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for cmd in (("status",), ("export", "--device", DEVICE), ("samples", "--device", DEVICE), ("vacuum",)):
        line = one_line_error(home.cli("--db", str(db), *cmd), str(db), "corrupt", "not modified", ".recover",
                              "move")
        assert hashlib.sha256(db.read_bytes()).hexdigest() == before, (cmd, line)
    garbage = tmp_path / "not-a-db.db"
    garbage.write_bytes(b"this is no SQLite file, it is a note someone saved here by mistake\n" * 200)
    garbage.chmod(0o600)  # as obdsync keeps its files: a looser mode would be fixed (and said) first
    g_before = garbage.read_bytes()
    one_line_error(home.cli("--db", str(garbage), "status"), "corrupt", "not modified")
    assert garbage.read_bytes() == g_before


def test_export_onto_a_full_disk_says_it_is_incomplete(home, tmp_path):
    db = filled_db(tmp_path / "car.db")
    ok = home.cli("--db", str(db), "export", "--device", DEVICE, "-o", str(tmp_path / "out.csv"))
    assert ok.returncode == 0, ok.stderr
    p = home.cli("--db", str(db), "export", "--device", DEVICE, "-o", "/dev/full")  # ENOSPC on every write
    one_line_error(p, "/dev/full", "No space left", "incomplete")


def test_a_second_run_on_one_database_is_refused_naming_the_first(home, tmp_path):
    """The control door already refuses a second daemon of one user; the database's own lock
    also catches one started with another runtime directory (a system unit and a user's
    shell, sudo, another login) pointed at the same --db."""
    devices.add("0011223344556677", "AA:BB:CC:DD:EE:01", bytes(32), base=home.config_home / "obdsync")
    filled_db(home.db)
    shown = home.cli("status").stdout
    assert "records" in shown, shown
    first = home.run("-v", "--db", str(home.db))  # nothing answers at that address: it keeps retrying
    first.wait_for("obdsync running")
    first.wait_for("dongle .* unavailable")  # past start-up: its signal handlers are in place
    other = Home(tmp_path / "other")
    try:
        devices.add("0011223344556677", "AA:BB:CC:DD:EE:01", bytes(32), base=other.config_home / "obdsync")
        other.env["XDG_RUNTIME_DIR"] = str(tmp_path / "other-run")
        p = other.cli("--db", str(home.db), "run", timeout=60)
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        last = p.stderr.strip().splitlines()[-1]  # `run` logs at INFO; the refusal is its last word
        for text in (str(home.db), f"PID {first.proc.pid}", "in use", "one daemon per database"):
            assert text in last, last
        st = home.cli("status")  # readers go on beside the running daemon
        assert st.returncode == 0 and "records" in st.stdout, st.stdout + st.stderr
        assert first.terminate() == 0
        again = other.run("-v", "--db", str(home.db))  # the lock went with the process
        again.wait_for("obdsync running")
        again.wait_for("dongle .* unavailable")
        assert again.terminate() == 0
    finally:
        other.close()


def test_vacuum_on_a_full_disk_fails_clearly_and_leaves_the_database_whole(home, tmp_path):
    """A vacuum needs room for a copy of the file; on a full disk (a file-size limit on the
    process stands in for it: RLIMIT_FSIZE, no root needed) it says so in one line, the
    database stays as it was, and with room again the same vacuum works."""
    import resource
    import signal
    import sqlite3
    import subprocess

    db = filled_db(tmp_path / "car.db", n=6000)

    def counts():
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            return conn.execute("SELECT (SELECT COUNT(*) FROM records), (SELECT COUNT(*) FROM samples)").fetchone()
        finally:
            conn.close()

    before = counts()
    limit = db.stat().st_size // 2  # no file may grow past half the database: the vacuum's copy does not fit

    def full_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as ENOSPC would
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    p = subprocess.run([*home_cli(home), "--db", str(db), "vacuum", "--days", "0"], env=home.env, capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL, preexec_fn=full_disk)
    one_line_error(p, "vacuum", "could not write to the disk", "free space")
    assert counts() == before
    ok = home.cli("--db", str(db), "vacuum", "--days", "0")
    assert ok.returncode == 0, ok.stderr
    assert counts() == before


def home_cli(home) -> list[str]:
    from e2e import OBDSYNC

    return [OBDSYNC]
