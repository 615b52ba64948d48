"""Direct mode: the firmware's ELM327 driver on CPython over every transport, the simulated
off-the-shelf adapters in front of the ELM327 emulator, and the daemon as the logger."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from e2e import Answers, until

from dongle import elm327
from dongle.elm327 import ELM327
from hil.adapter_links import LAYOUTS, BleAdapter, TcpAdapter
from hil.blesim import SimClient
from hil.emulator import Emulator
from hil.linkmodel import LinkModel
from obdsync.direct import mpcompat
from obdsync.direct.ble import BleTransport
from obdsync.direct.logger import DirectLink, device_id
from obdsync.direct.transports import SerialTransport, TcpTransport, TransportError, classify, open_transport
from obdsync.link import LinkError
from protocol.record import KIND_DTC, KIND_EVENT, KIND_GAP, KIND_SAMPLES

MAC = "0C:EE:E7:00:00:01"
VIN = "WVWZZZ1KZAW386754"  # the demo scenario's


@pytest.fixture
def emu():
    with Emulator("demo") as e:
        yield e


@contextlib.asynccontextmanager
async def adapter(kind: str, pty: str, air, **kw):
    """(transport, simulated adapter or None) for kind: a BLE layout name, 'tcp' or 'pty'."""
    if kind == "tcp":
        async with TcpAdapter(pty) as a:
            yield open_transport(a.address), a
    elif kind == "pty":
        yield open_transport(pty), None
    else:
        async with BleAdapter(pty, air, MAC, kind, **kw) as a:
            yield BleTransport(MAC, backend=SimClient, backend_kwargs={"air": str(air)}), a


async def exercise(t) -> ELM327:
    """What the logger asks of an adapter: init, a multi-PID poll, VIN, stored codes."""
    elm = ELM327(t)
    assert await elm.init() == elm327.OK
    assert elm.is_can and elm.ecu
    for _ in range(5):
        assert await elm.query_pids(b"\x0c\x0d\x05") == elm327.OK
        assert sorted(elm.res_ch[i] for i in range(elm.res_n)) == [0x05, 0x0C, 0x0D]
    assert await elm.read_voltage() > 10000
    assert await elm.read_vin() == elm327.OK
    assert bytes(elm.vin[:elm.vin_n]).decode() == VIN
    assert await elm.read_dtcs(0x03) in (elm327.OK, elm327.NO_DATA)
    # every reply was reassembled whole: nothing cut, nothing unparseable
    assert (elm.garbage, elm.truncated, elm.timeouts, elm.errors) == (0, 0, 0, 0)
    return elm


# ---- one back-to-back test on every transport (python-can's shape) ---------------------------

@pytest.mark.parametrize("kind", [*LAYOUTS, "tcp", "pty"])
async def test_the_firmware_driver_runs_unchanged_over_every_transport(kind, emu, tmp_path):
    async with adapter(kind, emu.pty, tmp_path / "air") as (t, sim):
        async with t:
            await exercise(t)
            if sim is not None and isinstance(t, BleTransport):
                # roles found by properties, whatever the UUIDs say (fff0_swapped swaps them)
                svc = LAYOUTS[kind].service
                assert t.layout.service == (svc if isinstance(svc, str) else f"0000{svc:04x}-0000-1000-8000-00805f9b34fb")
                assert t.layout.rx.handle == sim.rx_handle and t.layout.tx.handle == sim.tx_handle
                assert sim.notifications > 10  # replies came in 20-byte fragments


async def test_duplicated_notifications_are_dropped_and_replies_stay_whole(emu, tmp_path):
    async with adapter("fff0", emu.pty, tmp_path / "air", dup_rate=0.3, seed=3) as (t, sim):
        async with t:
            await exercise(t)
        assert sim.duplicated > 0
        assert t.duplicates == sim.duplicated


async def test_an_adapter_that_wants_encryption_is_bonded_once_and_the_bond_kept(emu, tmp_path):
    air = tmp_path / "air"
    async with BleAdapter(emu.pty, air, MAC, "fff0", bond_required=True) as sim:
        first = BleTransport(MAC, backend=SimClient, backend_kwargs={"air": str(air)})
        async with first:
            await exercise(first)
        assert first.paired and sim.refused_unencrypted == 1
        again = BleTransport(MAC, backend=SimClient, backend_kwargs={"air": str(air)})
        async with again:
            await exercise(again)
        # re-encrypted with the kept bond: no second refusal, no new pairing
        assert not again.paired and sim.refused_unencrypted == 1


async def test_a_device_without_a_serial_service_is_refused_by_name(emu, tmp_path):
    from obdsync.direct.ble import pick_layout

    with pytest.raises(TransportError, match="no serial service"):
        pick_layout([])


@pytest.mark.parametrize("spec, kind", [
    ("AA:BB:CC:DD:EE:FF", "ble"), ("ble:aa:bb:cc:dd:ee:ff", "ble"), ("/dev/ttyUSB0", "serial"), ("COM3", "serial"),
    ("192.168.0.10:35000", "tcp"), ("tcp:localhost:35000", "tcp"), ("rfcomm:AA:BB:CC:DD:EE:FF/2", "rfcomm"),
])
def test_an_address_says_which_transport(spec, kind):
    assert classify(spec)[0] == kind


@pytest.mark.parametrize("spec", ["", "car", "192.168.0.10", "AA:BB:CC"])
def test_an_address_that_is_none_is_a_named_error(spec):
    with pytest.raises(TransportError, match="not an adapter address"):
        classify(spec)


def test_the_transports_are_what_the_registry_names():
    assert isinstance(open_transport("127.0.0.1:35000"), TcpTransport)
    assert isinstance(open_transport("/dev/null"), SerialTransport)
    assert isinstance(open_transport(MAC), BleTransport)


def test_ticks_wrap_as_on_the_esp32():
    top = (1 << 30) - 1
    assert mpcompat.ticks_add(top, 1) == 0
    assert mpcompat.ticks_diff(0, top) == 1
    assert mpcompat.ticks_diff(top, 0) == -1


# ---- the logger ------------------------------------------------------------------------------

class Sink:
    """The store's contract: returns the contiguous watermark; can refuse `fail` batches first."""

    def __init__(self, fail: int = 0) -> None:
        self.records: list = []
        self.epochs: set[int] = set()
        self.fail = fail
        self.got = asyncio.Event()

    async def ingest(self, device: str, records: list, *, epoch: int = 0, first_unacked: int | None = None) -> int:
        self.epochs.add(epoch)
        if self.fail:
            self.fail -= 1
            raise OSError("disk full")
        seen = {r.seq for r in self.records}
        self.records += [r for r in records if r.seq not in seen]
        self.device = device
        self.got.set()
        return max(r.seq for r in self.records)

    def kinds(self) -> list[int]:
        return [r.kind for r in self.records]


