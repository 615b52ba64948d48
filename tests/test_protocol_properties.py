"""Properties of protocol/ on CPython (hypothesis): round trips, total decoders,
fragmentation under loss, and the MACs that reject every tampered byte."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocol import control, control_central
from protocol.auth import DIR_CENTRAL, DIR_DONGLE, Session, session_key, telemetry_key
from protocol.channels import DATA_LEN, MAX_DATA
from protocol.errors import ProtocolError
from protocol.frames import MAX_MESSAGE, Fragmenter, Reassembler, payload_size
from protocol.info import encode_info
from protocol.info_decode import decode_info
from protocol.record import DTC_MODES, EVENT_NAMES, MAX_RECORD, MAX_TABLE, RecordWriter, Signer
from protocol.record_decode import decode_record, peek_seq

SECRET = bytes(range(0x20, 0x40))
TKEY = telemetry_key(SECRET)
SKEY = session_key(SECRET, b"c" * 16, b"d" * 16)
U32 = st.integers(0, 0xFFFFFFFF)
U16 = st.integers(0, 0xFFFF)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- records ---------------------------------------------------------------------------------

def data_for(ch):
    n = DATA_LEN[ch]
    return st.binary(min_size=n, max_size=n) if n else st.binary(max_size=MAX_DATA)


@st.composite
def record_groups(draw, max_groups=40):
    """Groups as the firmware would stage them: [(t_ms, [(channel, data)])], any times
    (repeated, backwards, wrapping far) and any mix of fixed and variable channels."""
    chans = draw(st.lists(st.integers(0, 255), min_size=1, max_size=MAX_TABLE, unique=True))
    t = draw(U32)
    groups = []
    for _ in range(draw(st.integers(1, max_groups))):
        jump = draw(st.one_of(st.integers(0, 400), st.integers(-5000, 5000), st.none()))
        t = draw(U32) if jump is None else min(max(t + jump, 0), 0xFFFFFFFF)
        members = draw(st.lists(st.sampled_from(chans), min_size=1, max_size=8, unique=True))
        groups.append((t, [(ch, draw(data_for(ch))) for ch in members]))
    return groups


def write(groups, seq=7, boot=3):
    """Stage groups while they fit; return (encoded record, the groups it holds)."""
    w = RecordWriter(TKEY)
    taken = []
    for t, samples in groups:
        if not w.fits(len(samples), sum(len(d) for _, d in samples)):
            break
        w.group(t)
        for ch, d in samples:
            assert w.add(ch, d, 0, len(d))
        taken.append((t, samples))
    n = w.seal(seq, boot)
    return bytes(w.out[:n]), taken


def assert_holds(rec, groups):
    """Decoded samples are the groups in order, each group's samples together."""
    i = 0
    for t, samples in groups:
        chunk = rec.samples[i:i + len(samples)]
        assert sorted(chunk) == sorted((t, ch, d) for ch, d in samples)
        i += len(samples)
    assert i == len(rec.samples)


@FAST
@given(record_groups(), U32, U16)
def test_samples_round_trip(groups, seq, boot):
    data, taken = write(groups, seq, boot)
    assert taken and len(data) <= MAX_RECORD
    rec = decode_record(data, TKEY)
    assert (rec.kind, rec.seq, rec.boot, rec.t0) == (1, seq, boot, taken[0][0])
    assert peek_seq(data) == seq
    assert_holds(rec, taken)


@settings(max_examples=25, deadline=None)
@given(record_groups(max_groups=150))
def test_a_writer_seals_record_after_record_without_leaking_state(groups):
    w = RecordWriter(TKEY)
    records = []
    pending = []
    for t, samples in groups:
        if not w.fits(len(samples), sum(len(d) for _, d in samples)):
            n = w.seal(len(records), 1)
            records.append((bytes(w.out[:n]), pending))
            pending = []
        w.group(t)
        for ch, d in samples:
            w.add(ch, d, 0, len(d))
        pending.append((t, samples))
    n = w.seal(len(records), 1)
    records.append((bytes(w.out[:n]), pending))
    for seq, (data, held) in enumerate(records):
        rec = decode_record(data, TKEY)
        assert rec.seq == seq
        assert_holds(rec, held)


