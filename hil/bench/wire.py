"""Figure 4: BLE bytes per sample at MTU 23 and 247, against the same samples as JSON
lines (hil.wirecost: seeded, so the same on every run)."""

from __future__ import annotations

from hil.bench.common import Context, Row, fmt
from hil.wirecost import WireCost, wire_cost

GOAL = 3.0


def run(ctx: Context) -> dict[str, WireCost]:
    seconds = ctx.pick(300, 1800)
    return {str(mtu): wire_cost(mtu, seconds=seconds) for mtu in (23, 247)}


def rows(r: dict[str, WireCost]) -> list[Row]:
    out = []
    for mtu in ("23", "247"):
        c = r[mtu]
        out.append(Row(f"BLE bytes per sample, MTU {mtu}",
                       f"{fmt(c['bytes_per_sample'], 2)} B ({fmt(c['att_bytes_per_sample'], 2)} with ATT headers)",
                       f"JSON {fmt(c['json_bytes_per_sample'], 1)} B", f"{fmt(c['json_ratio'], 1)}× smaller",
                       f"≤ {GOAL:g} B", c["bytes_per_sample"] <= GOAL))
    return out
