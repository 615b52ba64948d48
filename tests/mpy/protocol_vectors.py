# Runs protocol/ over tests/vectors/protocol.json and reports what it computed.
#
# One code path for both interpreters: tests/test_protocol_vectors.py imports
# `results` on CPython and also runs this file as a script on MicroPython, which
# prints one JSON line per result: [check id, value]. pytest compares the values
# with the file on both sides, so MicroPython is held to the same bytes.

import json
import sys

from protocol_canon import decoded_message, decoded_record, hx, info_fields, unhx, verdict

from protocol import control, control_central
from protocol.auth import (
    DIR_CENTRAL,
    DIR_DONGLE,
    Session,
    passkey,
    proof_central,
    proof_dongle,
    session_key,
    telemetry_key,
)
from protocol.frames import Fragmenter, Reassembler, payload_size
from protocol.info import encode_info
from protocol.info_decode import decode_info
from protocol.record import RecordWriter, Signer
from protocol.record_decode import peek_seq


def _encode_record(vec, key):
    f = vec["fields"]
    kind = f["kind"]
    if kind == 1:
        w = RecordWriter(key)
        for t, samples in vec["groups"]:
            nbytes = 0
            for _, d in samples:
                nbytes += len(d) // 2
            if not w.fits(len(samples), nbytes):
                return "does not fit"
            w.group(t)
            for ch, d in samples:
                b = unhx(d)
                w.add(ch, b, 0, len(b))
        n = w.seal(f["seq"], f["boot"])
        return hx(w.out[:n])
    out = bytearray(64)
    s = Signer(key)
    head = (out, f["seq"], f["boot"], f["t0"])
    if kind == 2:
        n = s.gap(*(head + (f["first"], f["count"])))
    elif kind == 3:
        n = s.anchor(*(head + (f["wall_ms"],)))
    elif kind == 4:
        n = s.event(*(head + (f["code"], f["millivolts"])))
    else:
        codes = b"".join([unhx(c) for c in f["codes"]])
        n = s.dtc(*(head + (f["mode"], codes, len(f["codes"]), bytes(f["ecus"]) if "ecus" in f else None)))
    return hx(out[:n])


def _fragments(vec):
    mtu = vec["mtu"]
    split_side = Fragmenter()
    fill_side = Fragmenter()
    buf = bytearray(payload_size(mtu) + 1)
    split = []
    filled = []
    for m in vec["messages"]:
        msg = unhx(m)
        split.append([hx(f) for f in split_side.split(msg, mtu)])
        frags = []
        off = 0
        while True:
            k = fill_side.fill(buf, msg, len(msg), off, mtu)
            frags.append(hx(buf[:k]))
            off += k - 1
            if off >= len(msg):
                break
        filled.append(frags)
    r = Reassembler()
    got = []
    for frags in vec["fragments"]:
        for f in frags:
            m = r.feed(unhx(f))
            if m is not None:
                got.append(hx(m))
    return split, filled, got


def parse_payload(type_, reply, payload):
    """A payload as the JSON value the vector file gives it, through the parse_* functions."""
    c = control
    cc = control_central
    if type_ == c.HELLO:
        if reply:
            d, n = cc.parse_hello_reply(payload)
            return [hx(d), hx(n)]
        return hx(c.parse_hello(payload))
    if type_ == c.AUTH:
        return hx(cc.parse_proof(payload))
    if type_ == c.TIME and not reply:
        return c.parse_u64(payload)
    if type_ == c.ACK and not reply:
        return c.parse_u32(payload)
    if type_ == c.ACK and reply:
        return list(cc.parse_pair(payload))
    if type_ == c.STREAM and reply:
        return list(cc.parse_stream(payload))
    if type_ == c.SET_PLAN and not reply:
        return [list(e) for e in c.parse_plan(payload)]
    if type_ == c.READ_DTC and reply:
        mode, codes, ecus = cc.parse_dtcs(payload, True)
        return [mode, [hx(x) for x in codes]] + ([ecus] if ecus else [])
    if type_ == c.READ_FREEZE and reply:
        return [[e, p, hx(d)] for e, p, d in cc.parse_freeze(payload)]
    if type_ == c.STATUS and reply:
        d = cc.parse_status(payload)
        rates = [[ch, int(round(d["rates"][ch] * 100))] for ch in sorted(d["rates"])]
        return {"values": [d[k] for k in c.STATUS_FIELDS], "rates": rates}
    return None


