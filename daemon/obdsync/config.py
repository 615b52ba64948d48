"""obdsync's configuration: one TOML file, every option with a default.

``load_config()`` reads ``$XDG_CONFIG_HOME/obdsync/config.toml`` (no file: all defaults)
and returns a frozen :class:`Config`. Validation happens on load; a :class:`ConfigError`
lists every problem, each naming its key and what is allowed::

    fuel.low_clear_pct must be ≥ fuel.low_open_pct (15), got 10
    unknown key fuel.low_open_pc (did you mean fuel.low_open_pct?)

Per-dongle secrets live beside the config, one file each (``secrets/<device>.key``,
0600 in a 0700 directory): :func:`save_secret`, :func:`load_secret`. A secret is a
:class:`Secret`, which never shows its value in ``repr``/``str`` (so not in logs either).
"""

from __future__ import annotations

import difflib
import hmac
import ipaddress
import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
from urllib.parse import urlsplit

from . import paths


class ConfigError(ValueError):
    """The configuration is invalid; ``errors`` holds one message per problem."""

    def __init__(self, errors: list[str], source: Path | None = None):
        self.errors = errors
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + ("; ".join(errors) if len(errors) == 1 else
                                  f"{len(errors)} problems:\n  " + "\n  ".join(errors)))


class SecretError(Exception):
    """A secret file is missing, unreadable or readable by others."""


SecretValue = TypeVar("SecretValue", bytes, str)
_D = TypeVar("_D", bound="DataclassInstance")


