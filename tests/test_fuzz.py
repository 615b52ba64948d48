"""Fuzzing (issue 9): the protocol decoders on CPython (hypothesis) with the same corpus
replayed on MicroPython; the firmware's ELM327 driver through the link model's faults
on the real pty path; the daemon's config loader; the firmware's command handler.

The short runs are part of `make test`; the `soak`-marked ones (`make soak`) push the
protocol decoders through 10^6 inputs and the others ten times further."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import random
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil import mpy
from hil.build_firmware import mpy_cross
from protocol import auth, control, control_central
from protocol.channels import DATA_LEN
from protocol.errors import ProtocolError
from protocol.frames import Reassembler
from protocol.info_decode import decode_info
from protocol.record import RecordWriter
from protocol.record_decode import decode_record

TESTS = Path(__file__).resolve().parent
SECRET = bytes(range(0x20, 0x40))  # the differential corpus's key, as tests/test_protocol_differential.py
KEY = auth.telemetry_key(SECRET)
SHORT = settings(max_examples=3000, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def reseal(body: bytes) -> bytes:
    """A valid MAC over damaged content: the keyed decoder then has to parse the body."""
    return body + hmac.new(KEY, body, hashlib.sha256).digest()[:4]


def _valid_record(seed: int) -> bytes:
    rng = random.Random(seed)
    w = RecordWriter(KEY)
    t = rng.randrange(1 << 20)
    chans = rng.sample(range(256), rng.randint(1, 10))
    for _ in range(rng.randint(1, 20)):
        t += rng.randint(0, 900)
        members = rng.sample(chans, rng.randint(1, len(chans)))
        if not w.fits(len(members), 31 * len(members)):
            break
        w.group(t)
        for ch in members:
            d = rng.randbytes(DATA_LEN[ch] or rng.randint(0, 8))  # the length the channel has
            w.add(ch, d, 0, len(d))
    return bytes(w.out[: w.seal(rng.randrange(1 << 32), rng.randrange(1 << 16))])


VALID = [_valid_record(s) for s in range(24)]


@st.composite
def hostile_records(draw) -> bytes:
    """Random bytes, plausible headers with garbage bodies, and mutated valid records,
    half of them resealed so the MAC check lets them through to the parser."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=600))
    if kind == 1:
        head = bytes([draw(st.sampled_from([0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x10, 0x21]))])
        body = head + draw(st.binary(min_size=10, max_size=120))
        return reseal(body) if draw(st.booleans()) else body + b"\0\0\0\0"
    b = bytearray(VALID[draw(st.integers(0, len(VALID) - 1))])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 3))
        if op == 0:
            i = draw(st.integers(0, len(b) * 8 - 1))
            b[i >> 3] ^= 1 << (i & 7)
        elif op == 1:
            del b[draw(st.integers(0, len(b))):]
        elif op == 2:
            at = draw(st.integers(0, len(b)))
            b[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            b[11:12] = bytes([draw(st.sampled_from([0, 1, 2, 27, 28, 29, 255]))])
        if len(b) < 5:
            break
    return reseal(bytes(b[:-4])) if kind == 3 and len(b) > 4 else bytes(b)


def decode_everything(data: bytes) -> None:
    """Every decoder the daemon runs on bytes from the air; only ProtocolError may escape."""
    for key in (None, KEY):
        try:
            decode_record(data, key)
        except ProtocolError:
            pass
    session = auth.Session(auth.session_key(SECRET, bytes(16), bytes(16)), auth.DIR_DONGLE)
    for s in (None, session):
        try:
            control.decode(data, s)
        except ProtocolError:
            pass
    for parse in (decode_info, control_central.parse_status, control.parse_plan, control_central.parse_dtcs, control_central.parse_pair,
                  control_central.parse_hello_reply, control.parse_u32, control.parse_u64):
        try:
            parse(data)
        except ProtocolError:
            pass
    r = Reassembler()
    for i in range(0, len(data), 20):
        try:
            r.feed(data[i:i + 20])
        except ProtocolError:
            pass


@SHORT
@given(hostile_records())
def test_protocol_decoders_raise_only_protocol_error(data):
    decode_everything(data)


def hypothesis_corpus(n: int) -> list[bytes]:
    """n inputs as hypothesis generates them for the test above (derandomized: the same
    corpus every run)."""
    out: list[bytes] = []

    @settings(max_examples=n, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(hostile_records())
    def collect(data):
        out.append(data)

    collect()
    return out


def test_hypothesis_corpus_gets_the_same_verdicts_on_micropython(mpy_helpers, run_mpy_json, tmp_path, micropython):
    """The differential check of tests/test_protocol_differential.py (its MicroPython
    script and verdict format) over this file's hypothesis corpus."""
    inputs = list(dict.fromkeys(VALID + hypothesis_corpus(2000)))
    path = tmp_path / "corpus.hex"
    path.write_text("".join(x.hex() + "\n" for x in inputs))
    canon = mpy_helpers("protocol_canon")
    mine = [json.loads(json.dumps([canon.verdict(canon.decoded_record, x),
                                   canon.verdict(canon.decoded_record, x, KEY)])) for x in inputs]
    theirs = run_mpy_json("protocol_differential.py", str(path), KEY.hex())
    assert len(theirs) == len(inputs)
    assert [(x.hex(), a, b) for x, a, b in zip(inputs, mine, theirs, strict=True) if a != b] == []
    # The corpus reaches the parser's depths, not only the length and MAC checks.
    assert sum(1 for v in mine if v[1][0]) > len(VALID)
    assert len({v[1][1] for v in mine if not v[1][0]}) >= 10


def mutations(n: int, seed: int):
    """A fast seeded mutation stream for the long run (hypothesis makes ~1k inputs/s;
    10^6 need a plain loop)."""
    rng = random.Random(seed)
    pool = VALID + [reseal(v[:-4]) for v in VALID]
    for _ in range(n):
        b = bytearray(rng.choice(pool))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(5)
            if op == 0:
                i = rng.randrange(len(b) * 8) if b else 0
                if b:
                    b[i >> 3] ^= 1 << (i & 7)
            elif op == 1:
                del b[rng.randrange(len(b) + 1):]
            elif op == 2:
                at = rng.randrange(len(b) + 1)
                b[at:at] = rng.randbytes(rng.randint(1, 16))
            elif op == 3 and len(b) > 12:
                b[11] = rng.choice([0, 1, 2, 27, 28, 29, 255])
            else:
                b = bytearray(rng.randbytes(rng.randint(0, 40)))
        yield reseal(bytes(b[:-4])) if rng.random() < 0.5 and len(b) > 4 else bytes(b)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_protocol_decoders_a_million_inputs():
    n = 0
    for data in mutations(10**6, 20240611):
        decode_everything(data)
        n += 1
    print(f"\nprotocol decoders: {n} inputs, only ProtocolError")
    assert n == 10**6


@pytest.mark.soak
@pytest.mark.timeout(3600)
@settings(max_examples=50_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile_records())
def test_soak_protocol_decoders_hypothesis(data):
    decode_everything(data)


# -- the daemon's config loader --------------------------------------------------------------

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def to_toml(doc: dict) -> str:
    out = []
    for name, table in doc.items():
        if isinstance(table, dict) and name == "forward":
            for kind, rows in table.items():
                if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
                    for r in rows:
                        out.append(f"[[forward.{json.dumps(kind)}]]")
                        out += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in r.items()]
                else:
                    out.append(f"[forward]\n{json.dumps(kind)} = {_toml_value(rows)}")
        elif isinstance(table, dict):
            out.append(f"[{json.dumps(name)}]")
            out += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items()]
        else:
            out.insert(0, f"{json.dumps(name)} = {_toml_value(table)}")
    return "\n".join(out) + "\n"


