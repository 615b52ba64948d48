"""The screens' HTML: small server-rendered pages (no front-end framework; works on a
phone), charts inline as SVG (`charts`), one script for the live gauges and the actions."""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from obdsync.i18n import N_, _
from obdsync.messages import Units
from obdsync.web import charts

if TYPE_CHECKING:
    from obdsync.web.data import Series

PAGES = (("now", "/", "Now"), ("trips", "/trips", "Trips"), ("fuel", "/fuel", "Fuel"),
         ("health", "/health", "Health"), ("service", "/service", "Service"), ("events", "/events", "Events"))
# Marked for translation here (the nav's labels are data above).
_LABELS = (_("Now"), _("Trips"), _("Fuel"), _("Health"), _("Service"), _("Events"), _("Trip"))
# Translated inside f-strings below, which gettext's extractor does not read: marked here.
_IN_FSTRINGS = (
    N_("Clear codes"),
    N_("Clearing codes also resets the emissions readiness monitors. Clear now?"),
    N_("Filter"),
    N_("Findings"),
    N_("Mark done"),
    N_("No events."),
    N_("No trips yet."),
    N_("No trouble codes stored."),
    N_("Nothing stored yet: the dongle has not synced."),
    N_("Odometer"),
    N_("Read only: run `obdsync web login` for a login link to act."),
    N_("Score components"),
    N_("Set [fuel] price_per_litre to see costs."),
    N_("last seen"),
    N_("range"),
)
SEVERITY_COLORS = {"critical": "#c62828", "warning": "#ef6c00", "info": "#546e7a", "ok": "#2e7d32"}


def when(ms: int | None) -> str:
    return "-" if ms is None else dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


def layout(active: str, title: str, body: str, *, lang: str, csrf: str | None, device: str | None,
           devices: list[str], authed: bool) -> str:
    nav = "".join(f'<a href="{href}{_q(device)}" class="{"on" if key == active else ""}" id="nav-{key}">'
                  f"{escape(_(label, lang))}</a>" for key, href, label in PAGES)
    pick = ""
    if len(devices) > 1:
        opts = "".join(f'<option value="{escape(d)}"{" selected" if d == device else ""}>{escape(d)}</option>'
                       for d in devices)
        pick = f'<form method="get" class="dev"><select name="device" onchange="this.form.submit()">{opts}</select></form>'
    login = "" if authed else (f'<p class="note">{escape(_("Read only: run `obdsync web login` for a login link to act.", lang))}</p>')
    return (f'<!doctype html><html lang="{escape(lang)}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="csrf-token" content="{escape(csrf or "")}">'
            f"<title>{escape(title)} · obdsync</title>"
            '<link rel="stylesheet" href="/static/app.css"><script src="/static/app.js" defer></script>'
            f'</head><body data-page="{active}" data-device="{escape(device or "")}">'
            f'<header><strong>obdsync</strong><nav>{nav}</nav>{pick}</header>'
            f"<main><h1>{escape(title)}</h1>{login}{body}</main></body></html>")


def _q(device: str | None, **more: Any) -> str:
    args = {k: v for k, v in {"device": device, **more}.items() if v}
    return "?" + urlencode(args) if args else ""


def no_data(lang: str) -> str:
    return f'<p class="muted">{escape(_("Nothing stored yet: the dongle has not synced.", lang))}</p>'


def gauge_text(key: str, v: float | None, u: Units) -> str:
    if v is None:
        return "-"
    if key == "speed":
        return u.speed(v)
    if key == "coolant":
        return u.temperature(v)
    if key == "rpm":
        return f"{v:.0f} rpm"
    if key == "fuel":
        return f"{v:.0f} %"
    if key == "battery":
        return f"{v:.1f} V"
    return f"{v:g}"