class Secret(Generic[SecretValue]):
    """A secret value that never appears in ``repr``, ``str`` or logs. ``reveal()`` gets it:
    text for the config's passwords, tokens and URLs, bytes for a dongle's key."""

    __slots__ = ("_value",)

    def __init__(self, value: SecretValue):
        self._value: SecretValue = value

    def reveal(self) -> SecretValue:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret) or type(self._value) is not type(other._value):
            return NotImplemented
        return hmac.compare_digest(_as_bytes(self._value), _as_bytes(other._value))

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> Any:
        raise TypeError("Secret cannot be pickled")


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def opt(default: Any, lo: float | None = None, hi: float | None = None, *, choices: tuple[object, ...] = (),
        kind: type | None = None, help: str = "") -> Any:
    """A config option: default, allowed range or choices, type (inferred from the default)."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "choices": choices,
                                            "kind": kind or type(default), "help": help})


@dataclass(frozen=True)
class StoreConfig:
    path: str | None = opt(None, kind=str, help="database file; default $XDG_DATA_HOME/obdsync/obdsync.db")
    retention_days: int = opt(90, 0, 36500, help="delete raw samples older than this; 0 keeps them")
    max_size_mb: int = opt(0, 0, 10_000_000, help="cap on the database size; 0 = none")

    @property
    def db_path(self) -> Path:
        return Path(self.path).expanduser() if self.path else paths.db_path()


@dataclass(frozen=True)
class VehicleConfig:
    tank_litres: float = opt(50.0, 1, 2000)
    fuel_type: str = opt("petrol", choices=("petrol", "diesel"))


@dataclass(frozen=True)
class FuelConfig:
    low_open_pct: float = opt(15.0, 0, 100)
    low_clear_pct: float = opt(20.0, 0, 100)
    refuel_min_pct: float = opt(10.0, 0.1, 100)
    drop_min_pct: float = opt(3.0, 0.1, 100, help="a loss not explained by consumption this large is a fuel_drop")
    drop_min_litres: float = opt(0.0, 0, 2000, help="the same in litres; 0: use drop_min_pct")
    leak_lph: float = opt(3.0, 0.1, 1000, help="fuel_leak_suspected: level falling this much faster than burnt")
    price_per_litre: float = opt(0.0, 0, 10_000, help="what a litre costs (trip, refuel and dashboard costs); 0: not"
                                 " shown (`obdsync fuel price` overrides it from its date on)")
    currency: str = opt("", kind=str, help="shown beside costs, e.g. EUR")
    l_per_100km: float = opt(8.0, 0.5, 200, help="consumption assumed until the car's own is learnt")


@dataclass(frozen=True)
class ServiceItem:
    """One maintenance item of the schedule: due when either interval is reached,
    whichever comes first. None: no interval of that kind (an item with neither is off)."""

    name: str
    km: float | None = opt(None, 1, 1_000_000, kind=float, help="distance interval")
    months: int | None = opt(None, 1, 240, kind=int, help="time interval")
    warn_km: float | None = opt(None, 0, 1_000_000, kind=float, help="warn this far ahead; default service.warn_km")
    warn_days: int | None = opt(None, 0, 3650, kind=int, help="warn this long ahead; default service.warn_days")


#: The schedule when the config names no items: common manufacturer intervals for a
#: petrol car, examples the user edits (``[service.items.NAME]``). The oil item's
#: intervals are ``service.interval_km`` / ``service.interval_months``.
DEFAULT_SERVICE_ITEMS = (
    ServiceItem("air_filter", km=30_000.0, months=24),
    ServiceItem("cabin_filter", km=20_000.0, months=24),
    ServiceItem("brake_fluid", months=24),
    ServiceItem("spark_plugs", km=60_000.0, months=72),
    ServiceItem("coolant", km=100_000.0, months=60),
    ServiceItem("tyre_rotation", km=10_000.0),
)


@dataclass(frozen=True)
class ServiceConfig:
    interval_km: float = opt(15000.0, 1, 1_000_000, help="oil and filter: distance interval")
    warn_km: float = opt(1000.0, 0, 1_000_000, help="advance warning before an item is due by distance")
    interval_months: int = opt(12, 1, 240, help="oil and filter: time interval")
    warn_days: int = opt(30, 0, 3650, help="advance warning before an item is due by time")
    items: tuple[ServiceItem, ...] = DEFAULT_SERVICE_ITEMS

    @property
    def schedule(self) -> tuple[ServiceItem, ...]:
        """Every item that has an interval, oil first (an ``oil`` entry in ``items``
        replaces the one made of interval_km / interval_months)."""
        named = {i.name: i for i in self.items}
        oil = named.pop("oil", None) or ServiceItem("oil", km=self.interval_km, months=self.interval_months)
        return tuple(i for i in (oil, *named.values()) if i.km is not None or i.months is not None)


@dataclass(frozen=True)
class EngineConfig:
    overheat_open_c: float = opt(110.0, 40, 215)
    overheat_clear_c: float = opt(100.0, 40, 215)
    overheat_secs: float = opt(30.0, 0, 3600)


@dataclass(frozen=True)
class BatteryConfig:
    parked_warn_v: float = opt(12.2, 6, 30)
    parked_crit_v: float = opt(11.8, 6, 30)
    parked_secs: float = opt(300.0, 0, 86400)
    running_min_v: float = opt(13.0, 6, 30)
    running_secs: float = opt(120.0, 0, 86400)


@dataclass(frozen=True)
class TripConfig:
    end_after_secs: float = opt(180.0, 1, 86400)
    hard_brake_ms2: float = opt(3.0, 0.5, 20)
    hard_accel_ms2: float = opt(3.0, 0.5, 20)


@dataclass(frozen=True)
class DrivingConfig:
    """The driving evaluation (rules/score.py)."""

    speed_limit_kmh: float = opt(120.0, 10, 300, help="time above this counts as speeding")
    over_rev_rpm: int | None = opt(None, 1000, 12000, kind=int, help="default: 6000 petrol, 4500 diesel")
    cold_coolant_c: float = opt(60.0, 0, 120, help="below this the engine is cold")
    cold_rpm: int = opt(3000, 500, 12000, help="revving above this on a cold engine counts")


@dataclass(frozen=True)
class OutboxConfig:
    max_entries: int = opt(10000, 1, 10_000_000)


@dataclass(frozen=True)
class LinkConfig:
    backoff_base_s: float = opt(1.0, 0.1, 600)
    backoff_cap_s: float = opt(60.0, 0.1, 86400)


@dataclass(frozen=True)
class MqttTarget:
    host: str = opt("", kind=str)
    port: int = opt(0, 0, 65535, help="0: 8883 with TLS, else 1883")
    name: str = opt("", kind=str, help="outbox target id; default mqtt:HOST:PORT")
    tls: bool = opt(False)
    ca: str | None = opt(None, kind=str)
    cert: str | None = opt(None, kind=str)
    key: str | None = opt(None, kind=str)
    username: str | None = opt(None, kind=str)
    password: Secret[str] | None = opt(None, kind=Secret)
    password_file: str | None = opt(None, kind=str)
    topic_prefix: str = opt("obdsync")
    client_id: str | None = opt(None, kind=str)
    ha_discovery: bool = opt(False)
    discovery_prefix: str = opt("homeassistant", help="Home Assistant's MQTT discovery prefix")
    ha_expire_after: int = opt(86400, 60, 365 * 86400,
                               help="seconds after which Home Assistant shows a value as unavailable")
    allow_plaintext: bool = opt(False, help="send the password without TLS (a broker on this machine)")


@dataclass(frozen=True)
class WebhookTarget:
    url: str = opt("", kind=str)
    name: str = opt("", kind=str, help="outbox target id; default webhook:HOST")
    secret: Secret[str] | None = opt(None, kind=Secret, help="signing secret (Standard Webhooks; whsec_<base64> or text)")
    secret_file: str | None = opt(None, kind=str)
    previous_secret: Secret[str] | None = opt(None, kind=Secret,
                                         help="during a key rotation: the old secret, still signed with")
    previous_secret_file: str | None = opt(None, kind=str)
    timeout: float = opt(10.0, 0.1, 600)
    ca: str | None = opt(None, kind=str, help="CA file to trust instead of the system's (a private platform)")
    allow_plaintext: bool = opt(False, help="sign requests to an http:// URL that is not on this machine")


@dataclass(frozen=True)
class DisplayConfig:
    """How obdsync speaks to a person: notifications (and later the CLI and dashboard)."""

    units: str = opt("metric", choices=("metric", "imperial"),
                     help="metric: km, L, °C; imperial: mi, US gal, °F")
    # Each quantity may differ from the system (a UK driver: miles, MPG UK, °C).
    distance: str = opt("auto", choices=("auto", "km", "mi"), help="auto: from units")
    economy: str = opt("auto", choices=("auto", "l_per_100km", "km_per_l", "mpg_us", "mpg_uk"),
                       help="auto: L/100 km (metric) or MPG US (imperial); volumes follow (L, US or UK gal)")
    temperature: str = opt("auto", choices=("auto", "c", "f"), help="auto: from units")
    language: str = opt("auto", choices=("auto", "en", "zh-CN"),
                        help="language of the CLI, the health check and notifications; auto: the locale's")


@dataclass(frozen=True)
class WebConfig:
    """The dashboard `obdsync run` serves (`obdsync.web`)."""

    enabled: bool = opt(True, help="serve the dashboard")
    host: str = opt("127.0.0.1", kind=str,
                    help="address to listen on; anything but loopback asks every request for the login token")
    port: int = opt(8765, 0, 65535, help="0: any free port (logged)")


SEVERITY_ORDER = ("info", "warning", "critical")


@dataclass(frozen=True)
class NotifyTable:
    """One ``[[notify]]`` table as written; each of its URLs becomes a :class:`NotifyTarget`."""

    urls: tuple[str, ...] = opt((), kind=tuple, help="Apprise URLs (ntfy://, tgram://, mailto://, json://, ...)")
    urls_file: str | None = opt(None, kind=str, help="a 0600 file with one Apprise URL a line")
    name: str = opt("", kind=str, help="outbox target id; default notify (notify2, ... for more tables)")
    events: tuple[str, ...] = opt((), kind=tuple, help="event types to send; default all but trip")
    min_severity: str = opt("info", choices=SEVERITY_ORDER)
    quiet_hours: str | None = opt(None, kind=str, help="HH:MM-HH:MM local time; only critical ones then")
    on_clear: bool = opt(False, help="also notify when a low fuel, overheat, ... situation is over")
    timeout: float = opt(15.0, 0.5, 600)


@dataclass(frozen=True)
class NotifyTarget:
    """One notification URL, an outbox target of its own (its own retries and status)."""

    url: Secret[str]
    name: str
    events: tuple[str, ...] = ()
    min_severity: str = "info"
    quiet_hours: tuple[int, int] | None = None
    """(start, end) in minutes after local midnight; end before start spans midnight."""
    on_clear: bool = False
    timeout: float = 15.0


@dataclass(frozen=True)
class ForwardConfig:
    mqtt: tuple[MqttTarget, ...] = ()
    webhook: tuple[WebhookTarget, ...] = ()
    notify: tuple[NotifyTarget, ...] = ()
    """from the top-level ``[[notify]]`` tables: delivered from the same outbox."""

    @property
    def target_names(self) -> list[str]:
        targets: list[MqttTarget | WebhookTarget | NotifyTarget] = [*self.mqtt, *self.webhook, *self.notify]
        return [t.name for t in targets]


@dataclass(frozen=True)
class PollOverride:
    """Poll intervals in seconds for one channel; None keeps the firmware plan's, 0 = off."""

    channel: int
    driving: float | None = None
    idle: float | None = None
    parked: float | None = None


