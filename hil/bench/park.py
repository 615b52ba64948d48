"""Figure "park": the dongle's duty cycle over a long park with a healthy battery.

The rig runs the board's sleep (hil.rig, deep_sleep=True: machine.deepsleep ends the
process, the rig wakes it at the timer or on the supply pin) with the firmware's default
power settings and the supply-rise pin of hil/README.md "The board": a short drive, a park
of 24 hours (quick: 6), then the engine runs. Awake time inside the park:
- from the park's start to the first deep sleep, on the sim clock: the engine-off decision
  (off_after_ms) and the parked window a daemon at home has (park_sleep_after_ms). That
  part of the park runs at 60x, so the firmware's real-time latencies barely stretch it;
- every timer wake, in real seconds from the process's start to its exit: the chip's work
  does not warp with the car's clock (on the board add its boot, not modelled here).
The baseline, in the same run, is the same scenario with a dongle that has no sleep
hardware: awake through the park, as the firmware was before issue 15 with a healthy battery.
"""

from __future__ import annotations

import statistics
from typing import Any

from hil.bench.common import BenchError, Context, Row, fmt
from hil.scenario import Scenario

GOAL_PCT = 1.0  # over a 24 h park
AWAKE_PHASE_S = 1200  # the park's first 20 minutes, at 60x: the awake part is measured there
SUPPLY_PIN = 32


def _scenario(park_s: int) -> Scenario:
    from hil.scenario import parse

    return parse({"name": "long_park", "phase": [
        {"kind": "city", "duration_s": 40, "speedup": 10},
        {"kind": "park", "duration_s": AWAKE_PHASE_S, "speedup": 60},
        {"kind": "park", "duration_s": park_s - AWAKE_PHASE_S, "speedup": 3600},
        {"kind": "idle", "duration_s": 120, "speedup": 30},
    ]})


def _one(ctx: Context, name: str, park_s: int, deep_sleep: bool) -> dict[str, Any]:
    from hil.rig import Rig

    sc = _scenario(park_s)
    park0 = sc.phases[0].duration_s
    park1 = park0 + park_s
    work = ctx.workdir / f"park-{name}"
    with Rig(sc, work, deep_sleep=deep_sleep, dongle_config={"supply_pin": SUPPLY_PIN}) as rig:
        d = rig.dongle
        try:
            d.wait_for("event engine_off", 60)
            if deep_sleep:
                d.wait_for("boot supply", 60 + park_s / 3600 * 2)
            d.wait_for("event engine_on", 60 + park_s / 3600 * 2)
        except Exception as e:
            raise BenchError(f"park ({name}): {e}") from None
        boots = list(d.boots)
        engine_on_sim = rig.sim_s()
    awake = 0.0
    first_sleep = None
    timer_wakes: list[float] = []
    supply_after = None
    for b in boots:
        end = b.sim1 if b.sim1 is not None else engine_on_sim
        if b.reason == "cold":
            awake += max(0.0, min(end, park1) - park0)  # sim seconds awake inside the park
            first_sleep = end - park0 if b.slept else None
        elif b.reason == "timer" and park0 <= b.sim0 < park1:
            timer_wakes.append(b.awake_s)
            awake += b.awake_s
        elif b.reason == "supply":
            supply_after = b.sim0 - park1
    return {"park_s": park_s, "awake_s": awake, "duty_pct": 100 * awake / park_s, "boots": len(boots),
            "first_sleep_after_s": first_sleep, "timer_wakes": len(timer_wakes),
            "timer_wake_ms_median": 1000 * statistics.median(timer_wakes) if timer_wakes else None,
            "timer_wake_ms_max": 1000 * max(timer_wakes) if timer_wakes else None,
            "supply_wake_after_s": supply_after}


def run(ctx: Context) -> dict[str, Any]:
    from dongle.power import PowerConfig

    park_s = 6 * 3600 if ctx.quick else 24 * 3600
    c = PowerConfig()
    s = _one(ctx, "sleeping", park_s, True)
    res: dict[str, Any] = {"sleeping": s, "awake": _one(ctx, "awake", park_s, False), "sleep_ms": c.sleep_ms,
                           "park_sleep_after_ms": c.park_sleep_after_ms, "off_after_ms": c.off_after_ms}
    if s["timer_wake_ms_median"] is not None:
        # one sleep cycle once asleep: a timer wake's work per sleep_ms
        res["cycle_duty_pct"] = 100 * s["timer_wake_ms_median"] / (s["timer_wake_ms_median"] + c.sleep_ms)
    return res


def rows(r: dict[str, Any]) -> list[Row]:
    s, a = r["sleeping"], r["awake"]
    hours = s["park_s"] / 3600
    cycle = r.get("cycle_duty_pct")
    measured = (f"{fmt(s['duty_pct'], 2)} % ({fmt(s['awake_s'], 0)} s awake of {hours:g} h: the first "
                f"{fmt((s['first_sleep_after_s'] or 0) / 60)} min until asleep, then {s['timer_wakes']} timer "
                f"wakes of {fmt(s['timer_wake_ms_median'] or float('nan'), 0)} ms median"
                f" (max {fmt(s['timer_wake_ms_max'] or float('nan'), 0)}), "
                f"{fmt(cycle, 4) if cycle is not None else 'n/a'} % of each {r['sleep_ms'] // 60000}-min cycle); "
                f"supply wake {fmt(s['supply_wake_after_s'] or float('nan'))} s after the engine started")
    ratio = f"÷{a['duty_pct'] / s['duty_pct']:,.0f}" if s["duty_pct"] > 0 else "—"
    met = s["duty_pct"] <= GOAL_PCT if hours >= 24 else None
    return [Row(f"Parked duty cycle, healthy battery, {hours:g} h park (awake / total; unix-port wakes)",
                measured, f"{fmt(a['duty_pct'], 1)} % (no sleep hardware: awake through the park)", ratio,
                f"≤ {GOAL_PCT:g} % over 24 h", met)]
