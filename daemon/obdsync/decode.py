"""Raw ECU bytes -> values with units.

A sample on the wire is ``(channel, data)``: channel 0x00-0xFE is a mode 01 PID
and ``data`` the ECU's bytes after ``41 PID``; channel 0xFF is the adapter's
supply voltage (ATRV) in mV. :meth:`Decoder.decode` turns one sample into one or
more :class:`Reading` s. Most channels give one reading whose ``signal`` equals
the channel; a few give more, each with its own signal id ``channel | n << 8``
(PID 0x01 gives the MIL as signal 0x001 and the DTC count as 0x101). Signal ids
are what the store keeps in its ``channel`` column.

Values come from python-OBD 0.7.3's decoders, except where it is wrong or has
nothing (see ``_OWN``); a channel nobody can decode is kept: its reading has
``value None``, unit ``"raw"`` and the hex bytes as ``text``.

The hot path is a dict lookup: a PID's raw data takes few distinct values, so
``(channel, data)`` -> readings is memoized in a bounded dict::

    readings = memo_get((ch, data)) or decoder.decode(ch, data)

where ``memo_get = decoder.memo.get`` (``decode`` never returns an empty tuple).
"""

from __future__ import annotations

import logging
import re
from typing import NamedTuple, TypedDict

import obd
import pint
from obd.OBDResponse import Status
from obd.protocols.protocol import ECU, Frame, Message
from obd.utils import BitArray

from protocol.channels import CH_VOLTAGE, PID_ODOMETER, PID_STATUS  # the wire's numbers, defined once

log = logging.getLogger(__name__)

SIG_MIL = PID_STATUS
SIG_DTC_COUNT = PID_STATUS | 1 << 8

MEMO_LIMIT = 1 << 16


class DecodeError(ValueError):
    """Bytes that cannot be what the caller says they are (a VIN, a DTC)."""


class Reading(NamedTuple):
    """One decoded value. ``value`` is None when the sample is not numeric."""

    signal: int
    value: float | None
    unit: str
    text: str | None = None


# pint unit names as python-OBD 0.7.3 produces them -> the symbols we show and store.
_UNITS = {
    "percent": "%",
    "degree_Celsius": "°C",
    "kilometer_per_hour": "km/h",
    "revolutions_per_minute": "rpm",
    "gps": "g/s",
    "lph": "L/h",
    "kilopascal": "kPa",
    "pascal": "Pa",
    "volt": "V",
    "milliampere": "mA",
    "second": "s",
    "minute": "min",
    "kilometer": "km",
    "degree": "°",
    "count": "count",
    "ratio": "ratio",
}

# Names for signals python-OBD has no command for, or that are ours.
_OWN_NAMES: dict[int, str] = {
    SIG_MIL: "MIL",
    SIG_DTC_COUNT: "DTC_COUNT",
    PID_ODOMETER: "ODOMETER",
    CH_VOLTAGE: "VOLTAGE",
}


# Decimals a value is shown with: what the sensor resolves (fuel level 100/255 % a
# step: one decimal), not float noise (``60.3921568627451``). By signal, then by unit.
_DECIMALS = {0x0C: 0, 0x10: 2, 0x42: 3, 0x5E: 2, PID_ODOMETER: 1, CH_VOLTAGE: 2, SIG_MIL: 0, SIG_DTC_COUNT: 0}
_DECIMALS_BY_UNIT = {"%": 1, "°C": 0, "km/h": 0, "rpm": 0, "kPa": 0, "Pa": 0, "km": 0, "min": 0, "s": 0,
                     "count": 0, "°": 1, "g/s": 2, "L/h": 2, "V": 3}


def display_decimals(signal: int, unit: str = "") -> int:
    """How many decimals a value of ``signal`` (in ``unit``) means."""
    d = _DECIMALS.get(signal)
    if d is None:
        d = _DECIMALS_BY_UNIT.get(unit, 2)
    return d


def display_value(signal: int, value: float | None, unit: str = "") -> float | int | None:
    """``value`` rounded to what the sensor resolves; an int when no decimals are meant."""
    if value is None:
        return None
    d = display_decimals(signal, unit)
    return int(round(value)) if d == 0 else round(value, d)


def signal_name(signal: int) -> str:
    """A stable upper-case name for a signal id: ``RPM``, ``MIL``, ``VOLTAGE``, ``PID_A7``."""
    name = _OWN_NAMES.get(signal)
    if name is not None:
        return name
    if signal <= 0xFF and obd.commands.has_pid(1, signal):
        return str(obd.commands[1][signal].name)
    return f"PID_{signal:02X}" if signal <= 0xFF else f"SIG_{signal:X}"


