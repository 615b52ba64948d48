"""What happens to records after the link: store, derive events, queue deliveries.

    contiguous = await pipeline.ingest(device, records)   # the link acks this

The walk of one record, call by call, one way (nothing goes back to the store to ask
about what it was just given):

1. ``DongleLink._on_telemetry`` (a BLE notification) → ``Reassembler.feed`` (the record's
   fragments joined) → ``protocol.record_decode.decode_record`` (MAC checked, parsed into a
   ``Record``); ``DongleLink._flush`` hands a batch (``BATCH_RECORDS``, or what came
   within a moment) to
2. :meth:`Pipeline.ingest` → ``Ingester.ingest`` (``obdsync.ingest``): duplicates
   dropped, the samples' values decoded (through the value table they are stored
   with), rows mapped to wall time, the watermark moved, one transaction committed
   durably. It returns an ``Ingested``: the watermark, the sample rows, the new records
   as derivation takes them (``model.Held``), the anchors of the batch's boots and the
   latest value per signal.
3. The live listeners (the dashboard's gauges) get the rows; :meth:`Pipeline._hold`
   keeps the records, anchors and latest values in the device's state; ``ingest``
   returns the watermark and ``DongleLink._flush`` acks it: storage, then the ack.
4. :meth:`Pipeline._work` → :meth:`_advance`: the rules engine is fed the held records
   strictly in sequence order, up to the watermark — records beyond a hole wait until it
   fills. Records of a boot whose time anchor has not arrived yet wait for it too (the
   dongle logs the anchor when the daemon connects, after the backlog it then replays),
   unless a later boot shows that anchor will never come. So live derivation sees
   exactly what a replay from the store sees, in the same order, with the same times.
5. :meth:`apply` → ``Store.put_event`` (``obdsync.derived``): each event change stored
   with its outbox entries (``Forwarder.outbox_entries``) in one transaction, a trip
   with it (``Store.put_trip``: the rules' ``TripSummary`` as emitted); then
   ``Forwarder.notify`` wakes the target workers, which read the outbox
   (``forward.outbox_sql``) and deliver: ``MqttSender``/``WebhookSender`` to the broker
   or endpoint. The retained state (:meth:`_publish_state`) is built from what the
   pipeline holds (the latest values, the engine) and goes to ``Forwarder.publish_state``.
6. The engine's state is saved with the last sequence number fed
   (``Store.save_rules_state``), so a restart (kill -9 included) resumes from there and
   re-derives only what came after (``Store.replay_items``: the same ``Held`` records,
   on wall time): the same ids, stored once; deliveries queued again only if an event
   changed.

Reads of the store besides: the device's saved state when it is first met (rules
state, latest values, newest trip), the log epochs when a new one is met, and the user's
service records (entered by other processes) every ``SERVICE_POLL_SECONDS``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from obdsync.config import Config
from obdsync.db import StoreError
from obdsync.decode import SIG_DTC_COUNT, SIG_MIL, display_value
from obdsync.ingest import EPOCH_SEQ_SHIFT, Ingested, Record
from obdsync.model import Held, HeldDongleEvent, HeldDtc, HeldSamples, TripRecord
from obdsync.rules import WARNING, Event, EventChange, RuleEngine, event_id
from obdsync.store import Store

log = logging.getLogger("obdsync.pipeline")

SNAPSHOT_SECONDS = 10.0
SERVICE_POLL_SECONDS = 10.0
NOTE_BASELINE = "baseline"  # a service_records row that is the user's odometer reading, not a service
NOTE_SERVICE = "service"  # "service" (every item) or "service:oil,air_filter"
NOTE_FUEL_PRICE = "fuel_price"  # `obdsync fuel price`: odometer_km holds the price per litre
STATE_SECONDS = 1.0
YIELD_RECORDS = 64  # records derived between two looks at the event loop (~1.5 ms)
# signal -> the state key forwarded (retained MQTT state, Home Assistant sensors)
STATE_KEYS = {0x2F: "fuel_pct", 0xFF: "battery_v", 0x05: "coolant_c", 0xA6: "odometer_km", 0x0D: "speed_kmh",
              0x0C: "rpm", SIG_MIL: "mil", SIG_DTC_COUNT: "dtc_count"}


@dataclass
class _DeviceState:
    engine: RuleEngine
    fed: int  # last seq given to the engine
    held: dict[int, Held] = field(default_factory=dict)  # seq -> record, until fed
    anchors: dict[int, tuple[int, bool]] = field(default_factory=dict)  # boot -> (base, provisional?)
    last_values: dict[int, tuple[int, float | None, str]] = field(default_factory=dict)  # signal -> (t, v, unit)
    max_boot: int = -1
    snapshot_at: float = 0.0
    dirty: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    state_at: float = 0.0
    services_fed: int = 0  # id of the last service record given to the engine
    services_at: float = 0.0
    contiguous: int = -1  # the store's watermark: derive up to here
    unsaved: list[EventChange] = field(default_factory=list)  # derived, not stored yet
    pending: bool = False
    worker: asyncio.Task[None] | None = None
    failing: str | None = None  # the kind of error derivation last failed with
    last_trip: TripRecord | None = None  # the newest trip stored
    epoch: int | None = None  # the log epoch of the last batch (a new one may be an event)


class Pipeline:
    def __init__(self, store: Store, config: Config, forwarder: Any = None) -> None:
        self.store = store
        self.config = config
        self.forwarder = forwarder
        self._devices: dict[str, _DeviceState] = {}
        self.events_stored = 0
        # Called with (device, sample rows) after each stored batch: the dashboard's live
        # gauges (`obdsync.web.live`). A listener must not block: it runs on the ingest path.
        self.listeners: list[Callable[[str, list[tuple[Any, ...]]], None]] = []

    async def close(self) -> None:
        await self.flush()
        for dev, st in self._devices.items():
            if st.dirty and not st.unsaved:
                try:
                    await self._save(dev, st)
                except StoreError as e:
                    # Derived state only: a store that cannot take it (full, failing) must
                    # not stop the daemon from closing; the next start derives it again
                    # from the stored samples, as after any unreadable snapshot.
                    log.error("%s: rules state not saved (%s); it is derived again from the stored samples "
                              "at the next start", dev, e)

    async def flush(self) -> None:
        """Wait until derivation has caught up with what is stored (or is waiting
        for a time anchor)."""
        for st in list(self._devices.values()):
            while st.worker is not None and not st.worker.done():
                await asyncio.wait([st.worker])

    async def _state(self, device: str) -> _DeviceState:
        st = self._devices.get(device)
        if st is not None:
            return st
        saved = await self.store.rules_state(device)
        restored = None
        if saved is not None:
            seq, snap = saved
            try:
                data = json.loads(snap)
                restored = RuleEngine.restore(self.config.for_device(device), device, data["engine"])
            except (ValueError, KeyError, TypeError) as e:
                # Another version's snapshot (an upgrade or a downgrade) or a damaged one:
                # derive everything again from the stored samples. Events keep their ids,
                # so what is unchanged is not delivered again.
                log.warning("%s: the saved rules state is not usable (%s); deriving again from the stored"
                            " samples", device, e)
        if saved is None:
            st = _DeviceState(RuleEngine(self.config.for_device(device), device), fed=-1)
        else:
            if restored is None:
                st = _DeviceState(RuleEngine(self.config.for_device(device), device), fed=-1)
                await self._rederive(device, st, seq)
                st.fed = seq
            else:
                st = _DeviceState(restored, fed=seq, services_fed=data.get("services_fed", 0))
            # Stored after the snapshot but not derived yet (a restart, kill -9
            # included): take them from the store, already on wall time.
            async for item in self.store.replay_items(device, seq):
                st.held[item.seq] = item
        # What the retained state starts from: the latest values and trip stored so far
        # (each batch's own come with it, Ingested.last_values and apply's trips).
        st.last_values = await self.store.last_values(device)
        trips = await self.store.trips(device, limit=1)
        st.last_trip = trips[0] if trips else None
        self._devices[device] = st
        return st

    async def _rederive(self, device: str, st: _DeviceState, upto: int) -> None:
        """A fresh engine fed the device's stored records up to seq `upto` (what the
        unusable snapshot had seen), as `replay` does; its event changes are kept for
        `_advance` to store."""
        saved_services = await self.store.services(device)
        services = sorted(saved_services, key=lambda r: (r[1], r[0]))
        engine = st.engine
        async for item in self.store.replay_items(device, -1, upto):
            services = _feed_due_services(engine, services, item)
            feed(engine, item)
            st.unsaved.extend(engine.drain())
        for _sid, done_ms, km, note in services:  # entered after the last record: counted as fed below
            feed_service(engine, done_ms, km, note)
        st.unsaved.extend(engine.drain())
        st.services_fed = max((r[0] for r in saved_services), default=0)
        st.dirty = True

    async def ingest(self, device: str, records: Sequence[Record], *, epoch: int = 0,
                     first_unacked: int | None = None) -> int:
        """Store first, derive after: only the store decides what may be acked (returned:
        the epoch's watermark as a wire seq). Whatever derivation runs into (an unreadable
        snapshot, a bug in a rule) is logged and retried from the stored samples; it never
        holds back the ack."""
        got = await self.store.ingester.ingest(device, records, epoch=epoch, first_unacked=first_unacked)
        if got.acked is None:
            return -1
        contiguous = got.acked
        if got.held:
            for listener in self.listeners:
                try:
                    listener(device, got.rows)
                except Exception:  # noqa: BLE001 - a screen's trouble never holds up the ack
                    log.exception("live listener failed")
        try:
            st = await self._state(device)
            if st.epoch != epoch:
                await self._epoch_met(device, st, epoch)
        except Exception as e:  # noqa: BLE001 - the batch is durable: ack it, derive from the store later
            log.error("%s: cannot load the rules state, events wait for the next batch: %s", device, e)
            return contiguous
        top = got.seq_base + contiguous  # in the store's numbering
        self._hold(st, got)
        if st.fed < 0 and not st.held:
            st.fed = top  # nothing new here (all duplicates of a fresh engine's past)
        if top > st.contiguous:
            st.contiguous = top
        # Durable now: the link may ack. Derivation runs beside the next batch's
        # SQLite commit instead of before the ack (a crash re-derives from the store).
        st.pending = True
        if st.worker is None or st.worker.done():
            st.worker = asyncio.create_task(self._work(device, st))
        return contiguous

    async def _epoch_met(self, device: str, st: _DeviceState, epoch: int) -> None:
        """A log epoch after the first is the dongle's log starting over: an event (once per
        epoch: its id is fixed by the epoch, a repeat after a restart is stored unchanged)."""
        st.epoch = epoch
        epochs = await self.store.epochs(device)
        now = next((e for e in epochs if e.epoch == epoch), None)
        if now is None or now.idx == 0:
            return
        before = epochs[now.idx - 1]
        ev = Event(event_id(device, "log_reset", f"{epoch:08x}", now.first_seen), device, "log_reset", WARNING,
                   now.first_seen, now.first_seen,
                   {"epoch": f"{epoch:08x}", "previous_epoch": f"{before.epoch:08x}",
                    "previous_acked_seq": before.contiguous, "logs": len(epochs)},
                   f"the dongle's log started over (wiped, reflashed or replaced): new log {epoch:08x};"
                   f" what the earlier log delivered is kept")
        st.unsaved.append(EventChange("instant", ev))

    async def _work(self, device: str, st: _DeviceState) -> None:
        while st.pending:
            st.pending = False
            try:
                await self._advance(device, st, st.contiguous)
            except Exception as e:  # noqa: BLE001 - the store says why; the next batch tries again
                # Once per kind of failure, not once per batch (a full disk lasts).
                if st.failing != type(e).__name__:
                    st.failing = type(e).__name__
                    log.error("%s: deriving events failed, will retry with each batch: %s", device, e)
                return
            if st.failing is not None:
                log.warning("%s: deriving events again", device)
                st.failing = None

    @staticmethod
    def _hold(st: _DeviceState, got: Ingested) -> None:
        """What a stored batch brought, kept for derivation: its records (those not fed
        yet), its boots' anchors, its latest values (as the channels table keeps them:
        a later time wins)."""
        st.anchors.update(got.anchors)
        last = st.last_values
        for sig, v in got.last_values.items():
            old = last.get(sig)
            if old is None or v[0] >= old[0]:
                last[sig] = v
        for h in got.held:
            if h.seq <= st.fed:
                continue
            if h.boot is not None and h.boot > st.max_boot:
                st.max_boot = h.boot
            st.held[h.seq] = h

    async def _services(self, device: str, st: _DeviceState, force: bool = False) -> None:
        """Service records the user entered (`obdsync service …`, maybe from another
        process) go to the engine once, in the order they were entered."""
        now = time.monotonic()
        if now - st.services_at < SERVICE_POLL_SECONDS and not force:
            return
        st.services_at = now
        for sid, done_ms, km, note in sorted(await self.store.services(device)):
            if sid <= st.services_fed:
                continue
            feed_service(st.engine, done_ms, km, note)
            st.services_fed = sid
            st.dirty = True

    async def _advance(self, device: str, st: _DeviceState, contiguous: int) -> None:
        engine = st.engine
        await self._services(device, st)
        if st.fed < 0 and st.held:
            st.fed = min(st.held) - 1
        seq = st.fed
        held = st.held
        anchors = st.anchors  # kept current by _hold, also while this yields
        slice_left = YIELD_RECORDS
        while seq < contiguous:
            nxt = seq + 1
            item = held.get(nxt)
            if item is None:
                if nxt >> EPOCH_SEQ_SHIFT < contiguous >> EPOCH_SEQ_SHIFT:
                    # An earlier log epoch ends here (the dongle's log started over): on to
                    # what is held next, instead of counting through the seqs in between.
                    later = [k for k in held if k > nxt]
                    seq = (min(later) if later else contiguous + 1) - 1
                    continue
                seq = nxt  # a record the dongle lost (a GAP covers it), or one with nothing to derive
                continue
            boot = item.boot
            if boot is None:
                offset = 0  # loaded from the store: already wall time
            else:
                base = anchors.get(boot)
                if base is None or (base[1] and boot >= st.max_boot):
                    break  # this boot's anchor is still to come
                offset = base[0]
            feed(engine, item, offset)
            del held[nxt]
            seq = nxt
            slice_left -= 1
            if not slice_left:
                # A backlog batch is ~10 ms of derivation: let the loop in between slices
                # (the radio's notifications, the next batch's COMMIT, whose fsync then
                # waits beside derivation instead of after it).
                st.fed = seq
                st.dirty = True
                await asyncio.sleep(0)  # the next batch may bring a boot's real anchor meanwhile
                slice_left = YIELD_RECORDS
        if seq != st.fed:
            st.fed = seq
            st.dirty = True
        st.unsaved.extend(engine.drain())
        changes = bool(st.unsaved)
        while st.unsaved:
            await self.apply(st.unsaved[:1])  # raises (disk full): kept, retried next time
            st.unsaved.pop(0)
        now = time.monotonic()
        if self.forwarder is not None and seq > 0 and now - st.state_at >= STATE_SECONDS:
            # The latest values, from the store's per-channel bookkeeping: at most once
            # a second, instead of a look at every sample.
            st.state_at = now
            await self._publish_state(device, st)
        if st.dirty and (changes or now - st.snapshot_at >= SNAPSHOT_SECONDS):
            await self._save(device, st)

    async def _publish_state(self, device: str, st: _DeviceState) -> None:
        """The retained state (MQTT, Home Assistant): the latest values rounded to what
        their sensors resolve, and what the rules know (range, service, codes, last trip)."""
        state, engine = st.state, st.engine
        seen = state.get("time_ms") or 0
        for sig, (t, value, unit) in st.last_values.items():
            key = STATE_KEYS.get(sig)
            if key is not None and value is not None:
                state[key] = bool(value >= 0.5) if sig == SIG_MIL else display_value(sig, value, unit)
                seen = max(seen, t or 0)
        if not state:
            return
        level = engine.fuel.level()
        state["range_km"] = None if level is None else engine.fuel.range_km(level)
        svc = engine.service_state()
        state["service_km_to_due"] = None if svc.get("km_to_due") is None else round(svc["km_to_due"])
        state["service_days_to_due"] = svc.get("days_to_due")
        state["service_items"] = [{"item": it.get("label"), "status": it.get("status"),
                                   "km_to_due": None if it.get("km_to_due") is None else round(it["km_to_due"]),
                                   "days_to_due": it.get("days_to_due")} for it in svc.get("items", [])]
        state["dtc_codes"] = [{"code": code, "description": ev.values.get("description", "")}
                              for code, ev in sorted(engine.dtc.active.items())]
        if st.last_trip is not None:
            trip = st.last_trip
            state["trip_distance_km"] = None if trip.distance_km is None else round(trip.distance_km, 1)
            state["trip_fuel_l"] = None if trip.fuel_l is None else round(trip.fuel_l, 1)
            l100 = trip.values.get("l_per_100km")
            state["trip_l_per_100km"] = None if l100 is None else round(l100, 1)
            score = trip.values.get("score")
            state["trip_score"] = score.get("score") if isinstance(score, dict) else None
        if seen:
            state["time_ms"] = seen
            state["last_seen"] = dt.datetime.fromtimestamp(seen / 1000, dt.UTC).isoformat(timespec="seconds")
        state["open_events"] = sorted(e.type for e in engine.open_events())
        self.forwarder.publish_state(device, dict(state))

    async def _save(self, device: str, st: _DeviceState) -> None:
        await self.store.save_rules_state(device, st.fed, json.dumps(
            {"engine": st.engine.snapshot(), "services_fed": st.services_fed}))
        st.dirty = False
        st.snapshot_at = time.monotonic()

    async def apply(self, changes: list[EventChange]) -> None:
        """Store event changes (and trips) with their deliveries; wake the forwarder."""
        for ch in changes:
            event = ev = ch.event  # a store.Event
            outbox = self.forwarder.outbox_entries(event) if self.forwarder is not None else []
            await self.store.put_event(event, outbox=outbox)
            self.events_stored += 1
            if ch.trip is not None:
                trip = ch.trip
                await self.store.put_trip(trip)
                st = self._devices.get(trip.device)
                if st is not None and (st.last_trip is None or st.last_trip.started_ms <= trip.started_ms):
                    st.last_trip = trip
            log.info("%s %s: %s", ev.device, ev.type, ev.message)
        if self.forwarder is not None:
            self.forwarder.notify()

    async def service_engine(self, device: str) -> RuleEngine:
        """The device's engine as saved, with every service record entered since (for
        `status` and `service` in another process than the daemon's: nothing is stored)."""
        st = await self._state(device)
        await self._services(device, st, force=True)
        return st.engine

    async def state_of(self, device: str) -> dict[str, Any]:
        st = await self._state(device)
        return {"service": st.engine.service_state(), "open_events": [e.type for e in st.engine.open_events()]}


