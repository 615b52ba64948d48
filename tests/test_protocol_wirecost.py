"""The benchmark's wire-cost figure: a size property of the encoding, not a timing."""

from __future__ import annotations

import pytest

from hil.wirecost import wire_cost


@pytest.mark.parametrize("mtu", [23, 247])
def test_the_typical_plan_costs_at_most_3_bytes_a_sample(mtu):
    c = wire_cost(mtu)  # the benchmark's ten minutes
    assert c["samples"] == 600 * 22 + 60 * 2  # 4 PIDs at 5 Hz, 2 at 1 Hz, 2 at 0.1 Hz
    assert c["records"] == 600  # one sealed a second
    assert c["bytes_per_sample"] <= 3.0
    assert c["json_bytes_per_sample"] > 10 * c["bytes_per_sample"]
    # Notification values never exceed what NimBLE would send whole.
    assert c["wire_bytes"] <= c["notifications"] * (mtu - 3)


def test_a_bigger_mtu_never_costs_more():
    small, big = wire_cost(23, seconds=60), wire_cost(247, seconds=60)
    assert small["record_bytes"] == big["record_bytes"]
    assert big["wire_bytes"] == big["record_bytes"] + big["notifications"] < small["wire_bytes"]