def now_page(d: dict[str, Any], u: Units, lang: str) -> str:
    names = {"speed": _("Speed", lang), "rpm": _("Engine speed", lang), "coolant": _("Coolant", lang),
             "fuel": _("Fuel", lang), "battery": _("Battery", lang)}
    cells = []
    for key, name in names.items():
        g = d["gauges"].get(key) or {}
        extra = ""
        if key == "fuel":
            rng = u.distance(d["range_km"]) if d["range_km"] is not None else "-"
            extra = f'<div class="sub">{escape(_("range", lang))} <span id="range">{escape(rng)}</span></div>'
        cells.append(f'<div class="gauge" id="g-{key}"><div class="name">{escape(name)}</div>'
                     f'<div class="val" data-key="{key}" data-t="{g.get("t") or ""}">{escape(gauge_text(key, g.get("v"), u))}</div>'
                     f"{extra}</div>")
    state = _("connected", lang) if d["connected"] else _("not connected", lang)
    return (f'<p class="state"><span id="conn" class="{"up" if d["connected"] else "down"}">{escape(state)}</span> · '
            f'{escape(_("last seen", lang))} <span id="last-seen">{escape(when(d["last_seen_ms"]))}</span></p>'
            f'<div class="gauges">{"".join(cells)}</div>')


def trips_page(rows: list[dict[str, Any]], u: Units, lang: str, currency: str) -> str:
    if not rows:
        return f'<p class="muted">{escape(_("No trips yet.", lang))}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in (_("Started", lang), _("Distance", lang), _("Duration", lang),
                                                     _("Fuel", lang), _("Cost", lang), _("Score", lang)))
    body = []
    for t in rows:
        dur = f"{(t['duration_s'] or 0) / 60:.0f} min"
        body.append(f'<tr class="trip" data-id="{escape(t["id"])}"><td><a href="/trips/{escape(t["id"])}">{when(t["started_ms"])}</a></td>'
                    f'<td class="distance">{escape(_km(t["distance_km"], u))}</td><td>{dur}</td>'
                    f'<td>{escape(u.volume(t["fuel_l"]) if t["fuel_l"] is not None else "-")}</td>'
                    f'<td>{escape(_cost(t["cost"], currency))}</td><td>{t["score"] if t["score"] is not None else "-"}</td></tr>')
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _km(km: float | None, u: Units) -> str:
    return "-" if km is None else " ".join(u.quantity(km, "km"))


def _cost(c: float | None, currency: str) -> str:
    return "-" if c is None else f"{c:.2f} {currency}".strip()


def trip_page(t: dict[str, Any], speed: Series, rpm: Series, fuel: Series, moments: list[tuple[int, str]],
              u: Units, lang: str, currency: str) -> str:
    from obdsync.driving import component_name, measure

    marks = [(tm, _("hard brake", lang) if k == "brake" else _("hard acceleration", lang),
              "#c62828" if k == "brake" else "#ef6c00") for tm, k in moments]
    def to_user_speed(kmh: float) -> float:
        return kmh / 1.609344 if u.miles else kmh

    speed_unit = "mph" if u.miles else "km/h"
    facts = [(_("Distance", lang), _km(t["distance_km"], u), "distance"),
             (_("Duration", lang), f"{(t['duration_s'] or 0) / 60:.0f} min", "duration"),
             (_("Fuel used", lang), u.volume(t["fuel_l"]) if t["fuel_l"] is not None else "-", "fuel"),
             (_("Consumption", lang), u.economy(t["l_per_100km"]) if t["l_per_100km"] else "-", "economy"),
             (_("Cost", lang), _cost(t["cost"], currency), "cost"),
             (_("Score", lang), f"{t['score']}/100" if t["score"] is not None else "-", "score"),
             (_("Hard brakes", lang), str(t["hard_brakes"]), "brakes"),
             (_("Hard accelerations", lang), str(t["hard_accels"]), "accels")]
    dl = "".join(f'<div class="fact" id="f-{k}"><dt>{escape(a)}</dt><dd>{escape(b)}</dd></div>' for a, b, k in facts)
    comps = "".join(f"<tr><td>{escape(component_name(n))}</td><td>{escape(measure(n, c.get('value')))}</td>"
                    f"<td>-{c.get('penalty', 0):g}</td></tr>" for n, c in t["components"].items())
    comp_table = (f'<h2>{escape(_("Score components", lang))}</h2><table class="components"><tbody>{comps}</tbody></table>'
                  if comps else "")
    return (f'<p>{when(t["started_ms"])} → {when(t["ended_ms"])}</p><dl class="facts">{dl}</dl>'
            f'<h2>{escape(_("Speed", lang))}</h2>'
            + charts.line_chart([(tm, to_user_speed(v)) for tm, v in speed], title=_("Speed", lang), unit=speed_unit,
                                markers=marks, y_min=0, chart_id="chart-speed")
            + f'<h2>{escape(_("Engine speed", lang))}</h2>'
            + charts.line_chart(rpm, title=_("Engine speed", lang), unit="rpm", color="#6a1b9a", y_min=0,
                                chart_id="chart-rpm")
            + f'<h2>{escape(_("Fuel level", lang))}</h2>'
            + charts.line_chart(fuel, title=_("Fuel level", lang), unit="%", color="#ef6c00", chart_id="chart-fuel")
            + comp_table)