@dataclass(frozen=True)
class Config:
    store: StoreConfig = StoreConfig()
    vehicle: VehicleConfig = VehicleConfig()
    fuel: FuelConfig = FuelConfig()
    service: ServiceConfig = ServiceConfig()
    engine: EngineConfig = EngineConfig()
    battery: BatteryConfig = BatteryConfig()
    trip: TripConfig = TripConfig()
    driving: DrivingConfig = DrivingConfig()
    poll: tuple[PollOverride, ...] = ()
    forward: ForwardConfig = ForwardConfig()
    outbox: OutboxConfig = OutboxConfig()
    link: LinkConfig = LinkConfig()
    display: DisplayConfig = DisplayConfig()
    web: WebConfig = WebConfig()
    source: Path | None = None
    per_device: dict[str, Config] = field(default_factory=dict, compare=False, repr=False)
    """``[device.<id>.<section>]`` overrides: the whole config as one dongle's car sees it."""

    def for_device(self, device: str) -> Config:
        """The config with ``device``'s own vehicle, fuel, service, ... tables applied."""
        return self.per_device.get(device, self)


_SECTIONS = {
    "store": StoreConfig, "vehicle": VehicleConfig, "fuel": FuelConfig, "service": ServiceConfig,
    "engine": EngineConfig, "battery": BatteryConfig, "trip": TripConfig, "driving": DrivingConfig, "outbox": OutboxConfig,
    "link": LinkConfig, "display": DisplayConfig, "web": WebConfig,
}
_ALL_SECTIONS = tuple(_SECTIONS) + ("poll", "forward", "notify", "device")
#: What may differ between two cars: a ``[device.<id>]`` table may hold these sections.
PER_DEVICE_SECTIONS = ("vehicle", "fuel", "service", "engine", "battery", "trip", "driving")
_RELATION = re.compile(r"^(\S+) must be \S+ (\S+) \(")


