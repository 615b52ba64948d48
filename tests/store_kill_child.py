"""Child of tests/test_store_kill.py: opens the store and does one thing, and SIGKILLs
itself from inside SQLite (its progress handler) after STEPS virtual-machine steps of
that thing: a kill -9 at a reproducible point inside the migration, the vacuum or the
WAL checkpoint, not at a moment chosen by a timer.

    python store_kill_child.py DB migrate|vacuum|checkpoint STEPS
Prints "done" if the operation finished before the kill.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys

DB, WHAT, STEPS = sys.argv[1], sys.argv[2], int(sys.argv[3])
_connect = sqlite3.connect
armed = {"on": WHAT == "migrate"}


def connect(*args, **kwargs):
    conn = _connect(*args, **kwargs)
    left = [STEPS]
    running = [""]

    def step() -> int:
        if armed["on"]:
            left[0] -= 1
            if left[0] <= 0:
                # The statement being run, for the test to check where the kill landed.
                print("killed in:", running[0].split()[0].upper() if running[0] else "?", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        return 0

    def trace(sql: str) -> None:
        if not sql.lstrip().startswith("--"):
            running[0] = sql.strip()

    conn.set_progress_handler(step, 100)  # every 100 VM instructions
    conn.set_trace_callback(trace)
    return conn


sqlite3.connect = connect


async def main() -> None:
    from obdsync.store import Store

    if WHAT == "grow-wal":  # ingest with checkpoints off, then die: a WAL of every page for the next start
        from hil.bench.ingest import DEVICE, SECRET, backlog
        from protocol.auth import telemetry_key
        from protocol.record_decode import decode_record

        raws, _ = backlog(STEPS)
        store = await Store.open(DB)
        await store.db.conn.execute("PRAGMA wal_autocheckpoint=0")
        await store.ingest(DEVICE, [decode_record(r, telemetry_key(SECRET)) for r in raws])
        print("grown", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    if WHAT == "checkpoint":
        store = await Store.open(DB)
        print("checkpointing", flush=True)
        await store.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        print("done", flush=True)
        await store.close()
        return
    store = await Store.open(DB)
    try:
        armed["on"] = True
        if WHAT == "vacuum":
            await store.vacuum()
    finally:
        armed["on"] = False
        await store.close()
    print("done", flush=True)


asyncio.run(main())
