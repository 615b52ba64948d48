"""Fault injection for the whole chain, and the figures that say what survived it.

    with Rig(fault_scenario(600), work) as rig:
        d = DaemonProc(work / "daemon", rig.air, config=daemon_config(mqtt_port=broker.port))
        d.pair(rig.dongle)
        d.start(); d.wait_line(lambda ln: "backlog" in ln); d.kill()      # SIGKILL mid-sync
        ...
        truth = stop_dongle_cleanly(rig.dongle)        # its flash: the records it produced
        d.start(); wait_synced(d.db, rig.dongle.device_id, truth.next_seq)
        fig = reconcile(d.db, rig.dongle.device_id, truth)   # produced / stored / lost ...

What the dongle produced is read from its flash directory on CPython (the flash log's
state file and segments, the formats of firmware/dongle/persist.py and flashlog.py), so
the daemon's database is checked against the dongle's own account, not against itself.

Every process started here is stopped by its owner's stop()/close(), also on failure.
"""

from __future__ import annotations

import binascii
import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from hil import proc
from hil.proc import LineProcess
from hil.scenario import Scenario, parse
from protocol.auth import telemetry_key
from protocol.errors import ProtocolError
from protocol.record import MAX_RECORD, MIN_RECORD
from protocol.record_decode import decode_record

if TYPE_CHECKING:
    import asyncio
    import subprocess

    from hil.bench.backlog import Filled
    from hil.rig import Rig, SimDongle
    from obdsync.daemon import Daemon


T = TypeVar("T")


class Broker(Protocol):
    """The MQTT broker a run may freeze, stop and restart (tests/mosquitto.py's Mosquitto)."""
    port: int

    def start(self, deadline_s: float = ...) -> None: ...
    def stop(self) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...

FRAME = 6  # a flash log entry: len u16 | crc32 u32 | record
STATE_MAGIC = b"OBS1"
SYNC_RECORDS_PER_S = 120  # about what the simulated radio carries (hil/bench/backlog.py's bound)
STATE_FIELDS = ("boot", "first_unacked", "next_seq", "dropped", "named")


class FaultError(AssertionError):
    """A fault run broke an invariant (or a process did not do what it must in time)."""


def fault_scenario(city_s: float = 3600, speedup: float = 48, start_fuel_pct: float = 14) -> Scenario:
    """City traffic at `speedup`, starting on a nearly empty tank so the rules open an
    event at once (low_fuel) and keep producing others: records and events both flow."""
    return parse({
        "name": "faults",
        "description": "stop-and-go traffic on a low tank, for fault injection",
        "vehicle": {"start_fuel_pct": start_fuel_pct, "seed": 11},
        "phase": [{"kind": "city", "duration_s": city_s, "speedup": speedup},
                  {"kind": "park", "duration_s": 600, "speedup": 150}],
    }, source="<hil.faults>")


def daemon_config(*, mqtt_port: int | None = None, max_size_mb: int = 0, backoff_s: float = 0.2,
                  extra: str = "") -> str:
    """config.toml for a fault run: fast reconnects (the faults come every few seconds,
    the default backoff would spend the run waiting), optional MQTT target and size cap."""
    out = [f"[link]\nbackoff_base_s = {backoff_s}\nbackoff_cap_s = {max(backoff_s, 1.0)}\n"]
    if max_size_mb:
        out.append(f"[store]\nmax_size_mb = {max_size_mb}\n")
    if mqtt_port is not None:
        out.append(f'[[forward.mqtt]]\nhost = "127.0.0.1"\nport = {mqtt_port}\nname = "broker"\n')
    out.append(extra)
    return "\n".join(out)


# -- the daemon as a process ---------------------------------------------------------------

