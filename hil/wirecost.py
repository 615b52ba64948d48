"""Wire cost: bytes per sample on the BLE link, against the same samples as JSON lines.

A size figure, not a timing: the typical poll plan is driven through a simulated
urban drive, encoded as the firmware does it (RecordWriter, one record sealed per
second, Fragmenter at the negotiated MTU) and counted; the same samples, decoded to
values, are counted as compact JSON lines, the way a naive dongle would send them.
Everything is seeded, so the numbers are the same on every run.

    >>> wire_cost(247)["bytes_per_sample"]
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from typing import TypedDict

from protocol.auth import telemetry_key
from protocol.channels import (
    CH_VOLTAGE,
    PID_COOLANT,
    PID_FUEL_LEVEL,
    PID_LOAD,
    PID_MAF,
    PID_RPM,
    PID_SPEED,
    PID_THROTTLE,
)
from protocol.frames import ATT_OVERHEAD, Fragmenter, Reassembler, payload_size
from protocol.record import RecordWriter
from protocol.record_decode import decode_record

# (channel, interval in ms): the typical plan. A request carries at most 6 PIDs
# (ELM327 multi-PID, CAN); ATRV is an AT command of its own.
PLAN = (
    (PID_RPM, 200), (PID_SPEED, 200), (PID_THROTTLE, 200), (PID_LOAD, 200),
    (PID_COOLANT, 1000), (PID_MAF, 1000),
    (PID_FUEL_LEVEL, 10000), (CH_VOLTAGE, 10000),
)
MAX_PIDS_PER_REQUEST = 6
WALL_T0_MS = 1_732_500_000_000  # the JSON side's timestamps: Unix ms, as a platform wants them
SECRET = bytes(32)
ATT_HEADER = ATT_OVERHEAD  # opcode + handle in every notification, outside our payload


class WireCost(TypedDict):
    records: int
    record_bytes: int
    notifications: int
    wire_bytes: int
    mtu: int
    seconds: int
    samples: int
    bytes_per_sample: float
    att_bytes_per_sample: float
    json_bytes: int
    json_bytes_per_sample: float
    json_ratio: float


def _drive(t_s: float) -> dict[int, float]:
    """A 90-second urban cycle: idle, pull away, cruise, brake, idle; warming engine."""
    c = t_s % 90
    if c < 10:
        speed, throttle = 0.0, 0.0
    elif c < 25:
        speed, throttle = 50 * (c - 10) / 15, 35 + 10 * math.sin(c)
    elif c < 60:
        speed, throttle = 50 + 3 * math.sin(c / 3), 18 + 4 * math.sin(c / 2)
    elif c < 75:
        speed, throttle = 50 * (75 - c) / 15, 0.0
    else:
        speed, throttle = 0.0, 0.0
    gear_ratio = 0 if speed < 1 else (110 if speed < 20 else 60 if speed < 35 else 40)
    rpm = max(780.0, speed * gear_ratio) + 15 * math.sin(t_s * 7)
    load = 20 + throttle * 1.4
    return {
        PID_RPM: rpm, PID_SPEED: speed, PID_THROTTLE: throttle, PID_LOAD: load,
        PID_COOLANT: min(90.0, 20 + t_s / 4), PID_MAF: rpm * load / 5000,
        PID_FUEL_LEVEL: 62 - t_s / 600, CH_VOLTAGE: 14.1 + 0.05 * math.sin(t_s / 5),
    }


def _raw(ch: int, v: float) -> bytes:
    """The ECU's data bytes for a value (SAE J1979 scaling; ATRV in mV like PID 0x42)."""
    if ch == PID_RPM:
        return round(v * 4).to_bytes(2, "big")
    if ch == PID_MAF:
        return round(v * 100).to_bytes(2, "big")
    if ch == CH_VOLTAGE:
        return round(v * 1000).to_bytes(2, "big")
    if ch == PID_COOLANT:
        return bytes([round(v) + 40])
    if ch == PID_SPEED:
        return bytes([round(v)])
    return bytes([round(v * 255 / 100)])  # percentages: throttle, load, fuel level


