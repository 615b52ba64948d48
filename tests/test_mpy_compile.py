"""Everything that runs on the dongle compiles with mpy-cross: MicroPython's compiler
rejects some of what CPython accepts, and the board holds .mpy files. Compiled without
-march, as a user's plain `mpy-cross` or `mip` does: the firmware is arch-neutral bytecode
(viper/native code would be refused there with "invalid arch")."""

from __future__ import annotations

import pytest

from hil import mpy
from hil.build_firmware import cross_compile

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