def _hint(key: str, known: list[str], prefix: str, suffix: str = "") -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {prefix}{close[0]}{suffix}?)"
    return " (known: " + ", ".join(sorted(known)) + ")"


def _fmt(v: float) -> str:
    return (f"{v:g}") if isinstance(v, float) else str(v)


def _convert(key: str, value: Any, f: Any, errors: list[str]) -> Any:
    md = f.metadata
    kind = md["kind"]
    if kind is bool:
        if not isinstance(value, bool):
            errors.append(f"{key} must be true or false, got {value!r}")
            return None
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{key} must be an integer, got {value!r}")
            return None
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            errors.append(f"{key} must be a number, got {value!r}")
            return None
        value = float(value)
    elif kind is str or kind is Secret:
        if not isinstance(value, str):
            errors.append(f"{key} must be a string, got {value!r}")
            return None
        if kind is Secret:
            value = Secret(value)
    elif kind is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            errors.append(f"{key} must be a list of strings, got {value!r}")
            return None
        return tuple(value)
    lo, hi, choices = md["lo"], md["hi"], md["choices"]
    if choices and value not in choices:
        errors.append(f"{key} must be one of {', '.join(choices)}, got {value!r}")
        return None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        errors.append(f"{key} must be between {_fmt(lo)} and {_fmt(hi)}, got {_fmt(value)}")
        return None
    return value


def _section(cls: type[_D], name: str, table: Any, errors: list[str], given: dict[str, Any] | None = None) -> _D:
    given = given or {}
    if not isinstance(table, dict):
        errors.append(f"{name} must be a table, got {table!r}")
        return cls(**given)
    known = {f.name: f for f in fields(cls) if f.name not in given and f.metadata}
    values = dict(given)
    for key, value in table.items():
        f = known.get(key)
        if f is None:
            errors.append(f"unknown key {name}.{key}" + _hint(key, list(known), name + "."))
            continue
        v = _convert(f"{name}.{key}", value, f, errors)
        if v is not None:
            values[key] = v
    return cls(**values)


def _need(errors: list[str], ok: bool, key: str, rel: str, other: str, other_value: float, value: float) -> None:
    if not ok:
        errors.append(f"{key} must be {rel} {other} ({_fmt(other_value)}), got {_fmt(value)}")