def _config_keys() -> dict[str, list[str]]:
    from obdsync import config as C

    keys = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in C._SECTIONS.items()}
    keys["mqtt"] = [f.name for f in dataclasses.fields(C.MqttTarget)]
    keys["webhook"] = [f.name for f in dataclasses.fields(C.WebhookTarget)]
    return keys


KEYS = _config_keys()
scalars = st.one_of(st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["petrol", "diesel", "127.0.0.1", "https://x.example/h",
                                                           "http://", "/nonexistent/key", "~/.secret"]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                      max_leaves=6)


@st.composite
def config_docs(draw) -> dict:
    doc: dict = {}
    for name in draw(st.lists(st.sampled_from([*KEYS.keys() - {"mqtt", "webhook"}, "bogus", "storee"]),
                              max_size=6, unique=True)):
        known = KEYS.get(name, ["x"])
        doc[name] = {draw(st.sampled_from([*known, "typo_key"])): draw(values)
                     for _ in range(draw(st.integers(0, 4)))}
    if draw(st.booleans()):
        fwd: dict = {}
        for kind in draw(st.lists(st.sampled_from(["mqtt", "webhook", "smtp"]), max_size=2, unique=True)):
            fwd[kind] = [{draw(st.sampled_from(KEYS.get(kind, ["x"]) + ["nope"])): draw(values)
                          for _ in range(draw(st.integers(0, 5)))} for _ in range(draw(st.integers(0, 3)))]
        doc["forward"] = fwd
    if draw(st.booleans()):
        doc["poll"] = {draw(st.sampled_from(["speed", "rpm", "0x0D", "0x1FF", "nonsense", "voltage"])): draw(
            st.one_of(values, st.lists(st.floats(-1, 7000), min_size=3, max_size=3)))
            for _ in range(draw(st.integers(0, 3)))}
    return doc


