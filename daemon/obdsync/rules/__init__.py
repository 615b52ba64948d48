"""The rules: events a driver can trust, derived from one dongle's inputs.

One :class:`RuleEngine` per device. Feed it, strictly in the order the dongle produced
them (the pipeline feeds records by sequence number; replay reads the store in the
same order)::

    eng = RuleEngine(config, device_id)
    eng.samples([(wall_ms, signal, value), ...])   # decode signal ids: 0x0D, 0x001 (MIL), 0xFF, ...
    eng.dtcs(wall_ms, 0x03, ["P0301"])             # a DTC record
    eng.dongle_event(wall_ms, 2)                   # EVENT record: 1 boot, 2 on, 3 off, 4 battery low
    eng.service_baseline(123456, wall_ms)          # user input, at its place in time
    eng.service_done(wall_ms, km=None, items=["oil"])
    eng.fuel_price(wall_ms, 7.89)                  # user input: price per litre from then on
    for ch in eng.drain():                         # EventChange(change, event, trip)
        store.put_event(ch.event); ch.trip and store.put_trip(ch.trip)

Outputs depend on the inputs only (never on the host clock or randomness), so live
evaluation and ``obdsync replay`` give the same events with the same ids. Persist
``snapshot()`` (JSON) together with the last fed sequence number; after a restart
``RuleEngine.restore(config, device, snap)`` and re-feed what came after: re-emitted
events carry the same ids, so the store's upsert keeps one row each.

Time: inputs carry wall ms; a stamp before the last one counts as the last one (timers
never run backwards). Gaps (NO DATA, a sleeping dongle) are not integrated across.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from ..config import Config
from .context import (
    EV_BATTERY_LOW,
    EV_BOOT,
    EV_ENGINE_OFF,
    EV_ENGINE_ON,
    FUEL_RATE,
    MAF,
    MOVING_KMH,
    QUIET_MS,
    RPM,
    SPEED,
    Context,
    Rule,
)
from .dtc import DtcRule
from .engine import BatteryRule, OverheatRule
from .events import (
    CRITICAL,
    EVENT_TYPES,
    INFO,
    PERSISTENT_TYPES,
    SEVERITIES,
    WARNING,
    Event,
    EventChange,
    TripSummary,
    event_id,
)
from .fuel import FuelRule
from .score import DrivingRule
from .service import ServiceRule
from .trips import TripRule

__all__ = ["RuleEngine", "Event", "EventChange", "TripSummary", "event_id", "EVENT_TYPES", "PERSISTENT_TYPES",
           "SEVERITIES", "INFO", "WARNING", "CRITICAL", "SNAPSHOT_VERSION"]

SNAPSHOT_VERSION = 5  # 2: the service schedule's items; 3: the driving evaluation; 4: the DTC rule's mil_at;
# 5: the fuel estimator
# An input this long after the previous one first lets time-driven rules catch up.
PRE_TICK_GAP_MS = 1_000


class RuleEngine:
    """All rules of one device. Not thread-safe; cheap to create."""

    def __init__(self, config: Config, device: str):
        self.config = config
        self.device = device
        self.ctx = ctx = Context(config, device)
        self.fuel = FuelRule(ctx)
        self.overheat = OverheatRule(ctx)
        self.battery = BatteryRule(ctx)
        self.dtc = DtcRule(ctx)
        self.driving = DrivingRule(ctx)
        self.trips = TripRule(ctx, self.fuel, self.driving)
        self.service = ServiceRule(ctx)
        self._rules: dict[str, Rule] = {"fuel": self.fuel, "overheat": self.overheat, "battery": self.battery,
                                        "dtc": self.dtc, "driving": self.driving, "trips": self.trips,
                                        "service": self.service}
        self._tickers = [r for r in self._rules.values() if type(r).tick is not Rule.tick]
        self._by_channel: dict[int, list[Rule]] = {}
        for r in self._rules.values():
            for ch in r.CHANNELS:
                self._by_channel.setdefault(ch, []).append(r)
        # Signals some hook reads; samples() passes over the others when they add no new time.
        self._consumed = frozenset(self._by_channel) | {RPM, SPEED, FUEL_RATE, MAF}

    # ---- inputs --------------------------------------------------------------------------------

    def samples(self, rows: Iterable[Sequence[Any]], offset: int = 0, fields: tuple[int, int, int] = (0, 1, 2)) -> None:
        """Decoded samples ``(wall_ms, signal, value)`` in dongle order. Values that are
        None (undecodable) or not finite only advance the clock.

        ``fields`` names where time, signal and value sit in each row and ``offset`` is
        added to the time, so the pipeline hands over the store's own rows (ms since
        boot + the boot's anchor) without building a tuple per sample."""
        # The ingest hot path (a backlog is a million samples): sample(), _begin(),
        # ctx.clock() and ctx.quiet() inlined, same steps in the same order; the rule
        # hooks stay calls. tests/test_rules_samples.py pins the two together.
        ctx = self.ctx
        tickers = self._tickers
        by_channel = self._by_channel
        consumed = self._consumed
        set_on = self._set_on
        trips = self.trips
        isfinite = math.isfinite
        ti, si, vi = fields
        for row in rows:
            channel = row[si]
            # A signal no hook reads, at a time already clocked (the other samples of its
            # request), changes nothing: the clock stays, the silence before it was judged,
            # and the tickers already ran at this time with this state (a tick repeated at
            # the same time and state is a no-op). Load and throttle are two fifths of a
            # drive's samples.
            if channel not in consumed and ctx.now is not None and offset + row[ti] <= ctx.now:
                continue
            value = row[vi]
            # _begin
            before = ctx.now
            t = int(offset + row[ti])
            if before is not None and t < before:
                t = before
            ctx.now = t
            quiet = ctx.on and ctx.last_active_ms is not None and t - ctx.last_active_ms > QUIET_MS
            if quiet:
                set_on(False, t)
            if quiet or (before is not None and t - before >= PRE_TICK_GAP_MS):
                for r in tickers:
                    r.tick(t)
            if value is not None and isfinite(value):
                v = float(value)
                if channel == RPM:
                    ctx.rpm_seen = True
                    if v > 0:
                        if ctx.on:
                            ctx.last_active_ms = t  # set_on(True) while on: all it does
                        else:
                            set_on(True, t)
                    elif not ctx.moving:
                        set_on(False, t)
                elif channel == SPEED:
                    if v < 0:
                        continue
                    ctx.on_speed(t, v)
                    if v > MOVING_KMH:
                        if ctx.on:
                            ctx.last_active_ms = t
                        else:
                            set_on(True, t)
                elif channel == FUEL_RATE:
                    ctx.on_fuel_rate(t, max(0.0, v))
                    trips.consumption()
                elif channel == MAF:
                    ctx.on_maf(t, max(0.0, v))
                    trips.consumption()
                for r in by_channel.get(channel, ()):
                    r.sample(t, channel, v)
            for r in tickers:
                r.tick(t)

    def sample(self, wall_ms: int, channel: int, value: float | None) -> None:
        ctx = self.ctx
        t = self._begin(wall_ms)
        if value is not None and math.isfinite(value):
            v = float(value)
            if channel == RPM:
                ctx.rpm_seen = True
                if v > 0:
                    self._set_on(True, t)
                elif not ctx.moving:
                    self._set_on(False, t)
            elif channel == SPEED:
                if v < 0:
                    return
                ctx.on_speed(t, v)
                if v > MOVING_KMH:
                    self._set_on(True, t)
            elif channel == FUEL_RATE:
                ctx.on_fuel_rate(t, max(0.0, v))
                self.trips.consumption()
            elif channel == MAF:
                ctx.on_maf(t, max(0.0, v))
                self.trips.consumption()
            for r in self._by_channel.get(channel, ()):
                r.sample(t, channel, v)
        self._tick(t)

    def dtcs(self, wall_ms: int, mode: int, codes: list[str], ecus: list[str] | None = None) -> None:
        """A DTC read: mode 0x03 stored, 0x07 pending, 0x0A permanent; codes like "P0301";
        ecus: beside each code the ECU that holds it ("" unknown)."""
        t = self._begin(wall_ms)
        self.dtc.read(t, mode, list(codes), list(ecus) if ecus else None)
        self._tick(t)

    def dongle_event(self, wall_ms: int, code: int) -> None:
        """The dongle's EVENT record: 1 boot, 2 engine on, 3 engine off (polling stopped),
        4 battery low (it sleeps); other codes (adapter reset/lost) only advance the clock."""
        ctx = self.ctx
        t = self._begin(wall_ms)
        if code == EV_ENGINE_ON:
            self._set_on(True, t)
        elif code == EV_ENGINE_OFF:
            self._set_on(False, t)
        elif code == EV_BATTERY_LOW:
            self._set_on(False, t)
            self.battery.dongle_low(t)
        elif code == EV_BOOT:
            self._set_on(False, t)
            ctx.reset_boot(t)
            for r in self._rules.values():
                r.boot(t)
        self._tick(t)

    def service_baseline(self, odometer_km: float, wall_ms: int) -> None:
        """The user's reading of the odometer at ``wall_ms`` (cars without 0xA6 count from it).
        With no service recorded yet, service intervals count from the baseline."""
        t = self._begin(wall_ms)
        self.service.set_baseline(odometer_km, t)
        self._tick(t)

    def service_done(self, wall_ms: int, km: float | None = None, items: list[str] | None = None) -> None:
        """A service at ``wall_ms`` (odometer ``km``, default: the current estimate) of
        ``items`` (default: all of the schedule); their distance and time intervals restart.
        Raises ValueError for an item the schedule does not have."""
        t = self._begin(wall_ms)
        self.service.done(t, km, items)
        self._tick(t)

    def fuel_price(self, wall_ms: int, price_per_litre: float) -> None:
        """The price of fuel per litre from ``wall_ms`` on (``obdsync fuel price``): refuels
        and trips after it carry their cost."""
        if not (math.isfinite(price_per_litre) and price_per_litre >= 0):
            raise ValueError(f"fuel price {price_per_litre!r} per litre is not a non-negative number")
        t = self._begin(wall_ms)
        self.fuel.set_price(float(price_per_litre))
        self._tick(t)

    def _begin(self, wall_ms: int) -> int:
        """Clock an input; let what the silence before it means happen first (the engine
        stopped, a trip ended) so that the input itself starts afresh."""
        ctx = self.ctx
        before = ctx.now
        t = ctx.clock(wall_ms)
        quiet = ctx.quiet(t)
        if quiet:
            self._set_on(False, t)
        if quiet or (before is not None and t - before >= PRE_TICK_GAP_MS):
            self._tick(t)
        return t

    def _set_on(self, on: bool, t: int) -> None:
        if self.ctx.set_on(on, t):
            at = t if on or self.ctx.off_since is None else self.ctx.off_since  # set_on set it when off
            for r in self._rules.values():
                r.engine(on, at)

    def _tick(self, t: int) -> None:
        # Per sample: only the rules that have something to do on a tick (most don't).
        for r in self._tickers:
            r.tick(t)

    # ---- outputs -------------------------------------------------------------------------------

    def drain(self) -> list[EventChange]:
        """Opens, updates, clears and instants since the last drain, in order."""
        out, self.ctx.out = self.ctx.out, []
        return out

    def open_events(self) -> list[Event]:
        """Persistent events open now (for ``obdsync status``)."""
        evs = [self.fuel.low, self.overheat.open, self.battery.low, self.battery.fault, self.dtc.mil,
               *self.dtc.active.values()]
        return sorted((e for e in evs if e is not None), key=lambda e: (e.opened_ms, e.type))

    def current_trip(self) -> dict[str, Any] | None:
        return self.trips.current()

    def service_state(self, now_ms: int | None = None) -> dict[str, Any]:
        """Each service item's km and days to due (``now_ms`` default: the time of the
        last input), the odometer and its source, history (rules/service.py)."""
        return self.service.state(now_ms)

    # ---- persistence ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this engine is, as JSON values
        (undrained outputs included)."""
        ctx = {k: _enc(getattr(self.ctx, k)) for k in Context.STATE}
        rules = {name: {k: _enc(getattr(r, k)) for k in r.STATE} for name, r in self._rules.items()}
        return {"version": SNAPSHOT_VERSION, "device": self.device, "ctx": ctx, "rules": rules}

    @classmethod
    def restore(cls, config: Config, device: str, snapshot: dict[str, Any]) -> RuleEngine:
        """An engine continuing from ``snapshot``. Raises ValueError for a snapshot of
        another device or version, or one that is malformed (then start afresh and replay)."""
        if not isinstance(snapshot, dict) or snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"rules snapshot version {snapshot.get('version') if isinstance(snapshot, dict) else None!r}"
                             f" is not {SNAPSHOT_VERSION}: replay from the start instead")
        if snapshot.get("device") != device:
            raise ValueError(f"rules snapshot is for device {snapshot.get('device')!r}, not {device!r}")
        eng = cls(config, device)
        try:
            for k in Context.STATE:
                setattr(eng.ctx, k, _dec(snapshot["ctx"][k]))
            for name, r in eng._rules.items():
                for k in r.STATE:
                    setattr(r, k, _dec(snapshot["rules"][name][k]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"rules snapshot is malformed ({e!r}): replay from the start instead") from None
        return eng


def _enc(v: Any) -> Any:
    if isinstance(v, Event):
        return {"$event": v.json()}
    if isinstance(v, EventChange):
        return {"$change": v.json()}
    if isinstance(v, dict):
        return {k: _enc(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_enc(x) for x in v]
    return v


def _dec(v: Any) -> Any:
    if isinstance(v, dict):
        if "$event" in v and len(v) == 1:
            return Event.from_json(v["$event"])
        if "$change" in v and len(v) == 1:
            return EventChange.from_json(v["$change"])
        return {k: _dec(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_dec(x) for x in v]
    return v