def _check_relations(cfg: dict[str, Any], errors: list[str]) -> None:
    fuel, engine, battery = cfg["fuel"], cfg["engine"], cfg["battery"]
    service, link = cfg["service"], cfg["link"]
    _need(errors, fuel.low_clear_pct >= fuel.low_open_pct, "fuel.low_clear_pct", "≥", "fuel.low_open_pct",
          fuel.low_open_pct, fuel.low_clear_pct)
    _need(errors, engine.overheat_clear_c < engine.overheat_open_c, "engine.overheat_clear_c", "<",
          "engine.overheat_open_c", engine.overheat_open_c, engine.overheat_clear_c)
    _need(errors, battery.parked_crit_v < battery.parked_warn_v, "battery.parked_crit_v", "<",
          "battery.parked_warn_v", battery.parked_warn_v, battery.parked_crit_v)
    _need(errors, service.warn_km < service.interval_km, "service.warn_km", "<", "service.interval_km",
          service.interval_km, service.warn_km)
    for item in service.items:
        warn = service.warn_km if item.warn_km is None else item.warn_km
        key = f"service.items.{item.name}." + ("warn_km" if item.warn_km is not None else "km")
        if item.km is not None and warn >= item.km:
            errors.append(f"{key}: the warning ({_fmt(warn)} km ahead) must be shorter than the interval"
                          f" ({_fmt(item.km)} km)")
    _need(errors, link.backoff_cap_s >= link.backoff_base_s, "link.backoff_cap_s", "≥", "link.backoff_base_s",
          link.backoff_base_s, link.backoff_cap_s)


def _secret_from(key: str, inline: Secret[str] | None, file: str | None, base: Path | None,
                 errors: list[str]) -> Secret[str] | None:
    if file is None:
        return inline
    if inline is not None:
        errors.append(f"{key} and {key}_file are both set; keep one")
        return None
    p = Path(file).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    try:
        return Secret(_read_private(p).decode().strip())
    except (SecretError, UnicodeDecodeError) as e:
        errors.append(f"{key}_file: {e}")
        return None


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _targets(forward: Any, base: Path | None, errors: list[str], exposed: str | None = None) -> ForwardConfig:
    """``exposed``: how the config file is readable by others (``None``: it is not), for the
    inline-secret rule."""
    if not isinstance(forward, dict):
        errors.append("forward must hold [[forward.mqtt]] / [[forward.webhook]] tables")
        return ForwardConfig()
    mqtt: list[MqttTarget] = []
    webhook: list[WebhookTarget] = []
    for kind, value in forward.items():
        if kind not in ("mqtt", "webhook"):
            errors.append(f"unknown key forward.{kind}" + _hint(kind, ["mqtt", "webhook"], "forward."))
            continue
        if not isinstance(value, list):
            errors.append(f"forward.{kind} must be an array of tables ([[forward.{kind}]]), got {value!r}")
            continue
        for i, table in enumerate(value):
            name = f"forward.{kind}[{i}]"
            if kind == "mqtt":
                mqtt.append(_mqtt_target(name, table, base, errors, exposed))
            else:
                webhook.append(_webhook_target(name, table, base, errors, exposed))
    names = [t.name for t in mqtt] + [t.name for t in webhook]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"forward target name {dup!r} is used twice; give each a distinct name")
    return ForwardConfig(tuple(mqtt), tuple(webhook))


def _inline_secrets(name: str, inline: list[tuple[str, Secret[str] | None]], errors: list[str],
                    exposed: str | None) -> None:
    for key, secret in inline:
        if secret is not None and exposed is not None:
            errors.append(f"{name}.{key} is written in a config file that {exposed} (or move it to "
                          f"{key}_file, a file only you can read)")


def _mqtt_target(name: str, table: Any, base: Path | None, errors: list[str], exposed: str | None) -> MqttTarget:
    t = _section(MqttTarget, name, table, errors)
    _inline_secrets(name, [("password", t.password)], errors, exposed)
    if not t.host:
        errors.append(f"{name}.host is required")
    # 8883 is MQTT over TLS (IANA): TLS there unless the file says tls = false.
    tls_said = isinstance(table, dict) and "tls" in table
    tls = t.tls or bool(t.ca or t.cert or t.key) or (t.port == 8883 and not tls_said)
    if bool(t.cert) != bool(t.key):
        errors.append(f"{name}.cert and {name}.key go together")
    port = t.port or (8883 if tls else 1883)
    password = _secret_from(name + ".password", t.password, t.password_file, base, errors)
    if password is not None and not tls and not t.allow_plaintext:
        errors.append(f"{name}: the password would cross the network in plaintext to {t.host}:{port} "
                      f"(no TLS); set tls = true (or ca = ...), or, for a broker on this machine, "
                      f"allow_plaintext = true")
    return MqttTarget(**{**_as_dict(t), "tls": tls, "port": port, "password": password,
                         "name": t.name or f"mqtt:{t.host}:{port}"})