def signal_by_name(name: str) -> int:
    """The inverse of :func:`signal_name` (case-insensitive); accepts ``0x0C`` too.

    Raises :class:`DecodeError` naming the input when nothing matches.
    """
    key = name.strip().upper()
    if re.fullmatch(r"0X[0-9A-F]{1,3}", key):
        return int(key, 16)
    for sig, own in _OWN_NAMES.items():
        if own == key:
            return sig
    if key in ("ATRV",):
        return CH_VOLTAGE
    m = re.fullmatch(r"PID_([0-9A-F]{2})", key)
    if m:
        return int(m.group(1), 16)
    if obd.commands.has_name(key):
        cmd = obd.commands[key]
        if cmd.mode == 1:
            return int(cmd.pid)
    raise DecodeError(f"unknown channel {name!r} (a python-OBD mode 01 name like RPM, or hex like 0x0C)")


def _raw(signal: int, data: bytes, why: str) -> tuple[Reading, ...]:
    return (Reading(signal, None, "raw", data.hex() if data else why),)


def _status(data: bytes) -> tuple[Reading, ...]:
    # python-OBD returns a Status object; the rules want MIL and the DTC count as two
    # plain numbers they can compare and store, so split byte A ourselves (SAE J1979).
    a = data[0]
    return (
        Reading(SIG_MIL, float(a >> 7), "bool", "on" if a & 0x80 else "off"),
        Reading(SIG_DTC_COUNT, float(a & 0x7F), "count"),
    )


def _odometer(data: bytes) -> tuple[Reading, ...]:
    # python-OBD 0.7.3 stops at PID 0x5F; 0xA6 is 4 bytes, 0.1 km per bit (SAE J1979 2014).
    return (Reading(PID_ODOMETER, int.from_bytes(data, "big") / 10.0, "km"),)


def _voltage(data: bytes) -> tuple[Reading, ...]:
    # Not a PID: the firmware packs ATRV as mV in 2 bytes like PID 0x42, and python-OBD's
    # elm_voltage decoder parses the ELM's text ("12.3V"), not bytes.
    return (Reading(CH_VOLTAGE, int.from_bytes(data, "big") / 1000.0, "V"),)


# channel -> (data length, decoder) for what we decode ourselves.
_OWN = {
    PID_STATUS: (4, _status),
    PID_ODOMETER: (4, _odometer),
    CH_VOLTAGE: (2, _voltage),
}


def _describe(value: object) -> str:
    """Text for python-OBD's non-numeric values (bitmaps, Status, tuples of strings)."""
    if isinstance(value, BitArray):
        return str(value)
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    if isinstance(value, Status):
        return f"MIL {'on' if value.MIL else 'off'}, {value.DTC_count} DTC, {value.ignition_type}"
    return str(value)


def decode_with_obd(pid: int, data: bytes) -> object | None:
    """python-OBD's decoded value for mode 01 ``pid`` (a pint Quantity, a Status, ...).

    The message is built the way python-OBD's own protocol layer builds it: frame data
    and message data are ``41 PID data`` and the ECU is set (commands drop messages
    from ECUs they don't accept).
    """
    cmd = obd.commands[1][pid]
    frame = Frame("")
    frame.data = bytearray(b"\x41" + bytes((pid,)) + data)
    msg = Message([frame])
    msg.data = bytearray(frame.data)
    msg.ecu = ECU.ENGINE
    value: object | None = cmd([msg]).value
    return value


def _decode_uncached(channel: int, data: bytes) -> tuple[Reading, ...]:
    own = _OWN.get(channel)
    if own is not None:
        size, fn = own
        if len(data) != size:
            return _raw(channel, data, "empty")
        return fn(data)
    if not obd.commands.has_pid(1, channel):
        return _raw(channel, data, "empty")
    cmd = obd.commands[1][channel]
    # python-OBD pads short data with zeros and chops long data, which turns a
    # truncated answer into a plausible wrong value; keep such samples raw instead.
    if len(data) != cmd.bytes - 2:
        return _raw(channel, data, "empty")
    try:
        value = decode_with_obd(channel, data)
    except Exception as e:
        # python-OBD bugs must not lose the sample (0.7.3's air_status indexes past its
        # table when a reserved bit is set): keep it raw. Memoized, so logged once per value.
        log.warning("python-OBD failed to decode PID %02X data %s: %r", channel, data.hex(), e)
        return _raw(channel, data, "empty")
    if value is None:  # python-OBD's "drop" decoders and invalid bit patterns
        return _raw(channel, data, "empty")
    if isinstance(value, pint.Quantity):  # python-OBD's units are pint's
        units = str(value.units)
        return (Reading(channel, float(value.magnitude), _UNITS.get(units, units)),)
    if isinstance(value, bool):
        return (Reading(channel, float(value), "bool", "on" if value else "off"),)
    return (Reading(channel, None, "", _describe(value)),)


