"""The dongle's HMAC on the real MicroPython interpreter from the .mpy build — protocol.auth's
over the C hashlib, and protocol/sha256.py, the allocation-free bytecode fallback for builds
without it — byte for byte against CPython's hashlib and hmac; and the records it seals,
verified by the daemon's decoder on CPython."""

from __future__ import annotations

import hashlib
import hmac
import sys
from collections import defaultdict

import pytest

from hil import mpy
from protocol.errors import ProtocolError
from protocol.record_decode import decode_record


@pytest.fixture(scope="module")
def mpy_run(protocol_mpy, run_mpy_json, micropython) -> dict:
    """tests/mpy/protocol_sha256.py's lines by check (run once for the module)."""
    by = defaultdict(list)
    for line in run_mpy_json("protocol_sha256.py", heapsize=mpy.HEAPSIZE, path=[protocol_mpy]):
        by[line[0]].append(line[1:])
    return by


@pytest.fixture(scope="module")
def script(mpy_helpers):
    return mpy_helpers("protocol_sha256")


def test_micropython_selects_the_c_hmac_and_cpython_never_imports_the_bytecode_one(mpy_run):
    assert mpy_run["selected"] == [["hashlib"]]  # both unix builds have it, as the ESP32 does
    import protocol.auth  # noqa: F401  (and record, imported above)

    assert "protocol.sha256" not in sys.modules  # it imports `micropython`: CPython has none


def test_sha256_of_every_length_up_to_300_matches_hashlib(mpy_run, script):
    got = {n: digest for n, digest in mpy_run["sha256"]}
    assert sorted(got) == list(range(script.MAX_LEN + 1))
    bad = [n for n, digest in got.items() if digest != hashlib.sha256(script.pattern(n, 0)).hexdigest()]
    assert bad == []


@pytest.mark.parametrize("what", ["hmac", "hmac_bytecode"])
def test_hmac_of_every_length_and_key_length_matches_hmac(mpy_run, script, what):
    got = {(k, n): mac for k, n, mac in mpy_run[what]}
    assert sorted(got) == [(k, n) for k in script.KEY_LENS for n in range(script.MAX_LEN + 1)]
    assert max(script.KEY_LENS) > 64 and 64 in script.KEY_LENS and 0 in script.KEY_LENS
    bad = [(k, n) for (k, n), mac in got.items()
           if mac != hmac.new(script.pattern(k, 1), script.pattern(n, 2), "sha256").hexdigest()]
    assert bad == []


def test_mac_into_writes_only_its_bytes_and_digest_joins_its_parts(mpy_run, script):
    mac = hmac.new(script.KEY, script.pattern(100, 3)[:77], "sha256").digest()
    assert mpy_run["mac_into_part"] == [[(b"\xee" * 5 + mac[:4] + b"\xee" * 3).hex()]]
    parts = b"obdsync/session" + script.pattern(16, 4) + script.pattern(16, 5)
    assert mpy_run["digest_parts"] == [[hmac.new(script.KEY, parts, "sha256").hexdigest()]]


def test_sealed_and_signed_records_are_the_cpython_bytes_and_verify(mpy_run, script):
    got = {name: bytes.fromhex(h) for name, h in mpy_run["record"]}
    expected = dict(script.records())
    assert len(got) == len(mpy_run["record"]) and got == expected  # the wire format has not moved
    assert {"gap", "anchor", "event", "dtc"} <= set(got)
    assert max(len(r) for r in got.values()) > 400  # a full record: its MAC hashes 8 blocks
    for name, rec in got.items():
        decoded = decode_record(rec, script.KEY)
        assert decoded.seq > 0, name
        for i in (0, len(rec) - 5, len(rec) - 1):  # the header, the body's end, the MAC
            forged = bytearray(rec)
            forged[i] ^= 0x01
            with pytest.raises(ProtocolError, match="MAC"):
                decode_record(bytes(forged), script.KEY)