class DaemonProc:
    """`obdsync -v run` on the simulated radio with its own XDG directories.

    Its output lines are kept (`lines`, all runs) and can be waited for; kill() is a
    SIGKILL (nothing flushed, as a crash or an OOM kill), stop() a SIGTERM (store and ack
    what is in hand)."""

    def __init__(self, workdir: Path, air: Path, *, config: str = "",
                 echo: Callable[[str], None] | None = None) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.air = Path(air)
        self.env = dict(os.environ, XDG_CONFIG_HOME=str(self.dir / "config"), XDG_DATA_HOME=str(self.dir / "data"),
                        OBDSYNC_SIM_AIR=str(self.air), OBDSYNC_BLE_BACKEND="hil.blesim")
        self.env.pop("OBDSYNC_SIM_CLOCK", None)
        self.config_path = self.dir / "config" / "obdsync" / "config.toml"
        self.write_config(config)
        self.db = self.dir / "data" / "obdsync" / "obdsync.db"
        self.live_file = self.dir / "data" / "obdsync" / "live.json"
        self.exe = str(Path(sys.executable).with_name("obdsync"))
        self.process: LineProcess | None = None
        self._earlier: list[str] = []  # output of earlier runs
        self.runs = 0
        self._run_from = 0
        self._echo = echo

    def write_config(self, text: str) -> None:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        if "[web]" not in text:  # parallel runs must not race for the dashboard's default port
            text += "\n[web]\nport = 0\n"
        self.config_path.write_text(text)

    def pair(self, dongle: SimDongle, timeout: float = 60.0) -> None:
        r = subprocess.run([self.exe, "pair", dongle.mac], input=dongle.label + "\n", env=self.env,
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise FaultError(f"obdsync pair failed ({r.returncode}): {r.stderr or r.stdout}")

    def start(self) -> DaemonProc:
        if self.alive:
            return self
        if self.process is not None:
            self._earlier += self.process.lines
        self._run_from = len(self._earlier)
        self.process = LineProcess([self.exe, "-v", "run"], env=self.env, cwd=self.dir, on_line=self._echo,
                                   error=FaultError, name="obdsync run")
        self.runs += 1
        return self

    def _running(self) -> LineProcess:
        if self.process is None:
            raise FaultError("obdsync run was never started")
        return self.process

    @property
    def proc(self) -> subprocess.Popen[str]:
        """The process of the current (or last) run."""
        return self._running().proc

    def wait_exit(self, timeout: float) -> int:
        """Until this run exits by itself; its exit code."""
        return self._running().proc.wait(timeout)

    @property
    def lines(self) -> list[str]:
        """Every line of every run."""
        return self._earlier + (self.process.lines if self.process is not None else [])

    def wait_line(self, pred: Callable[[str], bool] | str, timeout: float = 30.0) -> str:
        """The next output line of this run for which pred is true (a string: contained)."""
        test = (lambda ln: pred in ln) if isinstance(pred, str) else pred
        return self._running().wait_line(test, timeout)

    def backlog_pct(self) -> int | None:
        """The last backlog progress this run logged (None: none yet)."""
        for ln in reversed(self.lines[self._run_from:]):
            m = re.search(r"backlog (\d+)%", ln)
            if m:
                return int(m.group(1))
        return None

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive

    def kill(self) -> None:
        """SIGKILL: the crash the store's durability and the dongle's replay must absorb."""
        if self.process is not None:
            self.process.kill()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then wait; SIGKILL if it hangs (and say so in the return code)."""
        return None if self.process is None else self.process.stop(signal.SIGTERM, timeout)

    def live(self) -> dict[str, Any]:
        """What the last run left in live.json (its link counters, per device), {} if nothing."""
        try:
            got = json.loads(self.live_file.read_text())
        except (OSError, ValueError):
            return {}
        devices = got.get("devices") if isinstance(got, dict) else None
        return devices if isinstance(devices, dict) else {}


# -- the dongle's flash, read on CPython ---------------------------------------------------

@dataclass
class FlashTruth:
    """The dongle's account of what it produced, from its flash directory."""

    boot: int
    first_unacked: int
    next_seq: int
    dropped: int
    held: dict[int, bytes]  # seq -> record, every intact entry still in the segments
    corrupt_entries: int  # entries that failed their CRC (torn tails) — never to be sent
    bad_mac: int  # intact entries whose record fails its MAC: must be 0

    @property
    def produced(self) -> int:
        return self.next_seq


def read_state(flash: Path) -> dict[str, int] | None:
    """The flash log's state file (dongle.persist): None when no intact one exists."""
    for name in ("state", "state.tmp"):
        try:
            buf = (Path(flash) / "log" / name).read_bytes()
        except OSError:
            continue
        n = len(STATE_FIELDS)
        if len(buf) != 4 + 4 * n + 4 or buf[:4] != STATE_MAGIC:
            continue
        if binascii.crc32(buf[:-4]) != struct.unpack_from(">I", buf, len(buf) - 4)[0]:
            continue
        return dict(zip(STATE_FIELDS, struct.unpack_from(">" + "I" * n, buf, 4), strict=True))
    return None


def read_epoch(flash: Path) -> int:
    """The flash log's epoch (its `epoch` file, a one-value dongle.persist file): what its
    records' key is derived from. 0 when there is none (a protocol-1 log)."""
    for name in ("epoch", "epoch.tmp"):
        try:
            buf = (Path(flash) / "log" / name).read_bytes()
        except OSError:
            continue
        if len(buf) != 12 or buf[:4] != STATE_MAGIC or binascii.crc32(buf[:-4]) != struct.unpack_from(">I", buf, 8)[0]:
            continue
        epoch: int = struct.unpack_from(">I", buf, 4)[0]
        return epoch
    return 0


def segments(flash: Path) -> list[Path]:
    d = Path(flash) / "log"
    return sorted(p for p in d.glob("*.seg") if len(p.name) == 12) if d.exists() else []


def entries(data: bytes) -> Iterable[tuple[int, int, bytes | None]]:
    """(offset, entry length, record or None if torn/corrupt) of a segment's bytes, in
    order; stops at the first entry that cannot be framed (what recovery does too)."""
    o = 0
    while o + FRAME <= len(data):
        n, crc = struct.unpack_from(">HI", data, o)
        if n < MIN_RECORD or n > MAX_RECORD or o + FRAME + n > len(data):
            yield o, len(data) - o, None
            return
        rec = data[o + FRAME:o + FRAME + n]
        yield o, FRAME + n, rec if binascii.crc32(rec, n) == crc else None
        o += FRAME + n
    if o < len(data):
        yield o, len(data) - o, None


def read_flash(flash: Path, secret: bytes) -> FlashTruth:
    """Parse a stopped dongle's flash directory (never read a running one's)."""
    st = read_state(flash)
    if st is None:
        raise FaultError(f"{flash}: no intact flash log state file")
    key = telemetry_key(secret, read_epoch(flash))
    held: dict[int, bytes] = {}
    corrupt = bad = 0
    for seg in segments(flash):
        for _o, _n, rec in entries(seg.read_bytes()):
            if rec is None:
                corrupt += 1
                continue
            try:
                r = decode_record(rec, key)
            except ProtocolError:
                bad += 1
                continue
            held.setdefault(r.seq, rec)
    # The state file's next seq is as of its last save; records flushed since are on flash.
    nxt = max(st["next_seq"], max(held, default=-1) + 1)
    return FlashTruth(st["boot"], st["first_unacked"], nxt, st["dropped"], held, corrupt, bad)


def stop_dongle_cleanly(dongle: SimDongle, secret: bytes | None = None) -> FlashTruth:
    """Switch the dongle off and read its flash: what is on it is what it produced (records
    still in RAM were never flushed, so never sent). A SIGKILL: MicroPython's SIGINT
    (KeyboardInterrupt) leaves asyncio.run without running the app's finally either, and
    once in the soak it was not acted on within 20 s."""
    dongle.kill()
    return read_flash(dongle.flash, secret if secret is not None else dongle.secret)


def tear_newest_segment(flash: Path, rng: random.Random, keep_below_seq: int) -> tuple[int, int]:
    """A power cut during the log's last write, applied to a killed dongle's flash.

    littlefs makes a synced write atomic, so only a write still in progress can tear, and
    records in it were never flushed, so never sent. The cut therefore falls among the
    newest segment's entries the daemon does not hold (seq > keep_below_seq - 1: pass
    the database's highest stored seq + 1), at a random byte; when there are none, the
    torn write is a partial new entry (a prefix of plausible bytes) appended at the end.
    Returns (bytes removed or added as garbage, entries cut)."""
    segs = segments(flash)
    if not segs:
        return 0, 0
    path = segs[-1]
    data = path.read_bytes()
    key_free = [(o, n) for o, n, rec in entries(data)
                if rec is not None and struct.unpack_from(">I", rec, 1)[0] >= keep_below_seq]
    if key_free:
        first_off = key_free[0][0]
        cut = rng.randrange(first_off, len(data))
        with open(path, "r+b") as f:
            f.truncate(cut)
        torn = sum(1 for o, n in key_free if o + n > cut)
        return len(data) - cut, torn
    # Nothing unsent on flash: the write in progress was the next entry; part of it landed.
    n = rng.randrange(MIN_RECORD, 200)
    partial = struct.pack(">HI", n, rng.getrandbits(32)) + rng.randbytes(n)
    partial = partial[:rng.randrange(1, len(partial))]
    with open(path, "ab") as f:
        f.write(partial)
    return len(partial), 0


# -- the daemon's database -----------------------------------------------------------------

def db_rows(db: Path, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the database as another process would (it is in WAL mode: no lock taken)."""
    if not Path(db).exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise
    finally:
        conn.close()


def stored_watermark(db: Path, device: str) -> int | None:
    rows = db_rows(db, "SELECT contiguous FROM devices WHERE id=?", (device,))
    return rows[0][0] if rows else None


def max_stored_seq(db: Path, device: str) -> int:
    rows = db_rows(db, "SELECT MAX(r.seq) FROM records r JOIN devices d ON d.num=r.device WHERE d.id=?", (device,))
    return rows[0][0] if rows and rows[0][0] is not None else -1


def wait_until(cond: Callable[[], T], timeout: float, what: str, poll_s: float = 0.1) -> T:
    """Poll cond until truthy; FaultError naming `what` after `timeout`."""
    return proc.wait_until(cond, timeout, what, error=FaultError, poll_s=poll_s)


def wait_synced(db: Path, device: str, upto_seq: int, timeout: float = 60.0) -> None:
    """Until the daemon's watermark reaches upto_seq (all of 0..upto_seq stored or named lost)."""
    def ok() -> bool:
        c = stored_watermark(db, device)
        return c is not None and c >= upto_seq
    wait_until(ok, timeout, f"the daemon's watermark to reach seq {upto_seq} "
                            f"(it is at {stored_watermark(db, device)})")


# -- the figures ---------------------------------------------------------------------------

@dataclass
class Figures:
    """What a fault run did and what survived it (added up over runs)."""

    runs: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    produced: int = 0  # seqs the dongle assigned
    stored: int = 0  # distinct records in SQLite
    duplicated: int = 0  # records or samples stored more than once: must be 0
    lost: int = 0  # seqs never stored: each must be named by a GAP (the dongle's own account)
    lost_named: int = 0  # ... of which a GAP names (lost - lost_named is silent loss: must be 0)
    torn_entries: int = 0  # entries cut by simulated torn writes (never sent, so never stored)
    rejected: int = 0  # records that failed their MAC at the daemon: must be 0
    events: int = 0  # derived events stored
    event_deliveries: int = 0  # distinct event keys (id:state) the broker's subscriber saw
    event_deliveries_missing: int = 0  # keys stored but never seen at the broker: must be 0
    broker_messages: int = 0  # event messages received in all (redeliveries included)
    forwarded: bool = False  # a broker watched this run's deliveries (else there is nothing to count)
    problems: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list, repr=False)  # the daemon's log lines, where captured

    def add(self, other: Figures) -> None:
        for f in ("runs", "produced", "stored", "duplicated", "lost", "lost_named", "torn_entries", "rejected",
                  "events", "event_deliveries", "event_deliveries_missing", "broker_messages"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.faults.update(other.faults)
        self.problems.extend(other.problems)
        self.forwarded = self.forwarded or other.forwarded

    def format(self, title: str = "fault injection") -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        return "\n".join([
            f"{title}: {self.runs} run(s); faults injected: {faults}",
            f"  records: produced {self.produced}, stored {self.stored}, duplicated {self.duplicated},"
            f" lost {self.lost} (named by a GAP {self.lost_named}), torn on flash {self.torn_entries},"
            f" rejected {self.rejected}",
            (f"  events: stored {self.events}, deliveries seen at the broker {self.event_deliveries}"
             f" ({self.broker_messages} messages), missing {self.event_deliveries_missing}" if self.forwarded
             else f"  events: stored {self.events}, not forwarded in this run (no broker)"),
        ] + [f"  PROBLEM: {p}" for p in self.problems])


def reconcile(db: Path, device: str, truth: FlashTruth, *, upto: int | None = None, epoch_idx: int = 0) -> Figures:
    """Check the daemon's database against the dongle's flash for seqs below `upto`
    (default: every seq the dongle produced) of one log epoch (the store's index of it,
    0 for the first log met): each is stored exactly once, or lost and named by a GAP; no
    sample twice. Problems are listed in the figures, not raised."""
    fig = Figures(runs=1)
    end = truth.next_seq if upto is None else upto
    fig.produced = end
    base = epoch_idx << 32  # obdsync.ingest.EPOCH_SEQ_SHIFT
    num = db_rows(db, "SELECT num, first_seq FROM devices WHERE id=?", (device,))
    if not num:
        fig.problems.append("the device never reached the database")
        fig.lost = end
        return fig
    n, first_seq = num[0]
    if epoch_idx:
        first_seq = (db_rows(db, "SELECT first_seq FROM epochs WHERE device=? AND idx=?", (n, epoch_idx))
                     or [(None,)])[0][0]
        first_seq = None if first_seq is None else first_seq - base
    seqs = [r[0] - base for r in db_rows(db, "SELECT seq FROM records WHERE device=? AND seq>=? AND seq<?"
                                             " ORDER BY seq", (n, base, base + end))]
    fig.stored = len(seqs)
    fig.duplicated = len(seqs) - len(set(seqs))
    (dup_samples,), = db_rows(db, "SELECT COUNT(*) - (SELECT COUNT(*) FROM (SELECT DISTINCT seq, n, channel"
                                  " FROM samples WHERE device=?)) FROM samples WHERE device=?", (n, n))
    fig.duplicated += dup_samples
    named: set[int] = set()
    for first, count in db_rows(db, "SELECT first, count FROM gaps WHERE device=? AND seq>=? AND seq<?",
                                (n, base, base + (1 << 32))):
        named.update(range(first - base, first - base + count))
    have = set(seqs)
    missing = [s for s in range(end) if s not in have]
    fig.lost = len(missing)
    fig.lost_named = sum(1 for s in missing if s in named)
    silent = [s for s in missing if s not in named]
    if silent:
        fig.problems.append(f"{len(silent)} seqs neither stored nor named by a GAP: {_ranges(silent)[:10]}")
    if fig.duplicated:
        fig.problems.append(f"{fig.duplicated} duplicate rows")
    if truth.bad_mac:
        fig.problems.append(f"{truth.bad_mac} intact flash entries fail their MAC")
    if first_seq is not None and first_seq > 0 and 0 not in named:
        fig.problems.append(f"the database starts at seq {first_seq}, not 0")
    return fig


def count_events(db: Path) -> list[tuple[str, str, int, int | None, str]]:
    """(id, type, opened_ms, cleared_ms, severity) of every stored event."""
    return db_rows(db, "SELECT id, type, opened_ms, cleared_ms, severity FROM events ORDER BY opened_ms")


def expected_keys(events: list[tuple[str, str, int, int | None, str]]) -> set[str]:
    """Delivery keys (payloads.delivery_key) an at-least-once broker must have seen: each
    event's latest state at its final severity (an escalation's earlier keys are not in
    the table; the payload tests check those)."""
    from obdsync.forward.payloads import delivery_key
    from obdsync.rules.events import PERSISTENT_TYPES

    out = set()
    for eid, typ, _o, cleared, severity in events:
        if typ not in PERSISTENT_TYPES:
            out.add(delivery_key(eid, "instant", severity))
            continue
        if cleared is None:
            out.add(delivery_key(eid, "open", severity))
        else:
            out.add(delivery_key(eid, "cleared", severity))
    return out


def event_problems(events: list[tuple[str, str, int, int | None, str]]) -> list[str]:
    """One event stored under two ids (a re-derivation after a restart that did not
    recognise its own event) breaks exactly-once by id."""
    seen: dict[tuple[str, int], str] = {}
    out = []
    for eid, typ, opened, _c, _s in events:
        k = (typ, opened)
        if k in seen and seen[k] != eid:
            out.append(f"event {typ} opened at {opened} stored twice: {seen[k]} and {eid}")
        seen[k] = eid
    return out


def _ranges(xs: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for x in xs:
        if out and out[-1][1] == x - 1:
            out[-1] = (out[-1][0], x)
        else:
            out.append((x, x))
    return out


class BrokerWatch:
    """A separate MQTT subscriber (QoS 1, persistent session, so it misses nothing across
    a broker restart) in its own thread, collecting the delivery keys of event messages.

        with BrokerWatch(port) as w: ...; w.keys  -> set of "id:state"
    """

    def __init__(self, port: int, host: str = "127.0.0.1", ident: str = "fault-watch") -> None:
        self.port = port
        self.host = host
        self.ident = ident
        self.keys: set[str] = set()
        self.messages = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._subscribed = threading.Event()
        self._stop: asyncio.Event | None = None

    def __enter__(self) -> BrokerWatch:
        import asyncio

        def run() -> None:
            self._loop = loop = asyncio.new_event_loop()
            self._stop = stop = asyncio.Event()
            try:
                loop.run_until_complete(self._run(stop))
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="broker-watch")
        self._thread.start()
        if not self._subscribed.wait(15):
            self.__exit__()
            raise FaultError(f"could not subscribe to the broker on port {self.port}")
        return self

    async def _run(self, stop: asyncio.Event) -> None:
        import asyncio

        import aiomqtt

        async def consume() -> None:
            while True:
                try:
                    async with aiomqtt.Client(self.host, self.port, identifier=self.ident, clean_session=False,
                                              timeout=5) as c:
                        await c.subscribe("#", qos=1)
                        self._subscribed.set()
                        async for m in c.messages:
                            self._take(str(m.topic), bytes(m.payload))
                except aiomqtt.MqttError:
                    await asyncio.sleep(0.1)  # reconnect interval while the broker is away

        task = asyncio.create_task(consume())
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _take(self, topic: str, payload: bytes) -> None:
        if "/event/" not in topic:
            return
        try:
            key = json.loads(payload)["key"]
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            self.messages += 1
            self.keys.add(key)

    def seen(self) -> set[str]:
        with self._lock:
            return set(self.keys)

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)


def deliveries(fig: Figures, db: Path, watch: BrokerWatch | None, timeout: float = 60.0) -> None:
    """Events stored, and (with a watch) every one seen at the broker within `timeout`:
    fills the event figures and problems."""
    events = count_events(db)
    fig.events = len(events)
    fig.problems.extend(event_problems(events))
    if watch is None:
        return
    fig.forwarded = True
    # Every change queued (an opening before its clearing, an escalation) and each event's latest state.
    want = expected_keys(events) | {json.loads(p)["key"] for (p,) in db_rows(
        db, "SELECT payload FROM outbox WHERE state != 'dropped'") if p}
    with contextlib.suppress(FaultError):
        wait_until(lambda: want <= watch.seen(), timeout, "every stored event at the broker", poll_s=0.2)
    got = watch.seen()
    fig.event_deliveries = len(want & got)
    fig.event_deliveries_missing = len(want - got)
    fig.broker_messages = watch.messages
    if want - got:
        fig.problems.append(f"{len(want - got)} event deliveries never reached the broker: {sorted(want - got)[:5]}")


def prefill(flash: Path, seconds: int, *, device_id: bytes | None = None, secret: bytes | None = None,
            log_capacity: int = 1 << 20) -> Filled:
    """A dongle's flash directory holding `seconds` of driving logged while no daemon was
    in reach (hil/bench's fill_log, the firmware's own FlashLog), before the rig boots
    the dongle on it: a backlog that takes seconds, not milliseconds, to sync."""
    import secrets as _secrets

    from hil.bench.backlog import fill

    flash = Path(flash)
    flash.mkdir(parents=True, exist_ok=True)
    key = secret or _secrets.token_bytes(32)
    cfg = {"device_id": (device_id or _secrets.token_bytes(8)).hex(), "secret": key.hex(), "pairing": True,
           "log_capacity": log_capacity}
    (flash / "config.json").write_text(json.dumps(cfg))
    return fill(flash, key, seconds)


# -- the runs ------------------------------------------------------------------------------

def _final_sync(rig: Rig, d: DaemonProc, timeout: float) -> tuple[FlashTruth, Figures]:
    """The end of a run: stop the dongle cleanly (its flash then says what it produced),
    boot it again and let the daemon sync; check the database against the flash."""
    truth = stop_dongle_cleanly(rig.dongle)
    rig.dongle.start()
    rig.dongle.wait_for("ready")
    d.start()
    wait_synced(d.db, rig.dongle.device_id, truth.next_seq - 1, timeout)
    return truth, reconcile(d.db, rig.dongle.device_id, truth)


def run_daemon_kills(workdir: Path, kills: int, seed: int, *, mqtt_port: int | None = None,
                     backlog_s: int = 300, say: Callable[[str], None] = lambda s: None) -> Figures:
    """SIGKILL the daemon `kills` times at seeded random points: the first kills fall in
    the sync of a prefilled backlog, later ones wherever the run is (the backlog that
    built up while the daemon was down, or live streaming)."""
    from hil.rig import Rig

    rng = random.Random(seed)
    workdir = Path(workdir)
    prefill(workdir / "rig" / "flash0", backlog_s)
    with Rig(fault_scenario(), workdir / "rig") as rig, contextlib.ExitStack() as stack:
        watch = stack.enter_context(BrokerWatch(mqtt_port)) if mqtt_port else None
        d = DaemonProc(workdir / "daemon", rig.air, config=daemon_config(mqtt_port=mqtt_port))
        stack.callback(d.stop)
        d.pair(rig.dongle)
        fig = Figures()
        for i in range(kills):
            d.start()
            d.wait_line("connected", 60)
            # The kill point: a random share into the backlog's sync, or a while into live
            # streaming. The sleeps pick the moment of the fault; every check afterwards
            # waits on a condition.
            phase = "live" if rng.random() < 0.4 else "backlog"
            try:
                first = d.wait_line(lambda ln: "backlog" in ln, 5)
            except FaultError:
                first = ""
            m = re.search(r"of (\d+) records", first)
            if m is None:
                phase, total = "live", 0  # nothing was waiting: it streams live at once
            else:
                total = int(m.group(1))
            if phase == "backlog":
                time.sleep(rng.uniform(0, total / SYNC_RECORDS_PER_S))
            else:
                with contextlib.suppress(FaultError):
                    d.wait_line(lambda ln: "backlog 100%" in ln, 30)
                time.sleep(rng.uniform(0, 2.0))
            pct = d.backlog_pct()
            if phase == "backlog" and pct is not None and pct >= 100:
                phase = "live"  # the sync won the race
            d.kill()
            fig.faults[f"daemon SIGKILL ({phase})"] += 1
            say(f"kill {i + 1}/{kills}: daemon SIGKILL ({phase}, backlog {total} records, {pct}% synced);"
                f" stored up to seq {max_stored_seq(d.db, rig.dongle.device_id)}")
            time.sleep(rng.uniform(0.5, 3.0))  # down a while: the next start finds a backlog
        truth, f = _final_sync(rig, d, 120)
        deliveries(f, d.db, watch)
        d.stop()
        f.faults = fig.faults
        return f


def _rejected(d: DaemonProc) -> int:
    return sum(int(v.get("rejected_records") or 0) for v in d.live().values())


def run_power_cuts(workdir: Path, cuts: int, seed: int, *, tear_rate: float = 0.7,
                   say: Callable[[str], None] = lambda s: None) -> Figures:
    """Cut the dongle's power (SIGKILL of MicroPython) `cuts` times at seeded random
    points while it streams to a running daemon; most cuts also tear the log's last
    write (tear_newest_segment). Afterwards nothing corrupt was delivered (the daemon
    rejected no record), and every seq is stored or named lost by a GAP, the lost ones
    no more than the entries the tears cut."""
    from hil.rig import Rig

    rng = random.Random(seed)  # when, and whether to tear: the same for a seed whatever the timing
    cut_rng = random.Random(seed + 1)  # where the tear falls (depends on what is on flash)
    workdir = Path(workdir)
    prefill(workdir / "rig" / "flash0", 60)
    with Rig(fault_scenario(), workdir / "rig") as rig, contextlib.ExitStack() as stack:
        d = DaemonProc(workdir / "daemon", rig.air, config=daemon_config())
        stack.callback(d.stop)
        d.pair(rig.dongle)
        faults: Counter[str] = Counter()
        torn_total = 0
        d.start()
        d.wait_line("connected", 60)
        for i in range(cuts):
            time.sleep(rng.uniform(0.2, 2.5))  # the moment of the cut (a fault, not a wait)
            rig.dongle.kill()
            d.wait_line("unavailable", 30)  # the link saw it go and stored what it had
            kind = "power cut"
            cut = torn = 0
            if rng.random() < tear_rate:
                cut, torn = tear_newest_segment(rig.dongle.flash, cut_rng,
                                                max_stored_seq(d.db, rig.dongle.device_id) + 1)
                torn_total += torn
                kind = "power cut + torn write"
            faults[kind] += 1
            say(f"cut {i + 1}/{cuts}: {kind} ({cut} bytes, {torn} entries);"
                f" stored up to seq {max_stored_seq(d.db, rig.dongle.device_id)}")
            rig.dongle.start()
            rig.dongle.wait_for("ready")
            d.wait_line("is back", 60)
        d.stop()
        rejected = _rejected(d)
        truth, f = _final_sync(rig, d, 120)
        d.stop()
        f.rejected = rejected + _rejected(d)
        f.torn_entries = torn_total
        f.faults = faults
        f.events = len(count_events(d.db))
        if f.rejected:
            f.problems.append(f"the daemon rejected {f.rejected} records (corrupt or forged ones were sent)")
        if f.lost > torn_total:
            f.problems.append(f"{f.lost} seqs lost, more than the {torn_total} entries the torn writes cut")
        return f


async def _drop_link(daemon: Daemon, how: str) -> bool:
    """End the daemon's BLE connection from the central's side: a clean disconnect, or
    the simulated radio's socket aborted under it (the link gone without a word)."""
    from hil.blesim import SimClient
    from obdsync.link import DongleLink

    link = daemon.runners[0].link
    if not isinstance(link, DongleLink):
        raise FaultError(f"BLE drops need a dongle's link, not {type(link).__name__}")
    client = link.client  # the live BleakClient of the session (None between sessions)
    if client is None or not client.is_connected:
        return False
    if how == "disconnect":
        await client.disconnect()
    else:
        backend = client._backend
        writer = backend._writer if isinstance(backend, SimClient) else None  # its socket to the dongle
        if writer is None:
            return False
        writer.transport.abort()
    return True


PLANTED_PER_OUTAGE = 3


async def plant(daemon: Daemon, device: str, outage: int) -> None:
    """Events made while the broker is out (as the rules would store them: with their
    deliveries, through the daemon's pipeline), so every outage leaves a backlog that
    at-least-once delivery must carry through it."""
    from obdsync.rules.events import INFO, Event, EventChange, event_id

    if daemon.pipeline is None:
        raise FaultError("the daemon has no pipeline yet: plant events once it has started")
    now = int(time.time() * 1000)
    await daemon.pipeline.apply([
        EventChange("instant", Event(event_id(device, "refuel", f"outage {outage}/{k}", now + k), device, "refuel",
                                     INFO, now + k, None, {"planted": True, "outage": outage, "n": k},
                                     f"planted during broker outage {outage}"))
        for k in range(PLANTED_PER_OUTAGE)])


async def run_ble_drops(workdir: Path, seed: int, *, backlog_s: int = 600, broker: Broker | None = None,
                        outage_s: float = 3.0, say: Callable[[str], None] = lambda s: None) -> Figures:
    """The daemon (in this process, as the scenario runner builds it) syncs a prefilled
    backlog while its BLE link is dropped every 0.5–2 s (seeded), from the central's side;
    with a broker, the broker is also frozen (SIGSTOP) and then terminated and restarted
    during the sync, `outage_s` each. Then: everything stored once, every event at the
    broker, and the daemon said what happened in its log."""
    import asyncio
    import logging

    from hil.blesim import SimClient
    from hil.rig import Rig
    from obdsync.config import parse_config
    from obdsync.daemon import Daemon
    from obdsync.devices import Paired

    rng = random.Random(seed)
    workdir = Path(workdir)
    prefill(workdir / "rig" / "flash0", backlog_s)
    logs: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logs.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    handler = Keep(logging.INFO)
    root = logging.getLogger("obdsync")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    cfg: dict[str, object] = {"link": {"backoff_base_s": 0.2, "backoff_cap_s": 1.0}}
    if broker is not None:
        cfg["forward"] = {"mqtt": [{"host": "127.0.0.1", "port": broker.port, "name": "broker"}]}
    faults: Counter[str] = Counter()
    down: list[int] = []  # wall ms: the broker's termination and its restart
    windows: list[tuple[int, int]] = []  # wall ms: every outage (frozen or terminated)
    try:
        with Rig(fault_scenario(), workdir / "rig") as rig, contextlib.ExitStack() as stack:
            watch = stack.enter_context(BrokerWatch(broker.port)) if broker is not None else None
            dg = rig.dongle
            db = workdir / "obdsync.db"
            daemon = Daemon(parse_config(cfg), db, [Paired(dg.device_id, dg.mac, "sim")], backend=SimClient,
                            backend_kwargs={"air": str(rig.air)}, secrets={dg.device_id: dg.secret},
                            live_file=workdir / "live.json")
            task = asyncio.create_task(daemon.run(install_signals=False))
            try:
                await asyncio.wait_for(daemon.started.wait(), 30)
                link = daemon.runners[0].link
                async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
                    async with asyncio.timeout(timeout):
                        while not cond():
                            if task.done():
                                task.result()
                                raise FaultError("the daemon stopped on its own")
                            await asyncio.sleep(0.05)  # re-check interval; the deadline bounds it
                await until(lambda: link.connected and link.stats.backlog_end > 0, 30, "the first connection")
                target = link.stats.backlog_end - 1
                outages = [("pause", broker), ("stop", broker)] if broker is not None else []
                t_sync = time.monotonic()
                while (mark := stored_watermark(db, dg.device_id)) is None or mark < target:
                    if time.monotonic() - t_sync > 120:
                        raise FaultError(f"backlog not synced in 120 s; watermark {stored_watermark(db, dg.device_id)}")
                    await asyncio.sleep(rng.uniform(0.5, 2.0))  # the moment of the next drop
                    if outages:  # early, while the backlog's events are being forwarded
                        kind, b = outages.pop(0)
                        t_out = int(time.time() * 1000)
                        if kind == "pause":
                            b.pause()
                            faults["broker frozen (SIGSTOP)"] += 1
                        else:
                            b.stop()
                            down.append(t_out)
                            faults["broker terminated"] += 1
                        say(f"broker {kind} for {outage_s} s")
                        await plant(daemon, dg.device_id, len(windows))
                        await asyncio.sleep(outage_s)  # the outage's length
                        if kind == "pause":
                            b.resume()
                        else:
                            down.append(int(time.time() * 1000))
                            await asyncio.to_thread(b.start)
                        windows.append((t_out, int(time.time() * 1000)))
                    how = rng.choice(["disconnect", "abort"])
                    if await _drop_link(daemon, how):
                        faults[f"BLE drop ({how})"] += 1
                        say(f"BLE {how} at watermark {stored_watermark(db, dg.device_id)} of {target}")
                for _kind, b in outages:  # the sync won the race: the broker still gets its outages
                    b.stop()
                    t_out = int(time.time() * 1000)
                    down.append(t_out)
                    faults["broker terminated"] += 1
                    await plant(daemon, dg.device_id, len(windows))
                    await asyncio.sleep(outage_s)
                    down.append(int(time.time() * 1000))
                    await asyncio.to_thread(b.start)
                    windows.append((t_out, int(time.time() * 1000)))
                truth = await asyncio.to_thread(stop_dongle_cleanly, dg)
                dg.start()
                await asyncio.to_thread(dg.wait_for, "ready")
                await until(lambda: (stored_watermark(db, dg.device_id) or -1) >= truth.next_seq - 1, 120,
                            "the final sync")
                fig = reconcile(db, dg.device_id, truth)
                fig.rejected = link.stats.rejected_records
                if fig.rejected:
                    fig.problems.append(f"the daemon rejected {fig.rejected} records")
                if watch is not None:
                    await asyncio.to_thread(deliveries, fig, db, watch)
                else:
                    fig.events = len(count_events(db))
            finally:
                daemon.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 30)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    fig.faults = faults
    drops = sum(v for k, v in faults.items() if k.startswith("BLE"))
    said = "\n".join(logs)
    if drops and ("unavailable" not in said or " is back" not in said):
        fig.problems.append("the daemon's log does not say the dongle went and came back")
    fwd = [ln for ln in logs if "obdsync.forward" in ln]
    # The forwarder can only notice an outage when it had something to send during it:
    # events are planted in every outage (plant), so each has a backlog to deliver after.
    due = sum(db_rows(workdir / "obdsync.db", "SELECT COUNT(*) FROM outbox WHERE created_ms BETWEEN ? AND ?",
                      (a, b))[0][0] for a, b in windows)
    fig.faults["events queued while the broker was down"] += due
    if broker is not None and (not windows or due < len(windows) * PLANTED_PER_OUTAGE):
        fig.problems.append(f"{due} events queued during {len(windows)} broker outages: the outages went untested")
    if broker is not None and due and not any("unavailable" in ln or "not taken" in ln for ln in fwd):
        fig.problems.append("the daemon's log does not say the broker was unavailable; forwarding said:\n    "
                            + "\n    ".join(fwd[-10:]))
    fig.log = logs
    return fig


