"""protocol/ against the committed vectors (tests/vectors/protocol.json), on CPython
and on the real MicroPython interpreter: the same bytes and fields on both."""

from __future__ import annotations

import json


def expected(doc) -> dict:
    """What every check must compute, read straight from the file."""
    exp = {}
    a = doc["auth"]
    for k in ("telemetry_key", "telemetry_key_epoch", "session_key", "proof_central", "proof_dongle", "passkey"):
        exp["auth/" + k] = a[k]
    for v in doc["records"]:
        name = "record/" + v["name"]
        exp[name + "/encode"] = v["hex"]
        exp[name + "/decode"] = [True, v["fields"]]
        exp[name + "/decode_bytearray_nokey"] = [True, v["fields"]]
        exp[name + "/peek_seq"] = v["fields"]["seq"]
    for v in doc["bad_records"]:
        exp["bad_record/" + v["name"]] = False
    for v in doc["fragments"]:
        name = f"fragments/{v['mtu']}"
        exp[name + "/split"] = v["fragments"]
        exp[name + "/fill"] = v["fragments"]
        exp[name + "/reassembled"] = v["messages"]
    for i, m in enumerate(doc["control"]):
        name = f"control/{i}"
        exp[name + "/encode"] = m["hex"]
        exp[name + "/decode"] = [True, {k: m[k] for k in ("type", "req", "counter", "status", "payload")}]
        if m["parsed"] is not None:
            exp[name + "/parse"] = [True, m["parsed"]]
            exp[name + "/pack"] = m["payload"]
    for v in doc["bad_control"]:
        exp["bad_control/" + v["name"]] = False
    for v in doc["info"]:
        name = "info/" + v["name"]
        exp[name + "/encode"] = v["hex"]
        exp[name + "/decode"] = v["fields"]
        exp[name + "/supports"] = v["supports"]
    return exp


def mismatches(got: list, exp: dict) -> list:
    seen = {}
    for check, value in got:
        seen[check] = value
    bad = [(c, "missing") for c in exp if c not in seen]
    bad += [(c, "unexpected check") for c in seen if c not in exp]
    bad += [(c, {"got": seen[c], "want": exp[c]}) for c in exp if c in seen and seen[c] != exp[c]]
    return bad


def test_the_file_covers_every_kind_type_and_mtu(protocol_vectors):
    doc = protocol_vectors
    assert {v["fields"]["kind"] for v in doc["records"]} == {1, 2, 3, 4, 5}
    channels = {s[1] for v in doc["records"] if v["fields"]["kind"] == 1 for s in v["fields"]["samples"]}
    assert 0xFF in channels and 0x64 in channels  # ATRV and a length-prefixed channel
    assert {v["mtu"] for v in doc["fragments"]} == {23, 247, 517}
    msgs = doc["control"]
    assert {m["type"] for m in msgs if m["status"] is None} == set(range(1, 12))
    assert {m["type"] for m in msgs if m["status"] is not None} == set(range(1, 12))


def test_cpython_computes_the_vectors(protocol_vectors, mpy_helpers):
    results = mpy_helpers("protocol_vectors").results
    # Through JSON as the MicroPython side goes: tuples become lists on both.
    got = [[c, json.loads(json.dumps(v))] for c, v in results(protocol_vectors)]
    assert mismatches(got, expected(protocol_vectors)) == []


def test_micropython_computes_the_same_vectors(protocol_vectors, protocol_vectors_path, run_mpy_json, micropython):
    got = run_mpy_json("protocol_vectors.py", str(protocol_vectors_path))
    assert mismatches(got, expected(protocol_vectors)) == []