async def test_the_logger_stores_records_as_a_device_keyed_by_adapter_and_vin(emu, tmp_path):
    async with TcpAdapter(emu.pty) as tcp:
        sink = Sink()
        link = DirectLink(tcp.address, sink, state_file=tmp_path / "direct.json")
        task = asyncio.create_task(link.session())
        try:
            await until(lambda: KIND_SAMPLES in sink.kinds() and KIND_DTC in sink.kinds(), 60, "samples and codes")
        finally:
            link.stop()
            await task
    assert link.device == sink.device == device_id(tcp.address, VIN)
    assert link.info.vin.decode() == VIN
    seqs = [r.seq for r in sink.records]
    assert seqs == list(range(len(seqs)))  # contiguous from 0, nothing twice
    assert link.events[0] == "boot"
    samples = [s for r in sink.records if r.kind == KIND_SAMPLES for s in r.samples]
    assert {0x0C, 0x0D} <= {s[1] for s in samples}
    assert device_id(tcp.address, "OTHERVIN123456789") != link.device  # moved to another car: another device


async def test_a_state_file_of_another_shape_is_a_new_log_not_a_crash(emu, tmp_path):
    """direct.json holding JSON that is no object (a damaged file) starts a new log: records flow
    and the file is rewritten whole; it was an AttributeError that ended every session."""
    state = tmp_path / "direct.json"
    state.write_text("[1, 2]")
    async with TcpAdapter(emu.pty) as tcp:
        sink = Sink()
        link = DirectLink(tcp.address, sink, state_file=state)
        task = asyncio.create_task(link.session())
        try:
            await until(lambda: KIND_SAMPLES in sink.kinds(), 60, "samples")
        finally:
            link.stop()
            await task
    assert link.device in json.loads(state.read_text())[tcp.address.upper()]["devices"]