def run_disk_full(workdir: Path, *, backlog_s: int = 900, cap_mb: int = 1, raised_mb: int = 256,
                  say: Callable[[str], None] = lambda s: None) -> Figures:
    """The database hits its size cap ([store] max_size_mb, SQLite's max_page_count: a
    full disk as SQLite sees it) in the middle of a backlog: the daemon says so, acks
    nothing it could not store and keeps running; the operator raises the cap and
    restarts it; everything is then stored, nothing lost."""
    from hil.rig import Rig

    workdir = Path(workdir)
    prefill(workdir / "rig" / "flash0", backlog_s)
    with Rig(fault_scenario(), workdir / "rig") as rig, contextlib.ExitStack() as stack:
        d = DaemonProc(workdir / "daemon", rig.air, config=daemon_config(max_size_mb=cap_mb))
        stack.callback(d.stop)
        d.pair(rig.dongle)
        d.start()
        full = d.wait_line("database or disk is full", 90)
        say(f"store full: {full.split(': ', 1)[-1]}")
        at_full = stored_watermark(d.db, rig.dongle.device_id)
        # It keeps running and keeps trying (the dongle re-sends what was not acked), and
        # says so once, not once per batch.
        with contextlib.suppress(FaultError):
            d.wait_line("asking the dongle to resend", 10)  # the link's retry, seen if it comes
        repeats = sum(1 for ln in d.lines if "could not store" in ln)
        if not d.alive:
            raise FaultError("the daemon exited on a full store:\n" + d.tail())
        d.write_config(daemon_config(max_size_mb=raised_mb))
        code = d.stop()
        say(f"cap raised to {raised_mb} MB; daemon stopped ({code}) at watermark "
            f"{stored_watermark(d.db, rig.dongle.device_id)} (when full: {at_full})")
        truth, fig = _final_sync(rig, d, 120)
        d.stop()
        fig.faults["store full"] += 1
        fig.log = [ln for ln in d.lines if "full" in ln]
        fig.events = len(count_events(d.db))
        if not 1 <= repeats <= 5:  # once, and again only after a batch did fit
            fig.problems.append(f"the full store was reported {repeats} times")
        if code not in (0, None):
            fig.problems.append(f"the daemon exited with {code} on SIGTERM after the store was full")
        return fig