def test_a_request_without_answer_leaves_no_empty_group():
    w = RecordWriter(TKEY)
    w.group(100)  # NO DATA: nothing added
    w.group(300)
    w.add(0x0D, b"\x10", 0, 1)
    w.group(400)
    w.add(0x0D, b"\x11", 0, 1)
    w.group(500)  # the last request of the record got no answer either
    n = w.seal(1, 1)
    rec = decode_record(w.out[:n], TKEY)
    assert rec.t0 == 300
    assert rec.samples == [(300, 0x0D, b"\x10"), (400, 0x0D, b"\x11")]


def test_sealing_an_empty_writer_is_refused():
    w = RecordWriter(TKEY)
    w.group(100)
    with pytest.raises(ProtocolError):
        w.seal(1, 1)


def test_a_second_answer_for_a_channel_in_one_group_is_ignored():
    w = RecordWriter(TKEY)
    w.group(5)
    assert w.add(0x0C, b"\x10\x00", 0, 2)
    assert not w.add(0x0C, b"\x20\x00", 0, 2)  # the second ECU (7EA)
    assert not w.add(0x64, bytes(MAX_DATA + 1), 0, MAX_DATA + 1)
    rec = decode_record(w.out[: w.seal(1, 1)], TKEY)
    assert rec.samples == [(5, 0x0C, b"\x10\x00")]


