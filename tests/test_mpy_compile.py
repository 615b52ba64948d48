"""Everything that runs on the dongle compiles with mpy-cross: MicroPython's compiler
rejects some of what CPython accepts, and the board holds .mpy files. For the test
interpreter's architecture and, what goes to the board, for the ESP32's (xtensawin):
native functions are machine code for one of them."""

from __future__ import annotations

import pytest

from hil import mpy
from hil.build_firmware import BOARD_ARCH, build, cross_compile, native_arch, sim_tree

# firmware/ and protocol/ go to the board; hil/mpy/ stands in for board modules on the unix port.
ON_DEVICE = ("firmware", "protocol", "hil/mpy")
SOURCES = sorted(p for d in ON_DEVICE for p in (mpy.ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def test_the_protocol_modules_are_all_there():
    names = {p.name for p in SOURCES if p.parent.name == "protocol"}
    assert {"record.py", "frames.py", "control.py", "auth.py", "info.py", "channels.py", "uuids.py",
            "errors.py", "__init__.py"} <= names


@pytest.mark.parametrize("src", SOURCES, ids=[str(p.relative_to(mpy.ROOT)) for p in SOURCES])
def test_compiles_with_mpy_cross(src, tmp_path):
    out = tmp_path / (src.stem + ".mpy")
    assert cross_compile(src, out).stat().st_size > 0
    if not src.is_relative_to(mpy.ROOT / "hil"):
        assert cross_compile(src, tmp_path / "board.mpy", arch=BOARD_ARCH).stat().st_size > 0


def mpy_arch(path) -> int:
    """The native architecture number in a .mpy header (0: bytecode only, runs anywhere)."""
    return (path.read_bytes()[2] >> 2) & 0x2F


def test_sealing_is_machine_code_for_the_board_and_for_the_test_interpreter(tmp_path):
    # protocol.record's seal is viper code (its per-byte loops: ~10 ms of the board's CPU
    # per record in bytecode); the rest of the firmware is bytecode, arch-neutral.
    src = mpy.ROOT / "protocol" / "record.py"
    assert mpy_arch(cross_compile(src, tmp_path / "board.mpy", arch=BOARD_ARCH)) == 10  # MP_NATIVE_ARCH_XTENSAWIN
    here = {"x86": 1, "x64": 2}[native_arch(mpy.interpreter())]
    assert mpy_arch(cross_compile(src, tmp_path / "here.mpy")) == here
    assert mpy_arch(cross_compile(mpy.ROOT / "protocol" / "frames.py", tmp_path / "frames.mpy", arch=BOARD_ARCH)) == 0


def test_the_board_tree_holds_xtensa_machine_code(tmp_path):
    # `make firmware` (and `obdsync provision`): what a board loads.
    board = build(tmp_path / "board")
    assert mpy_arch(board / "protocol" / "record.mpy") == 10
    assert {mpy_arch(p) for p in board.rglob("*.mpy") if p.name != "record.mpy"} == {0}


def test_the_simulation_tree_holds_the_interpreters_machine_code(micropython):
    # What the rig runs on this interpreter: a tree per arch, native code runs only on its own.
    here = {"x86": 1, "x64": 2}[native_arch(micropython)]
    assert mpy_arch(sim_tree() / "protocol" / "record.mpy") == here
