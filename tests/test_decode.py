"""Decode: python-OBD's values for every mode 01 PID it knows; ours where it is wrong or silent."""

from __future__ import annotations

import random

import obd
import pytest
from obd.OBDResponse import Status
from obd.protocols.protocol import ECU, Frame, Message

from obdsync import decode as d
from obdsync.decode import (
    DecodeError,
    Decoder,
    Reading,
    decode_vin,
    describe_dtc,
    dtc_from_raw,
    dtcs_from_raw,
    signal_by_name,
    signal_name,
)

PIDS = [c for c in obd.commands[1] if c is not None]


def reference(cmd, data: bytes):
    """python-OBD decoding the way its own protocol layer hands it a message."""
    frame = Frame(f"41 {cmd.pid:02X} {data.hex(' ')}")
    frame.data = bytearray(bytes([0x41, cmd.pid]) + data)
    msg = Message([frame])
    msg.data = bytearray(frame.data)
    msg.ecu = ECU.ENGINE
    return cmd([msg]).value


def patterns(n):
    rng = random.Random(n)
    yield bytes(n)
    yield b"\xff" * n
    yield bytes(range(0x41, 0x41 + n))
    for _ in range(5):
        yield bytes(rng.randrange(256) for _ in range(n))


@pytest.mark.parametrize("cmd", PIDS, ids=lambda c: f"{c.pid:02X}_{c.name}")
def test_every_python_obd_mode01_pid_decodes_like_python_obd(cmd):
    size = cmd.bytes - 2
    for data in patterns(size):
        got = Decoder().decode(cmd.pid, data)
        assert got, "never empty"
        try:
            ref = reference(cmd, data)
        except Exception:  # python-OBD bug (e.g. AIR_STATUS with a high bit set): kept raw
            assert got == (Reading(cmd.pid, None, "raw", data.hex()),)
            continue
        if isinstance(ref, Status):  # PID 0x01 split by us; 0x41 as python-OBD's text
            if cmd.pid == 0x01:
                assert [(r.signal, r.value) for r in got] == [
                    (d.SIG_MIL, float(ref.MIL)), (d.SIG_DTC_COUNT, float(ref.DTC_count))]
            else:
                assert got[0].value is None and f"{ref.DTC_count} DTC" in got[0].text
            continue
        (r,) = got
        assert r.signal == cmd.pid
        if ref is None:  # python-OBD has no value: kept raw, not dropped
            assert (r.value, r.unit, r.text) == (None, "raw", data.hex())
        elif hasattr(ref, "magnitude"):
            assert r.value == pytest.approx(float(ref.magnitude), rel=1e-12, abs=1e-12)
            units = str(ref.units)
            assert r.unit == d._UNITS.get(units, units)
        elif isinstance(ref, bool):
            assert r.value == float(ref)
        else:
            assert r.value is None and r.text


@pytest.mark.parametrize("pid, data, value, unit", [
    (0x0C, b"\x1a\xf8", 1726.0, "rpm"),
    (0x0D, b"\x32", 50.0, "km/h"),
    (0x05, b"\x7b", 83.0, "°C"),
    (0x2F, b"\xff", 100.0, "%"),
    (0x10, b"\x01\x00", 2.56, "g/s"),
    (0x42, b"\x36\xb0", 14.0, "V"),
    (0x5E, b"\x00\x64", 5.0, "L/h"),
])
def test_common_pids_have_short_units(pid, data, value, unit):
    (r,) = d.decode(pid, data)
    assert (r.value, r.unit) == (pytest.approx(value), unit)


def test_odometer_a6_is_ours():
    assert not obd.commands.has_pid(1, 0xA6)  # why it is ours
    assert d.decode(0xA6, bytes.fromhex("0001e240")) == (Reading(0xA6, 12345.6, "km"),)


def test_atrv_channel_is_volts():
    assert d.decode(0xFF, bytes.fromhex("3110")) == (Reading(0xFF, 12.56, "V"),)


