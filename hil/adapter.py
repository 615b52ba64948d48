"""Adapter/ECU profiles: the ELM327 clones and the cars' buses the kit can pretend to be.

A profile is data (`hil/adapters/NAME.toml`), like a scenario: the bus protocol, how the
adapter behaves (headers honoured or always on, echo, AT commands answered with a bare `OK`,
case, NUL bytes, a small reply buffer, multi-PID support), the extra ECUs beside the engine
(their supported PIDs and trouble codes) and the link's pace (baud, latency a request).
Each layer applies its part:
- the vehicle model (`hil.vehicle`): the bus family's message shapes (DTCs with a count byte
  on CAN, three a frame without one elsewhere; the VIN as one ISO-TP message or five legacy
  lines), the extra ECUs, an ECU that answers a batch `NO DATA`;
- the emulator (`hil.emulator`): the lines an ELM327 prints for those messages (headers on
  CAN 11/29-bit and the legacy forms with their check byte, spaces), `ATDPN`, the AT commands
  a clone only pretends to know, `?` to a batch on an adapter without multi-PID;
- the link model (`hil.linkmodel`): lower case, NULs, echo a clone will not turn off, BUFFER
  FULL, the per-request latency of the bus.

    obdsync hil run city --adapter kwp_slow_v21
    Emulator(scenario, adapter=load_profile("can29_250"))
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

DIR = Path(__file__).with_name("adapters")

# name -> (ATDPN digit, family, bits/s on the car's bus)
PROTOCOLS = {
    "J1850_PWM": (1, "j1850", 41600),
    "J1850_VPW": (2, "j1850", 10400),
    "ISO9141": (3, "kline", 10400),
    "KWP_SLOW": (4, "kline", 10400),
    "KWP_FAST": (5, "kline", 10400),
    "CAN11/500": (6, "can11", 500000),
    "CAN29/500": (7, "can29", 500000),
    "CAN11/250": (8, "can11", 250000),
    "CAN29/250": (9, "can29", 250000),
}
MULTI_PID = ("yes", "no_data", "unknown")
# ECU i's address: CAN 11-bit response id 7E8 + i; else the source address 0x10 + 8 i
# (J1979: 0x10 engine, 0x18 transmission).


class ProfileError(ValueError):
    """A bad adapter profile."""


@dataclass(frozen=True)
class ExtraEcu:
    """An ECU beside the engine: it answers its supported-PID bitmap, and the DTC modes."""
    name: str
    pids: tuple[int, ...] = (0x01,)
    stored_dtcs: tuple[str, ...] = ()
    pending_dtcs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    name: str
    description: str = ""
    protocol: str = "CAN11/500"
    family_name: str = "genuine v1.5"  # the clone family this stands for (information)
    headers: str = "honoured"  # honoured | always (a clone that ignores ATH0)
    echo: str = "honoured"  # honoured | always (a clone that ignores ATE0)
    at_ok: tuple[str, ...] = ()  # AT commands answered with a bare OK ("v2.1": ATDPN, ATRV)
    case: str = "upper"  # upper | lower
    nul: bool = False  # NULs before the prompt
    buffer_bytes: int = 0  # replies longer than this end in BUFFER FULL (0: no limit)
    multi_pid: str = "yes"  # yes | no_data (the ECU refuses batches) | unknown (the adapter: `?`)
    pad_frames: bool = False  # CAN frames with headers printed with their padding bytes
    interleave: bool = False  # CAN, headers on: ECUs' multi-frame messages printed frame by frame in turn
    baud: int = 38400
    latency_ms: float = 30.0  # one OBD request's round trip on the car's bus
    ecus: tuple[ExtraEcu, ...] = field(default_factory=tuple)
    soak_only: bool = False  # the full matrix (make soak) only, not make test's slice

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ProfileError(f"{self.name}: protocol must be one of {sorted(PROTOCOLS)}, got {self.protocol!r}")
        for key, allowed in (("headers", ("honoured", "always")), ("echo", ("honoured", "always")),
                             ("case", ("upper", "lower")), ("multi_pid", MULTI_PID)):
            if getattr(self, key) not in allowed:
                raise ProfileError(f"{self.name}: {key} must be one of {list(allowed)}, got {getattr(self, key)!r}")
        if self.buffer_bytes < 0 or self.baud <= 0 or self.latency_ms < 0:
            raise ProfileError(f"{self.name}: buffer_bytes, baud and latency_ms must be positive")
        for c in self.at_ok:
            if not c.upper().startswith("AT") or not c.isalnum():
                raise ProfileError(f"{self.name}: at_ok lists AT commands like 'ATDPN', got {c!r}")

    @property
    def dpn(self) -> int:
        return PROTOCOLS[self.protocol][0]

    @property
    def family(self) -> str:
        return PROTOCOLS[self.protocol][1]

    @property
    def is_can(self) -> bool:
        return self.family in ("can11", "can29")

    def ecu_address(self, i: int) -> int:
        return 0x7E8 + i if self.family == "can11" else 0x10 + 8 * i

    def ecu_label(self, i: int) -> int:
        """The one-byte address the dongle keeps (and the daemon names) for ECU i."""
        return self.ecu_address(i) & 0xFF

    @property
    def latency_s(self) -> float:
        return self.latency_ms / 1000.0


def names() -> list[str]:
    return sorted(p.stem for p in DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> Profile:
    p = Path(name_or_path)
    path = p if p.suffix == ".toml" else DIR / f"{name_or_path}.toml"
    if not path.exists():
        raise ProfileError(f"no adapter profile {str(name_or_path)!r}; known: {', '.join(names())}")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: {e}") from None
    ecus = []
    for ecu in doc.pop("ecu", []):
        try:
            ecus.append(ExtraEcu(name=ecu["name"], pids=tuple(ecu.get("pids", (0x01,))),
                                 stored_dtcs=tuple(ecu.get("stored_dtcs", ())),
                                 pending_dtcs=tuple(ecu.get("pending_dtcs", ()))))
        except (KeyError, TypeError) as err:
            raise ProfileError(f"{path}: [[ecu]] needs a name and lists: {err}") from None
    doc.setdefault("name", path.stem)
    for key in ("at_ok",):
        if key in doc:
            doc[key] = tuple(doc[key])
    try:
        return Profile(ecus=tuple(ecus), **doc)
    except TypeError as e:
        raise ProfileError(f"{path}: {e}") from None


def all_profiles() -> list[Profile]:
    return [load_profile(n) for n in names()]


# ---- what an ELM327 prints --------------------------------------------------------------

def _check_byte(family: str, data: bytes) -> int:
    if family == "j1850":
        crc = 0xFF  # SAE J1850 CRC-8: polynomial 0x1D, inverted
        for b in data:
            crc ^= b
            for _ in range(8):
                crc = ((crc << 1) ^ 0x1D) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        return crc ^ 0xFF
    return sum(data) & 0xFF  # ISO 9141-2 / ISO 14230 checksum


def format_lines(profile: Profile, ecu: int, msg: bytes, headers: bool, spaces: bool) -> list[str]:
    """The lines an ELM327 prints for one ECU message on the profile's bus (CAF on)."""
    sp = " " if spaces else ""

    def hx(bs: bytes) -> str:
        return sp.join(f"{b:02X}" for b in bs)

    fam = profile.family
    if fam in ("can11", "can29"):
        addr = profile.ecu_address(ecu)
        head = (f"{addr:03X}" if fam == "can11" else hx(bytes((0x18, 0xDA, 0xF1, addr)))) + sp
        pad = b"\x00" * 7 if profile.pad_frames else b""
        if len(msg) <= 7:
            if not headers:
                return [hx(msg)]
            return [head + hx(bytes((len(msg),)) + (msg + pad)[:max(len(msg), 7 if pad else 0)])]
        lines = [] if headers else [f"{len(msg):03X}"]
        first = msg[:6]
        lines.append(head + hx(bytes((0x10 | len(msg) >> 8, len(msg) & 0xFF)) + first) if headers
                     else "0:" + sp + hx(first))
        rest, n = msg[6:], 1
        while rest:
            part, rest = rest[:7], rest[7:]
            if headers:
                lines.append(head + hx(bytes((0x20 | (n & 15),)) + (part + pad)[:7 if pad else len(part)]))
            else:
                lines.append(f"{n & 15:X}:" + sp + hx(part))
            n += 1
        return lines
    if not headers:
        return [hx(msg)]
    src = profile.ecu_address(ecu)
    if fam == "j1850":
        header = bytes((0x41 if profile.protocol == "J1850_PWM" else 0x48, 0x6B, src))
    elif profile.protocol == "ISO9141":
        header = bytes((0x48, 0x6B, src))
    else:
        header = bytes((0x80 | len(msg), 0xF1, src))  # KWP: format byte = 0x80 | length
    frame = header + msg
    return [hx(frame + bytes((_check_byte(fam, frame),)))]


