"""The ELM327-emulator harness and the sim clock it serves: raw ELM327 exchanges on the
pty, python-OBD 0.7.3 (a client nobody here wrote) reading the scenario's values through
the link model, the CLI process life cycle, and the clock on both interpreters."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import tty

import pytest

from hil import mpy, scenario
from hil.emulator import Emulator
from hil.linkmodel import LinkModel
from hil.simclock import ClockSpecError, Schedule, SimClock

ROOT = mpy.ROOT


# --- helpers -------------------------------------------------------------------------------

class Port:
    """A raw serial client on a pty: send a command, read up to the prompt."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)

    def cmd(self, text: str, timeout: float = 5.0) -> bytes:
        os.write(self.fd, text.encode() + b"\r")
        return self.read_prompt(timeout)

    def read_prompt(self, timeout: float = 5.0) -> bytes:
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(b">"):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                buf += os.read(self.fd, 4096)
        return buf

    def close(self):
        os.close(self.fd)


def lines(reply: bytes) -> list[str]:
    return [x.strip() for x in reply.decode(errors="replace").rstrip(">").split("\r") if x.strip()]


def start_cli(args: list[str], timeout: float = 20.0, **kw) -> tuple[subprocess.Popen, list[str]]:
    """Start a `python -m …` child; return it and its first stdout line(s) read so far."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, **kw)
    out = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in out and time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
    if b"\n" not in out:
        proc.kill()
        proc.wait()
        pytest.fail(f"{args} printed no first line: {proc.stderr.read().decode()}")
    return proc, out.decode().splitlines()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for f in (proc.stdout, proc.stderr):
        if f:
            f.close()


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has stopped running
    except FileNotFoundError:
        return True


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return gone(pid)


@pytest.fixture
def emu():
    with Emulator("dtc") as e:
        yield e


@pytest.fixture
def port(emu):
    p = Port(emu.pty)
    yield p
    p.close()


# --- the sim clock ---------------------------------------------------------------------------

def test_schedule_is_piecewise_linear_in_real_time():
    s = Schedule(1000.0, [(60, 1), (3600, 600), (10, 2)])
    assert s.sim_ms(1000.0) == 0
    assert s.sim_ms(1030.0) == 30_000
    assert s.sim_ms(1060.0) == 60_000
    assert s.sim_ms(1063.0) == 60_000 + 1_800_000
    assert s.sim_ms(1066.0) == 3_660_000
    assert s.sim_ms(1067.0) == 3_662_000
    assert s.sim_ms(1100.0) == 3_660_000 + 68_000  # past the end: the last speedup goes on
    assert s.sim_ms(990.0) == -10_000              # before the epoch: real speed
    assert s.total_sim_s == 3670 and s.total_real_s == pytest.approx(71)
    for sim in (0, 59.5, 61, 1800, 3669):
        assert s.sim_s(s.real_at(sim)) == pytest.approx(sim, abs=0.002)


def test_schedule_round_trips_through_its_environment_string():
    s = Schedule(1718000000.123456, [(60, 1), (43200, 600), (0.5, 0.25)])
    spec = s.encode()
    assert spec == "v1;1718000000123456;60000@1000,43200000@600000,500@250"
    t = Schedule.decode(spec)
    for real in (1718000000.0, 1718000030.5, 1718000100.0, 1718000200.0):
        assert t.sim_ms(real) == s.sim_ms(real)


@pytest.mark.parametrize("spec", ["", "v2;1;1@1", "v1;x;1@1", "v1;1;1@0", "v1;1;-5@1000", "v1;1"])
def test_bad_clock_strings_are_refused(spec):
    with pytest.raises(ClockSpecError):
        Schedule.decode(spec)


def test_micropython_clock_computes_the_same_ms_and_does_not_allocate(tmp_path, micropython):
    epoch = int(time.time()) - 120  # recent, as in a run: the arithmetic stays in small ints
    s = Schedule(epoch + 0.25, [(20, 1), (600, 30), (28800, 1440), (120, 12)])
    probes = [(epoch + d) * 1_000_000 + us for d, us in
              ((-10, 0), (0, 250_000), (10, 1), (25, 123_456), (60, 0), (79, 999_999), (99, 0), (3000, 0))]
    script = tmp_path / "clock.py"
    script.write_text(
        "import gc, json, sys\n"
        "from simclock import SimClock\n"
        f"c = SimClock({s.encode()!r}, now_us={probes[0]})\n"
        f"print(json.dumps([c.sim_ms_at_us(p) for p in {probes!r}]))\n"
        "def spin(n):\n"  # in a function: the loop itself allocates nothing
        "    for _ in range(n):\n"
        "        c.ms()\n"
        "before = 0\n"  # a new global would grow the module dict inside the measurement
        "spin(1); gc.collect(); before = gc.mem_alloc()\n"
        "spin(200)\n"
        "print(gc.mem_alloc() - before)\n"
        "print(c.ms() >= 0)\n"
        "print(abs(c.speedup_milli() - 12000) == 0)\n"
    )
    proc = mpy.run(script, heapsize=None)
    assert proc.returncode == 0, proc.stderr
    got, alloc, nonneg, speed = proc.stdout.decode().splitlines()
    assert json.loads(got) == [s.sim_ms_at_us(p) for p in probes]
    assert int(alloc) == 0
    assert nonneg == "True" and speed == "True"  # the run is long past its end: last speedup


def test_micropython_clock_refuses_a_bad_string(tmp_path, micropython):
    script = tmp_path / "bad.py"
    script.write_text("from simclock import SimClock, ClockSpecError\n"
                      "try:\n    SimClock('v1;zz;1@1')\nexcept ClockSpecError as e:\n    print('refused', e)\n")
    proc = mpy.run(script, heapsize=None)
    assert proc.stdout.decode().startswith("refused"), proc.stdout + proc.stderr


def test_cpython_simclock_counts_from_its_construction():
    s = Schedule(time.time() - 5, [(100, 10)])
    c = SimClock(s)
    assert 0 <= c.ms() < 50_000


# --- raw ELM327 exchanges ------------------------------------------------------------------

def test_reset_banner_search_and_a_clean_reply(port):
    assert lines(port.cmd("ATZ")) == ["ATZ", "ELM327 v1.5"]
    assert lines(port.cmd("ATE0")) == ["ATE0", "OK"]
    first = lines(port.cmd("0100"))
    assert first[0] == "SEARCHING..." and first[1].startswith("41 00 ")
    assert lines(port.cmd("0100"))[0].startswith("41 00 ")  # searched once only


def test_replies_follow_the_vehicle_and_the_format_settings(emu, port):
    port.cmd("ATE0")
    port.cmd("0100")
    rpm_line = lines(port.cmd("010C"))[0].split()
    assert rpm_line[:2] == ["41", "0C"]
    truth = emu.vehicle.truth(emu.sim_s())
    assert abs((int(rpm_line[2], 16) * 256 + int(rpm_line[3], 16)) / 4 - truth.rpm) < 200
    volts = lines(port.cmd("ATRV"))[0]
    assert volts.endswith("V") and abs(float(volts[:-1]) - emu.vehicle.battery_volts(emu.sim_s())) < 0.2
    assert lines(port.cmd("ATH1")) == ["OK"]
    vin = lines(port.cmd("0902"))
    assert [x.split()[:2] for x in vin] == [["7E8", "10"], ["7E8", "21"], ["7E8", "22"]]
    payload = b"".join(bytes.fromhex("".join(x.split()[2:])) for x in vin)[1:21]  # after the length byte
    assert payload[3:].decode() == emu.vehicle.params.vin
    assert lines(port.cmd("ATS0")) == ["OK"]
    assert lines(port.cmd("010D"))[0].startswith("7E803410D")


def test_multi_pid_request_is_one_iso_tp_message_like_a_can_ecu(port):
    port.cmd("ATE0")
    port.cmd("0100")
    reply = lines(port.cmd("010C0D05"))
    assert reply[0] == "008" and reply[1].startswith("0: 41 0C") and reply[2].startswith("1: 05")
    assert lines(port.cmd("010C0D051")) [0] == "008"  # with the response-count digit
    assert lines(port.cmd("01" + "0C" * 7)) == ["?"]  # more than 7 data bytes


def test_mode_04_clears_the_codes_the_dtc_phase_set(port, emu):
    emu.clock = scenario.load("dtc").schedule(time.time() - 14)  # inside the dtc phase, past its code
    port.cmd("ATE0")
    port.cmd("0100")
    assert lines(port.cmd("03")) == ["43 01 03 01"]
    assert lines(port.cmd("0101"))[0].startswith("41 01 81")
    assert lines(port.cmd("04")) == ["44"]
    assert lines(port.cmd("03")) == ["43 00"]
    assert lines(port.cmd("0A")) == ["4A 01 03 01"]


def test_parked_car_answers_no_data_then_unable_to_connect_but_atrv():
    scn = scenario.load("theft_overnight")
    # the vehicle only sees sim time: a slow clock puts us 60 s after engine off
    # (bus awake, ignition off), then 660 s (asleep after bus_sleep_s = 600)
    def clock(after_off_s):
        return Schedule(time.time() - 10 - after_off_s / 60, [(100, 10), (10800, 60)])

    with Emulator(scn, clock=clock(60)) as e:
        p = Port(e.pty)
        try:
            p.cmd("ATE0")
            assert lines(p.cmd("010C")) == ["SEARCHING...", "NO DATA"]
            e.clock = clock(660)
            assert lines(p.cmd("010C")) == ["UNABLE TO CONNECT"]
            assert lines(p.cmd("ATRV"))[0].startswith("12.")
        finally:
            p.close()


# --- python-OBD 0.7.3 through the link model -------------------------------------------------

@pytest.fixture(scope="module")
def obd_session():
    obd = pytest.importorskip("obd")
    scn = scenario.load("dtc")
    # Inside the dtc phase after its code appeared (130 s of sim time: 60 of city, then the
    # code at 60 into the phase), engine warm; from there the phase's last 80 s run at 4x,
    # so python-OBD's connect (~4 s) and queries never cross into the idle phase.
    e = Emulator(scn, clock=Schedule(time.time() - 1, [(130, 130), (80, 4), (60, 20)])).start()
    link = LinkModel(e.pty, latency_s=0.01).start()
    conn = None
    try:
        conn = obd.OBD(portstr=link.pty, baudrate=38400, fast=False, timeout=2)
        yield obd, conn, e, link
    finally:
        if conn is not None:
            conn.close()
        link.close()
        e.close()


def test_python_obd_connects_and_reads_the_scenario_values(obd_session):
    obd, conn, e, _ = obd_session
    assert conn.status() == obd.OBDStatus.CAR_CONNECTED
    assert conn.protocol_id() == "6"
    c = obd.commands
    t0 = e.sim_s()
    got = {cmd.name: conn.query(cmd).value for cmd in (c.RPM, c.SPEED, c.COOLANT_TEMP, c.FUEL_LEVEL, c.ELM_VOLTAGE)}
    truth = e.vehicle.truth((t0 + e.sim_s()) / 2)
    assert got["RPM"].magnitude == pytest.approx(truth.rpm, abs=400)
    assert got["SPEED"].magnitude == pytest.approx(truth.speed_kmh, abs=15)
    assert got["COOLANT_TEMP"].magnitude == pytest.approx(truth.coolant_c, abs=2)
    assert got["FUEL_LEVEL"].magnitude == pytest.approx(truth.fuel_pct, abs=5)
    assert got["ELM_VOLTAGE"].magnitude == pytest.approx(14.2, abs=0.2)


def test_python_obd_reads_vin_dtcs_and_supported_pids(obd_session):
    obd, conn, e, _ = obd_session
    c = obd.commands
    assert bytes(conn.query(c.VIN).value).decode() == e.vehicle.params.vin
    assert [code for code, _ in conn.query(c.GET_DTC).value] == ["P0301"]
    assert conn.query(c.STATUS).value.MIL is True
    supported = {cmd.pid for cmd in conn.supported_commands if cmd.mode == 1}
    modelled = set(e.vehicle.params.supported_pids)
    assert modelled & set(range(1, 0x60)) <= supported  # python-OBD knows PIDs up to 0x5F
    assert conn.query(c.FUEL_RATE).value.magnitude == pytest.approx(e.vehicle.truth(e.sim_s()).fuel_rate_lph, abs=3)


# --- the CLI process ------------------------------------------------------------------------

def test_cli_prints_pty_and_clock_serves_and_stops_on_sigterm():
    proc, first = start_cli(["-m", "hil.emulator", "dtc"])
    try:
        deadline = time.monotonic() + 10
        while len(first) < 2 and time.monotonic() < deadline:
            first += proc.stdout.readline().decode().splitlines()
        pty_path, clock = first[0], first[1]
        assert pty_path.startswith("/dev/pts/")
        assert clock.startswith("OBDSYNC_SIM_CLOCK=v1;")
        Schedule.decode(clock.split("=", 1)[1])
        p = Port(pty_path)
        try:
            assert lines(p.cmd("ATI")) == ["ATI", "ELM327 v1.5"]
        finally:
            p.close()
    finally:
        stop(proc)
    assert proc.returncode == 0
    assert gone(proc.pid)


def test_cli_takes_the_clock_it_is_given_and_refuses_a_bad_one():
    spec = Schedule(1_000_000.0, [(10, 1)]).encode()
    proc, first = start_cli(["-m", "hil.emulator", "city", "--clock", spec])
    stop(proc)
    assert first[0].startswith("/dev/pts/")
    bad = subprocess.run([sys.executable, "-m", "hil.emulator", "city", "--clock", "nope"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "OBDSYNC_SIM_CLOCK" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "hil.emulator", "no_such"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "no scenario" in bad.stderr


def test_orphaned_cli_exits_when_its_parent_dies():
    # a parent that starts the emulator, reports its pid, then is killed
    code = ("import subprocess, sys\n"
            "p = subprocess.Popen([sys.executable, '-m', 'hil.emulator', 'city'], stdout=subprocess.PIPE)\n"
            "p.stdout.readline()\n"
            "print(p.pid, flush=True)\n"
            "import time\n"
            "time.sleep(120)\n")
    parent, first = start_cli(["-c", code])
    child = int(first[0])
    try:
        parent.kill()
        parent.wait()
        assert wait_gone(child), "the orphaned emulator is still running"
    finally:
        stop(parent)
        if not gone(child):
            os.kill(child, signal.SIGKILL)


def test_a_multi_pid_request_first_after_reset_still_searches(port, emu):
    port.cmd("ATE0")
    before = emu.requests
    reply = lines(port.cmd("010C0D05"))
    assert reply[0] == "SEARCHING..." and reply[1] == "008"
    assert emu.requests == before + 1  # the vehicle was asked once