@pytest.mark.parametrize("a, mil, count", [(0x83, 1.0, 3.0), (0x00, 0.0, 0.0), (0x7F, 0.0, 127.0), (0x80, 1.0, 0.0)])
def test_status_01_gives_mil_and_dtc_count_separately(a, mil, count):
    got = d.decode(0x01, bytes([a, 0x07, 0x65, 0x04]))
    assert [(r.signal, r.value, r.unit) for r in got] == [(0x001, mil, "bool"), (0x101, count, "count")]
    assert [signal_name(r.signal) for r in got] == ["MIL", "DTC_COUNT"]


@pytest.mark.parametrize("pid, data", [
    (0x70, b"\x01\x02\x03"),  # python-OBD does not know it
    (0xA6, b"\x00\x01"),  # ours, wrong length
    (0x0C, b"\x1a"),  # python-OBD would pad it to 1A 00
    (0x0D, b"\x10\x20"),  # python-OBD would chop it
    (0x4F, b"\x01\x02\x03\x04"),  # python-OBD's drop decoder
])
def test_unknown_or_malformed_samples_are_kept_raw(pid, data):
    assert d.decode(pid, data) == (Reading(pid, None, "raw", data.hex()),)


def test_empty_data_is_kept():
    assert d.decode(0x0C, b"") == (Reading(0x0C, None, "raw", "empty"),)


def test_memo_is_bounded_and_hits_return_the_same_readings():
    dec = Decoder(limit=4)
    first = dec.decode(0x0D, b"\x01")
    assert dec.memo[(0x0D, b"\x01")] is first
    assert dec.decode(0x0D, b"\x01") is first
    for v in range(10):
        dec.decode(0x0D, bytes([v]))
    assert len(dec.memo) <= 4
    assert dec.units[0x0D] == "km/h"


def test_vin_is_decoded_whole():
    raw = b"\x01" + b"1HGCM82633A004352"
    assert decode_vin(raw) == "1HGCM82633A004352"
    assert decode_vin(b"\x00\x00\x001G1JC5444R7252367") == "1G1JC5444R7252367"
    assert decode_vin(b"WVWZZZ1KZAW000120") == "WVWZZZ1KZAW000120"
    # why it is ours: python-OBD 0.7.3 strips 0/1/2 from both ends (upstream PR #276)
    frame = Frame("")
    frame.data = bytearray(b"\x49\x02" + raw)
    msg = Message([frame])
    msg.data = bytearray(frame.data)
    msg.ecu = ECU.ENGINE
    assert obd.commands.VIN([msg]).value != b"1HGCM82633A004352"


@pytest.mark.parametrize("raw, why", [
    (b"1HGCM82633A00435", "17-character"),
    (b"1HGCM82633A00435O", "no I, O, Q"),
    (b"\x051HGCM82633A004352", "leading bytes"),
    (b"\x011HGCM82633A00435\xff", "ASCII"),
])
def test_bad_vins_are_refused_clearly(raw, why):
    with pytest.raises(DecodeError, match=why):
        decode_vin(raw)


@pytest.mark.parametrize("raw, code", [
    (b"\x03\x01", "P0301"), (b"\x41\x23", "C0123"), (b"\x80\x01", "B0001"), (b"\xc1\x00", "U0100"),
    (b"\x1a\xbc", "P1ABC"), (b"\xf0\x00", "U3000"),
])
def test_dtc_from_raw(raw, code):
    assert dtc_from_raw(raw) == code


def test_dtc_list_skips_padding_and_rejects_odd_sizes():
    assert dtcs_from_raw([b"\x03\x01", b"\x00\x00", b"\x01\x71"]) == ["P0301", "P0171"]
    with pytest.raises(DecodeError, match="2 bytes"):
        dtc_from_raw(b"\x03")


