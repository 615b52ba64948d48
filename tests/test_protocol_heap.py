"""The dongle's per-sample paths allocate nothing, measured with gc.mem_alloc() on
MicroPython with the ESP32's 64K heap and protocol/ compiled to .mpy as on the board."""

from __future__ import annotations

from hil import mpy


def test_staging_samples_and_filling_notifications_allocate_nothing(protocol_mpy, run_mpy_json):
    got = dict(run_mpy_json("protocol_heap.py", heapsize=mpy.HEAPSIZE, path=[protocol_mpy]))
    assert got["groups_per_record"] >= 20  # a full record, not a token loop
    assert got["stage_alloc"] == 0  # RecordWriter.fits/group/add, every request of 5 records
    assert got["fill_alloc"] == 0  # Fragmenter.fill of those records at MTU 23, 247, 517
    # Sealing pays for the MAC once per record, whatever the record holds.
    assert got["seal_alloc_full"] == got["seal_alloc_one_group"]
    assert len(set(got["seal_alloc_full"])) == 1
