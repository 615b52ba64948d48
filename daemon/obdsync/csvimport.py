"""``obdsync import``: a recorded drive from a CSV log into the store, as a device of
its own, so ``obdsync replay`` runs the rules over it (and ``events``, ``trips``,
``export`` show what they found).

The format (README "Importing a CSV log"): a header row, then one row per moment.

- A time column: ``time`` or ``timestamp`` (ISO 8601, naive = local time; or Unix
  seconds / milliseconds), or Torque Pro's ``Device Time`` / ``GPS Time``
  (``18-Jul-2013 13:41:56.342``, local time).
- Signal columns named like python-OBD's mode 01 commands (``SPEED``, ``RPM``,
  ``FUEL_LEVEL``, ``COOLANT_TEMP``, ``MAF``, ``FUEL_RATE``, …) or by PID (``0x2F``,
  ``PID_2F``), plus ``ODOMETER`` (0xA6) and ``VOLTAGE`` (the adapter's), in
  python-OBD's units (km/h, rpm, %, °C, g/s, L/h, km, V); or Torque Pro's column
  names (:data:`TORQUE`), whose units the names carry.
- Empty cells, ``-`` and ``NaN`` are missing readings. Other columns are ignored (and
  listed); a time that goes backwards or a value that is not a number is an error
  naming the row and column.

Each row becomes what a dongle would have sent: the ECU's bytes for each reading
(:func:`encode`, the inverse of python-OBD's decoders, so stored values are what an
ECU could say: speed in whole km/h, the fuel level in 1/255 steps) in one SAMPLES
record, after one ANCHOR record that maps the log's clock to wall time.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from protocol.channels import CH_VOLTAGE, PID_ODOMETER
from protocol.record import KIND_ANCHOR, KIND_SAMPLES
from protocol.record_decode import Record

from .decode import DecodeError, signal_by_name

TIME_COLUMNS = ("time", "timestamp", "device time", "gps time")

#: Torque Pro's CSV column names (its trackLog.csv) -> (signal, factor to our unit).
TORQUE: dict[str, tuple[int, float]] = {
    "Speed (OBD)(km/h)": (0x0D, 1.0),
    "Speed (OBD)(mph)": (0x0D, 1.609344),
    "Engine RPM(rpm)": (0x0C, 1.0),
    "Fuel Level (From Engine ECU)(%)": (0x2F, 1.0),
    "Engine Coolant Temperature(°C)": (0x05, 1.0),
    "Engine Coolant Temperature(C)": (0x05, 1.0),
    "Mass Air Flow Rate(g/s)": (0x10, 1.0),
    "Fuel flow rate/hour(l/hr)": (0x5E, 1.0),
    "Engine Load(%)": (0x04, 1.0),
    "Throttle Position(Manifold)(%)": (0x11, 1.0),
    "Intake Air Temperature(°C)": (0x0F, 1.0),
    "Intake Air Temperature(C)": (0x0F, 1.0),
    "Intake Manifold Pressure(kPa)": (0x0B, 1.0),
    "Voltage (Control Module)(V)": (0x42, 1.0),
    "Voltage (OBD Adapter)(V)": (CH_VOLTAGE, 1.0),
    "Distance travelled since codes cleared(km)": (0x31, 1.0),
    "Ambient air temp(°C)": (0x46, 1.0),
    "Engine Oil Temperature(°C)": (0x5C, 1.0),
}


class CsvFormatError(ValueError):
    """A CSV that is not in the documented format (the message names row and column)."""


def _uint(v: float, scale: float, offset: float, nbytes: int) -> bytes:
    a = round((v + offset) * scale)
    if not 0 <= a < 1 << (8 * nbytes):
        lo, hi = -offset, ((1 << (8 * nbytes)) - 1) / scale - offset
        lo = lo if lo else 0.0  # not "-0"
        raise ValueError(f"{v:g} is outside what the PID can say ({lo:g} to {hi:g})")
    return a.to_bytes(nbytes, "big")


def _u8(v: float, scale: float = 1.0, offset: float = 0.0) -> bytes:
    return _uint(v, scale, offset, 1)


def _u16(v: float, scale: float) -> bytes:
    return _uint(v, scale, 0.0, 2)


#: signal -> value (python-OBD's unit) -> the ECU's bytes after ``41 PID``.
ENCODERS: dict[int, Callable[[float], bytes]] = {
    0x04: lambda v: _u8(v, 255 / 100),
    0x05: lambda v: _u8(v, 1, 40),
    0x0B: lambda v: _u8(v),
    0x0C: lambda v: _u16(v, 4),
    0x0D: lambda v: _u8(v),
    0x0F: lambda v: _u8(v, 1, 40),
    0x10: lambda v: _u16(v, 100),
    0x11: lambda v: _u8(v, 255 / 100),
    0x2F: lambda v: _u8(v, 255 / 100),
    0x31: lambda v: _u16(v, 1),
    0x42: lambda v: _u16(v, 1000),
    0x46: lambda v: _u8(v, 1, 40),
    0x5C: lambda v: _u8(v, 1, 40),
    0x5E: lambda v: _u16(v, 20),
    PID_ODOMETER: lambda v: _uint(v, 10, 0.0, 4),
    CH_VOLTAGE: lambda v: _u16(v, 1000),
}


def encode(signal: int, value: float) -> bytes:
    """The bytes an ECU (or ATRV, in mV) would send for ``value``; ValueError for a
    value the PID cannot carry (never a clamped, plausible wrong one)."""
    enc = ENCODERS.get(signal)
    if enc is None:
        raise CsvFormatError(f"signal 0x{signal:02X} cannot be imported (supported: "
                           + ", ".join(f"0x{s:02X}" for s in sorted(ENCODERS)) + ")")
    return enc(value)


@dataclass
class Parsed:
    rows: list[tuple[int, list[tuple[int, float]]]] = field(default_factory=list)  # (wall ms, [(signal, value)])
    columns: dict[str, int] = field(default_factory=dict)  # imported column -> signal
    ignored: list[str] = field(default_factory=list)


def _parse_time(text: str, row: int) -> int:
    t = text.strip()
    try:
        x = float(t)
    except ValueError:
        pass
    else:
        if not math.isfinite(x) or x < 0:
            raise CsvFormatError(f"row {row}: time {text!r} is not a time")
        return int(round(x if x > 1e11 else x * 1000))  # ms, or s
    for parse in (dt.datetime.fromisoformat, lambda s: dt.datetime.strptime(s, "%d-%b-%Y %H:%M:%S.%f"),
                  lambda s: dt.datetime.strptime(s, "%d-%b-%Y %H:%M:%S")):
        try:
            when = parse(t)
        except ValueError:
            continue
        if when.tzinfo is None:
            when = when.astimezone()
        return int(round(when.timestamp() * 1000))
    raise CsvFormatError(f"row {row}: time {text!r} is neither ISO 8601, Unix seconds/ms nor Torque's "
                       "'18-Jul-2013 13:41:56.342'")


def _signal_of(column: str) -> tuple[int, float] | None:
    name = column.strip()
    if name in TORQUE:
        return TORQUE[name]
    try:
        sig = signal_by_name(name)
    except DecodeError:
        return None
    return (sig, 1.0) if sig in ENCODERS else None


def parse(text: str) -> Parsed:
    """Rows of (wall ms, [(signal, value)]) from the CSV ``text``; raises CsvFormatError."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise CsvFormatError("the file is empty: a header row is needed")
    header = [h.strip().lstrip("\ufeff") for h in header]
    lower = [h.lower() for h in header]
    tcol = next((lower.index(n) for n in TIME_COLUMNS if n in lower), None)
    if tcol is None:
        raise CsvFormatError("no time column: name one 'time' or 'timestamp' (or use Torque Pro's 'Device Time')")
    out = Parsed()
    cols: list[tuple[int, int, float]] = []
    for i, h in enumerate(header):
        if i == tcol or not h:
            continue
        if lower[i] in TIME_COLUMNS:
            continue
        found = _signal_of(h)
        if found is None:
            out.ignored.append(h)
        else:
            cols.append((i, found[0], found[1]))
            out.columns[h] = found[0]
    if not cols:
        raise CsvFormatError("no column names a signal this import knows (python-OBD names like SPEED, RPM,"
                           " FUEL_LEVEL; PIDs like 0x2F; or Torque Pro's)")
    last = None
    for n, rec in enumerate(reader, start=2):
        if not rec or all(not c.strip() for c in rec):
            continue
        if [c.strip() for c in rec] == header:
            continue  # Torque Pro repeats its header when a new log starts in the same file
        if len(rec) <= tcol or not rec[tcol].strip() or rec[tcol].strip() == "-":
            raise CsvFormatError(f"row {n}: no time")
        t = _parse_time(rec[tcol], n)
        if last is not None and t < last:
            raise CsvFormatError(f"row {n}: time goes backwards ({rec[tcol].strip()!r})")
        last = t
        vals = []
        for i, sig, factor in cols:
            cell = rec[i].strip() if i < len(rec) else ""
            if cell in ("", "-") or cell.lower() == "nan":
                continue
            try:
                v = float(cell) * factor
            except ValueError:
                raise CsvFormatError(f"row {n}, column {header[i]!r}: {cell!r} is not a number") from None
            if not math.isfinite(v):
                raise CsvFormatError(f"row {n}, column {header[i]!r}: {cell!r} is not a finite number")
            try:
                encode(sig, v)
            except ValueError as e:
                raise CsvFormatError(f"row {n}, column {header[i]!r}: {e}") from None
            vals.append((sig, v))
        if vals:
            out.rows.append((t, vals))
    if not out.rows:
        raise CsvFormatError("no row with a reading")
    return out


