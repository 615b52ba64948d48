"""The dongle counts every control write it drops unread, so that a flood shows in STATUS
(issue 13: ten bare AUTH writes dropped by the 16-entry receive queue left `auth_failures 0`).
Runs firmware/dongle/gatt.py on the real MicroPython interpreter (tests/mpy/fw_gatt_drops.py);
STATUS itself, after a flood through the simulated radio, is checked in tests/test_security.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hil import mpy

MPY_TESTS = Path(__file__).resolve().parent / "mpy"


@pytest.fixture(scope="module")
def cases(micropython):
    # A test heap, not the board's: the sources compile on it.
    proc = mpy.run(MPY_TESTS / "fw_gatt_drops.py", simulated_ble=True, heapsize="512K", timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    lines = [json.loads(x) for x in proc.stdout.decode().splitlines() if x.strip()]
    assert lines and lines[-1] == ["end", None], proc.stdout.decode()[-2000:]
    return dict(lines[:-1])


def test_a_flood_beyond_the_receive_queue_is_counted(cases):
    assert cases["flood"] == {"dropped": 10, "read": 16}


def test_fragments_that_make_no_message_are_counted(cases):
    # the middle fragment, the empty write, the start cut by a new message, and that message's
    # start and the fragment that skipped a counter: five writes, none made a message
    assert cases["broken"] == {"dropped": 5, "read": 0}


def test_writes_a_central_left_unread_are_counted(cases):
    assert cases["left"] == {"dropped": 3, "read": 0}


def test_a_full_queue_drops_nothing_and_other_connections_are_ignored(cases):
    assert cases["exact_fit"] == {"dropped": 0, "read": 16}