def _wait_epoch_synced(db: Path, device: str, epoch_idx: int, upto_seq: int, timeout: float) -> None:
    base = epoch_idx << 32
    wait_until(lambda: (stored_watermark(db, device) or -1) >= base + upto_seq, timeout,
               f"log {epoch_idx + 1} stored up to seq {upto_seq}")


def run_log_wipe(workdir: Path, *, backlog_s: int = 300, say: Callable[[str], None] = lambda s: None) -> Figures:
    """The dongle's log is wiped (reflash, new littlefs, factory reset) between two runs
    of the firmware: a new log epoch, its seqs from 0 again, over a prefilled backlog.
    Every record of both logs is stored once (what the first log had not delivered when
    it was wiped is gone with it, and counted apart), the daemon counts two logs and
    says so with a log_reset event."""
    import shutil

    from hil.bench.backlog import fill
    from hil.rig import Rig

    workdir = Path(workdir)
    prefill(workdir / "rig" / "flash0", backlog_s)
    with Rig(fault_scenario(), workdir / "rig") as rig, contextlib.ExitStack() as stack:
        d = DaemonProc(workdir / "daemon", rig.air, config=daemon_config())
        stack.callback(d.stop)
        d.pair(rig.dongle)
        dev = rig.dongle.device_id
        d.start()
        first, fig = _final_sync(rig, d, 120)  # the first log, synced
        wiped = stop_dongle_cleanly(rig.dongle)  # ... and what it logged since, wiped unsent
        shutil.rmtree(rig.dongle.flash / "log")
        fill(rig.dongle.flash, rig.dongle.secret, backlog_s)  # the new log's backlog: seqs 0... again
        say(f"log wiped after seq {wiped.next_seq - 1} (synced up to {first.next_seq - 1}); new log prefilled")
        rig.dongle.start()
        rig.dongle.wait_for("ready")
        second = stop_dongle_cleanly(rig.dongle)
        rig.dongle.start()
        rig.dongle.wait_for("ready")
        _wait_epoch_synced(d.db, dev, 1, second.next_seq - 1, 120)
        fig.add(reconcile(d.db, dev, second, epoch_idx=1))
        fig.runs = 1
        d.stop()
        fig.faults["log wiped"] += 1
        top = db_rows(d.db, "SELECT MAX(r.seq) FROM records r JOIN devices d ON d.num = r.device"
                            " WHERE d.id=? AND r.seq < ?", (dev, 1 << 32))[0][0]
        fig.faults["records of the wiped log not stored before the wipe (gone with it)"] += wiped.next_seq - 1 - top
        logs = db_rows(d.db, "SELECT COUNT(*) FROM epochs e JOIN devices d ON d.num = e.device WHERE d.id=?", (dev,))
        resets = db_rows(d.db, "SELECT COUNT(*) FROM events WHERE device=? AND type='log_reset'", (dev,))
        if logs[0][0] != 2 or resets[0][0] != 1:
            fig.problems.append(f"{logs[0][0]} logs and {resets[0][0]} log_reset events stored, expected 2 and 1")
        fig.events = len(count_events(d.db))
        return fig


