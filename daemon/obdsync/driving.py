"""The driving evaluation (rules/score.py) as a person reads it, in their language and
units: the score, what each component cost, the tips, the weekly summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from obdsync.i18n import N_, _
from obdsync.messages import Units

if TYPE_CHECKING:
    from obdsync.config import Config

COMPONENTS = {
    "hard_brakes": N_("Hard braking"),
    "hard_accels": N_("Hard acceleration"),
    "speeding": N_("Speeding"),
    "idling": N_("Idling"),
    "cold_revving": N_("Revving a cold engine"),
    "over_revving": N_("Over-revving"),
}


def component_name(name: str) -> str:
    return _(COMPONENTS[name]) if name in COMPONENTS else name


def measure(name: str, value: Any) -> str:
    if name in ("hard_brakes", "hard_accels"):
        return _("{n} times").format(n=value)
    if name in ("speeding", "idling"):
        return f"{value:g} %"
    return _("{s} s").format(s=f"{value:g}")


def tip(t: dict[str, Any], units: Units, config: Config) -> str:
    from obdsync.rules.score import over_rev_rpm

    n, v = t["id"], t["value"]
    if n == "hard_brakes":
        if t.get("city"):
            return _("{n} hard brakes in city traffic: leave more distance and anticipate the lights").format(n=v)
        return _("{n} hard brakes: leave more distance and look further ahead").format(n=v)
    if n == "hard_accels":
        return _("{n} hard accelerations: pull away gently, it saves fuel and tyres").format(n=v)
    if n == "speeding":
        return _("{pct} % of the time moving above {limit}: ease off").format(
            pct=f"{v:g}", limit=units.speed(t.get("limit_kmh", config.driving.speed_limit_kmh)))
    if n == "idling":
        return _("{pct} % of the trip idling: switch the engine off when you wait longer than a minute").format(
            pct=f"{v:g}")
    if n == "cold_revving":
        return _("{s} s above {rpm} rpm before the engine was warm: drive gently for the first minutes").format(
            s=f"{v:g}", rpm=config.driving.cold_rpm)
    if n == "over_revving":
        return _("{s} s above {rpm} rpm: shift up earlier").format(s=f"{v:g}", rpm=over_rev_rpm(config))
    return str(n)


def score_lines(ev: dict[str, Any], units: Units, config: Config) -> list[str]:
    """``driving score 87/100`` then each component and its cost, then the tips."""
    out = [_("driving score {score}/100").format(score=ev["score"])]
    for name, c in ev["components"].items():
        cost = f"−{c['penalty']:g}" if c["penalty"] else "0"
        out.append(f"  {component_name(name):<24} {measure(name, c['value']):>10}  {cost:>6} / {c['max']:g}")
    if ev.get("tips"):
        out.append(_("tips:"))
        out += ["  • " + tip(t, units, config) for t in ev["tips"]]
    return out


def week_lines(weeks: list[dict[str, Any]], units: Units) -> list[str]:
    if not weeks:
        return [_("no scored trips yet")]
    out = []
    for w in weeks:
        trend = ""
        if w["change"] is not None:
            arrow = "↑" if w["change"] > 0 else "↓" if w["change"] < 0 else "→"
            trend = f"  {arrow} {w['change']:+g}"
        out.append(_("{week}: score {score} over {trips} trips, {distance}, {brakes} hard brakes").format(
            week=w["week"], score=f"{w['score']:g}", trips=w["trips"], distance=units.distance(w["km"]),
            brakes=w["hard_brakes"]) + trend)
    return out
