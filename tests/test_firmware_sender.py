"""The dongle's stream cannot end silently. Its notify path needs no large block of heap,
so a fragmented heap cannot stop it: records of every length (tail fragments of every size)
are sent whole while no free hole is larger than a coroutine's frame (firmware/dongle/gatt.py,
tests/mpy/fw_gatt_send.py). And a task that dies anyway ends Dongle.run with its exception
(firmware/dongle/app.py, tests/mpy/fw_supervise.py). Both on the real MicroPython interpreter.

The bug this holds off: the memoryviews of the fragment buffer were cached in a dict that
grew with every new tail size; one regrowth (1.2-1.5 KB) raised MemoryError in the sender
task in about one HIL drive in six (theft_overnight), and the dongle kept answering
commands while it streamed nothing more."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hil import mpy
from protocol.frames import payload_size

MPY_TESTS = Path(__file__).resolve().parent / "mpy"
RECORD_MAX = 600  # tests/mpy/fw_gatt_send.py: records of 1..600 bytes
MTU = 247


def fragments(n: int) -> int:
    return -(-n // payload_size(MTU))


def run_cases(script: str) -> dict:
    # A test heap, not the board's: the sources compile on it (fw_gatt_send fragments all of it).
    proc = mpy.run(MPY_TESTS / script, simulated_ble=True, heapsize="512K", timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    lines = [json.loads(x) for x in proc.stdout.decode().splitlines() if x.strip()]
    assert lines and lines[-1] == ["end", None], proc.stdout.decode()[-2000:]
    return dict(lines[:-1])


@pytest.fixture(scope="module")
def cases(micropython):
    return run_cases("fw_gatt_send.py")


@pytest.fixture(scope="module")
def supervised(micropython):
    return run_cases("fw_supervise.py")


@pytest.mark.parametrize("case", ["fragmented", "whole"])
def test_records_of_every_length_are_sent_whole_on_a_fragmented_heap(cases, case):
    want = sum(fragments(n) for n in range(1, RECORD_MAX + 1))
    assert cases[case] == {"stopped_at": 0, "notifications": want,
                           "bytes": want + RECORD_MAX * (RECORD_MAX + 1) // 2}, cases


def test_a_task_that_dies_ends_the_dongles_run_with_its_error(supervised):
    assert supervised["dies"] == {"ended": "MemoryError: memory allocation failed (the test's)", "shutdown": 1}


def test_a_task_that_returns_while_the_dongle_runs_ends_it_too(supervised):
    assert supervised["returns"] == {"ended": "RuntimeError: a dongle task ended", "shutdown": 1}


def test_stop_still_ends_the_run_quietly(supervised):
    assert supervised["stopped"] == {"ended": "quietly", "shutdown": 1}
