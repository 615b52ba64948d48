"""The vehicle model and the scenario files, without the emulator: physics consistency,
what the ECU answers, and the bad inputs that must be refused clearly."""

from __future__ import annotations

import pytest

from hil import scenario
from hil.scenario import ScenarioError
from hil.vehicle import (
    MODELLED_PIDS,
    Phase,
    Vehicle,
    VehicleError,
    VehicleParams,
    dtc_bytes,
    dtc_code,
)


def drive(*phases: Phase, **params) -> Vehicle:
    return Vehicle(VehicleParams(**params), list(phases))


def data(v: Vehicle, req: str, t: float) -> bytes:
    """Data bytes of a single-PID mode 01 reply (after 41 PID)."""
    r = v.respond(req, t)
    assert isinstance(r, list) and len(r) == 1, r
    assert r[0][:2] == bytes.fromhex(req[:4].replace("01", "41", 1)), r
    return r[0][2:]


def reassemble(lines: list[str]) -> bytes:
    """An ELM327 multi-frame reply (headers off) back to the ISO-TP payload."""
    if ":" not in "".join(lines):
        return bytes.fromhex(lines[0])
    length = int(lines[0], 16)
    payload = b"".join(bytes.fromhex(line.split(":", 1)[1]) for line in lines[1:])
    return payload[:length]


# --- physics -------------------------------------------------------------------------------

def test_fuel_falls_with_distance_at_a_plausible_rate():
    v = drive(Phase("city", 900), Phase("highway", 1800), start_fuel_pct=80)
    a, b, c = v.truth(0), v.truth(900), v.truth(2700)
    city_km, hwy_km = b.odometer_km - a.odometer_km, c.odometer_km - b.odometer_km
    assert city_km > 2 and hwy_km > 40
    for km, litres in ((city_km, a.fuel_l - b.fuel_l), (hwy_km, b.fuel_l - c.fuel_l)):
        assert 4.0 < 100 * litres / km < 15.0  # L/100 km of a petrol car
    assert c.fuel_pct < b.fuel_pct < a.fuel_pct


def test_maf_and_fuel_rate_agree_and_are_plausible():
    v = drive(Phase("idle", 60), Phase("highway", 900))
    idle, hwy = v.truth(30), v.truth(500)
    for tr in (idle, hwy):
        # L/h = MAF × 3600 / (AFR × density), petrol 14.7 and 740 g/L
        assert tr.fuel_rate_lph == pytest.approx(tr.maf_gps * 3600 / (14.7 * 740), rel=1e-9)
    assert 1.5 < idle.maf_gps < 4.0 and 0.5 < idle.fuel_rate_lph < 1.5
    assert hwy.speed_kmh > 90 and hwy.maf_gps > 10 and hwy.fuel_rate_lph > 4
    # the wire encodings: 0x10 in 1/100 g/s, 0x5E in 0.05 L/h
    maf = int.from_bytes(data(v, "0110", 500), "big") / 100
    rate = int.from_bytes(data(v, "015E", 500), "big") * 0.05
    assert maf == pytest.approx(hwy.maf_gps, abs=0.01)
    assert rate == pytest.approx(hwy.fuel_rate_lph, abs=0.05)


@pytest.mark.parametrize("how", [{"litres": 30.0}, {"to_pct": 80.0}])
def test_refuel_raises_the_level_by_litres_over_capacity(how):
    v = drive(Phase("park", 600), Phase("refuel", 180, **how), Phase("park", 60), tank_l=50, start_fuel_pct=20)
    before, after = v.truth(600), v.truth(780)
    assert after.fuel_pct - before.fuel_pct == pytest.approx(60.0, abs=1e-6)
    assert after.fuel_l == pytest.approx(40.0)


def test_refuel_stops_at_a_full_tank():
    v = drive(Phase("refuel", 120, litres=80), tank_l=50, start_fuel_pct=50)
    assert v.truth(120).fuel_l == pytest.approx(50.0)


def test_theft_drops_the_level_by_the_litres_taken():
    v = drive(Phase("park", 3600), Phase("theft", 600, litres=15), Phase("park", 3600), tank_l=60, start_fuel_pct=70)
    assert v.truth(3600).fuel_l - v.truth(7800).fuel_l == pytest.approx(15.0)