def _webhook_target(name: str, table: Any, base: Path | None, errors: list[str],
                    exposed: str | None) -> WebhookTarget:
    t = _section(WebhookTarget, name, table, errors)
    _inline_secrets(name, [("secret", t.secret), ("previous_secret", t.previous_secret)], errors, exposed)
    u = urlsplit(t.url)
    if u.scheme not in ("http", "https") or not u.hostname:
        errors.append(f"{name}.url must be an http:// or https:// URL, got {t.url!r}")
    secret = _secret_from(name + ".secret", t.secret, t.secret_file, base, errors)
    previous = _secret_from(name + ".previous_secret", t.previous_secret, t.previous_secret_file, base, errors)
    if previous is not None and secret is None:
        errors.append(f"{name}.previous_secret is for a key rotation: set {name}.secret too")
    if (secret is not None and u.scheme == "http" and u.hostname and not _is_loopback(u.hostname)
            and not t.allow_plaintext):
        errors.append(f"{name}: events signed with the secret would go to {u.hostname} over plain "
                      f"http:// (readable and replayable on the way); use https://, or set "
                      f"allow_plaintext = true to accept that")
    return WebhookTarget(**{**_as_dict(t), "secret": secret, "previous_secret": previous,
                            "name": t.name or "webhook:%s" % (u.hostname or "")})


def _quiet_hours(key: str, text: str, errors: list[str]) -> tuple[int, int] | None:
    parts = text.replace(" ", "").split("-")
    try:
        if len(parts) != 2:
            raise ValueError
        mins = []
        for p in parts:
            h, m = p.split(":")
            if not (h.isdigit() and m.isdigit() and 0 <= int(h) <= 23 and 0 <= int(m) <= 59):
                raise ValueError
            mins.append(int(h) * 60 + int(m))
    except ValueError:
        errors.append(f"{key} must be HH:MM-HH:MM (22:00-07:00), got {text!r}")
        return None
    if mins[0] == mins[1]:
        errors.append(f"{key} starts and ends at the same time, got {text!r}")
        return None
    return mins[0], mins[1]


def _notify(tables: Any, base: Path | None, errors: list[str]) -> tuple[NotifyTarget, ...]:
    if not isinstance(tables, list):
        errors.append(f"notify must be an array of tables ([[notify]]), got {tables!r}")
        return ()
    from .rules.events import EVENT_TYPES  # not at import: the rules import this module

    out = []
    for i, table in enumerate(tables):
        key = f"notify[{i}]"
        t = _section(NotifyTable, key, table, errors)
        urls = list(t.urls)
        if t.urls_file is not None:
            secret = _secret_from(key + ".urls", None, t.urls_file, base, errors)
            if secret is not None:
                text = secret.reveal()
                urls += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not urls:
            errors.append(f"{key}.urls is required: at least one Apprise URL (or urls_file)")
            continue
        bad = [e for e in t.events if e not in EVENT_TYPES]
        if bad:
            errors.append(f"{key}.events: unknown event type(s) {', '.join(bad)} (known: {', '.join(EVENT_TYPES)})")
        quiet = _quiet_hours(key + ".quiet_hours", t.quiet_hours, errors) if t.quiet_hours else None
        events = t.events or tuple(e for e in EVENT_TYPES if e != "trip")
        name = t.name or ("notify" if len(tables) == 1 else f"notify{i + 1}")
        for j, url in enumerate(urls):
            problem = _apprise_url_problem(url)
            if problem:
                # Never the URL itself in a message: it carries the service's token.
                errors.append(f"{key}.urls[{j}]: {problem}")
                continue
            out.append(NotifyTarget(Secret(url), name if len(urls) == 1 else f"{name}#{j + 1}", events,
                                    t.min_severity, quiet, t.on_clear, t.timeout))
    return tuple(out)


def _apprise_url_problem(url: str) -> str | None:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    try:
        import apprise
    except ImportError:
        return "notifications need the apprise package (pip install apprise)"
    if apprise.Apprise.instantiate(url) is None:
        return (f"not a notification URL Apprise can use (scheme {scheme!r}); "
                "see https://github.com/caronc/apprise/wiki")
    return None


