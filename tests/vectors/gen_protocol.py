"""Writes tests/vectors/protocol.json: the wire format as bytes, with the fields they mean.

The bytes here come from a second, deliberately naive encoder written from
protocol/README.md with the standard library's `hmac` — not from protocol/ — so
the vectors check the implementation against the spec rather than against itself.
The JSON file is committed; the tests read the file, never this script. Rerun it
only when the format changes on purpose:

    .venv/bin/python tests/vectors/gen_protocol.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path

OUT = Path(__file__).with_name("protocol.json")

SECRET = bytes(range(0x20, 0x40))  # the fixed test secret (never a real dongle's)
DEVICE_ID = bytes.fromhex("a4cf12fe0bd5c0de")
NONCE_C = bytes.fromhex("00112233445566778899aabbccddeeff")
NONCE_D = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")

# DATA_LEN as the README defines it: J1979 lengths; 0 = the sample carries its length.
FIXED = {0x04: 1, 0x05: 1, 0x0C: 2, 0x0D: 1, 0x0F: 1, 0x10: 2, 0x11: 1, 0x2F: 1, 0x42: 2, 0x5E: 2,
         0x31: 2, 0x1F: 2, 0xA6: 4, 0x01: 4, 0xFF: 2}
VARIABLE = {0x64, 0x81, 0xB3}


def mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


TKEY = mac(SECRET, b"obdsync/telemetry")  # log epoch 0: the key of a protocol-1 log
EPOCH = 0x5EED1E55  # a log epoch (random on a dongle); bound into its telemetry key
SKEY = mac(SECRET, b"obdsync/session", NONCE_C, NONCE_D)


def varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def zigzag(v: int) -> int:
    return v * 2 if v >= 0 else -v * 2 - 1


def header(kind: int, seq: int, boot: int, t0: int) -> bytes:
    return struct.pack(">BIHI", 0x10 | kind, seq, boot, t0)


def seal(body: bytes) -> bytes:
    return body + mac(TKEY, body)[:4]


def samples_record(seq, boot, groups, table=None, raw_groups=None):
    """groups: [(t_ms, [(channel, data), ...])]. The table is the RecordWriter's
    choice (most frequent first, ties by channel) unless given."""
    counts: dict[int, int] = {}
    for _, samples in groups:
        for ch, _ in samples:
            counts[ch] = counts.get(ch, 0) + 1
    if table is None:
        table = sorted(counts, key=lambda ch: (-counts[ch], ch))
    t0 = groups[0][0]
    body = bytearray(header(1, seq, boot, t0))
    body.append(len(table))
    body += bytes(table)
    prev_off = prev_delta = 0
    for t, samples in groups:
        off = t - t0
        delta = off - prev_off
        body += varint(zigzag(delta - prev_delta))
        prev_off, prev_delta = off, delta
        by = dict(samples)
        mask = 0
        for i, ch in enumerate(table):
            if ch in by:
                mask |= 1 << i
        body += varint(mask)
        for ch in table:
            if ch in by:
                if ch in VARIABLE:
                    body.append(len(by[ch]))
                body += by[ch]
    if raw_groups is not None:
        body += raw_groups
    fields = {"kind": 1, "seq": seq, "boot": boot, "t0": t0,
              "samples": [[t, ch, by_ch.hex()] for t, samples in groups
                          for ch in table for c2, by_ch in samples if c2 == ch]}
    return seal(bytes(body)), fields, groups


def record_vectors():
    good = []

    def add_samples(name, seq, boot, groups, note):
        data, fields, groups = samples_record(seq, boot, groups)
        good.append({"name": name, "note": note, "hex": data.hex(), "fields": fields,
                     "groups": [[t, [[ch, d.hex()] for ch, d in s]] for t, s in groups]})

    rpm = lambda v: struct.pack(">H", v * 4)  # noqa: E731
    add_samples("fixed_lengths", 1, 1, [
        (1000, [(0x0C, rpm(812)), (0x0D, b"\x00")]),
        (1203, [(0x0C, rpm(1450)), (0x0D, b"\x12"), (0x11, b"\x2a")]),
        (1398, [(0x0C, rpm(1900))]),
        (1650, [(0x0D, b"\x20"), (0x05, b"\x5a")]),
    ], "fixed-length PIDs; irregular times: deltas 0, 203, 195, 252 so dods 0, +203, -8, +57")
    add_samples("variable_lengths", 2, 1, [
        (5000, [(0x64, bytes.fromhex("7e6e5a3c2f")), (0x0C, rpm(900))]),
        (5010, [(0x81, b"")]),
        (5120, [(0xB3, bytes.fromhex("0102030405060708090a")), (0x64, b"\x01")]),
    ], "length-prefixed channels (DATA_LEN 0), one of them empty")
    add_samples("atrv_voltage", 3, 2, [
        (7, [(0xFF, struct.pack(">H", 12630))]),
        (15, [(0x0C, rpm(0))]),
        (1015, [(0xFF, struct.pack(">H", 14120)), (0x42, struct.pack(">H", 14090))]),
    ], "channel 0xFF (ATRV, mV) beside PID 0x42")
    base = 3_000_000_000
    times = [base + dt for dt in (0, 200, 401, 598, 800, 800, 805, 1900, 1950, 2000, 100, 9999)]
    add_samples("many_groups", 0xFFFFFFF0, 0xFFFF, [
        (t, [(0x0C, rpm(800 + 37 * i)), (0x0D, bytes([i * 9]))] if i % 3 else [(0x04, bytes([i]))])
        for i, t in enumerate(times)
    ], "12 groups: repeated times, a group earlier than t0+previous (negative dod and delta), "
       "a 3-byte dod varint; t0 above 2^31, seq and boot near their maxima")
    # The encoder computes time offsets in machine words while they stay within 2^28 ms of
    # t0 (protocol.record._SPAN) and in bytecode beyond: both sides of that edge, t0 above 2^31.
    add_samples("span_edge", 11, 4, [
        (0x80000000, [(0x0C, rpm(900))]),
        (0x80000000 + 0x0FFFFFFF, [(0x0C, rpm(901))]),
    ], "the last group 2^28 - 1 ms after t0, t0 = 2^31: a 5-byte dod varint")
    add_samples("wide_times", 12, 4, [
        (0x80000000, [(0x0C, rpm(900))]),
        (0x80000000 + 0x10000000, [(0x0C, rpm(901))]),
        (0x80000000 - 5000, [(0x0C, rpm(902)), (0x0D, b"\x20")]),
        (0xFFFFFFFF, [(0x0D, b"\x21")]),
    ], "groups 2^28 ms after t0, just before t0 and at 2^32 - 1: dods up to 2^34 (5-byte varints)")
    add_samples("before_t0_by_2_31", 13, 4, [
        (0x80000000, [(0x0C, rpm(900))]),
        (0, [(0x0C, rpm(901))]),
    ], "a group 2^31 ms before t0 (which a 32-bit word's signed difference reads as 2^31 after)")
    wide = [0x04, 0x05, 0x0C, 0x0D, 0x0F, 0x10, 0x11, 0x1F, 0x2F, 0x31]
    add_samples("wide_table", 9, 3, [
        (100, [(ch, bytes(FIXED[ch])) for ch in wide]),
        (300, [(0x0C, rpm(3000)), (0x0D, b"\x50")]),
        (500, [(0x0C, rpm(3100)), (0x0D, b"\x51")]),
        (700, [(0x31, b"\x01\x02"), (0x2F, b"\x80")]),
    ], "10 channels, sorted by frequency (ties by id): the first group's mask is a 2-byte varint")

    def small(name, kind, body, fields, note):
        seq, boot, t0 = 0x01020304, 7, 123456
        data = seal(header(kind, seq, boot, t0) + body)
        good.append({"name": name, "note": note, "hex": data.hex(),
                     "fields": dict({"kind": kind, "seq": seq, "boot": boot, "t0": t0}, **fields)})

    small("gap", 2, struct.pack(">II", 4000, 250), {"first": 4000, "count": 250}, "records 4000-4249 dropped")
    small("anchor", 3, struct.pack(">Q", 1_732_500_000_123), {"wall_ms": 1_732_500_000_123}, "wall time")
    small("event", 4, struct.pack(">BH", 4, 11480), {"code": 4, "millivolts": 11480}, "battery low")
    codes = [bytes.fromhex("0133"), bytes.fromhex("c158"), bytes.fromhex("4200")]
    small("dtc", 5, b"\x03" + b"".join(codes), {"mode": 3, "codes": [c.hex() for c in codes]}, "stored DTCs")
    small("dtc_none", 5, b"\x0a", {"mode": 10, "codes": []}, "permanent DTCs: none")
    small("dtc_ecus", 5, b"\x83" + b"\xe8" + codes[0] + b"\xe9" + codes[1],
          {"mode": 3, "codes": [c.hex() for c in codes[:2]], "ecus": [0xE8, 0xE9]},
          "stored DTCs with their ECUs (7E8 engine, 7E9 transmission): mode | 0x80, then ecu u8 + code")

    # Well-MACed records the decoder must still refuse (a buggy or hostile dongle).
    bad = []

    def refuse(name, body):
        bad.append({"name": name, "hex": seal(body).hex()})

    h = header(1, 5, 1, 1000)
    refuse("version_2", b"\x21" + h[1:] + b"\x01\x0c\x00\x01\x00\x00")
    refuse("kind_9", header(9, 5, 1, 1000) + b"\x00" * 4)
    refuse("empty_table", h + b"\x00")
    refuse("table_repeats", h + b"\x02\x0c\x0c\x00\x03\x00\x00\x00\x00")
    refuse("group_mask_zero", h + b"\x01\x0d\x00\x00")
    refuse("mask_beyond_table", h + b"\x01\x0d\x00\x03\x00")
    refuse("unused_table_entry", h + b"\x02\x0d\x05\x00\x01\x00")
    refuse("sample_truncated", h + b"\x01\x0c\x00\x01\x00")
    refuse("variable_len_over_31", h + b"\x01\x64\x00\x01\x20" + bytes(32))
    refuse("varint_6_bytes", h + b"\x01\x0d\x80\x80\x80\x80\x80\x00\x01\x00")
    refuse("time_before_zero", header(1, 5, 1, 0) + b"\x01\x0d\x01\x01\x00")
    refuse("gap_count_zero", header(2, 5, 1, 0) + struct.pack(">II", 1, 0))
    refuse("gap_short", header(2, 5, 1, 0) + struct.pack(">I", 1))
    refuse("event_code_9", header(4, 5, 1, 0) + b"\x09\x00\x00")
    refuse("dtc_mode_1", header(5, 5, 1, 0) + b"\x01")
    refuse("dtc_odd", header(5, 5, 1, 0) + b"\x03\x01")
    refuse("dtc_ecus_short", header(5, 5, 1, 0) + b"\x83\xe8\x01\x33\xe9")
    refuse("dtc_mode_81", header(5, 5, 1, 0) + b"\x81")
    good_hex = bytes.fromhex(good[0]["hex"])
    bad.append({"name": "bit_flipped", "hex": (good_hex[:20] + bytes([good_hex[20] ^ 0x04]) + good_hex[21:]).hex()})
    bad.append({"name": "mac_truncated", "hex": good_hex[:-1].hex()})
    bad.append({"name": "too_short", "hex": good_hex[:14].hex()})
    return good, bad


def fragment_vectors():
    out = []
    for mtu in (23, 247, 517):
        room = mtu - 4
        lengths = [0, 1, room, room + 1, 300, 1024]
        messages = [bytes((i * 7 + n) & 0xFF for i in range(n)) for n in lengths]
        counter = 0
        frags = []
        for m in messages:
            parts = [m[i:i + room] for i in range(0, len(m), room)] or [b""]
            mf = []
            for k, p in enumerate(parts):
                head = counter | (0x80 if k == 0 else 0) | (0x40 if k == len(parts) - 1 else 0)
                mf.append((bytes([head]) + p).hex())
                counter = (counter + 1) & 0x3F
            frags.append(mf)
        out.append({"mtu": mtu, "messages": [m.hex() for m in messages], "fragments": frags})
    return out


def control_vectors():
    proof_c = mac(SECRET, b"obdsync/auth/central", NONCE_D, NONCE_C)[:16]
    proof_d = mac(SECRET, b"obdsync/auth/dongle", NONCE_C, NONCE_D)[:16]
    d = mac(SECRET, b"obdsync/passkey")
    auth = {"secret": SECRET.hex(), "device_id": DEVICE_ID.hex(), "nonce_c": NONCE_C.hex(),
            "nonce_d": NONCE_D.hex(), "telemetry_key": TKEY.hex(), "session_key": SKEY.hex(),
            "epoch": EPOCH, "telemetry_key_epoch": mac(SECRET, b"obdsync/telemetry", struct.pack(">I", EPOCH)).hex(),
            "proof_central": proof_c.hex(), "proof_dongle": proof_d.hex(),
            "passkey": int.from_bytes(d[:4], "big") % 1_000_000}
    counters = {"central": 0, "dongle": 0}
    msgs = []

    def msg(sender, type_, req, payload, parsed=None, status=None, authed=None):
        if authed is None:
            authed = type_ not in (1, 2)
        if authed:
            counters[sender] += 1
        ctr = counters[sender] if authed else 0
        t = type_ | (0x80 if status is not None else 0)
        m = struct.pack(">BBI", t, req, ctr) + (bytes([status]) if status is not None else b"") + payload
        if authed:
            m += mac(SKEY, b"C" if sender == "central" else b"D", m)[:8]
        msgs.append({"from": sender, "type": type_, "req": req, "counter": ctr, "status": status,
                     "payload": payload.hex(), "parsed": parsed, "hex": m.hex()})

    plan = [[0x0C, 2, 10, 0], [0x0D, 2, 10, 0], [0x05, 10, 50, 600], [0xFF, 100, 100, 600]]
    status_values = [12650, 6, 2, 3600, 1200, 65536, 880, 2080, 17, 2]
    rates = [[0x0C, 480], [0x0D, 500], [0xFF, 10]]
    vin = b"WAUZZZ8V5KA123456"
    dtcs = ["0133", "c158"]
    C, D = "central", "dongle"
    msg(C, 1, 1, NONCE_C, NONCE_C.hex())
    msg(D, 1, 1, DEVICE_ID + NONCE_D, [DEVICE_ID.hex(), NONCE_D.hex()], status=0)
    msg(C, 2, 2, proof_c, proof_c.hex())
    msg(D, 2, 2, proof_d, proof_d.hex(), status=0)
    msg(C, 3, 3, struct.pack(">Q", 1_732_500_000_123), 1_732_500_000_123)
    msg(D, 3, 3, b"", status=0)
    msg(C, 4, 4, struct.pack(">I", 2079), 2079)
    msg(D, 4, 4, struct.pack(">II", 1200, 65536), [1200, 65536], status=0)
    msg(C, 5, 5, b"")
    msg(D, 5, 5, struct.pack(">III", 880, 2080, EPOCH), [880, 2080, EPOCH], status=0)
    msg(C, 6, 6, bytes([len(plan)]) + b"".join(struct.pack(">BHHH", *e) for e in plan), plan)
    msg(D, 6, 6, b"", status=0)
    msg(C, 7, 7, b"\x03")
    msg(D, 7, 7, b"\x03" + b"".join(bytes.fromhex(c) for c in dtcs), [3, dtcs], status=0)
    msg(C, 7, 13, b"\x03")
    msg(D, 7, 13, b"\x83" + b"".join(bytes([e]) + bytes.fromhex(c) for e, c in zip((0x10, 0x18), dtcs, strict=True)),
        [3, dtcs, [0x10, 0x18]], status=0)
    msg(C, 8, 8, b"")
    msg(D, 8, 8, b"", status=3)
    msg(C, 9, 9, b"")
    msg(D, 9, 9, vin, status=0)
    msg(C, 10, 10, b"")
    status_payload = (struct.pack(">HBBIIIIIHHB", *status_values, len(rates))
                      + b"".join(struct.pack(">BH", *r) for r in rates))
    msg(D, 10, 10, status_payload, {"values": status_values, "rates": rates}, status=0)
    msg(C, 11, 14, b"")
    freeze = [[0xE8, 2, "0133"], [0xE8, 0x0C, "1af8"], [0xE8, 0x0D, "32"], [0xE9, 2, "0000"]]
    msg(D, 11, 14, b"".join(bytes((e, p, len(bytes.fromhex(d)))) + bytes.fromhex(d) for e, p, d in freeze),
        freeze, status=0)
    msg(C, 7, 11, b"\x05")
    msg(D, 7, 11, b"", status=1)
    msg(D, 10, 255, b"", status=7)
    # A refusal to a peer without a session can't be MACed: counter 0, an error
    # status and nothing else (and a peer must not trust it beyond "refused").
    msg(D, 10, 12, b"", status=2, authed=False)
    bad = []
    for name, m in (
        ("refusal_with_ok_status", struct.pack(">BBIB", 0x8A, 1, 0, 0)),
        ("refusal_with_payload", struct.pack(">BBIB", 0x8A, 1, 0, 2) + b"\x01"),
        ("hello_with_counter", struct.pack(">BBI", 0x01, 1, 1) + NONCE_C),
        ("status_without_mac", struct.pack(">BBIB", 0x8A, 1, 99, 0)),
        ("unknown_type", struct.pack(">BBI", 0x0C, 1, 0)),
        ("unknown_status", struct.pack(">BBIB", 0x81, 1, 0, 9) + DEVICE_ID + NONCE_D),
        ("reflected", bytes.fromhex(msgs[4]["hex"])),  # the central's own TIME command
        ("replayed", bytes.fromhex(msgs[5]["hex"])),  # the dongle's first reply, again
    ):
        bad.append({"name": name, "hex": m.hex()})
    return auth, msgs, bad


def info_vectors():
    supported = bytes.fromhex("be3fa813" "a0070000" "fed00000" "00000000") + bytes(16)
    out = []
    for name, caps, fw, vin in (("full", 3, "obdsync 0.1.0", b"WAUZZZ8V5KA123456"),
                                ("no_vin", 0, "0.1.0-dev+ü", b"")):
        fwb = fw.encode()
        data = (bytes([2, caps]) + DEVICE_ID + struct.pack(">I", EPOCH) + bytes([len(fwb)]) + fwb + supported
                + bytes([len(vin)]) + vin)
        out.append({"name": name, "hex": data.hex(),
                    "fields": {"proto": 2, "caps": caps, "device_id": DEVICE_ID.hex(), "epoch": EPOCH, "firmware": fw,
                               "supported": supported.hex(), "vin": vin.hex()},
                    "supports": [0] + [p for p in range(1, 256) if supported[(p - 1) >> 3] & (0x80 >> ((p - 1) & 7))]})
    return out


def main():
    good, bad = record_vectors()
    auth, control, bad_control = control_vectors()
    doc = {
        "about": "obdsync wire protocol v2 test vectors; written by tests/vectors/gen_protocol.py",
        "auth": auth,
        "records": good,
        "bad_records": bad,
        "fragments": fragment_vectors(),
        "control": control,
        "bad_control": bad_control,
        "info": info_vectors(),
    }
    # One vector a line: diffs of a regenerated file show which vectors changed.
    lines = []
    for k, v in doc.items():
        if isinstance(v, list):
            items = ",\n  ".join(json.dumps(x, ensure_ascii=False) for x in v)
            lines.append(f"{json.dumps(k)}: [\n  {items}\n ]")
        else:
            lines.append(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}")
    OUT.write_text("{\n " + ",\n ".join(lines) + "\n}\n", encoding="utf-8")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
