"""The dongle's advertisement never exceeds the legacy 31 bytes, whatever its name: the name
is shortened in the advertisement (on a whole UTF-8 character) and complete in the scan
response when it fits there."""

from __future__ import annotations

import uuid

import pytest

from hil.blesim import shim
from protocol import uuids

pytestmark = pytest.mark.usefixtures("micropython")


def ad_structures(payload: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i < len(payload):
        n = payload[i]
        assert n > 0 and i + 1 + n <= len(payload), payload.hex()
        out[payload[i + 1]] = payload[i + 2:i + 1 + n]
        i += 1 + n
    return out


@pytest.fixture(scope="module")
def payloads(run_mpy_json, micropython):
    return [(name, bytes.fromhex(a), bytes.fromhex(r)) for name, a, r in run_mpy_json("gatt_adv.py", path=[shim.module_dir()])]


def test_every_payload_fits_31_bytes_and_keeps_flags_and_service(payloads):
    assert len(payloads) == 82
    for name, adv, resp in payloads:
        assert len(adv) <= 31 and len(resp) <= 31, name
        ads = ad_structures(adv)
        assert ads[0x01] == b"\x06"
        assert uuid.UUID(bytes=ads[0x07][::-1]) == uuid.UUID(uuids.SERVICE)


def test_the_name_is_complete_where_it_fits_and_a_whole_character_prefix_where_not(payloads):
    for name, adv, resp in payloads:
        raw = name.encode()
        for payload, room in ((adv, 31 - 21), (resp, 31)):
            ads = ad_structures(payload)
            if len(raw) + 2 <= room:
                assert ads.get(0x09) == raw, (name, payload.hex())
            elif raw:
                short = ads[0x08].decode()  # a prefix of whole characters: decodes
                assert name.startswith(short) and 0 < len(short.encode()) <= room - 2, name


def test_the_dongles_own_name_is_advertised_complete(payloads):
    by_name = {name: adv for name, adv, _ in payloads}
    assert ad_structures(by_name["o" * 8])[0x09] == b"o" * 8  # obd-XXXX: 8 characters
