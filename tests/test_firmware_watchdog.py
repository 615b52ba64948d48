"""The board's failure modes on the unix port: a watchdog that only progress feeds (a stuck
task resets the dongle; the flash log survives the reset), the safe-boot path, and no flash
writes inside the radio's IRQ."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hil import mpy
from hil.build_firmware import cross_compile, sim_tree
from protocol.record_decode import decode_record

HERE = Path(__file__).parent / "mpy"
KEY = bytes(range(32))
# The simulated watchdog's (the board's is config.json "wdt_ms", 30 s): long enough that a
# loaded machine starving the process is not a reset, short enough to keep the test quick.
TIMEOUT_MS = 3000

pytestmark = pytest.mark.usefixtures("micropython")


@pytest.fixture(scope="module")
def lib(tmp_path_factory, micropython):
    """The log, the watchdog, the protocol modules and hil's WDT as .mpy files, as on a board."""
    out = tmp_path_factory.mktemp("wdt-lib")
    for rel in ["protocol/__init__.py", "protocol/errors.py", "protocol/auth.py", "protocol/channels.py",
                "protocol/record.py", "protocol/sha256.py", "firmware/dongle/__init__.py",
                "firmware/dongle/persist.py", "firmware/dongle/flashlog.py", "firmware/dongle/flashlog_boot.py",
                "firmware/dongle/watchdog.py"]:
        src = mpy.ROOT / rel
        (out / src.parent.name).mkdir(exist_ok=True)
        cross_compile(src, out / src.parent.name / (src.stem + ".mpy"))
    cross_compile(mpy.ROOT / "hil" / "mpy" / "simwdt.py", out / "simwdt.mpy")
    return out


def boot(lib: Path, flash: Path, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(mpy.argv(HERE / "wdt_hang.py", str(flash), mode, str(TIMEOUT_MS), heapsize="256K"),
                          capture_output=True, text=True, timeout=120,
                          env=mpy.env(simulated_ble=False, extra=[lib], sources=False))


def records(flash: Path) -> list[int]:
    seqs = []
    for seg in sorted(flash.glob("*.seg")):
        data, i = seg.read_bytes(), 0
        while i + 6 <= len(data):
            n = int.from_bytes(data[i:i + 2], "big")
            if i + 6 + n > len(data):
                break
            seqs.append(decode_record(data[i + 6:i + 6 + n], KEY).seq)
            i += 6 + n
    return seqs


def test_a_dongle_that_makes_progress_is_never_reset(lib, tmp_path):
    p = boot(lib, tmp_path / "log", "healthy")
    assert p.returncode == 0 and "wdt reset" not in p.stdout and p.stdout.rstrip().endswith("exit"), p.stdout[-500:]


@pytest.mark.parametrize("mode", ["stuck", "spin"])
def test_a_stuck_task_resets_the_dongle_and_the_log_survives_it(lib, tmp_path, mode):
    flash = tmp_path / "log"
    p = boot(lib, flash, mode)
    assert p.returncode == -9, (p.returncode, p.stdout[-500:], p.stderr[-500:])  # reset: killed, not exited
    assert "wdt reset" in p.stdout and "exit" not in p.stdout
    flushed = max(int(x.split()[1]) for x in p.stdout.splitlines() if x.startswith("flushed "))
    assert flushed == 19  # all 20 records were flushed before the hang ...
    assert records(flash) == list(range(20))  # ... and are on flash after the reset
    # and the next boot goes on after them
    again = boot(lib, flash, "resume")
    assert again.returncode == 0, again.stdout[-500:]
    first = int(next(x for x in again.stdout.splitlines() if x.startswith("appended ")).split()[1])
    assert first >= flushed + 1


def test_a_safeboot_flag_file_skips_main_and_leaves_the_radio_off(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "safeboot").write_text("")
    air = tmp_path / "air"
    tree = sim_tree()
    from hil.blesim import shim

    p = subprocess.run(mpy.argv(tree / "main.py"), capture_output=True, text=True, timeout=60,
                       env=mpy.env(simulated_ble=False, extra=[shim.module_dir(), tree], OBDSYNC_FLASH=str(flash),
                                   OBDSYNC_SIM_AIR=str(air), OBDSYNC_UART="/nonexistent"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == "safe boot (flag file safeboot): main.py stops here"
    assert not air.exists()  # the radio never came up (no config.json was even needed)


def test_a_unix_boot_without_its_uart_stops_with_a_named_error(tmp_path):
    """The unix port's main.py takes the ELM327's pty from OBDSYNC_UART: unset, it says so (it
    opened None and failed with a TypeError deep in dongle.uart before)."""
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "config.json").write_text('{"secret": "%s", "device_id": "0011223344556677"}' % ("11" * 32))
    tree = sim_tree()
    from hil.blesim import shim
    from hil.rig import heapsize

    # The rig's heap (the board's budget plus the code's cost here): the firmware gets as far as
    # it would on a board before it looks for its UART.
    p = subprocess.run(mpy.argv(tree / "main.py", heapsize=heapsize(tree)), capture_output=True, text=True,
                       timeout=60, env=mpy.env(simulated_ble=False, extra=[shim.module_dir(), tree],
                                               OBDSYNC_FLASH=str(flash), OBDSYNC_SIM_AIR=str(tmp_path / "air")))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "OBDSYNC_UART is not set" in p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr


def test_bonding_keys_reach_flash_outside_the_irq(run_mpy_json, tmp_path):
    """The pairing IRQ runs on NimBLE's task (~5 KB of stack on the board): dongle.bonds
    keeps its file write for micropython.schedule, or for flush() when the queue is full."""
    cases = dict(run_mpy_json("bonds_irq.py", str(tmp_path)))
    assert cases["scheduled"] == {"in_irq": {"file": False, "get": True, "scheduled": 1},
                                  "after": {"file": True, "reloaded": True}}
    assert cases["queue_full"] == {"in_irq": False, "after_flush": True}