def test_dtc_descriptions_from_python_obd_then_generic():
    assert describe_dtc("P0301") == obd.codes.DTC["P0301"]
    assert describe_dtc("p0171") == obd.codes.DTC["P0171"]
    unknown = [c for c in ("P1ABC", "P2FFF", "P3000", "P3A00", "B1F00", "B3F00", "C2ABC", "U0FFF")
               if c not in obd.codes.DTC]
    assert len(unknown) == 8
    assert describe_dtc("P1ABC") == "Powertrain, manufacturer-specific code"
    assert describe_dtc("P2FFF") == "Powertrain, SAE generic code"
    assert describe_dtc("P3000") == "Powertrain, manufacturer-specific code"
    assert describe_dtc("P3A00") == "Powertrain, SAE generic code"
    assert describe_dtc("B1F00") == "Body, manufacturer-specific code"
    assert describe_dtc("B3F00") == "Body, SAE generic code"
    assert describe_dtc("C2ABC") == "Chassis, manufacturer-specific code"
    assert describe_dtc("U0FFF") == "Network, SAE generic code"
    with pytest.raises(DecodeError, match="not a DTC"):
        describe_dtc("X1234")


@pytest.mark.parametrize("name, sig", [("RPM", 0x0C), ("rpm", 0x0C), ("0x2f", 0x2F), ("ODOMETER", 0xA6),
                                       ("voltage", 0xFF), ("ATRV", 0xFF), ("PID_A7", 0xA7), ("MIL", 0x01),
                                       ("DTC_COUNT", 0x101)])
def test_signal_names_round_trip(name, sig):
    assert signal_by_name(name) == sig
    assert signal_by_name(signal_name(sig)) == sig


def test_unknown_signal_name_is_a_clear_error():
    with pytest.raises(DecodeError, match="unknown channel 'RMP'"):
        signal_by_name("RMP")


def test_ecu_names_from_the_address_the_dongle_kept():
    from obdsync.decode import DecodeError, dtcs_with_ecus, ecu_name

    assert [ecu_name(a) for a in (0, 0xE8, 0xE9, 0xEA, 0x10, 0x18, 0x28)] == [
        "", "engine (7E8)", "transmission (7E9)", "ECU 7EA", "engine (10)", "transmission (18)", "ECU 28"]
    assert dtcs_with_ecus([b"\x01\x33", b"\x00\x00", b"\xc1\x23"], [0xE8, 0, 0xE9]) == (
        ["P0133", "U0123"], ["engine (7E8)", "transmission (7E9)"])
    assert dtcs_with_ecus([b"\x01\x33"], []) == (["P0133"], [""])
    with pytest.raises(DecodeError, match="2 codes but 1"):
        dtcs_with_ecus([b"\x01\x33", b"\x01\x34"], [0xE8])


def test_a_freeze_frame_decodes_per_code_with_python_obd_and_bad_bytes_are_named_errors():
    import obd

    from obdsync.decode import decode_freeze, decode_with_obd
    from protocol import control, control_central
    from protocol.errors import ProtocolError

    entries = [(0xE8, 2, b"\x01\x33"), (0xE8, 0x0C, b"\x1a\xf8"), (0xE8, 0x0D, b"\x32"),
               (0xE9, 2, b"\x07\x30"), (0xE9, 0x05, b"\x7b"), (0x10, 2, b"\x00\x00")]
    got = decode_freeze(control_central.parse_freeze(control.pack_freeze(entries)))
    assert set(got) == {"P0133", "P0730"}  # 00 00: that ECU holds no frame
    assert got["P0133"]["ecu"] == "engine (7E8)" and got["P0730"]["ecu"] == "transmission (7E9)"
    for code, ecu in (("P0133", 0xE8), ("P0730", 0xE9)):
        want = {obd.commands[1][p].name: decode_with_obd(p, d).magnitude for e, p, d in entries if e == ecu and p != 2}
        assert {k: v[0] for k, v in got[code]["values"].items()} == want
    assert got["P0133"]["values"]["RPM"] == [1726.0, "rpm"]
    with pytest.raises(ProtocolError, match="without its code"):
        control_central.parse_freeze(b"")  # never an empty frame presented as data
    with pytest.raises(ProtocolError, match="cut short"):
        control_central.parse_freeze(control.pack_freeze(entries)[:-1])
    with pytest.raises(DecodeError, match="PID 0C"):
        decode_freeze([(0xE8, 2, b"\x01\x33"), (0xE8, 0x0C, b"\x1a")])
    with pytest.raises(DecodeError, match="PID 02"):
        decode_freeze([(0xE8, 2, b"\x01")])