def pack_payload(type_, reply, v):
    c = control
    cc = control_central
    if type_ == c.HELLO:
        return c.hello_reply(unhx(v[0]), unhx(v[1])) if reply else unhx(v)
    if type_ == c.AUTH:
        return unhx(v)
    if type_ == c.TIME:
        return cc.pack_u64(v)
    if type_ == c.ACK and not reply:
        return cc.pack_u32(v)
    if type_ == c.ACK:
        return c.pack_pair(v[0], v[1])
    if type_ == c.STREAM:
        return c.pack_stream(v[0], v[1], v[2])
    if type_ == c.SET_PLAN:
        return cc.pack_plan([tuple(e) for e in v])
    if type_ == c.READ_DTC:
        return c.pack_dtcs(v[0], [unhx(x) for x in v[1]], v[2] if len(v) > 2 else None)
    if type_ == c.READ_FREEZE:
        return c.pack_freeze([(e, p, unhx(d)) for e, p, d in v])
    return c.pack_status(v["values"], [tuple(r) for r in v["rates"]])


def results(doc):
    """Yield (check id, value) for every vector."""
    a = doc["auth"]
    secret = unhx(a["secret"])
    nc = unhx(a["nonce_c"])
    nd = unhx(a["nonce_d"])
    tkey = telemetry_key(secret)
    skey = session_key(secret, nc, nd)
    yield "auth/telemetry_key", hx(tkey)
    yield "auth/telemetry_key_epoch", hx(telemetry_key(secret, a["epoch"]))
    yield "auth/session_key", hx(skey)
    yield "auth/proof_central", hx(proof_central(secret, nc, nd))
    yield "auth/proof_dongle", hx(proof_dongle(secret, nc, nd))
    yield "auth/passkey", passkey(secret)

    for vec in doc["records"]:
        name = "record/" + vec["name"]
        data = unhx(vec["hex"])
        yield name + "/encode", _encode_record(vec, tkey)
        yield name + "/decode", verdict(decoded_record, data, tkey)
        yield name + "/decode_bytearray_nokey", verdict(decoded_record, bytearray(data))
        yield name + "/peek_seq", peek_seq(data)
    for vec in doc["bad_records"]:
        yield "bad_record/" + vec["name"], verdict(decoded_record, unhx(vec["hex"]), tkey)[0]

    for vec in doc["fragments"]:
        split, filled, got = _fragments(vec)
        name = "fragments/" + str(vec["mtu"])
        yield name + "/split", split
        yield name + "/fill", filled
        yield name + "/reassembled", got

    sessions = {"central": Session(skey, DIR_CENTRAL), "dongle": Session(skey, DIR_DONGLE)}
    for i, m in enumerate(doc["control"]):
        name = "control/" + str(i)
        sender = sessions[m["from"]]
        receiver = sessions["dongle" if m["from"] == "central" else "central"]
        payload = unhx(m["payload"])
        reply = m["status"] is not None
        # Counter 0 outside HELLO/AUTH: a refusal sent without a session.
        wire = control.encode(m["type"], m["req"], payload, session=sender if m["counter"] else None,
                              status=m["status"])
        yield name + "/encode", hx(wire)
        yield name + "/decode", verdict(decoded_message, unhx(m["hex"]), receiver)
        if m["parsed"] is not None:
            yield name + "/parse", verdict(parse_payload, m["type"], reply, payload)
            yield name + "/pack", hx(pack_payload(m["type"], reply, m["parsed"]))
    # After the conversation, so "replayed" is one.
    for vec in doc["bad_control"]:
        yield "bad_control/" + vec["name"], verdict(decoded_message, unhx(vec["hex"]), sessions["central"])[0]

    for vec in doc["info"]:
        name = "info/" + vec["name"]
        f = vec["fields"]
        enc = encode_info(unhx(f["device_id"]), f["firmware"], unhx(f["supported"]), unhx(f["vin"]),
                          f["caps"], f["epoch"])
        yield name + "/encode", hx(enc)
        info = decode_info(unhx(vec["hex"]))
        yield name + "/decode", info_fields(info)
        yield name + "/supports", [p for p in range(256) if info.supports(p)]


def main(path):
    with open(path) as f:
        doc = json.load(f)
    for check, value in results(doc):
        print(json.dumps([check, value]))
    print(json.dumps(["end", None]))


if __name__ == "__main__":
    main(sys.argv[1])