@FAST
@given(U32, U16, U32, U32, U32, st.integers(0, 255), U16, st.integers(0, 255), st.binary(max_size=600))
def test_small_kinds_encode_only_what_decodes(seq, boot, t0, a, b, code, mv, mode, codes):
    s = Signer(TKEY)
    out = bytearray(MAX_RECORD)
    encoders = [
        (lambda: s.gap(out, seq, boot, t0, a, b), {"first": a, "count": b}),
        (lambda: s.anchor(out, seq, boot, t0, a * b), {"wall_ms": a * b}),
        (lambda: s.event(out, seq, boot, t0, code, mv), {"code": code, "millivolts": mv}),
        (lambda: s.dtc(out, seq, boot, t0, mode, codes, len(codes) // 2),
         {"mode": mode, "codes": [codes[i:i + 2] for i in range(0, len(codes) // 2 * 2, 2)]}),
        (lambda: s.dtc(out, seq, boot, t0, mode, codes, len(codes) // 2, codes[::-1]),
         {"mode": mode, "codes": [codes[i:i + 2] for i in range(0, len(codes) // 2 * 2, 2)],
          "ecus": list(codes[::-1][:len(codes) // 2]) if len(codes) >= 2 else []}),
    ]
    for enc, fields in encoders:
        try:
            n = enc()
        except ProtocolError:
            continue
        rec = decode_record(out[:n], TKEY)
        assert (rec.seq, rec.boot, rec.t0) == (seq, boot, t0)
        assert {k: getattr(rec, k) for k in fields} == fields
    if b:
        assert decode_record(out[: s.gap(out, seq, boot, t0, a, b)], TKEY).count == b
    if code in EVENT_NAMES:
        assert decode_record(out[: s.event(out, seq, boot, t0, code, mv)], TKEY).code == code
    if mode in DTC_MODES and len(codes) <= 2 * 248:
        assert len(decode_record(out[: s.dtc(out, seq, boot, t0, mode, codes, len(codes) // 2)]).codes) == \
            len(codes) // 2


@settings(max_examples=25, deadline=None)
@given(record_groups(max_groups=6))
def test_any_single_bit_flip_fails_the_mac(groups):
    data, _ = write(groups)
    for bit in range(len(data) * 8):
        bad = bytearray(data)
        bad[bit >> 3] ^= 0x80 >> (bit & 7)
        with pytest.raises(ProtocolError):
            decode_record(bad, TKEY)


# --- decoders are total --------------------------------------------------------------------------

def protocol_error_or(fn, *args):
    try:
        return fn(*args)
    except ProtocolError:
        return None


VALID_RECORD = write([(1000, [(0x0C, b"\x10\x00"), (0x64, b"\x01\x02")]), (1200, [(0xFF, b"\x31\x00")])])[0]

record_like = st.one_of(
    st.binary(max_size=600),
    # A plausible header, so the body parsers see the garbage.
    st.tuples(st.sampled_from([0x11, 0x12, 0x13, 0x14, 0x15]), st.binary(min_size=10, max_size=10),
              st.binary(max_size=80)).map(lambda x: bytes([x[0]]) + x[1] + x[2] + b"\0\0\0\0"),
    # A real record, damaged.
    st.tuples(st.integers(0, len(VALID_RECORD) - 1), st.integers(1, 255), st.integers(0, len(VALID_RECORD)))
    .map(lambda x: (VALID_RECORD[:x[0]] + bytes([VALID_RECORD[x[0]] ^ x[1]]) + VALID_RECORD[x[0] + 1:])[:x[2]]),
)


@settings(max_examples=400, deadline=None)
@given(record_like)
def test_decode_record_gives_a_record_or_protocol_error(data):
    for key in (None, TKEY):
        rec = protocol_error_or(decode_record, data, key)
        assert rec is None or rec.kind in (1, 2, 3, 4, 5)
    protocol_error_or(decode_record, bytearray(data))
    protocol_error_or(decode_record, memoryview(data))
    protocol_error_or(peek_seq, data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=80),
                 st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=60))
                 .map(lambda x: bytes([x[0], x[1], 0, 0, 0, 0]) + x[2])))
def test_control_decode_and_payload_parsers_give_a_value_or_protocol_error(data):
    protocol_error_or(control.decode, data)
    protocol_error_or(control.decode, data, Session(SKEY, DIR_DONGLE))
    protocol_error_or(decode_info, data)
    for parse in (control.parse_hello, control_central.parse_hello_reply, control_central.parse_proof, control.parse_u64,
                  control.parse_u32, control_central.parse_pair, control.parse_plan, control_central.parse_dtcs,
                  control_central.parse_status):
        protocol_error_or(parse, data)
        protocol_error_or(parse, memoryview(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=45, max_size=120), st.integers(0, 60))
def test_decode_info_total_on_near_valid_bytes(tail, cut):
    # A well-formed start (version 1) so the length and UTF-8 checks get the garbage.
    protocol_error_or(decode_info, (b"\x01" + tail)[: len(tail) + 1 - cut])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=60))
def test_reassembler_takes_any_fragments(frags):
    r = Reassembler()
    for f in frags:
        m = protocol_error_or(r.feed, f)
        assert m is None or len(m) <= MAX_MESSAGE


# --- fragments -----------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(st.binary(max_size=MAX_MESSAGE))
def test_split_and_reassemble_at_every_mtu(msg):
    for mtu in range(23, 518):
        frags = Fragmenter().split(msg, mtu)
        room = payload_size(mtu)
        assert len(frags) == max(1, -(-len(msg) // room))
        assert all(1 <= len(f) <= mtu - 3 for f in frags)
        r = Reassembler()
        got = [r.feed(f) for f in frags]
        assert got[:-1] == [None] * (len(frags) - 1) and got[-1] == msg


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 700), min_size=1, max_size=12),
       st.one_of(st.just(23), st.integers(23, 64), st.integers(23, 517)),
       st.lists(st.booleans(), min_size=1, max_size=400))
def test_losses_lose_whole_messages_and_never_glue_them(lengths, mtu, keep_pattern):
    # Distinct contents, so a glued or truncated message cannot pass for another.
    msgs = [bytes([i + 1]) * n + bytes([i]) for i, n in enumerate(lengths)]
    f = Fragmenter()
    frags = [(i, frag) for i, m in enumerate(msgs) for frag in f.split(m, mtu)]
    keep = [keep_pattern[k % len(keep_pattern)] for k in range(len(frags))]
    # The 6-bit counter cannot see a loss of exactly 64 fragments: the message
    # sequence numbers catch that one. Keep runs of losses shorter.
    run = 0
    for k in range(len(keep)):
        run = 0 if keep[k] else run + 1
        if run == 63:
            keep[k], run = True, 0
    r = Reassembler()
    got = []
    for k, (_, frag) in enumerate(frags):
        if keep[k]:
            m = protocol_error_or(r.feed, frag)
            if m is not None:
                got.append(m)
    whole = [m for i, m in enumerate(msgs) if all(keep[k] for k, (j, _) in enumerate(frags) if j == i)]
    assert got == whole


def test_a_lost_middle_fragment_drops_its_message_and_the_next_one_arrives():
    f = Fragmenter()
    first, second = f.split(bytes(100), 23), f.split(b"next", 23)
    r = Reassembler()
    assert r.feed(first[0]) is None
    with pytest.raises(ProtocolError):
        r.feed(first[2])  # first[1] was lost
    for frag in first[3:]:
        with pytest.raises(ProtocolError):
            r.feed(frag)  # the rest of a message already dropped
    assert r.feed(second[0]) == b"next"
    assert r.dropped == 1


def test_an_oversized_message_is_refused_on_both_ends():
    with pytest.raises(ProtocolError):
        Fragmenter().split(bytes(MAX_MESSAGE + 1), 247)
    r = Reassembler()
    frags = Fragmenter().split(bytes(MAX_MESSAGE), 23)
    r2 = Reassembler(limit=100)
    with pytest.raises(ProtocolError):
        for fr in frags:
            r2.feed(fr)
    assert [r.feed(fr) for fr in frags][-1] == bytes(MAX_MESSAGE)


# --- control and auth ----------------------------------------------------------------------------

COMMAND_TYPES = st.sampled_from(sorted(control.COMMAND_NAMES))
AUTHED_TYPES = st.sampled_from([t for t in sorted(control.COMMAND_NAMES) if t not in control.UNAUTHENTICATED])
STATUSES = st.one_of(st.none(), st.sampled_from(sorted(control_central.STATUS_NAMES)))


@FAST
@given(st.lists(st.tuples(COMMAND_TYPES, st.integers(0, 255), st.binary(max_size=64), STATUSES,
                          st.booleans()), min_size=1, max_size=20))
def test_control_round_trip_both_directions(messages):
    central, dongle = Session(SKEY, DIR_CENTRAL), Session(SKEY, DIR_DONGLE)
    for type_, req, payload, status, from_dongle in messages:
        tx, rx = (dongle, central) if from_dongle else (central, dongle)
        m = control.decode(control.encode(type_, req, payload, session=tx, status=status), rx)
        assert (m.type, m.req, m.status, bytes(m.payload)) == (type_, req, status, payload)
        assert m.is_reply == (status is not None)


@FAST
@given(AUTHED_TYPES, st.integers(0, 255), st.binary(max_size=40), STATUSES)
def test_every_single_bit_change_of_a_command_is_rejected(type_, req, payload, status):
    wire = control.encode(type_, req, payload, session=Session(SKEY, DIR_CENTRAL), status=status)
    receiver = Session(SKEY, DIR_DONGLE)
    for bit in range(len(wire) * 8):
        bad = bytearray(wire)
        bad[bit >> 3] ^= 0x80 >> (bit & 7)
        with pytest.raises(ProtocolError):
            control.decode(bytes(bad), receiver)
    # The rejections left the session as it was: the genuine command still passes.
    assert control.decode(wire, receiver).payload == payload


@FAST
@given(st.integers(1, 12), st.lists(st.integers(0, 11), max_size=40))
def test_replayed_and_reordered_commands_are_rejected(n, order):
    sender = Session(SKEY, DIR_CENTRAL)
    wires = [control.encode(control.ACK, k, struct.pack(">I", k), session=sender) for k in range(n)]
    receiver = Session(SKEY, DIR_DONGLE)
    highest = 0
    for k in order:
        if k >= n:
            continue
        ok = protocol_error_or(control.decode, wires[k], receiver) is not None
        assert ok == (k + 1 > highest)  # counters start at 1
        highest = max(highest, k + 1)


def test_a_message_cannot_be_reflected_or_used_in_another_session():
    wire = control.encode(control.STREAM, 1, session=Session(SKEY, DIR_CENTRAL))
    with pytest.raises(ProtocolError):
        control.decode(wire, Session(SKEY, DIR_CENTRAL))  # back to its sender
    other = session_key(SECRET, b"c" * 16, b"e" * 16)
    with pytest.raises(ProtocolError):
        control.decode(wire, Session(other, DIR_DONGLE))
    with pytest.raises(ProtocolError):
        control.decode(wire)  # no session at all
    with pytest.raises(ProtocolError):
        control.encode(control.STREAM, 1)


@FAST
@given(st.lists(st.tuples(st.integers(0, 255), U16, U16, U16), max_size=control.MAX_PLAN,
                unique_by=lambda e: e[0]),
       st.sampled_from(DTC_MODES), st.lists(st.binary(min_size=2, max_size=2), max_size=20),
       st.lists(U32, min_size=8, max_size=8), U16, st.integers(0, 255), st.integers(0, 3), U16, U16,
       st.lists(st.tuples(st.integers(0, 255), U16), max_size=30, unique_by=lambda e: e[0]))
def test_payloads_round_trip(plan, mode, codes, u32s, mv, proto, power, boot, fails, rates):
    assert control.parse_plan(control_central.pack_plan(plan)) == plan
    assert control_central.parse_dtcs(control.pack_dtcs(mode, codes)) == (mode, codes)
    ecus = [c[0] for c in codes]
    assert control_central.parse_dtcs(control.pack_dtcs(mode, codes, ecus), True) == (mode, codes, ecus if codes else [])
    assert control.parse_u32(control_central.pack_u32(u32s[0])) == u32s[0]
    assert control.parse_u64(control_central.pack_u64(u32s[0] << 32 | u32s[1])) == u32s[0] << 32 | u32s[1]
    assert control_central.parse_pair(control.pack_pair(u32s[2], u32s[3])) == (u32s[2], u32s[3])
    values = [mv, proto, power] + u32s[3:] + [boot, fails]
    d = control_central.parse_status(control.pack_status(values, rates))
    assert [d[k] for k in control.STATUS_FIELDS] == values
    assert {ch: round(hz * 100) for ch, hz in d["rates"].items()} == dict(rates)


@FAST
@given(st.binary(min_size=8, max_size=8), st.text(max_size=40), st.binary(min_size=32, max_size=32),
       st.binary(max_size=20), st.integers(0, 255))
def test_info_round_trip(device_id, fw, supported, vin, caps):
    assume(len(fw.encode()) <= 255)
    info = decode_info(encode_info(device_id, fw, supported, vin, caps))
    assert (info.device_id, info.firmware, info.supported, info.vin, info.caps) == \
        (device_id, fw, supported, vin, caps)
    # the ECU's layout: bit 7 of the first byte is PID 0x01; 0x00 is always answered
    assert [p for p in range(256) if info.supports(p)] == \
        [0] + [p for p in range(1, 256) if supported[(p - 1) >> 3] & (0x80 >> ((p - 1) & 7))]
