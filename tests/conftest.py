"""Shared fixtures. Keep each one small and say what it is for."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest

from hil import mpy
from hil.build_firmware import cross_compile

TESTS = Path(__file__).resolve().parent
MPY_TESTS = TESTS / "mpy"  # scripts that run on MicroPython (some also import on CPython)


# --- MicroPython: the 64-bit PyPI build and the 32-bit one (the ESP32's word size) --------

MICROPYTHONS = ("mpy64", "mpy32")
_USER_CHOICE = os.environ.get(mpy.INTERPRETER_ENV)  # a run pinned to one build by hand stays so


def mpy32_missing() -> str | None:
    """Why the 32-bit MicroPython cannot run here, or None."""
    if not mpy.MPY32.exists():
        return (f"no 32-bit MicroPython at {mpy.MPY32.relative_to(mpy.ROOT)}: `make mpy32` builds it "
                "from ../shared/vendor (MPY_SRC=...) with gcc-multilib")
    return None


def require_or_skip(reason: str) -> None:
    """Skip, saying why; in CI (CI=true) what cannot run is a failure instead."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("CI must run this: " + reason)
    pytest.skip(reason)


@pytest.fixture(scope="session", params=MICROPYTHONS)
def micropython(request) -> str:
    """A test that runs firmware or protocol/ on MicroPython takes this fixture (or
    `@pytest.mark.usefixtures("micropython")`) and runs once per build: every process it
    starts through hil.mpy, the rig's dongles too, gets that interpreter (via the
    environment). Session-scoped, so module fixtures that run MicroPython (a heap probe)
    depend on it and are made per build."""
    if request.param == "mpy32":
        why = mpy32_missing()
        if why:
            require_or_skip(why)
        path = str(mpy.MPY32)
    else:
        path = mpy.pypi_interpreter()
    old = os.environ.get(mpy.INTERPRETER_ENV)
    os.environ[mpy.INTERPRETER_ENV] = path
    yield path
    if old is None:
        os.environ.pop(mpy.INTERPRETER_ENV, None)
    else:
        os.environ[mpy.INTERPRETER_ENV] = old


@pytest.fixture(autouse=True)
def _default_micropython(request, monkeypatch):
    """A test that does not ask for `micropython` runs the default build, whichever one the
    session fixture left selected."""
    if "micropython" not in request.fixturenames:
        if _USER_CHOICE is None:
            monkeypatch.delenv(mpy.INTERPRETER_ENV, raising=False)
        else:
            monkeypatch.setenv(mpy.INTERPRETER_ENV, _USER_CHOICE)


# --- protocol/ on both interpreters -------------------------------------------------------

@pytest.fixture(scope="session")
def protocol_vectors_path() -> Path:
    return TESTS / "vectors" / "protocol.json"


@pytest.fixture(scope="session")
def protocol_vectors(protocol_vectors_path) -> dict:
    return json.loads(protocol_vectors_path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def mpy_helpers():
    """Import a module of tests/mpy on CPython (the code both interpreters share)."""
    sys.path.insert(0, str(MPY_TESTS))
    yield importlib.import_module
    sys.path.remove(str(MPY_TESTS))


@pytest.fixture(scope="session")
def protocol_mpy(tmp_path_factory) -> Path:
    """protocol/ compiled with mpy-cross, as the board holds it: importing the sources
    would compile them on the device's heap, which does not fit in 64K."""
    out = tmp_path_factory.mktemp("mpy") / "protocol"
    out.mkdir()
    for src in sorted((mpy.ROOT / "protocol").glob("*.py")):
        cross_compile(src, out / (src.stem + ".mpy"))
    return out.parent


@pytest.fixture(scope="session")
def run_mpy_json():
    """Run a tests/mpy script on MicroPython; return its stdout as parsed JSON lines.

    The script must print ["end", null] last, so a crash after partial output fails
    here rather than passing as fewer results."""

    def run(script: str, *args: str, heapsize: str | None = None, path: list[Path] = (), timeout=120):
        proc = mpy.run(MPY_TESTS / script, *args, heapsize=heapsize, timeout=timeout,
                       MICROPYPATH=mpy.module_path(simulated_ble=False, extra=[*path, MPY_TESTS]))
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
        lines = [json.loads(x) for x in proc.stdout.decode().splitlines() if x.strip()]
        assert lines and lines[-1] == ["end", None], proc.stdout.decode()[-2000:]
        return lines[:-1]

    return run


@pytest.fixture
def requests_to_car(monkeypatch):
    """Every command the emulated ELM327 receives, in order (AT and OBD alike)."""
    import re

    from elm.elm import Elm

    seen: list[str] = []
    original = Elm.handle_request

    def recording(self, cmd, do_write=False):
        seen.append(re.sub(r"\s+", "", cmd).upper())
        return original(self, cmd, do_write)

    monkeypatch.setattr(Elm, "handle_request", recording)
    return seen


@pytest.fixture
def broker(tmp_path):
    """A real Mosquitto on a free loopback port that a test may freeze, stop and
    restart (tests/mosquitto.py); modules with their own `broker` fixture override it."""
    import mosquitto

    d = tmp_path / "mosquitto"
    d.mkdir()
    with mosquitto.running(d) as b:
        yield b