async def test_a_lost_link_ends_the_session_and_the_next_one_continues_the_sequence(emu, tmp_path):
    async with TcpAdapter(emu.pty) as tcp:
        sink = Sink()
        link = DirectLink(tcp.address, sink, state_file=tmp_path / "direct.json")
        task = asyncio.create_task(link.session())
        await until(lambda: KIND_SAMPLES in sink.kinds(), 60, "samples")
        tcp.drop()
        with pytest.raises(LinkError, match="closed|lost"):
            await asyncio.wait_for(task, 30)
        n = len(sink.records)
        # a new logger process: the sequence and boot counter come from the state file
        link2 = DirectLink(tcp.address, sink, state_file=tmp_path / "direct.json")
        task = asyncio.create_task(link2.session())
        try:
            await until(lambda: len(sink.records) > n + 2, 60, "records of the second session")
        finally:
            link2.stop()
            await task
    seqs = [r.seq for r in sink.records]
    assert seqs == list(range(len(seqs)))
    assert sink.records[-1].boot == sink.records[0].boot + 1
    assert len(sink.epochs) == 1 and 0 not in sink.epochs  # one log, one (random) epoch


async def test_a_lost_state_file_starts_a_new_log_epoch_not_a_collision(emu, tmp_path):
    state = tmp_path / "direct.json"
    async with TcpAdapter(emu.pty) as tcp:
        sink = Sink()
        for want in (1, 2):
            link = DirectLink(tcp.address, sink, state_file=state)
            task = asyncio.create_task(link.session())
            try:
                await until(lambda want=want: len(sink.epochs) >= want, 60, "records of a session")
            finally:
                link.stop()
                await task
            state.unlink()  # the logger's own log lost (a new machine, a wiped home)
    assert len(sink.epochs) == 2


async def test_records_wait_while_the_store_refuses_and_none_is_lost(emu, tmp_path):
    async with TcpAdapter(emu.pty) as tcp:
        sink = Sink(fail=2)
        link = DirectLink(tcp.address, sink, state_file=tmp_path / "direct.json")
        task = asyncio.create_task(link.session())
        try:
            await until(lambda: sink.fail == 0 and len(sink.records) > 4, 60, "the store to take records again")
        finally:
            link.stop()
            await task
    seqs = [r.seq for r in sink.records]
    assert seqs == list(range(len(seqs))) and KIND_GAP not in sink.kinds()
    assert json.loads((tmp_path / "direct.json").read_text())[tcp.address]["devices"][link.device]["next_seq"] \
        == len(seqs)


async def test_an_adapter_reset_is_logged_and_the_adapter_initialised_again(emu, tmp_path):
    with LinkModel(emu.pty, baud=0, latency_s=0.0) as lm:
        sink = Sink()
        link = DirectLink(lm.pty, sink, state_file=tmp_path / "direct.json")
        task = asyncio.create_task(link.session())
        try:
            await until(lambda: KIND_SAMPLES in sink.kinds(), 60, "samples")
            lm.inject("reset")
            await until(lambda: "adapter_reset" in link.events, 60, "the reset event")
            n = sum(1 for k in sink.kinds() if k == KIND_SAMPLES)
            await until(lambda: sum(1 for k in sink.kinds() if k == KIND_SAMPLES) > n + 1, 60, "polling again")
        finally:
            link.stop()
            await task
    assert KIND_EVENT in sink.kinds() and link.elm.resets == 1


async def test_an_adapter_that_is_not_there_is_a_link_error(tmp_path):
    link = DirectLink("127.0.0.1:1", Sink(), state_file=tmp_path / "direct.json")
    with pytest.raises(LinkError, match="cannot connect"):
        await link.session()


# ---- scenarios end to end (a slice here; every scenario on every transport in make soak) -----