def test_gauge_sloshes_a_few_percent_only_while_moving_and_repeats_with_the_seed():
    v = drive(Phase("city", 600), seed=3)
    moving = [v.truth(t) for t in range(0, 600, 2)]
    noise = [abs(tr.fuel_pct_reported - tr.fuel_pct) for tr in moving if tr.speed_kmh > 3]
    still = [abs(tr.fuel_pct_reported - tr.fuel_pct) for tr in moving if tr.speed_kmh == 0]
    assert noise and max(noise) <= 4.0 and max(noise) > 0.5
    assert still and max(still) == 0.0
    again = drive(Phase("city", 600), seed=3)
    other = drive(Phase("city", 600), seed=4)
    assert [again.truth(t).fuel_pct_reported for t in range(0, 600, 2)] == [tr.fuel_pct_reported for tr in moving]
    assert [other.truth(t).speed_kmh for t in range(0, 600, 2)] != [tr.speed_kmh for tr in moving]


def test_state_does_not_depend_on_how_often_it_is_asked():
    phases = (Phase("city", 300), Phase("park", 3600), Phase("refuel", 120, litres=10), Phase("highway", 600))
    sparse, dense = drive(*phases), drive(*phases)
    for t in range(0, 4620, 7):
        dense.truth(t + 0.3)
    a, b = sparse.truth(4600), dense.truth(4600)
    assert (a.fuel_l, a.odometer_km, a.coolant_c) == pytest.approx((b.fuel_l, b.odometer_km, b.coolant_c), rel=1e-12)
    # and going back in time gives the earlier answer again
    assert dense.truth(200).odometer_km == pytest.approx(sparse.truth(200).odometer_km, rel=1e-12)


def test_coolant_warms_up_to_the_thermostat_and_overheats_past_110():
    v = drive(Phase("city", 1500), Phase("overheat", 600, peak_c=118), ambient_c=15)
    assert v.truth(0).coolant_c == pytest.approx(15)
    assert v.truth(300).coolant_c < v.truth(900).coolant_c <= 91
    assert 86 < v.truth(1500).coolant_c <= 91
    hot = [v.truth(t).coolant_c for t in range(1800, 2100, 10)]
    assert min(hot) > 110 and max(hot) <= 118
    assert data(v, "0105", 2000)[0] - 40 == round(v.truth(2000).coolant_c)


def test_battery_volts_running_parked_and_weak():
    v = drive(Phase("idle", 60), Phase("park", 3600), Phase("weak_battery", 7200, end_volts=11.6),
              Phase("idle", 300, alternator=False))
    assert v.battery_volts(30) == pytest.approx(14.2, abs=0.1)
    assert v.battery_volts(3000) == pytest.approx(12.6, abs=0.1)
    assert v.battery_volts(3660 + 7200 - 1) < 11.8
    assert v.battery_volts(3660 + 7200 + 200) < 13.0  # engine on, nothing charging
    assert int.from_bytes(data(v, "0142", 30), "big") / 1000 == pytest.approx(v.battery_volts(30), abs=0.001)


def test_odometer_and_distance_since_clear_on_the_wire():
    v = drive(Phase("highway", 1200), start_odometer_km=123456.7, distance_since_clear_km=100)
    tr = v.truth(1000)
    assert int.from_bytes(data(v, "01A6", 1000), "big") == int(tr.odometer_km * 10)
    assert tr.odometer_km > 123456.7 + 20
    assert int.from_bytes(data(v, "0131", 1000), "big") == round(tr.distance_since_clear_km)
    assert tr.distance_since_clear_km == pytest.approx(100 + tr.odometer_km - 123456.7)


# --- what the ECU answers -----------------------------------------------------------------

def supported_by_bitmaps(v: Vehicle, t: float) -> set[int]:
    pids, base = set(), 0x00
    while True:
        r = v.respond(f"01{base:02X}", t)
        if isinstance(r, str):
            return pids
        bits = int.from_bytes(r[0][2:6], "big")
        for i in range(32):
            if bits & (1 << (31 - i)):
                pids.add(base + 1 + i)
        if not bits & 1:
            return pids
        base += 0x20