class Decoder:
    """Memoizing sample decoder. One per process is enough; not thread-safe."""

    __slots__ = ("memo", "limit", "units")

    def __init__(self, limit: int = MEMO_LIMIT):
        #: ``(channel, data) -> tuple[Reading, ...]``; read it directly on hot paths.
        self.memo: dict[tuple[int, bytes], tuple[Reading, ...]] = {}
        self.limit = limit
        #: signal -> unit of the last numeric reading seen for it.
        self.units: dict[int, str] = {}

    def decode(self, channel: int, data: bytes) -> tuple[Reading, ...]:
        """Readings for one sample; never empty, never raises for any ``data`` bytes."""
        key = (channel, data)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        readings = _decode_uncached(channel, bytes(data))
        if len(self.memo) >= self.limit:
            # Clearing beats LRU bookkeeping: the working set refills in a few samples.
            self.memo.clear()
        self.memo[key] = readings
        for r in readings:
            self.units[r.signal] = r.unit
        return readings


_default = Decoder()


def decode(channel: int, data: bytes) -> tuple[Reading, ...]:
    """Readings for one sample with the process-wide :class:`Decoder`."""
    return _default.decode(channel, data)


# ---- DTCs ------------------------------------------------------------------

_DTC_RE = re.compile(r"[PCBU][0-3][0-9A-F]{3}")
_SYSTEMS = {"P": "Powertrain", "C": "Chassis", "B": "Body", "U": "Network"}


def dtc_from_raw(raw: bytes) -> str:
    """Two DTC bytes as the ECU sends them -> ``"P0301"`` (SAE J2012 layout).

    ``00 00`` gives ``"P0000"`` (the padding some ECUs send; see :func:`dtcs_from_raw`).
    """
    if len(raw) != 2:
        raise DecodeError(f"a DTC is 2 bytes, got {len(raw)} ({bytes(raw).hex()})")
    a, b = raw[0], raw[1]
    return f"{'PCBU'[a >> 6]}{(a >> 4) & 3}{a & 0xF:X}{b:02X}"


def dtcs_from_raw(codes: list[bytes]) -> list[str]:
    """Codes of a DTC record, without the ``00 00`` padding frames carry."""
    return [dtc_from_raw(c) for c in codes if c[0] or c[1]]


def ecu_name(addr: int) -> str:
    """The ECU a DTC came from, by the address byte the dongle kept from the reply's header:
    0xE8-0xEF = CAN 11-bit response ids 7E8-7EF; else the 29-bit / J1850 / K-line source
    address. 0 = unknown (the adapter printed no header). SAE J1979 numbering: 7E8 / 0x10 is
    usually the engine, 7E9 / 0x18 the transmission."""
    if not 0 <= addr <= 0xFF:
        raise DecodeError(f"an ECU address is one byte, got {addr!r}")
    if addr == 0:
        return ""
    role = {0xE8: "engine", 0x10: "engine", 0xE9: "transmission", 0x18: "transmission"}.get(addr)
    ident = f"7{addr:02X}" if addr >= 0xE8 else f"{addr:02X}"
    return f"{role} ({ident})" if role else f"ECU {ident}"


class FreezeFrame(TypedDict):
    """One code's freeze frame: the ECU that stored it, and python-OBD command name -> [value, unit]."""

    ecu: str
    values: dict[str, list[float | str]]


def decode_freeze(entries: list[tuple[int, int, bytes]]) -> dict[str, FreezeFrame]:
    """A READ_FREEZE reply (`protocol.control_central.parse_freeze`) as code -> its freeze frame:
    {"ecu": name, "values": {python-OBD command name: [value, unit]}}. Mode 02 values are
    scaled as mode 01's (SAE J1979), so python-OBD's mode 01 decoders read them (its own mode
    02 commands leave the frame-number byte in the data). An ECU whose PID 02 is 00 00 holds no
    frame. A value python-OBD cannot decode is a DecodeError, never a missing or zero value."""
    codes: dict[int, str] = {}
    for ecu, pid, data in entries:
        if pid == 2:
            if len(data) != 2:
                raise DecodeError(f"freeze frame PID 02 is 2 bytes, got {data.hex()}")
            if data != b"\x00\x00":
                codes[ecu] = dtc_from_raw(data)
    out: dict[str, FreezeFrame] = {}
    for ecu, code in codes.items():
        values: dict[str, list[float | str]] = {}
        for e, pid, data in entries:
            if e != ecu or pid == 2:
                continue
            if not obd.commands.has_pid(1, pid) or len(data) != obd.commands[1][pid].bytes - 2:
                raise DecodeError(f"freeze frame PID {pid:02X}: {data.hex()} is not its value")
            v = decode_with_obd(pid, data)
            if not isinstance(v, pint.Quantity):
                raise DecodeError(f"freeze frame PID {pid:02X}: python-OBD read {data.hex()} as {v!r}")
            values[obd.commands[1][pid].name] = [float(v.magnitude), f"{v.units:~}" if str(v.units) else ""]
        out[code] = {"ecu": ecu_name(ecu), "values": values}
    return out


