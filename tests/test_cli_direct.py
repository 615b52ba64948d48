"""The CLI with an ELM327 adapter of the driver's own: scan tells adapters from dongles, add
takes every address form, run logs the adapter as a device, status / dtc / vin read it back."""

from __future__ import annotations

import asyncio
import json

import pytest
from e2e import Home, query, wait_until

from hil.adapter_links import BleAdapter
from hil.emulator import Emulator
from hil.linkmodel import LinkModel
from obdsync.direct.logger import device_id

VIN = "WVWZZZ1KZAW386754"  # the demo scenario's


@pytest.fixture
def home(tmp_path):
    h = Home(tmp_path / "home", tmp_path / "air")
    yield h
    h.close()


def test_add_takes_each_address_form_and_refuses_nonsense_by_name(home):
    for spec in ("AA:BB:CC:DD:EE:FF", "/dev/ttyUSB0", "192.168.0.10:35000", "rfcomm:AA:BB:CC:DD:EE:01/1"):
        p = home.cli("add", spec)
        assert p.returncode == 0, p.stderr
    p = home.cli("add", "my car")
    assert p.returncode != 0 and "not an adapter address" in p.stderr
    reg = json.loads((home.config_home / "obdsync" / "adapters.json").read_text())["adapters"]
    assert {k: v["kind"] for k, v in reg.items()} == {
        "AA:BB:CC:DD:EE:FF": "ble", "/dev/ttyUSB0": "serial", "192.168.0.10:35000": "tcp",
        "rfcomm:AA:BB:CC:DD:EE:01/1": "rfcomm"}
    p = home.cli("unpair", "/dev/ttyUSB0")
    assert p.returncode == 0 and "removed serial adapter" in p.stdout, p.stderr
    reg = json.loads((home.config_home / "obdsync" / "adapters.json").read_text())["adapters"]
    assert "/dev/ttyUSB0" not in reg and len(reg) == 3


async def test_scan_lists_an_elm327_ble_adapter_and_says_so(home, tmp_path):
    with Emulator("demo") as emu:
        async with BleAdapter(emu.pty, tmp_path / "air", "0C:EE:E7:00:00:09", "vgate"):
            proc = await asyncio.create_subprocess_exec(
                "obdsync", "scan", "--timeout", "1", env=home.env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, executable=__import__("e2e").OBDSYNC)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    line = next(ln for ln in out.decode().splitlines() if ln.startswith("0C:EE:E7:00:00:09"))
    assert "IOS-Vlink" in line and "ELM327 BLE" in line and "obdsync add 0C:EE:E7:00:00:09" in line


def test_run_logs_an_added_adapter_as_a_device_and_status_and_dtc_read_it(home):
    with Emulator("demo") as emu, LinkModel(emu.pty, baud=0, latency_s=0.0) as link:
        assert home.cli("add", link.pty, "--name", "my adapter").returncode == 0
        d = home.run()
        m = d.wait_for(r"adapter .* device ([0-9a-f]{16}), VIN (\w+)", 60)
        dev = m.group(1)
        assert dev == device_id(link.pty, VIN) and m.group(2) == VIN
        wait_until(lambda: home.db.exists() and query(home.db, "SELECT COUNT(*) FROM records r JOIN devices d"
                                                      " ON r.device=d.num WHERE d.id=?", (dev,))[0][0] > 3,
                   60, "records of the adapter's device")
        p = home.cli("vin", "--device", dev, "--live")  # through the running daemon's door
        assert p.returncode == 0 and VIN in p.stdout, p.stderr
        assert d.terminate() == 0
    p = home.cli("status", "--json")
    assert p.returncode == 0, p.stderr
    st = {x["device"]: x for x in json.loads(p.stdout)["devices"]}[dev]
    assert st["vin"] == VIN and st["records"] > 3 and st["missing"] == 0
    p = home.cli("dtc", "read", "--device", dev)
    assert p.returncode == 0, p.stderr
    p = home.cli("check", "--device", dev, "--json")  # the health check reads the adapter's data as a dongle's
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)