def _value(ch: int, d: bytes) -> float:
    """What the daemon decodes the bytes to (python-OBD's scaling), rounded for JSON."""
    a = int.from_bytes(d, "big")
    if ch == PID_RPM:
        return a / 4
    if ch == PID_MAF:
        return a / 100
    if ch == CH_VOLTAGE:
        return a / 1000
    if ch == PID_COOLANT:
        return a - 40
    if ch == PID_SPEED:
        return a
    return round(a * 100 / 255, 2)


def _requests(seconds: int, rng: random.Random) -> Iterator[tuple[int, list[tuple[int, bytes]]]]:
    """(t_ms, [(channel, data)]) per request answered, in time order, with the
    irregular timing of a real bus (adapter and ECU latency vary)."""
    step = min(iv for _, iv in PLAN)
    t = 0
    while t < seconds * 1000:
        due = [ch for ch, iv in PLAN if t % iv == 0]
        pids = [ch for ch in due if ch != CH_VOLTAGE][:MAX_PIDS_PER_REQUEST]
        rest = [ch for ch in due if ch != CH_VOLTAGE and ch not in pids]
        at = t + rng.randint(25, 70)
        vals = _drive(at / 1000)
        yield at, [(ch, _raw(ch, vals[ch])) for ch in pids]
        for ch in rest:
            at += rng.randint(20, 50)
            yield at, [(ch, _raw(ch, _drive(at / 1000)[ch]))]
        if CH_VOLTAGE in due:
            at += rng.randint(5, 15)
            yield at, [(CH_VOLTAGE, _raw(CH_VOLTAGE, _drive(at / 1000)[CH_VOLTAGE]))]
        t += step


def wire_cost(mtu: int, seconds: int = 600, seed: int = 1) -> WireCost:
    """Bytes per sample for `seconds` of the typical plan at this ATT MTU, on the BLE
    link and as JSON lines. The link bytes are reassembled and decoded back, so the
    figure is that of a lossless encoding (ValueError if it were not)."""
    key = telemetry_key(SECRET)
    writer = RecordWriter(key)
    frag = Fragmenter()
    buf = bytearray(payload_size(mtu) + 1)
    reasm = Reassembler()
    sent: list[tuple[int, int, bytes]] = []
    back: list[tuple[int, int, bytes]] = []
    counts = {"records": 0, "record_bytes": 0, "notifications": 0, "wire_bytes": 0}

    def seal_and_send() -> None:
        n = writer.seal(counts["records"], 1)
        counts["records"] += 1
        counts["record_bytes"] += n
        off = 0
        while True:
            k = frag.fill(buf, writer.out, n, off, mtu)
            counts["notifications"] += 1
            counts["wire_bytes"] += k
            msg = reasm.feed(bytes(buf[:k]))
            off += k - 1
            if off >= n:
                break
        if msg is None:
            raise ValueError(f"record {counts['records'] - 1}: its last fragment did not complete it")
        back.extend(decode_record(msg, key).samples)

    second = 0
    for t, samples in _requests(seconds, random.Random(seed)):
        nbytes = sum(len(d) for _, d in samples)
        if not writer.empty() and (t // 1000 != second or not writer.fits(len(samples), nbytes)):
            seal_and_send()  # the firmware seals once a second (or when full)
        second = t // 1000
        writer.group(t)
        for ch, d in samples:
            writer.add(ch, d, 0, len(d))
            sent.append((t, ch, d))
    if not writer.empty():
        seal_and_send()
    if sorted(back) != sorted(sent):
        raise ValueError("the link lost or changed samples")

    json_bytes = sum(len(json.dumps({"t": WALL_T0_MS + t, "pid": ch, "value": _value(ch, d)},
                                    separators=(",", ":"))) + 1 for t, ch, d in sent)
    n = len(sent)
    att = counts["wire_bytes"] + ATT_HEADER * counts["notifications"]
    return {"records": counts["records"], "record_bytes": counts["record_bytes"],
            "notifications": counts["notifications"], "wire_bytes": counts["wire_bytes"], "mtu": mtu,
            "seconds": seconds, "samples": n, "bytes_per_sample": counts["wire_bytes"] / n,
            "att_bytes_per_sample": att / n, "json_bytes": json_bytes, "json_bytes_per_sample": json_bytes / n,
            "json_ratio": json_bytes / counts["wire_bytes"]}
