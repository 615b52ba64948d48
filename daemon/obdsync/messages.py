"""What obdsync says to a person about an event, in their units and language.

Every sentence lives in :data:`TEXT` (English, the gettext source strings), keyed by
message id; code only picks an id and fills in numbers already converted to the user's
units. :func:`text` translates through :mod:`obdsync.i18n`, so a language is a gettext
catalogue holding these sentences (a missing one stays English)::

    title, body = notification(message, Units.of("metric"), "en")
    # ("Fuel low", "9 %, ≈ 48 km left")

``message`` is the event message of the outbox (``forward.payloads.event_message``),
so notifications render the very data the other targets receive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TEXT: dict[str, str] = {
    "low_fuel": "Fuel low",
    "low_fuel.range": "{level} %, ≈ {distance} left",
    "low_fuel.volume": "{level} %, ≈ {volume} left",
    "low_fuel.level": "{level} %",
    "refuel": "Refuelled",
    "refuel.body": "{volume} ({frm} % → {to} %)",
    "fuel_drop": "Fuel dropped",
    "fuel_drop.parked": "{volume} while parked ({frm} % → {to} %): theft or a leak?",
    "fuel_drop.driving": "{volume} faster than the engine burns it ({frm} % → {to} %): a leak?",
    "fuel_leak_suspected": "Fuel leak suspected",
    "fuel_leak_suspected.body": "the level falls {volume} an hour faster than the engine burns: have it checked",
    "overheat": "Engine overheating",
    "overheat.body": "Coolant {temp}: stop safely and let it cool",
    "dtc_new": "Trouble code {code}",
    "dtc_new.body": "{description}",
    "dtc_new.pending": "{description} (pending)",
    "dtc_cleared": "Trouble code cleared",
    "dtc_cleared.body": "{code}: {description}",
    "mil_on": "Check-engine light on",
    "mil_on.codes": "{codes}: have the car checked",
    "mil_on.body": "Have the car checked",
    "battery_low": "Battery low",
    "battery_low.warning": "{volts} parked",
    "battery_low.critical": "{volts} parked: the car may not start",
    "battery_low.unknown": "Below the dongle's floor: the car may not start",
    "charging_fault": "Battery not charging",
    "charging_fault.body": "{volts} with the engine running: check the alternator",
    "service_due": "Service due",
    "service_soon": "Service soon",
    "service.km_since": "{distance} since the last service",
    "service.time_up": "the time interval since the last service is up",
    "service.due_in": "due in {distance}",
    "service.due_in_days": "due in {days} days",
    "service.item": "{title}: {item}",
    "trip": "Trip",
    "trip.body": "{distance} in {duration}",
    "trip.fuel": ", {volume} ({economy})",
    "duration.min": "{m} min",
    "duration.h_min": "{h} h {m:02d} min",
    "log_reset": "Dongle log started over",
    "log_reset.body": "New log {epoch}; what the old one delivered is kept",
    "dropped": "Notifications lost",
    "dropped.body": "{count} notifications were dropped: the outbox was full",
    "cleared": "{title}: over",
    "vehicle": "{title} ({vehicle})",
}



def text(lang: str | None, key: str, **values: Any) -> str:
    """Sentence ``key`` in ``lang`` (``auto``/None: the process's language)."""
    from . import i18n

    return i18n._(TEXT[key], None if lang in (None, "", "auto") else lang).format(**values)


@dataclass(frozen=True)
class Units:
    """Converts and formats quantities in the user's units (numbers rounded to what a
    person reads: whole km and %, one decimal for litres and volts). ``system`` gives
    the defaults; ``distance`` (km, mi), ``economy`` (l_per_100km, km_per_l, mpg_us,
    mpg_uk; volumes follow: L, US gal, UK gal) and ``temperature`` (c, f) override it."""

    system: str = "metric"
    distance_unit: str = "auto"
    economy_unit: str = "auto"
    temperature_unit: str = "auto"

    @classmethod
    def of(cls, system: str, distance: str = "auto", economy: str = "auto", temperature: str = "auto") -> Units:
        if system not in ("metric", "imperial"):
            raise ValueError(f"unit system must be metric or imperial, got {system!r}")
        for name, value, allowed in (("distance", distance, _DISTANCES), ("economy", economy, _ECONOMIES),
                                     ("temperature", temperature, _TEMPERATURES)):
            if value != "auto" and value not in allowed:
                raise ValueError(f"{name} unit must be one of {', '.join(allowed)}, got {value!r}")
        return cls(system, distance, economy, temperature)

    @classmethod
    def of_display(cls, display: Any) -> Units:
        """The units a ``[display]`` config section asks for."""
        return cls.of(display.units, getattr(display, "distance", "auto"), getattr(display, "economy", "auto"),
                      getattr(display, "temperature", "auto"))

    @property
    def imperial(self) -> bool:
        return self.system == "imperial"

    @property
    def miles(self) -> bool:
        return self.distance_unit == "mi" or (self.distance_unit == "auto" and self.imperial)

    @property
    def fuel_economy(self) -> str:
        if self.economy_unit != "auto":
            return self.economy_unit
        return "mpg_us" if self.imperial else "l_per_100km"

    @property
    def fahrenheit(self) -> bool:
        return self.temperature_unit == "f" or (self.temperature_unit == "auto" and self.imperial)

    def distance(self, km: float) -> str:
        if self.miles:
            return f"{_num(km / KM_PER_MI, 0)} mi"
        return f"{_num(km, 0)} km"

    def speed(self, kmh: float) -> str:
        if self.miles:
            return f"{_num(kmh / KM_PER_MI, 0)} mph"
        return f"{_num(kmh, 0)} km/h"

    def volume(self, litres: float) -> str:
        gallon = {"mpg_us": (L_PER_US_GAL, "gal"), "mpg_uk": (L_PER_UK_GAL, "gal (UK)")}.get(self.fuel_economy)
        if gallon:
            return f"{_num(litres / gallon[0], 1)} {gallon[1]}"
        return f"{_num(litres, 1)} L"

    def temperature(self, celsius: float) -> str:
        if self.fahrenheit:
            return f"{_num(celsius * 9 / 5 + 32, 0)} °F"
        return f"{_num(celsius, 0)} °C"

    def economy(self, l_per_100km: float) -> str:
        unit = self.fuel_economy
        if unit == "l_per_100km":
            return f"{_num(l_per_100km, 1)} L/100 km"
        if l_per_100km <= 0:
            return "- " + _ECONOMY_SYMBOL[unit]
        if unit == "km_per_l":
            return f"{_num(100.0 / l_per_100km, 1)} km/L"
        per_gal = L_PER_US_GAL if unit == "mpg_us" else L_PER_UK_GAL
        return f"{_num(100.0 * per_gal / KM_PER_MI / l_per_100km, 1)} {_ECONOMY_SYMBOL[unit]}"

    def quantity(self, value: float, unit: str) -> tuple[str, str]:
        """A stored value with its unit symbol (``km/h``, ``°C``, ``km``, ``L``) as the user
        reads it: ``(number, unit)``; other units pass through unchanged."""
        if unit == "km/h":
            text = self.speed(value)
        elif unit == "°C":
            text = self.temperature(value)
        elif unit == "km":
            text = self.distance(value) if value >= 10 else \
                (f"{_num(value / KM_PER_MI, 1)} mi" if self.miles else f"{_num(value, 1)} km")
        elif unit == "L":
            text = self.volume(value)
        else:
            return f"{value:g}", unit
        number, _sep, symbol = text.partition(" ")
        return number, symbol


KM_PER_MI = 1.609344
L_PER_US_GAL = 3.785411784
L_PER_UK_GAL = 4.54609
_DISTANCES = ("km", "mi")
_ECONOMIES = ("l_per_100km", "km_per_l", "mpg_us", "mpg_uk")
_TEMPERATURES = ("c", "f")
_ECONOMY_SYMBOL = {"l_per_100km": "L/100 km", "km_per_l": "km/L", "mpg_us": "mpg", "mpg_uk": "mpg (UK)"}


def _num(x: float, digits: int) -> str:
    """A number as a person writes it: ``digits`` decimals, narrow no-break space between
    thousands (as SI writes them), never ``-0``."""
    v = round(float(x), digits)
    if v == 0:
        v = 0.0
    return f"{v:,.{digits}f}".replace(",", "\u202f")


def _pct(x: Any) -> str:
    return _num(float(x), 0)


def notification(msg: dict[str, Any], units: Units = Units(), lang: str | None = "en",
                 vehicle: str | None = None) -> tuple[str, str]:
    """``(title, body)`` for an outbox message (an event or a ``dropped`` record).

    Falls back to the event's own English message for a type without a text here, so
    an event type added later still reaches the driver."""
    t = str(msg.get("type") or "event")
    v = msg.get("values") or {}
    try:
        title, body = _render(t, msg, v, units, lang)
    except (KeyError, TypeError, ValueError):
        title, body = t.replace("_", " ").capitalize(), str(msg.get("message") or "")
    if msg.get("state") == "cleared":
        title = text(lang, "cleared", title=title)
    if vehicle:
        title = text(lang, "vehicle", title=title, vehicle=vehicle)
    return title, body


def line(msg: dict[str, Any], units: Units = Units(), lang: str | None = "en") -> str:
    """One line: ``Fuel low: 9 %, ≈ 48 km left``."""
    title, body = notification(msg, units, lang)
    return f"{title}: {body}" if body else title


def _render(t: str, msg: dict[str, Any], v: dict[str, Any], u: Units, lang: str | None) -> tuple[str, str]:
    def tx(key: str, **kw: Any) -> str:
        return text(lang, key, **kw)

    if t == "low_fuel":
        level = _pct(v.get("level_pct", v.get("cleared_level_pct")))
        if v.get("range_km") is not None:
            body = tx("low_fuel.range", level=level, distance=u.distance(v["range_km"]))
        elif v.get("litres_left") is not None:
            body = tx("low_fuel.volume", level=level, volume=u.volume(v["litres_left"]))
        else:
            body = tx("low_fuel.level", level=level)
        return tx("low_fuel"), body
    if t == "refuel":
        return tx("refuel"), tx("refuel.body", volume=u.volume(v["litres"]), frm=_pct(v["from_pct"]),
                                to=_pct(v["to_pct"]))
    if t == "fuel_drop":
        key = "fuel_drop.parked" if v.get("while") == "parked" else "fuel_drop.driving"
        return tx("fuel_drop"), tx(key, volume=u.volume(v["litres"]), frm=_pct(v["from_pct"]), to=_pct(v["to_pct"]))
    if t == "fuel_leak_suspected":
        return tx("fuel_leak_suspected"), tx("fuel_leak_suspected.body", volume=u.volume(v["excess_lph"]))
    if t == "overheat":
        return tx("overheat"), tx("overheat.body", temp=u.temperature(v["coolant_c"]))
    if t == "dtc_new":
        key = "dtc_new.pending" if v.get("status") == "pending" else "dtc_new.body"
        return tx("dtc_new", code=v["code"]), tx(key, description=v.get("description") or v["code"])
    if t == "dtc_cleared":
        return tx("dtc_cleared"), tx("dtc_cleared.body", code=v["code"], description=v.get("description") or "")
    if t == "mil_on":
        codes = v.get("codes") or []
        return tx("mil_on"), (tx("mil_on.codes", codes=", ".join(codes)) if codes else tx("mil_on.body"))
    if t == "battery_low":
        if v.get("volts") is None:
            return tx("battery_low"), tx("battery_low.unknown")
        key = "battery_low.critical" if msg.get("severity") == "critical" else "battery_low.warning"
        return tx("battery_low"), tx(key, volts=f"{_num(v['volts'], 1)} V")
    if t == "charging_fault":
        return tx("charging_fault"), tx("charging_fault.body", volts=f"{_num(v['volts'], 1)} V")
    if t in ("service_due", "service_soon"):
        if v.get("by") == "km" and v.get("km_since_service") is not None:
            why = tx("service.km_since", distance=u.distance(v["km_since_service"]))
            if t == "service_soon" and v.get("km_to_due") is not None:
                why = tx("service.due_in", distance=u.distance(max(0.0, v["km_to_due"])))
        elif t == "service_soon" and v.get("days_to_due") is not None:
            why = tx("service.due_in_days", days=max(0, int(v["days_to_due"])))
        else:
            why = tx("service.time_up")
        if not v.get("item"):
            return tx(t), why
        from . import i18n
        from .rules.service import label

        item = i18n._(label(str(v["item"])), None if lang in (None, "", "auto") else lang)
        return tx("service.item", title=tx(t), item=item), why
    if t == "trip":
        body = tx("trip.body", distance=u.distance(v["distance_km"]), duration=_duration(v["duration_s"], lang))
        if v.get("fuel_l") and v.get("l_per_100km"):
            body += tx("trip.fuel", volume=u.volume(v["fuel_l"]), economy=u.economy(v["l_per_100km"]))
        return tx("trip"), body
    if t == "log_reset":
        return tx("log_reset"), tx("log_reset.body", epoch=v["epoch"])
    if t == "dropped":
        return tx("dropped"), tx("dropped.body", count=int(msg["count"]))
    raise KeyError(t)


def _duration(seconds: float, lang: str | None) -> str:
    m = int(round(seconds / 60))
    return text(lang, "duration.h_min", h=m // 60, m=m % 60) if m >= 60 else text(lang, "duration.min", m=m)