def _service_items(table: Any, errors: list[str]) -> tuple[ServiceItem, ...]:
    """``[service.items.NAME]`` tables: each replaces the default item of that name
    whole (an empty table turns it off); new names add items."""
    if not isinstance(table, dict):
        errors.append("service.items must hold [service.items.NAME] tables")
        return DEFAULT_SERVICE_ITEMS
    items = {i.name: i for i in DEFAULT_SERVICE_ITEMS}
    for name, value in table.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
            errors.append(f"service.items.{name}: an item name is lower-case letters, digits and _")
            continue
        if isinstance(value, dict) and "name" in value:
            errors.append(f"unknown key service.items.{name}.name (the table's name is the item's)")
            continue
        item = _section(ServiceItem, f"service.items.{name}", value, errors, {"name": name})
        items[name] = item
    return tuple(items.values())


def _as_dict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


_STATES = ("driving", "idle", "parked")


def _poll(table: Any, errors: list[str]) -> tuple[PollOverride, ...]:
    if not isinstance(table, dict):
        errors.append("poll must be a table of channel = {driving, idle, parked}")
        return ()
    if not table:
        return ()
    from .decode import DecodeError, signal_by_name  # imports python-OBD: only when needed

    out = []
    for key, value in table.items():
        name = f"poll.{key}"
        try:
            channel = signal_by_name(key)
        except DecodeError as e:
            errors.append(f"{name}: {e}")
            continue
        if channel > 0xFF:
            errors.append(f"{name}: not a channel the dongle polls")
            continue
        if isinstance(value, list):
            if len(value) != 3:
                errors.append(f"{name} must be [driving, idle, parked] seconds, got {value!r}")
                continue
            value = dict(zip(_STATES, value, strict=True))
        if not isinstance(value, dict):
            errors.append(f"{name} must be {{driving = s, idle = s, parked = s}} or a list of 3, got {value!r}")
            continue
        intervals: dict[str, float] = {}
        for state, v in value.items():
            k = f"{name}.{state}"
            if state not in _STATES:
                errors.append(f"unknown key {k}" + _hint(state, list(_STATES), name + "."))
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 6553.5:
                # The wire carries intervals in 100 ms units in a u16.
                errors.append(f"{k} must be between 0 and 6553.5 seconds (0 = off), got {v!r}")
            else:
                intervals[state] = round(float(v), 1)
        out.append(PollOverride(channel, **intervals))
    return tuple(out)


def parse_config(data: dict[str, Any], source: Path | None = None, source_mode: int | None = None) -> Config:
    """Validate a parsed TOML document into a :class:`Config`; raises :class:`ConfigError`.

    ``source_mode``: the file's permission bits, if known: an inline password or secret in a
    file that group or others can read is refused."""
    errors: list[str] = []
    sections: dict[str, Any] = {}
    for key, _value in data.items():
        if key not in _ALL_SECTIONS:
            errors.append(f"unknown section [{key}]" + _hint(key, list(_ALL_SECTIONS), "[", "]"))
    for name, cls in _SECTIONS.items():
        table = data.get(name, {})
        items = None
        if name == "service" and isinstance(table, dict) and "items" in table:
            table = dict(table)
            items = _service_items(table.pop("items"), errors)
        sections[name] = _section(cls, name, table, errors)
        if items is not None:
            sections[name] = ServiceConfig(**{**_as_dict(sections[name]), "items": items})
    base = source.parent if source is not None else None
    exposed = None
    if source_mode is not None and source_mode & 0o077:
        exposed = f"group or others can read or write (mode {stat.S_IMODE(source_mode):o}); run: chmod 600 {source}"
        notify_tables = data.get("notify")
        for i, t in enumerate(notify_tables if isinstance(notify_tables, list) else []):
            if isinstance(t, dict) and t.get("urls"):
                # Apprise URLs carry the service's token (a topic, a bot key, a password).
                errors.append(f"notify[{i}].urls are written in a config file that {exposed} (or move them "
                              f"to urls_file, a file only you can read)")
    forward = _targets(data.get("forward", {}), base, errors, exposed)
    notify = _notify(data.get("notify", []), base, errors)
    names = forward.target_names + [t.name for t in notify]
    for dup in sorted({t.name for t in notify if names.count(t.name) > 1}):
        errors.append(f"target name {dup!r} is used twice; give each [[notify]] a distinct name")
    forward = ForwardConfig(forward.mqtt, forward.webhook, notify)
    poll = _poll(data.get("poll", {}), errors)
    # Relations between keys are checked beside the errors of single keys (one run of
    # `config check` shows everything), except where one of the keys is itself wrong.
    bad = {e.split(" ", 1)[0] for e in errors}
    relations: list[str] = []
    _check_relations(sections, relations)
    for e in relations:
        m = _RELATION.match(e)
        if m is None or not {m.group(1), m.group(2)} & bad:
            errors.append(e)
    per_device = _per_device(data, errors)
    if errors:
        raise ConfigError(errors, source)
    cfg = Config(poll=poll, forward=forward, source=source, **sections)
    for dev, sub in per_device.items():
        cfg.per_device[dev] = replace(cfg, per_device={}, **{k: getattr(sub, k) for k in PER_DEVICE_SECTIONS})
    return cfg