def run_upgrade(workdir: Path, *, backlog_s: int = 300, say: Callable[[str], None] = lambda s: None) -> Figures:
    """A release that cannot read the rules state the last one saved (a future snapshot
    version stands in for it), in the middle of a backlog: the daemon is killed, the
    state is replaced, the next start stores and acks everything anyway and derives the
    events again from the stored samples, each once."""
    from hil.rig import Rig

    workdir = Path(workdir)
    prefill(workdir / "rig" / "flash0", backlog_s)
    with Rig(fault_scenario(), workdir / "rig") as rig, contextlib.ExitStack() as stack:
        d = DaemonProc(workdir / "daemon", rig.air, config=daemon_config())
        stack.callback(d.stop)
        d.pair(rig.dongle)
        dev = rig.dongle.device_id
        d.start()
        wait_until(lambda: (db_rows(d.db, "SELECT COUNT(*) FROM rules_state") or [(0,)])[0][0], 120,
                   "a saved rules state")
        d.kill()
        before = db_rows(d.db, "SELECT seq FROM rules_state WHERE device=?", (dev,))[0][0]
        conn = sqlite3.connect(d.db, timeout=10)
        try:
            conn.execute("UPDATE rules_state SET snapshot=? WHERE device=?",
                         (json.dumps({"engine": {"version": 999, "device": dev}, "services_fed": 0}), dev))
            conn.commit()
        finally:
            conn.close()
        say(f"upgrade: rules state (derived up to seq {before}) replaced by a version-999 snapshot")
        truth, fig = _final_sync(rig, d, 180)
        d.stop()
        fig.faults["unreadable rules state (future version)"] += 1
        events = count_events(d.db)
        fig.events = len(events)
        fig.problems.extend(event_problems(events))
        if not any("not usable" in ln and "deriving again" in ln for ln in d.lines):
            fig.problems.append("the daemon did not say it derives again from the stored samples")
        return fig