@pytest.mark.parametrize("pids", [MODELLED_PIDS, (0x05, 0x0C, 0x0D, 0x2F), (0x0C, 0x42)])
def test_bitmaps_claim_exactly_what_is_answered(pids):
    v = drive(Phase("idle", 60), supported_pids=pids)
    claimed = supported_by_bitmaps(v, 10)
    answered = {pid for pid in range(256) if isinstance(v.respond(f"01{pid:02X}", 10), list)}
    assert claimed | {0x00} == answered
    assert set(pids) <= claimed


def test_multi_pid_request_is_one_message_in_request_order_skipping_unsupported():
    v = drive(Phase("city", 120), supported_pids=(0x05, 0x0C, 0x0D))
    r = v.respond("010C0D0405", 60)
    assert isinstance(r, list) and len(r) == 1
    msg = r[0]
    assert msg[0] == 0x41 and msg[1] == 0x0C and msg[4] == 0x0D and msg[6] == 0x05 and len(msg) == 8
    assert v.answer("010C0D05", 60)[0] == "008"  # an ISO-TP length line: multi-frame
    assert v.respond("010C0D1", 60) == v.respond("010C0D", 60)  # the count digit changes nothing here


def test_vin_frames_decode_back_to_the_vin():
    v = drive(Phase("idle", 60), vin="1HGCM82633A004352")
    lines = v.answer("0902", 5)
    assert lines[0] == "014" and lines[1].startswith("0: ")
    payload = reassemble(lines)
    assert payload[:3] == b"\x49\x02\x01" and payload[3:].decode() == "1HGCM82633A004352"
    bitmap = v.respond("0900", 5)[0]
    assert bitmap[2:] == bytes([0x40, 0, 0, 0])  # PID 02 only


def test_dtcs_appear_with_mil_and_mode_04_clears_stored_and_pending_not_permanent():
    v = drive(Phase("dtc", 600, code="P0301", at_s=100), Phase("dtc", 300, code="P0420", pending=True, at_s=10))
    assert v.respond("03", 50) == [b"\x43\x00"]
    assert data(v, "0101", 50)[0] == 0x00
    assert v.respond("03", 200) == [b"\x43\x01\x03\x01"]
    assert data(v, "0101", 200)[0] == 0x81  # MIL on, one code
    assert v.respond("07", 700) == [b"\x47\x02\x03\x01\x04\x20"]
    assert v.respond("04", 800) == [b"\x44"]
    after = v.truth(801)
    assert (after.mil, after.stored_dtcs, after.pending_dtcs, after.permanent_dtcs) == (False, (), (), ("P0301",))
    assert v.respond("03", 801) == [b"\x43\x00"] and data(v, "0101", 801)[0] == 0
    assert v.respond("0A", 801) == [b"\x4A\x01\x03\x01"]
    assert int.from_bytes(data(v, "0131", 801), "big") == 0


@pytest.mark.parametrize("code", ["P0301", "C1234", "B0001", "U3FFF", "P0420"])
def test_dtc_encoding_round_trips(code):
    assert dtc_code(dtc_bytes(code)) == code


def test_engine_off_answers_no_data_then_unable_to_connect_but_volts_still_read():
    v = drive(Phase("idle", 60), Phase("park", 3600), bus_sleep_s=600)
    assert v.answer("010C", 30) != ["NO DATA"]
    assert v.answer("010C", 100) == ["NO DATA"]
    assert v.answer("0902", 100) == ["NO DATA"]
    assert v.answer("010C", 60 + 700) == ["UNABLE TO CONNECT"]
    assert 12.4 < v.battery_volts(60 + 700) < 13.0


@pytest.mark.parametrize("req,expect", [("01ZZ", "?"), ("", "?"), ("01" + "0C" * 7, "?"), ("0100", None),
                                        ("2201", "NO DATA"), ("0188", "NO DATA")])
def test_bad_requests_are_answered_as_an_elm327_would(req, expect):
    v = drive(Phase("idle", 60))
    r = v.respond(req, 1)
    assert r == expect if expect else isinstance(r, list)