def fuel_page(d: dict[str, Any], u: Units, lang: str, currency: str) -> str:
    if not d["level"]:
        return no_data(lang)
    marks = [(m["t"], _("refuel", lang) if m["type"] == "refuel" else _("fuel drop", lang),
              "#2e7d32" if m["type"] == "refuel" else "#c62828") for m in d["marks"]]
    items = "".join(f'<li class="mark {m["type"]}">{when(m["t"])}: '
                    f'{escape(_("refuel", lang) if m["type"] == "refuel" else _("fuel drop", lang))}'
                    f' {m["values"].get("from_pct", "")} % → {m["values"].get("to_pct", "")} %</li>' for m in d["marks"])
    econ_unit = u.economy(1).split(" ", 1)[1] if " " in u.economy(1) else ""
    trend = [(t, float(u.economy(v).split(" ")[0])) for t, v in d["consumption"] if u.economy(v)[0].isdigit()]
    cost_bars = [(m["month"], m["cost"]) for m in d["months"] if m["cost"] is not None]
    return (f'<p class="big">{escape(_("Fuel level", lang))}: <span id="fuel-level">{d["level_pct"]:.0f} %</span></p>'
            + charts.line_chart(d["level"], title=_("Fuel level", lang), unit="%", color="#ef6c00", markers=marks,
                                y_min=0, y_max=100, chart_id="chart-level")
            + f'<ul class="marks">{items}</ul>'
            + f'<h2>{escape(_("Consumption per trip", lang))}</h2>'
            + charts.line_chart(trend, title=_("Consumption per trip", lang), unit=econ_unit, color="#1f6fd0",
                                chart_id="chart-consumption")
            + f'<h2>{escape(_("Cost per month", lang))}</h2>'
            + (charts.bar_chart(cost_bars, title=_("Cost per month", lang), unit=currency or "")
               if cost_bars else f'<p class="muted">{escape(_("Set [fuel] price_per_litre to see costs.", lang))}</p>'))


def health_page(d: dict[str, Any], lang: str, can_clear: bool) -> str:
    names = {3: _("stored", lang), 7: _("pending", lang), 10: _("permanent", lang)}
    rows = []
    for read in d["codes"]:
        for c in read["codes"]:
            rows.append(f'<tr class="code"><td class="dtc">{escape(c["code"])}</td><td class="desc">{escape(c["description"])}</td>'
                        f'<td>{escape(names.get(read["mode"], str(read["mode"])))}</td><td>{escape(c["ecu"] or "")}</td></tr>')
    codes = (f'<table class="codes"><tbody>{"".join(rows)}</tbody></table>' if rows
             else f'<p class="muted">{escape(_("No trouble codes stored.", lang))}</p>')
    findings = "".join(f'<li class="finding {escape(f["severity"])}" data-id="{escape(f["id"])}">'
                       f'<span class="sev" style="background:{SEVERITY_COLORS.get(f["severity"], "#546e7a")}">'
                       f'{escape(f["severity"])}</span> <b>{escape(f["title"])}</b>'
                       + (f'<div class="action">{escape(f["action"])}</div>' if f["action"] else "") + "</li>"
                       for f in d["findings"])
    clear = ""
    if can_clear:
        clear = (f'<form id="clear-form" class="action-form" data-api="/api/v1/dtc/clear"'
                 f' data-confirm="{escape(_("Clearing codes also resets the emissions readiness monitors. Clear now?", lang))}">'
                 f'<button type="submit" id="clear-codes" class="danger">{escape(_("Clear codes", lang))}</button>'
                 f'<span class="result" id="clear-result"></span></form>')
    return (f'<h2>{escape(_("Trouble codes", lang))}</h2>{codes}{clear}'
            f'<h2>{escape(_("Findings", lang))}</h2><ul class="findings">{findings}</ul>')