# In make test: refuel through the pty (below) and the dtc scenario through BLE behind a v2.1
# clone (the profile matrix, further down; a genuine ELM327 through BLE ran the same scenario
# over the same transport and layout, so it is in make soak with the rest).
SOAK = [(s, t, lay) for s in ("refuel", "theft_overnight", "overheat", "dtc", "weak_battery")
        for t, lay in (("ble", "fff0"), ("ble", "vgate"), ("ble", "18f0"), ("tcp", None), ("pty", None))
        if (s, t) != ("refuel", "pty")]


async def _scenario(name, transport, layout, tmp_path):
    """The scenario's report, checked as tests/test_scenarios_e2e.py checks a dongle's."""
    from hil.direct import run_direct_scenario
    from hil.runner import format_report

    report = await run_direct_scenario(name, transport=transport, layout=layout or "fff0", workdir=tmp_path,
                                       echo=None)
    text = format_report(report)
    assert report.records > 0, text
    assert report.missing == 0 and report.rejected == 0 and report.lost == 0, text
    assert report.contiguous == report.records - 1, text
    for check in report.checks:
        assert check.ok, f"{check.expect.type}: found {check.found}\n{text}"


@pytest.mark.soak
@pytest.mark.parametrize("name, transport, layout", SOAK)
async def test_every_scenario_through_every_direct_transport(name, transport, layout, tmp_path):
    await _scenario(name, transport, layout, tmp_path)


@pytest.mark.slow
async def test_polling_stops_while_the_engine_is_off_and_resumes_with_it(tmp_path, monkeypatch):
    # refuel: 120 s driving, 180 s parked with the engine off (a 30 L fill), 120 s driving (sim time).
    answers = Answers().install(monkeypatch)
    await _scenario("refuel", "pty", None, tmp_path)
    # Engine off is decided 60 s after the engine stops (PowerConfig.off_after_ms), read from ATRV
    # every 5 s: from 210 s on, nothing but ATRV may reach the car until the engine starts at 300 s.
    asked = [(t, req) for _v, t, req, _r in answers.log]
    assert [x for x in asked if 210 <= x[0] < 300] == []
    assert any(t < 120 for t, _ in asked) and any(t >= 300 for t, _ in asked)


# ---- the adapter/ECU profile matrix (hil/adapter.py) through direct mode ----------------------

async def _profile(scenario: str, profile: str, transport: str, tmp_path) -> None:
    from hil import adapter
    from hil.direct import run_direct_scenario
    from hil.runner import format_report
    from hil.scenario import load

    prof = adapter.load_profile(profile)
    sc = load(scenario)
    # slow legacy buses at most 2x, as tests/test_adapter_scenarios.py runs them behind a dongle
    report = await run_direct_scenario(sc if prof.is_can else sc.at_most(2), transport=transport, workdir=tmp_path,
                                       echo=None, adapter=profile)
    text = format_report(report)
    assert report.records > 0 and report.samples > 0, text
    assert report.missing == 0 and report.rejected == 0 and report.contiguous == report.records - 1, text
    for c in report.checks:
        assert c.ok, f"{profile}: {c.expect.type}: found {c.found}\n{text}"
    if scenario == "dtc":
        new = {e.values["code"] for e in report.events if e.type == "dtc_new"}
        for ecu in prof.ecus:
            assert set(ecu.stored_dtcs) <= new, f"{profile}: {ecu.name}'s codes never reported\n{text}"


@pytest.mark.slow
async def test_a_clone_without_atrv_through_ble_gives_the_dtc_scenarios_events(tmp_path):
    # "v2.1" clone: answers ATRV and ATDPN with OK, so the power rules read PID 0x42 instead
    await _profile("dtc", "v21_clone", "ble", tmp_path)


def _profiles() -> list[str]:
    from hil import adapter

    return adapter.names()


@pytest.mark.soak
@pytest.mark.parametrize("scenario", ["dtc", "refuel"])
@pytest.mark.parametrize("profile", _profiles())
async def test_core_scenarios_behind_every_profile_through_direct_mode(scenario, profile, tmp_path):
    await _profile(scenario, profile, "pty", tmp_path)
