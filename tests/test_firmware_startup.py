"""main.py's boot code (dongle.startup: safe boot, the wake, config.json, the radio, the
Dongle's construction) runs once and is unloaded before the dongle runs: on a board running
.mpy a loaded module keeps its bytecode in the GC heap (~3 KB here), and main.py itself is
compiled from source into the heap, so it holds only what runs for the whole drive
(hil/README.md, "The memory budget"). On the real interpreter, the board tree's main.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hil import mpy
from hil.build_firmware import sim_tree

HERE = Path(__file__).parent / "mpy"

pytestmark = pytest.mark.usefixtures("micropython")


def test_the_boot_code_is_unloaded_before_the_dongle_runs(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "config.json").write_text('{"secret": "%s", "device_id": "0011223344556677"}' % ("11" * 32))
    tree = sim_tree()
    from hil.blesim import shim

    # A pty for the ELM327's line: nothing answers, and nothing needs to before run().
    master, slave = os.openpty()
    try:
        p = subprocess.run(mpy.argv(HERE / "startup_unload.py", str(tree / "main.py"), heapsize="1M"),
                           capture_output=True, text=True, timeout=60,
                           env=mpy.env(simulated_ble=False, extra=[shim.module_dir(), tree],
                                       OBDSYNC_FLASH=str(flash), OBDSYNC_SIM_AIR=str(tmp_path / "air"),
                                       OBDSYNC_UART=os.ttyname(slave)))
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 0, p.stdout + p.stderr
    looked = json.loads(next(x for x in p.stdout.splitlines() if x.startswith("{")))
    assert looked["modules"] == [] and looked["attribute"] is False, p.stdout
    assert looked["cost"] > 2048, looked  # what stays in the heap for the drive if it is not unloaded
