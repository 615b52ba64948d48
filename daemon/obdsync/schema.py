"""The store's SQLite schema as numbered migrations.

``PRAGMA user_version`` holds the number of migrations applied. Each migration is one
step run in its own transaction together with the bump of ``user_version``, so a
crash between steps leaves a database at a well-defined earlier version. Never edit
a released step: append a new one.

Times are Unix milliseconds (``*_ms``); ``t_ms`` is milliseconds since the dongle's
boot. Devices are referred to by a small integer (``devices.num``) so that the
millions of sample rows don't repeat a 16-character id.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    CREATE TABLE devices (
        num         INTEGER PRIMARY KEY,
        id          TEXT NOT NULL UNIQUE,      -- 16 hex digits, lower case
        name        TEXT,
        address     TEXT,
        vin         TEXT,
        first_seen  INTEGER,
        last_seen   INTEGER,
        first_seq   INTEGER,                   -- lowest seq of the first batch ever stored
        contiguous  INTEGER                    -- all seqs first_seq..contiguous are stored or in a gap
    );

    -- One row per record ever stored: the (device, seq) key is what makes delivery exactly-once.
    CREATE TABLE records (
        device      INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        boot        INTEGER NOT NULL,
        kind        INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        PRIMARY KEY (device, seq)
    ) WITHOUT ROWID;

    CREATE TABLE gaps (
        device      INTEGER NOT NULL,
        seq         INTEGER NOT NULL,          -- the GAP record's own seq
        first       INTEGER NOT NULL,
        count       INTEGER NOT NULL,
        noticed_ms  INTEGER NOT NULL,
        PRIMARY KEY (device, seq)
    ) WITHOUT ROWID;

    -- The anchor a boot's ticks are mapped with: the real one of lowest seq, or while there
    -- is none a provisional one from the receive time (approx = 1, seq NULL).
    CREATE TABLE anchors (
        device      INTEGER NOT NULL,
        boot        INTEGER NOT NULL,
        t0          INTEGER NOT NULL,
        wall_ms     INTEGER NOT NULL,
        seq         INTEGER,
        approx      INTEGER NOT NULL,
        PRIMARY KEY (device, boot)
    ) WITHOUT ROWID;

    -- The key serves "device, channel, time range" queries; seq and n (index of the
    -- sample in its record) make it unique. channel is a decode signal id.
    CREATE TABLE samples (
        device      INTEGER NOT NULL,
        channel     INTEGER NOT NULL,
        time_ms     INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        n           INTEGER NOT NULL,
        boot        INTEGER NOT NULL,
        t_ms        INTEGER NOT NULL,
        value       REAL,
        raw         BLOB NOT NULL,
        approx      INTEGER NOT NULL,
        PRIMARY KEY (device, channel, time_ms, seq, n)
    ) WITHOUT ROWID;
    -- Only approximate rows are indexed, so normal inserts pay nothing for it.
    CREATE INDEX samples_approx ON samples (device, boot) WHERE approx = 1;

    -- Per device and signal: unit and the latest value (status, retention).
    CREATE TABLE channels (
        device      INTEGER NOT NULL,
        channel     INTEGER NOT NULL,
        unit        TEXT NOT NULL,
        last_ms     INTEGER NOT NULL,
        last_value  REAL,
        last_raw    BLOB NOT NULL,
        PRIMARY KEY (device, channel)
    ) WITHOUT ROWID;

    -- The dongle's own EVENT records (boot, engine on/off, battery low, ...).
    CREATE TABLE device_events (
        device      INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        boot        INTEGER NOT NULL,
        t_ms        INTEGER NOT NULL,
        time_ms     INTEGER NOT NULL,
        approx      INTEGER NOT NULL,
        code        INTEGER NOT NULL,
        millivolts  INTEGER NOT NULL,
        PRIMARY KEY (device, seq)
    ) WITHOUT ROWID;

    CREATE TABLE dtcs (
        device      INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        boot        INTEGER NOT NULL,
        t_ms        INTEGER NOT NULL,
        time_ms     INTEGER NOT NULL,
        approx      INTEGER NOT NULL,
        mode        INTEGER NOT NULL,
        codes       TEXT NOT NULL,             -- JSON list like ["P0301"]
        PRIMARY KEY (device, seq)
    ) WITHOUT ROWID;

    -- Derived events (rules). id is stable so re-deriving after a restart upserts.
    CREATE TABLE events (
        id          TEXT PRIMARY KEY,
        device      TEXT NOT NULL,
        type        TEXT NOT NULL,
        severity    TEXT NOT NULL,
        opened_ms   INTEGER NOT NULL,
        cleared_ms  INTEGER,
        values_json TEXT NOT NULL DEFAULT '{}',
        message     TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_device ON events (device, opened_ms);

    CREATE TABLE trips (
        id          TEXT PRIMARY KEY,
        device      TEXT NOT NULL,
        started_ms  INTEGER NOT NULL,
        ended_ms    INTEGER,
        distance_km REAL,
        fuel_l      REAL,
        values_json TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX trips_device ON trips (device, started_ms);

    CREATE TABLE service_records (
        id          INTEGER PRIMARY KEY,
        device      TEXT NOT NULL,
        done_ms     INTEGER NOT NULL,
        odometer_km REAL,
        note        TEXT NOT NULL DEFAULT ''
    );

    CREATE TABLE outbox (
        id           INTEGER PRIMARY KEY,
        target       TEXT NOT NULL,
        event_id     TEXT,
        payload      BLOB NOT NULL,
        created_ms   INTEGER NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt INTEGER NOT NULL,
        last_error   TEXT,
        state        TEXT NOT NULL DEFAULT 'pending'  -- pending | sent | dropped
    );
    CREATE INDEX outbox_due ON outbox (target, state, next_attempt);
    """,
    # 2: the rules engine's state per device, with the last sequence number fed to
    # it, so a restart resumes derivation instead of re-deriving all history.
    """
    CREATE TABLE rules_state (
        device   TEXT PRIMARY KEY,
        seq      INTEGER NOT NULL,
        snapshot TEXT NOT NULL,
        saved_ms INTEGER NOT NULL
    );
    """,
    # 3: sample rows hold only integers; the decoded value and the raw bytes, which take
    # few distinct values per signal, live once in sample_values. Binding a float and a
    # blob per row made up a third of the ingest's SQLite time. "samples" stays as a view
    # with the columns it had, for every reader (CLI, export, tests, tools).
    """
    -- A (signal, raw) pair may appear more than once (the store's cache of ids is
    -- bounded); only the id matters to a row.
    CREATE TABLE sample_values (
        id          INTEGER PRIMARY KEY,
        signal      INTEGER NOT NULL,
        value       REAL,
        raw         BLOB NOT NULL
    );
    CREATE TABLE sample_rows (
        device      INTEGER NOT NULL,
        channel     INTEGER NOT NULL,
        time_ms     INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        n           INTEGER NOT NULL,
        boot        INTEGER NOT NULL,
        t_ms        INTEGER NOT NULL,
        v           INTEGER NOT NULL,          -- sample_values.id
        approx      INTEGER NOT NULL,
        PRIMARY KEY (device, channel, time_ms, seq, n)
    ) WITHOUT ROWID;
    CREATE INDEX sample_values_copy ON sample_values (signal, raw);
    INSERT INTO sample_values (signal, value, raw) SELECT DISTINCT channel, value, raw FROM samples;
    INSERT INTO sample_rows (device, channel, time_ms, seq, n, boot, t_ms, v, approx)
        SELECT s.device, s.channel, s.time_ms, s.seq, s.n, s.boot, s.t_ms, v.id, s.approx
        FROM samples s JOIN sample_values v ON v.signal = s.channel AND v.raw = s.raw AND v.value IS s.value;
    DROP INDEX sample_values_copy;
    DROP TABLE samples;
    CREATE INDEX sample_rows_approx ON sample_rows (device, boot) WHERE approx = 1;
    -- CROSS JOIN: the rows drive the query (their key serves device/channel/time), the
    -- value is a lookup by id.
    CREATE VIEW samples (device, channel, time_ms, seq, n, boot, t_ms, value, raw, approx) AS
        SELECT r.device, r.channel, r.time_ms, r.seq, r.n, r.boot, r.t_ms, v.value, v.raw, r.approx
        FROM sample_rows r CROSS JOIN sample_values v ON v.id = r.v;
    """,
    # 4: log epochs (protocol 2). A dongle's log, wiped or replaced, starts its seqs and
    # boots again under a new random epoch. Each epoch of a device gets an index in the
    # order met, and every seq and boot column in the store holds idx << 32 | seq and
    # idx << 16 | boot: the (device, seq) keys stay unique across epochs, and epoch 0
    # (what protocol 1 dongles had, and the first epoch of a device) keeps its numbers.
    # first_seq and contiguous are in that store numbering; devices' columns of the same
    # names now follow the epoch met last.
    """
    CREATE TABLE epochs (
        device      INTEGER NOT NULL,
        idx         INTEGER NOT NULL,
        epoch       INTEGER NOT NULL,          -- u32, as the dongle's info and STREAM say
        first_seq   INTEGER,
        contiguous  INTEGER,
        first_seen  INTEGER NOT NULL,
        PRIMARY KEY (device, idx),
        UNIQUE (device, epoch)
    );
    INSERT INTO epochs (device, idx, epoch, first_seq, contiguous, first_seen)
        SELECT num, 0, 0, first_seq, contiguous, COALESCE(first_seen, 0) FROM devices WHERE first_seq IS NOT NULL;
    """,
    # DTC attribution: beside each code the ECU that holds it (JSON list parallel to codes,
    # like ["engine (7E8)", "transmission (7E9)"]; "" where the adapter printed no header).
    """
    ALTER TABLE dtcs ADD COLUMN ecus TEXT NOT NULL DEFAULT '[]';
    """,
    # Freeze frames (mode 02 frame 0) beside the codes: the last frame read for each code
    # that stored one, decoded (obdsync.decode.decode_freeze): {"ecu": name, "values":
    # {python-OBD name: [value, unit]}}. read_ms: when the dongle read it.
    """
    CREATE TABLE freeze_frames (
        device      INTEGER NOT NULL,
        code        TEXT NOT NULL,
        read_ms     INTEGER NOT NULL,
        frame       TEXT NOT NULL,             -- JSON
        PRIMARY KEY (device, code)
    ) WITHOUT ROWID;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(Exception):
    """The database's schema is not one this version can use."""


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the missing migrations to ``conn`` (autocommit mode); return the version.

    Idempotent: a database already at :data:`SCHEMA_VERSION` is left untouched. Raises
    :class:`SchemaError` for a database written by a newer obdsync.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {version} is newer than this obdsync knows ({SCHEMA_VERSION});"
            " upgrade obdsync"
        )
    for step in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _statements(MIGRATIONS[step]):
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {step + 1:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION


def _statements(script: str) -> list[str]:
    # executescript() would commit on its own; split so the step stays one transaction.
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return [s for s in out if s]