@settings(max_examples=800, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.one_of(config_docs().map(to_toml), st.text(max_size=200), st.binary(max_size=200)))
def test_config_loader_gives_a_config_or_a_config_error(tmp_path_factory, text):
    from obdsync.config import Config, ConfigError, load_config

    p = tmp_path_factory.getbasetemp() / "fuzz-config.toml"
    p.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    try:
        cfg = load_config(p)
    except ConfigError as e:
        assert e.errors and all(isinstance(m, str) and m for m in e.errors)
        return
    assert isinstance(cfg, Config)


# -- firmware: the command handler, the ELM327 driver through the link model -----------------

def _commands(run_mpy_json, n: int, seed: int) -> dict:
    out = run_mpy_json("fuzz_commands.py", str(n), str(seed), timeout=1800)
    fails = [x for x in out if x[0] == "FAIL"]
    assert fails == []
    return dict(out)["stats"]


def test_command_handler_answers_random_bytes_with_a_reply_or_nothing(run_mpy_json, micropython):
    s = _commands(run_mpy_json, 3000, 9)
    assert s["inputs"] == 3000 and s["replies"] + s["none"] == 3000
    assert s["dispatched"] > 100 and s["rejected"] > 1000  # it reached the actions, and refused the junk


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_command_handler(run_mpy_json):
    s = _commands(run_mpy_json, 100_000, 90)
    print(f"\ncommand handler: {s}")
    assert s["replies"] + s["none"] == 100_000


def _elm_through_link(tmp_path: Path, ops: int, seed: int, rate: float) -> tuple[list[list], dict]:
    from hil.emulator import Emulator
    from hil.linkmodel import FaultPlan, LinkModel

    plan = FaultPlan(rate=rate, seed=seed)
    with Emulator("demo") as emu, LinkModel(emu.pty, baud=38400, latency_s=0.01, plan=plan) as link:
        proc = mpy.run(TESTS / "mpy" / "fuzz_elm_link.py", link.pty, str(ops), str(seed), heapsize="512K",
                       timeout=60 + ops, simulated_ble=False,
                       MICROPYPATH=mpy.module_path(simulated_ble=False))
        stats = link.stats()
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    lines = [json.loads(x) for x in proc.stdout.decode().splitlines() if x.strip()]
    assert lines and lines[-1] == ["end", None], proc.stdout.decode()[-2000:]
    return lines[:-1], stats


def check_elm_run(lines: list[list], stats: dict, ops: int) -> dict[str, int]:
    assert [x for x in lines if x[0] == "FAIL"] == []
    calls = [x for x in lines if x[0] == "op"]
    assert sum(1 for c in calls if c[1] != "recover") == ops
    # Never hangs: every call ends by the driver's own deadline (the longest, ATSP0's search, is 15 s).
    assert max(c[3] for c in calls) < 16_000
    # Re-initialises when it must: a banner mid-reply leaves the driver not ready, and the next
    # call is init; an adapter that came back answers OK again.
    for i, c in enumerate(calls):
        if c[2] == "RESET":
            assert c[4] is False, c
            assert calls[i + 1][1] == "init" if i + 1 < len(calls) else True
    statuses: dict[str, int] = {}
    for c in calls:
        statuses[f"{c[1]} {c[2]}"] = statuses.get(f"{c[1]} {c[2]}", 0) + 1
    assert stats.get("fault_reset", 0) > 0 and any(k.endswith(" RESET") for k in statuses)
    assert statuses.get("init OK", 0) >= 2 and statuses.get("pids OK", 0) > 0
    return statuses


def test_elm327_driver_through_the_link_models_faults_never_crashes_or_hangs(tmp_path, micropython):
    lines, stats = _elm_through_link(tmp_path, ops=120, seed=5, rate=0.35)
    print(check_elm_run(lines, stats, 120), stats)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_elm327_driver_through_the_link_model(tmp_path):
    lines, stats = _elm_through_link(tmp_path, ops=1500, seed=55, rate=0.3)
    print(f"\nELM327 through the link model: {check_elm_run(lines, stats, 1500)}; link {stats}")


def test_fuzz_scripts_compile_with_mpy_cross():
    cross = mpy_cross()
    for src in sorted((TESTS / "mpy").glob("fuzz_*.py")):
        r = subprocess.run([cross, "-o", "/dev/null", str(src)], capture_output=True, text=True)
        assert r.returncode == 0, (src.name, r.stderr)
