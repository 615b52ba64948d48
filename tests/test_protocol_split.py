"""protocol/ is split by who runs it: the firmware imports the encoders and what both sides
need, never the daemon's decoders (protocol.record_decode, info_decode, control_central).
On a board a module imported from .mpy keeps its bytecode in the GC heap, so a decoder
the firmware loaded would cost it heap for nothing (the live-heap budget of `make bench`,
figure "board")."""

from __future__ import annotations

import pytest

from hil import mpy
from hil.bench.board import DAEMON_ONLY
from hil.blesim import shim


def firmware_modules() -> list[str]:
    return sorted("dongle." + p.stem for p in (mpy.FIRMWARE / "dongle").glob("*.py") if p.stem != "__init__")


@pytest.mark.usefixtures("micropython")
def test_the_firmware_loads_no_daemon_only_protocol_module(tmp_path):
    names = firmware_modules()
    assert "dongle.app" in names and "dongle.flashlog" in names
    proc = mpy.run(mpy.ROOT / "tests" / "mpy" / "fw_imports.py", *names, heapsize="1M",
                   MICROPYPATH=mpy.module_path(extra=[shim.module_dir()]), OBDSYNC_SIM_AIR=str(tmp_path))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    loaded = set(proc.stdout.decode().split())
    # the encoders the firmware imports with its modules (protocol.info and uuids are imported
    # for a moment at boot and unloaded: tests/test_firmware_startup.py)
    assert {"protocol.record", "protocol.control", "protocol.frames", "protocol.auth"} <= loaded, loaded
    assert not loaded & set(DAEMON_ONLY), loaded & set(DAEMON_ONLY)


def test_the_daemon_only_modules_exist():
    # The set above names real modules: a rename would leave the check above vacuous.
    for name in DAEMON_ONLY:
        assert (mpy.ROOT / "protocol" / (name.split(".")[1] + ".py")).is_file(), name