def device_for(data: bytes) -> str:
    """The device id of an imported file: the same file is the same device (re-importing
    it adds nothing), another file another device."""
    return hashlib.sha256(b"obdsync/import\x00" + data).hexdigest()[:16]


def records(parsed: Parsed, boot: int = 1) -> list[Record]:
    """An ANCHOR record (the log's first time is boot time 0) and one SAMPLES record per row."""
    t0 = parsed.rows[0][0]
    anchor = Record(KIND_ANCHOR, 0, boot, 0)
    anchor.wall_ms = t0
    out = [anchor]
    for seq, (t, vals) in enumerate(parsed.rows, start=1):
        r = Record(KIND_SAMPLES, seq, boot, t - t0)
        r.samples = [(t - t0, sig, encode(sig, v)) for sig, v in vals]
        out.append(r)
    return out


def load(path: Path) -> tuple[bytes, Parsed]:
    """The file's bytes and what they parse to; raises CsvFormatError."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # Torque Pro on some phones
    return data, parse(text)


class _DeviceRecords(Protocol):
    @property
    def device(self) -> str: ...
    @property
    def records(self) -> int: ...


class ImportStore(Protocol):
    """What an import needs of the store (obdsync.store.Store)."""

    async def status(self) -> Sequence[_DeviceRecords]: ...
    async def ingest(self, device_id: str, records: Sequence[Record], /) -> int | None: ...
    async def set_device_info(self, device_id: str, /, *, name: str | None = None) -> None: ...


async def import_csv(store: ImportStore, path: Path, device: str | None = None,
                     loaded: tuple[bytes, Parsed] | None = None) -> tuple[str, int, Parsed]:
    """Store the log at ``path`` (``loaded``: already :func:`load` ed) as ``device``
    (default: :func:`device_for` its bytes). Returns (device, records stored, what was
    parsed). A device that already holds records is refused unless it is this file's
    own id (then nothing new is stored)."""
    data, parsed = loaded or load(path)
    own = device_for(data)
    dev = device or own
    before = {s.device: s.records for s in await store.status()}.get(dev, 0)
    if before and dev != own:
        raise CsvFormatError(f"device {dev} already holds {before} records: import into a device of its own"
                           " (leave out --device)")
    recs = records(parsed)
    for k in range(0, len(recs), 500):
        await store.ingest(dev, recs[k:k + 500])
    await store.set_device_info(dev, name=f"import: {path.name}")
    after = {s.device: s.records for s in await store.status()}.get(dev, 0)
    return dev, after - before, parsed