def service_note(items: list[str] | None) -> str:
    """The service_records note of a service of ``items`` (None: the whole schedule)."""
    return NOTE_SERVICE + (":" + ",".join(items) if items else "")


def feed_service(engine: RuleEngine, done_ms: int, km: float | None, note: str) -> None:
    if note == NOTE_FUEL_PRICE:
        if km is not None:
            engine.fuel_price(done_ms, km)
        return
    if note == NOTE_BASELINE:
        if km is not None:
            engine.service_baseline(km, done_ms)
        return
    items = note.split(":", 1)[1].split(",") if note.startswith(NOTE_SERVICE + ":") else None
    try:
        engine.service_done(done_ms, km, items)
    except ValueError as e:  # an item since removed from the config: the others still count
        log.warning("service record at %d ignored in part: %s", done_ms, e)
        known = {i.name for i in engine.config.service.schedule}
        kept = [i for i in items or () if i in known]
        if kept:
            engine.service_done(done_ms, km, kept)


Service = tuple[int, int, float | None, str]  # (id, done_ms, odometer_km, note), as Store.services gives


def _feed_due_services(engine: RuleEngine, services: list[Service], item: Held) -> list[Service]:
    """Services (oldest first) done before a replayed item go to the engine before it."""
    t = item.first_ms
    while services and t is not None and services[0][1] <= t:
        _sid, done_ms, km, note = services.pop(0)
        feed_service(engine, done_ms, km, note)
    return services


def feed(engine: RuleEngine, item: Held, offset: int = 0) -> None:
    """One record to the engine, its times + ``offset`` (a live record's boot anchor; a
    replayed one is on wall time already)."""
    if type(item) is HeldSamples:
        engine.samples(item.rows, offset, item.fields)
    elif type(item) is HeldDtc:
        engine.dtcs(offset + item.t_ms, item.mode, item.codes, item.ecus)
    elif type(item) is HeldDongleEvent:
        engine.dongle_event(offset + item.t_ms, item.code)


async def replay(store: Store, config: Config, device: str, *, since_seq: int = -1,
                 forwarder: Any = None) -> list[EventChange]:
    """Re-derive events and trips from stored samples (a fresh engine from since_seq)
    and store them: unchanged ones stay as they are (same ids)."""
    engine = RuleEngine(config.for_device(device), device)
    out: list[EventChange] = []
    services = sorted(await store.services(device), key=lambda r: (r[1], r[0]))
    async for item in store.replay_items(device, since_seq):
        services = _feed_due_services(engine, services, item)
        feed(engine, item)
        out.extend(engine.drain())
    out.extend(engine.drain())
    if out:
        p = Pipeline(store, config, forwarder)
        await p.apply(out)
    return out