def run_two_daemons(workdir: Path, *, backlog_s: int = 300, say: Callable[[str], None] = lambda s: None) -> Figures:
    """A second `obdsync run` on the database of a running one (by hand beside the
    service, from another login): it is refused naming the first one's PID and touches
    nothing; the first syncs everything once."""
    from hil.rig import Rig

    workdir = Path(workdir)
    prefill(workdir / "rig" / "flash0", backlog_s)
    with Rig(fault_scenario(), workdir / "rig") as rig, contextlib.ExitStack() as stack:
        d = DaemonProc(workdir / "daemon", rig.air, config=daemon_config())
        stack.callback(d.stop)
        d.pair(rig.dongle)
        d.start()
        d.wait_line("connected", 60)
        other = DaemonProc(workdir / "second", rig.air, config=daemon_config(extra=f'[store]\npath = "{d.db}"\n'))
        stack.callback(other.stop)
        other.env["XDG_RUNTIME_DIR"] = str(workdir / "second-run")  # another login: its own control door
        from obdsync import devices

        # Paired as the first one is (the dongle is busy with the first daemon: no pairing visit).
        devices.add(rig.dongle.device_id, rig.dongle.mac, rig.dongle.secret, base=other.dir / "config" / "obdsync")
        other.start()
        code = other.wait_exit(60)
        said = other.tail(5)
        refused = code == 1 and f"PID {d.proc.pid}" in said and "in use" in said
        say(f"second daemon: exit {code}: {said.splitlines()[-1] if said else ''}")
        truth, fig = _final_sync(rig, d, 120)
        d.stop()
        fig.faults["second obdsync run on the database"] += 1
        if not refused:
            fig.problems.append(f"the second daemon was not refused naming the first: {said}")
        fig.events = len(count_events(d.db))
        return fig