def dtcs_with_ecus(codes: list[bytes], ecus: list[int]) -> tuple[list[str], list[str]]:
    """Codes of a DTC record without padding, and beside each the name of its ECU ("" unknown;
    all "" when the record carries no addresses)."""
    if ecus and len(ecus) != len(codes):
        raise DecodeError(f"{len(codes)} codes but {len(ecus)} ECU addresses")
    out: list[str] = []
    names: list[str] = []
    for i, c in enumerate(codes):
        if c[0] or c[1]:
            out.append(dtc_from_raw(c))
            names.append(ecu_name(ecus[i]) if ecus else "")
    return out, names


# SAE J2012 generic codes python-OBD 0.7.3's table (≈2,000 codes, mostly P) lacks and
# drivers meet: airbag deployment loops, wheel-speed sensors, hybrid battery, DPF.
OWN_DTC = {
    "B0001": "Driver Frontal Stage 1 Deployment Control",
    "B0002": "Driver Frontal Stage 2 Deployment Control",
    "C0031": "Left Front Wheel Speed Sensor Circuit",
    "C0034": "Right Front Wheel Speed Sensor Circuit",
    "C0037": "Left Rear Wheel Speed Sensor Circuit",
    "C003A": "Right Rear Wheel Speed Sensor Circuit",
    "P0A80": "Replace Hybrid Battery Pack",
    "P219A": "Bank 1 Air-Fuel Ratio Imbalance",
    "P242F": "Diesel Particulate Filter Restriction - Ash Accumulation",
    "P2463": "Diesel Particulate Filter Restriction - Soot Accumulation",
}


class DtcInfo(NamedTuple):
    code: str
    description: str | None  # None: no table knows it (say so, never guess)
    system: str              # Powertrain, Chassis, Body, Network
    sae: bool                # SAE generic; False: manufacturer-specific (P1xxx, B1xxx, ...)


def dtc_info(code: str) -> DtcInfo:
    """What is known of ``code``: python-OBD's description, else ours, else none; the
    system from the letter; SAE-defined or manufacturer-specific from the second
    character per SAE J2012 (P0/P2 SAE, P1 manufacturer, P3 split at P34; B/C/U 0 and 3
    SAE, 1 and 2 manufacturer)."""
    code = code.strip().upper()
    if not _DTC_RE.fullmatch(code):
        raise DecodeError(f"not a DTC: {code!r} (expected like P0301)")
    letter, digit = code[0], code[1]
    if letter == "P":
        sae = digit in "02" or (digit == "3" and code[2] in "456789ABCDEF")
    else:
        sae = digit in "03"
    return DtcInfo(code, obd.codes.DTC.get(code) or OWN_DTC.get(code), _SYSTEMS[letter], sae)


def describe_dtc(code: str) -> str:
    """The description of ``code``, else a generic one from its prefix (:func:`dtc_info`)."""
    info = dtc_info(code)
    if info.description:
        return info.description
    return info.system + (", SAE generic code" if info.sae else ", manufacturer-specific code")


# ---- VIN -------------------------------------------------------------------

_VIN_RE = re.compile(r"[A-HJ-NPR-Z0-9]{17}")


def decode_vin(data: bytes) -> str:
    """A VIN from mode 09 PID 02 bytes as the ECU sent them.

    Ours, not python-OBD's: 0.7.3 strips the characters ``0 1 2 x \\`` from both ends of
    the text (upstream PR #276), which eats real VIN characters (``1HGCM…`` loses its
    ``1``). Here only the message-count byte and NUL padding before the 17 characters
    are dropped. Raises :class:`DecodeError` when what is left is not a valid VIN.
    """
    body = bytes(data).rstrip(b"\x00")
    if len(body) > 17:
        # Leading message-count byte (CAN: 0x01) and/or padding (legacy: 0x00).
        head, body = body[:-17], body[-17:]
        if any(c > 0x02 for c in head):
            raise DecodeError(f"VIN has {len(head)} unexpected leading bytes: {bytes(data).hex()}")
    try:
        vin = body.decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError(f"VIN is not ASCII: {bytes(data).hex()}") from None
    if not _VIN_RE.fullmatch(vin):
        raise DecodeError(f"not a 17-character VIN (no I, O, Q): {vin!r}")
    return vin