@pytest.mark.parametrize("kw,match", [
    ({"vin": "SHORT"}, "vin"), ({"fuel_type": "lpg"}, "fuel_type"), ({"supported_pids": (0x0B,)}, "0x0B"),
    ({"protocol": "KWP"}, "protocol"), ({"stored_dtcs": ("X123",)}, "DTC"),
])
def test_bad_vehicle_parameters_are_refused_clearly(kw, match):
    with pytest.raises(VehicleError, match=match):
        VehicleParams(**kw)


@pytest.mark.parametrize("kw,match", [
    ({"kind": "fly", "duration_s": 1}, "kind"), ({"kind": "city", "duration_s": 0}, "duration_s"),
    ({"kind": "refuel", "duration_s": 60}, "litres, to_pct"), ({"kind": "dtc", "duration_s": 60}, "code"),
    ({"kind": "theft", "duration_s": 60}, "litres"), ({"kind": "city", "duration_s": 9, "speedup": 0}, "speedup"),
])
def test_bad_phases_are_refused_clearly(kw, match):
    with pytest.raises(VehicleError, match=match):
        Phase(**kw)


# --- scenario files -------------------------------------------------------------------------

SHIPPED = ["demo", "refuel", "theft_overnight", "overheat", "dtc", "weak_battery", "city", "highway", "long_drive"]


def test_every_required_scenario_ships_and_test_ones_are_short():
    assert set(SHIPPED) <= set(scenario.names())
    for name in scenario.names():
        s = scenario.load(name)
        if name == "long_drive":
            assert s.total_sim_s >= 3600 and all(p.speedup == 1 for p in s.phases if p.engine_on)
        elif name == "demo":
            assert 80 <= s.total_real_s <= 100
        else:
            assert s.total_real_s <= 30, name
        assert s.expects, name


def test_scenarios_produce_what_their_expectations_are_about():
    refuel = scenario.load("refuel")
    v = refuel.make_vehicle()
    a, b = refuel.phase_window("refuel")
    assert v.truth(b).fuel_l - v.truth(a).fuel_l == pytest.approx(30)
    theft = scenario.load("theft_overnight")
    v = theft.make_vehicle()
    a, b = theft.phase_window("theft")
    assert v.truth(a).fuel_l - v.truth(b).fuel_l == pytest.approx(15)
    hot = scenario.load("overheat")
    v = hot.make_vehicle()
    assert v.truth(hot.phase_window("overheat")[1] - 1).coolant_c > 110
    weak = scenario.load("weak_battery")
    v = weak.make_vehicle()
    assert v.battery_volts(weak.phase_window("weak_battery")[1] - 1) < 11.8
    dtc = scenario.load("dtc")
    assert "P0301" in dtc.make_vehicle().truth(dtc.total_sim_s).stored_dtcs


def test_expect_matching_with_tolerance():
    ex = scenario.load("refuel").expects[0]
    assert ex.type == "refuel" and ex.count == 1
    assert ex.matches({"type": "refuel", "litres": 33.5})
    assert not ex.matches({"type": "refuel", "litres": 25.0})
    assert not ex.matches({"type": "fuel_drop", "litres": 30.0})
    assert ex.count_ok(1) and not ex.count_ok(2)


@pytest.mark.parametrize("text,match", [
    ('name="x"\n', "at least one"),
    ('name="x"\n[[phase]]\nkind="city"\nduration_s=10\nspeeed=2\n', "speeed"),
    ('name="x"\n[vehicle]\ntank="big"\n[[phase]]\nkind="city"\nduration_s=10\n', "tank"),
    ('name="x"\n[[phase]]\nkind="city"\nduration_s=10\n[[expect]]\ntype="boom"\n', "boom"),
    ('name="x"\n[[phase]]\nkind="city"\nduration_s=10\n[[expect]]\ntype="trip"\nphase="nope"\n', "nope"),
    ('name="x"\n[[phase]]\nkind="city"\nduration_s=10\n[[expect]]\ntype="trip"\ncount=-1\n', "count"),
    ('name = [\n', "TOML"),
])
def test_bad_scenario_files_name_the_file_and_field(tmp_path, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ScenarioError, match=match) as e:
        scenario.load(p)
    assert "bad.toml" in str(e.value)


def test_unknown_scenario_lists_the_shipped_ones():
    with pytest.raises(ScenarioError, match="demo"):
        scenario.load("no_such_scenario")
