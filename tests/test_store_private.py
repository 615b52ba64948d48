"""The owner's driving data is the owner's alone (issue 13): the data directory obdsync creates is
0700, the database and its -wal/-shm 0600, whatever the umask; a database an older version left
0644 is tightened when it is opened; `live.json` (what the dongles do now) is 0600 too."""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import pytest

from obdsync.store import Store
from protocol.record import KIND_SAMPLES


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def open_umask():
    """The most permissive umask: whatever is private is so because obdsync made it so."""
    old = os.umask(0)
    yield
    os.umask(old)


async def write_something(st: Store) -> None:
    rec = SimpleNamespace(kind=KIND_SAMPLES, seq=0, boot=1, t0=0, samples=[(0, 0x0D, b"\x2a")])
    await st.ingest("00112233aabbccdd", [rec])


async def test_a_new_database_and_its_directory_are_private(tmp_path, open_umask):
    db = tmp_path / "share" / "obdsync" / "obdsync.db"
    st = await Store.open(db)
    try:
        await write_something(st)
        assert mode(db.parent) == 0o700
        files = {p.name: mode(p) for p in db.parent.iterdir()}
        assert {"obdsync.db", "obdsync.db-wal", "obdsync.db-shm"} <= set(files), files
        assert set(files.values()) == {0o600}, files
    finally:
        await st.close()


async def test_an_existing_database_left_readable_is_tightened(tmp_path):
    home = tmp_path / "home"  # a directory of the user's choosing
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    db = home / "obdsync.db"
    st = await Store.open(db)
    await write_something(st)
    await st.close()
    for p in home.glob("obdsync.db*"):
        p.chmod(0o644)
    st = await Store.open(db)
    try:
        await write_something(st)
        files = {p.name: mode(p) for p in home.glob("obdsync.db*")}
        assert "obdsync.db" in files and set(files.values()) == {0o600}, files
        assert mode(home) == 0o755  # a directory the user chose is theirs to set
    finally:
        await st.close()


async def test_the_live_status_file_is_private(tmp_path, open_umask):
    from obdsync.config import Config
    from obdsync.daemon import Daemon

    live = tmp_path / "data" / "obdsync" / "live.json"
    d = Daemon(Config(), tmp_path / "x.db", [], secrets={}, live_file=live)
    await d._write_live()
    assert mode(live) == 0o600 and mode(live.parent) == 0o700