def _per_device(data: dict[str, Any], errors: list[str]) -> dict[str, Config]:
    """``[device.<id>]`` tables parsed over the top-level sections they override."""
    tables = data.get("device", {})
    if not isinstance(tables, dict):
        errors.append("device must hold [device.<dongle id>] tables")
        return {}
    out: dict[str, Config] = {}
    for key, table in tables.items():
        name = f"device.{key}"
        try:
            dev = paths.normalize_device_id(key)
        except ValueError as e:
            errors.append(f"{name}: {e}")
            continue
        if not isinstance(table, dict):
            errors.append(f"{name} must be a table of sections ({', '.join(PER_DEVICE_SECTIONS)})")
            continue
        merged = {k: v for k, v in data.items() if k in PER_DEVICE_SECTIONS}
        for section, values in table.items():
            if section not in PER_DEVICE_SECTIONS:
                errors.append(f"unknown section [{name}.{section}]" + _hint(section, list(PER_DEVICE_SECTIONS),
                                                                            f"[{name}.", "]"))
            elif not isinstance(values, dict):
                errors.append(f"{name}.{section} must be a table, got {values!r}")
            else:
                merged[section] = {**(data.get(section) or {}), **values}
        try:
            out[dev] = parse_config(merged)
        except ConfigError as e:
            errors.extend(f"{name}: {err}" for err in e.errors)
    return out


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the config file (``path`` or the XDG default). A missing default file means
    all defaults; a missing file named explicitly is an error."""
    explicit = path is not None
    p = Path(path).expanduser() if path is not None else paths.config_path()
    try:
        with open(p, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode  # of the file read, not of one swapped in after
            raw = f.read()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(["config file not found"], p) from None
        return Config()
    except OSError as e:
        raise ConfigError([f"cannot read: {e.strerror}"], p) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f"not valid TOML: {e}"], p) from None
    return parse_config(data, p, mode)


def defaults() -> dict[str, dict[str, Any]]:
    """Every flat option with its default, by section (``obdsync config defaults``)."""
    return {name: {f.name: f.default for f in fields(cls)} for name, cls in _SECTIONS.items()}


# ---- per-dongle secrets ------------------------------------------------------

def _read_private(p: Path) -> bytes:
    """Read a file only if no one but its owner (us) can read it."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SecretError(f"{p} does not exist") from None
    except OSError as e:
        raise SecretError(f"cannot open {p}: {e.strerror}") from None
    try:
        st = os.fstat(fd)  # fstat on the opened file: no swap between check and read
        if not stat.S_ISREG(st.st_mode):
            raise SecretError(f"{p} is not a regular file")
        if st.st_uid != os.getuid():
            raise SecretError(f"{p} belongs to uid {st.st_uid}, not to us ({os.getuid()})")
        if st.st_mode & 0o077:
            raise SecretError(f"{p} is readable by group or others (mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {p}")
        with os.fdopen(fd, "rb") as f:
            fd = -1
            return f.read()
    finally:
        if fd >= 0:
            os.close(fd)


def save_secret(device: str, secret: bytes, base: Path | None = None) -> Path:
    """Store a dongle's secret (written 0600 in a 0700 directory, atomically). Returns the path.

    ``base`` replaces the config directory (tests, ``--config-dir``).
    """
    if not isinstance(secret, (bytes, bytearray)) or not 16 <= len(secret) <= 64:
        raise ValueError("a dongle secret is 16 to 64 bytes")
    p = paths.secret_path(device, base)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(p.parent, 0o700)  # mkdir's mode is masked by the umask and skipped if it existed
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, bytes(secret).hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)
    return p


def load_secret(device: str, base: Path | None = None) -> Secret[bytes]:
    """A dongle's secret as ``Secret(bytes)``. Raises :class:`SecretError` when the file is
    missing, not ours, group/world readable or not hex."""
    p = paths.secret_path(device, base)
    text = _read_private(p)
    try:
        value = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise SecretError(f"{p} does not hold a hex secret") from None
    if not 16 <= len(value) <= 64:
        raise SecretError(f"{p} holds {len(value)} bytes; a dongle secret is 16 to 64")
    return Secret(value)

