"""decode_record on CPython and on MicroPython over the same few thousand hostile
byte strings (seeded): the same verdict for every one, fields or error message."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re

from protocol.auth import telemetry_key
from protocol.record import MAX_RECORD, RecordWriter

SEED = 20240611
SECRET = bytes(range(0x20, 0x40))
KEY = telemetry_key(SECRET)


def reseal(body: bytes) -> bytes:
    """A fresh valid MAC over damaged content: the keyed decode then reaches the body."""
    return body + hmac.new(KEY, body, hashlib.sha256).digest()[:4]


def valid_records(rng: random.Random, vectors: dict) -> list[bytes]:
    out = [bytes.fromhex(v["hex"]) for v in vectors["records"]]
    for _ in range(40):
        w = RecordWriter(KEY)
        t = rng.randrange(0, 1 << 32)
        chans = rng.sample(range(256), rng.randint(1, 12))
        for _ in range(rng.randint(1, 30)):
            t = max(0, min(t + rng.randint(-300, 1200), (1 << 32) - 1))
            members = rng.sample(chans, rng.randint(1, len(chans)))
            if not w.fits(len(members), 31 * len(members)):
                break
            w.group(t)
            for ch in members:
                d = bytes(rng.randrange(256) for _ in range(rng.randint(0, 9)))
                w.add(ch, d, 0, len(d))
        out.append(bytes(w.out[: w.seal(rng.randrange(1 << 32), rng.randrange(1 << 16))]))
    return out


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        if op == 0 and b:
            i = rng.randrange(len(b) * 8)
            b[i >> 3] ^= 1 << (i & 7)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:
            del b[rng.randrange(len(b) + 1):]
        elif op == 3:
            b[rng.randrange(len(b) + 1):0] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 4:
            other = rng.choice(pool)
            b = b[: rng.randrange(len(b) + 1)] + other[rng.randrange(len(other)):]
        else:
            b[11:12] = bytes([rng.choice([0, 1, 2, 27, 28, 29, 255])])  # the table size
    return bytes(b)


def corpus(vectors: dict) -> list[bytes]:
    rng = random.Random(SEED)
    good = valid_records(rng, vectors)
    out = list(good)
    out += [bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))) for _ in range(300)]
    out += [bytes(rng.randrange(256) for _ in range(rng.randint(500, 530))) for _ in range(20)]
    for _ in range(800):  # a plausible header, garbage body
        body = bytes([rng.choice([0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x21])]) + bytes(
            rng.randrange(256) for _ in range(rng.randint(10, 90)))
        out.append(reseal(body) if rng.random() < 0.7 else body + b"\0\0\0\0")
    for _ in range(2500):
        m = mutate(rng, rng.choice(good), good)
        out.append(reseal(m[:-4]) if rng.random() < 0.6 and len(m) > 4 else m)
    return out


def test_cpython_and_micropython_agree_on_every_input(protocol_vectors, mpy_helpers, run_mpy_json, tmp_path,
                                                     micropython):
    inputs = corpus(protocol_vectors)
    path = tmp_path / "corpus.hex"
    path.write_text("".join(x.hex() + "\n" for x in inputs))
    canon = mpy_helpers("protocol_canon")
    mine = [json.loads(json.dumps([canon.verdict(canon.decoded_record, x),
                                   canon.verdict(canon.decoded_record, x, KEY)])) for x in inputs]
    theirs = run_mpy_json("protocol_differential.py", str(path), KEY.hex())
    assert len(theirs) == len(inputs)
    differ = [(x.hex(), a, b) for x, a, b in zip(inputs, mine, theirs, strict=True) if a != b]
    assert differ == []
    # The corpus must reach the decoder's depths, not stop at the length check.
    keyed_ok = sum(1 for v in mine if v[1][0])
    errors = {re.sub(r"[0-9A-F]+\b", "N", v[1][1]) for v in mine if not v[1][0]}
    assert keyed_ok > 50 and len(errors) >= 20, (keyed_ok, sorted(errors))
    assert max(len(x) for x in inputs) > MAX_RECORD