def service_page(svc: dict[str, Any], u: Units, lang: str, authed: bool) -> str:
    if "unavailable" in svc:
        return f'<p class="muted">{escape(svc["unavailable"])}</p>'
    odo = svc.get("odometer_km")
    head = (f'<p>{escape(_("Odometer", lang))}: <span id="odometer">{escape(u.distance(odo)) if odo is not None else "-"}</span></p>')
    rows = []
    for it in svc.get("items", []):
        k, days = it["km_to_due"], it["days_to_due"]
        km_text = "-" if k is None else (u.distance(k) if k >= 0 else "-" + u.distance(-k))
        button = ""
        if authed:
            button = (f'<form class="action-form" data-api="/api/v1/service/done" data-item="{escape(it["item"])}">'
                      + ('' if odo is not None else '<input name="km" type="number" min="0" placeholder="km" required>')
                      + f'<button type="submit" class="done" id="done-{escape(it["item"])}">{escape(_("Mark done", lang))}</button>'
                      '<span class="result"></span></form>')
        status = {"ok": _("OK", lang), "soon": _("SOON", lang), "due": _("DUE", lang)}.get(it["status"], _("UNKNOWN", lang))
        last = when(it["last_ms"])[:10] if it["last_ms"] else "-"
        rows.append(f'<tr class="item {escape(it["status"])}" data-item="{escape(it["item"])}">'
                    f'<td class="label">{escape(_(it["label"], lang))}</td>'
                    f'<td class="status" data-label="{escape(_("Status", lang))}">{escape(status)}</td>'
                    f'<td class="km" data-label="{escape(_("km to due", lang))}">{escape(km_text)}</td>'
                    f'<td class="days" data-label="{escape(_("days to due", lang))}">{"-" if days is None else days}</td>'
                    f'<td class="last" data-label="{escape(_("Last done", lang))}">{last}</td><td class="act">{button}</td></tr>')
    th = "".join(f"<th>{escape(h)}</th>" for h in (_("Item", lang), _("Status", lang), _("km to due", lang),
                                                   _("days to due", lang), _("Last done", lang), ""))
    return head + f'<div class="scroll"><table class="service"><thead><tr>{th}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def events_page(evs: list[Any], u: Units, lang: str, device: str | None, severity: str | None, type_: str | None,
                types: list[str]) -> str:
    from obdsync.forward.payloads import event_message
    from obdsync.messages import notification

    def opt(v: str, label: str, cur: str | None) -> str:
        return f'<option value="{escape(v)}"{" selected" if v == (cur or "") else ""}>{escape(label)}</option>'

    sev = "".join(opt(v, lbl, severity) for v, lbl in (("", _("any severity", lang)), ("critical", "critical"),
                                                       ("warning", "warning"), ("info", "info")))
    typ = opt("", _("any type", lang), type_) + "".join(opt(t, t, type_) for t in types)
    form = (f'<form method="get" class="filters"><input type="hidden" name="device" value="{escape(device or "")}">'
            f'<select name="severity" id="f-severity">{sev}</select><select name="type" id="f-type">{typ}</select>'
            f'<button type="submit">{escape(_("Filter", lang))}</button></form>')
    rows = []
    for e in evs:
        title, body = notification(event_message(e), u, lang)
        rows.append(f'<li class="event {escape(e.severity)}" data-type="{escape(e.type)}">'
                    f'<span class="sev" style="background:{SEVERITY_COLORS.get(e.severity, "#546e7a")}">{escape(e.severity)}</span>'
                    f' <time>{when(e.opened_ms)}</time> <b>{escape(title)}</b> {escape(body)}</li>')
    return form + (f'<ul class="events">{"".join(rows)}</ul>' if rows else f'<p class="muted">{escape(_("No events.", lang))}</p>')
