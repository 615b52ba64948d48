"""The dongle's per-sample and per-record paths allocate nothing, measured with
gc.mem_alloc() on MicroPython with the ESP32's 64K heap and protocol/ compiled to .mpy
as on the board."""

from __future__ import annotations

from hil import mpy


def test_staging_sealing_signing_and_filling_notifications_allocate_nothing(protocol_mpy, run_mpy_json, micropython):
    got = dict(run_mpy_json("protocol_heap.py", heapsize=mpy.HEAPSIZE, path=[protocol_mpy]))
    assert got["groups_per_record"] >= 20  # a full record, not a token loop
    assert got["stage_alloc"] == 0  # RecordWriter.fits/group/add, every request of 5 records
    assert got["fill_alloc"] == 0  # Fragmenter.fill of those records at MTU 23, 247, 517
    # Sealing and signing, MAC included (protocol/sha256.py), from the first record on.
    assert got["seal_alloc_full"] == [0] * 6  # RecordWriter.seal of a full record
    assert got["seal_alloc_one_group"] == [0] * 6  # ... and of a one-group record
    assert got["sign_alloc"] == [0] * 6  # Signer: a gap, an anchor, an event, a DTC record
