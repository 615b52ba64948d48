"""The dongle's per-sample paths allocate nothing and its per-record ones a bounded amount,
measured with gc.mem_alloc() on MicroPython with the ESP32's 64K heap and protocol/ compiled
to .mpy as on the board. Sealing allocates the C hashlib's objects and digests (protocol.auth
says why that beats the allocation-free bytecode SHA-256 on the board)."""

from __future__ import annotations

from hil import mpy

# Per MAC: two hashlib.sha256 objects and two digests (measured 416 B on 32-bit, 512 B on
# 64-bit); a record a second keeps the churn under 1 KB/s.
MAC_ALLOC_MAX = 640


def test_staging_and_notifying_allocate_nothing_and_sealing_only_its_mac(protocol_mpy, run_mpy_json, micropython):
    got = dict(run_mpy_json("protocol_heap.py", heapsize=mpy.HEAPSIZE, path=[protocol_mpy]))
    assert got["groups_per_record"] >= 20  # a full record, not a token loop
    assert got["stage_alloc"] == 0  # RecordWriter.fits/group/add, every request of 5 records
    assert got["fill_alloc"] == 0  # Fragmenter.fill of those records at MTU 23, 247, 517
    # Sealing and signing, MAC included, from the first record on: the MAC's garbage only,
    # the same for a full record as for a one-group one (nothing grows with the samples).
    assert all(0 < a <= MAC_ALLOC_MAX for a in got["seal_alloc_full"]), got["seal_alloc_full"]
    assert got["seal_alloc_one_group"] == got["seal_alloc_full"]
    assert all(0 < a <= 4 * MAC_ALLOC_MAX for a in got["sign_alloc"]), got["sign_alloc"]  # 4 records