def reply_lines(profile: Profile, reply: Sequence[tuple[int, bytes]], headers: bool, spaces: bool) -> list[str]:
    """The lines an ELM327 prints for the ECUs' messages [(ecu, msg), ...] of one request. With
    `interleave` (CAN, headers on) the ECUs answered at once: their frames alternate, as the
    adapter receives them from the bus; without headers that could not be read, so a profile's
    interleaving applies only where headers are printed."""
    per = [format_lines(profile, ecu, m, headers, spaces) for ecu, m in reply]
    if not (profile.interleave and headers and profile.is_can):
        return [ln for lines in per for ln in lines]
    out = []
    for k in range(max((len(x) for x in per), default=0)):
        out += [lines[k] for lines in per if k < len(lines)]
    return out


def dtc_messages(profile: Profile, mode: int, codes: list[bytes]) -> list[bytes]:
    """One ECU's answer to mode 03/07/0A as messages: on CAN one message with a count byte;
    elsewhere frames of three codes padded with 00 00, no count (at least one frame)."""
    sid = mode | 0x40
    if profile.is_can:
        return [bytes((sid, len(codes))) + b"".join(codes)]
    out = []
    for i in range(0, max(1, len(codes)), 3):
        chunk = b"".join(codes[i:i + 3])
        out.append(bytes((sid,)) + chunk + b"\x00" * (6 - len(chunk)))
    return out


def vin_messages(profile: Profile, vin: bytes) -> list[bytes]:
    """Mode 09 PID 02: CAN one ISO-TP message (`49 02 01` + 17 bytes); legacy five messages
    `49 02 0N` + 4 bytes, the first padded with three zero bytes."""
    if profile.is_can:
        return [b"\x49\x02\x01" + vin]
    padded = b"\x00\x00\x00" + vin
    return [bytes((0x49, 0x02, k + 1)) + padded[4 * k:4 * k + 4] for k in range(5)]
