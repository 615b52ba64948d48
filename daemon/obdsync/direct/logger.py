"""The daemon as the logger: a direct adapter's answers become records in the same store.

`DirectLink` has the shape the service's reconnect loop drives (`session`, `stop`, `stats`,
`device`, `info`, `on_ready`, `connected`, like `obdsync.link.DongleLink`), so `obdsync run`
keeps an adapter connected exactly as it keeps a dongle: backoff, logging once, stopping cleanly.

One session: open the transport, `ELM327.init()`, read the VIN, then run the firmware's
`Scheduler` with the firmware's `Plan` (the `[poll]` overrides applied) and `Power` rules. The
answers are sealed by `protocol.record.RecordWriter` and signed by `Signer` exactly as on the
dongle (a record a second at most), decoded back with the same key and handed to the store
through `sink.ingest` — the store path is the dongle's. A record is acknowledged (dropped from
memory) when the store says it is durable; while the store refuses, records wait in a bounded
queue and the oldest give way to a GAP record, counted, never silent.

The device is keyed by adapter address + VIN (`device_id`): the same adapter moved to another car
is another device. An adapter whose car never answered yet (ignition off since it was added)
records nothing until the ECU answers; afterwards the last VIN seen on that adapter is kept in
`direct.json` so parked-time readings (the battery) go to the right car.

Power rules are the firmware's: engine off (ECU silent, no charging voltage) parks the scheduler,
which then reads only ATRV every 10 s so the car's modules can sleep; a low battery stops even
that for the sleep period. An adapter reset (its banner) re-initialises it and is logged as the
firmware logs it (EVENT adapter_reset); a lost transport ends the session (the service reconnects).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dongle import elm327
from dongle.elm327 import ELM327
from dongle.plan import Plan
from dongle.power import BATTERY_LOW, ENGINE_OFF, ENGINE_ON, NONE, Power
from dongle.scheduler import Scheduler
from obdsync import jsontable, paths
from obdsync.direct import mpcompat
from obdsync.direct.transports import Transport, TransportError, open_transport
from obdsync.link import LinkError, OnReady, Sink, Stats
from protocol import control
from protocol.auth import Hmac
from protocol.channels import CH_VOLTAGE, PID_MODULE_VOLTAGE, PID_RPM, PID_SPEED, PID_STATUS
from protocol.control import POWER_SLEEPING
from protocol.record import EVENT_ADAPTER_RESET, EVENT_BOOT, MAX_RECORD, RecordWriter, Signer
from protocol.record_decode import Record, decode_record

log = logging.getLogger("obdsync.direct")
T = TypeVar("T")

FIRMWARE = "direct"
RECORD_MS = 1000  # as the dongle: a record is sealed at this age
TICK_S = 0.05  # housekeeping: seals, power timers (a simulation at 1200x needs the finer step)
FLUSH_S = 1.0
ENGINE_OFF_SILENT_MS = 5000  # no ECU answer this long: the engine is off (the firmware's app.py, same name)
WAIT_ECU_S = 10.0  # an adapter whose car never answered: look again this often
MAX_PENDING = 20000  # records waiting for a refusing store (≈ 5 h of driving); older ones become a gap


def device_id(address: str, vin: str | None) -> str:
    """16 hex digits for adapter `address` in the car with `vin` (a dongle's id has the same shape)."""
    h = hashlib.blake2b(f"{address.strip().upper()}|{(vin or '').strip().upper()}".encode(), digest_size=8)
    return h.hexdigest()


@dataclass
class Info:
    """What `obdsync.link.DongleLink.info` offers the daemon, for an adapter."""

    device_id: bytes
    vin: bytes
    firmware: str
    supported: bytes = b""  # the supported-PID bitmaps, as a dongle's info carries them


class _Clock:
    """ms since the session started, as the dongle's clock (ticks: wrap-safe, small ints).
    `source` gives monotonic ms: real time, or a simulation's (hil: the scenario's warped clock)."""

    def __init__(self, source: Callable[[], int] | None = None) -> None:
        self._source = source or (lambda: int(time.monotonic() * 1000))
        self._t0 = self._source()

    def ms(self) -> int:
        return (self._source() - self._t0) & 0x3FFFFFFF


def _state_path() -> Path:
    return paths.data_dir() / "direct.json"


class DirectLink:
    def __init__(self, address: str, sink: Sink, *, transport_options: dict[str, Any] | None = None,
                 plan: list[tuple[int, int, int, int]] | None = None, wall_clock: Callable[[], float] = time.time,
                 state_file: Path | None = None, power_config: Any = None,
                 on_ready: OnReady | None = None,
                 transport_factory: Callable[..., Transport] = open_transport,
                 clock: Callable[[], int] | None = None) -> None:
        self.address = address
        self._sink = sink
        self._topts = dict(transport_options or {})
        self._plan_rows = plan or []
        self._wall = wall_clock
        self._state_file = state_file or _state_path()
        self._power_config = power_config
        self._factory = transport_factory
        self._clock_source = clock  # monotonic ms for poll intervals and records; None: real time
        self.on_ready: OnReady | None = on_ready
        self.info: Info | None = None
        self.device: str | None = None
        self.stats = Stats()
        self.transport: Transport | None = None
        self.elm: ELM327 | None = None
        self.sched: Scheduler | None = None
        self.power: Power | None = None
        self._stop = asyncio.Event()
        self._key = os.urandom(32)  # records never leave this process: integrity only
        self._hmac = Hmac(self._key)
        self._writer = RecordWriter(self._key)
        self._signer = Signer(self._key)
        self._small = bytearray(MAX_RECORD)
        self._pending: list[Record] = []
        self._seq = 0
        self._boot = 0
        self._epoch = 0
        self._clock = _Clock()
        self._dtc_due = False
        self._last_status = -1
        self._ecu_at = 0
        self._slept_at = 0
        self._adapter_up = False
        self.lost_records = 0
        self.events: list[str] = []  # power/adapter events of this session, for status and tests

    # -- what the service and the daemon use ------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.transport is not None and self.transport.is_open and self.device is not None

    def stop(self) -> None:
        self._stop.set()
        mpcompat.wake()

    async def command(self, type_: int, payload: bytes = b"", timeout: float = 10.0) -> bytes:
        """The dongle commands that mean the same here, answered as a dongle answers them (so
        `vin --live`, `dtc read --live` and vin.watch work on both kinds): READ_VIN, READ_DTC.
        Others (clearing codes, STATUS, SET_PLAN) are refused by name."""
        elm = self.elm
        if elm is None or self.sched is None or not self.connected:
            raise LinkError("not connected")
        if type_ == control.READ_VIN:
            raw = await asyncio.wait_for(self._job(self._read_vin), timeout)
            if not raw:
                raise LinkError("no VIN from the ECU")
            return raw
        if type_ == control.READ_DTC and len(payload) == 1 and payload[0] in (0x03, 0x07, 0x0A):
            mode = payload[0]

            async def read() -> bytes:
                st = await elm.read_dtcs(mode)
                if st != elm327.OK:  # the driver's reason, never "no codes"
                    raise LinkError(f"the adapter could not read the codes: {elm327.NAMES[st]}")
                d, n = elm.dtc, elm.dtc_n
                return control.pack_dtcs(mode, [bytes(d[2 * i:2 * i + 2]) for i in range(n)],
                                         bytes(elm.dtc_ecu[:n]))

            return await asyncio.wait_for(self._job(read), timeout)
        name = control.COMMAND_NAMES.get(type_, type_)
        raise LinkError(f"{name} is not available on a direct ELM327 adapter (only on an obdsync dongle)")

    async def session(self) -> None:
        self._stop.clear()
        t = self._factory(self.address, **self._topts)
        try:
            await t.open()
        except TransportError as e:
            raise LinkError(str(e)) from e
        self.transport = t
        try:
            await self._run(t)
        finally:
            if self.sched is not None:
                self.sched.stop()
            self._seal()
            await self._flush()
            self.stats.connected_since = None
            await t.close()
            self.transport = None

    # -- a session --------------------------------------------------------------------------------

    async def _run(self, t: Transport) -> None:
        self._clock = _Clock(self._clock_source)
        elm = self.elm = ELM327(t)
        st = await elm.init()
        if not elm.ready:
            raise LinkError(f"{self.address}: the adapter does not answer as an ELM327 ({elm327.NAMES[st]})")
        found = await self._identify(elm, t)
        if found is None:
            return  # stopped or lost while waiting for the car
        vin, device = found
        await self._open_log(device)
        power = self.power = Power(self._clock, self._power_config)
        plan = Plan()
        if self._plan_rows:
            plan.apply_entries(self._plan_rows, supported=lambda pid: bool(elm.pid_supported(pid)))
        sched = self.sched = Scheduler(elm, plan, self._on_answers, self._clock.ms, on_reset=self._on_reset)
        self._adapter_up = True
        self._ecu_at = self._clock.ms()
        self._dtc_due = elm.ecu
        self.stats.connected_since = time.monotonic()
        self.info = Info(bytes.fromhex(device), vin.encode(), f"{FIRMWARE} ({t.kind})", bytes(elm.supported))
        log.info("adapter %s: device %s, VIN %s, protocol %d", self.address, device, vin or "?", elm.protocol)
        if self.on_ready is not None:
            r = self.on_ready(self.info)
            if asyncio.iscoroutine(r):
                await r
        poller = asyncio.create_task(sched.run(), name=f"poll {self.address}")
        try:
            await self._housekeeping(t, poller, elm, sched, power)
        finally:
            sched.stop()
            mpcompat.wake()
            poller.cancel()
            try:
                await poller
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the session ends either way
                pass

    async def _identify(self, elm: ELM327, t: Transport) -> tuple[str, str] | None:
        """The VIN ("" for a car without mode 09) and the device; waits for the ECU if needed
        (None: stopped meanwhile)."""
        remembered = self._remembered()
        while True:
            if elm.ecu:
                st = await elm.read_vin()
                vin = ""
                if st == elm327.OK:
                    vin = bytes(elm.vin[:elm.vin_n]).decode("ascii", "replace").strip("\x00 ").upper()
                device = self.device = device_id(self.address, vin)
                self._remember(vin)
                return vin, device
            if remembered is not None:
                device = self.device = device_id(self.address, remembered)
                return remembered, device
            log.info("adapter %s answers but the car does not (ignition off?): waiting for it", self.address)
            try:
                await asyncio.wait_for(self._stop.wait(), WAIT_ECU_S)
                return None
            except TimeoutError:
                pass
            if not t.is_open:
                raise LinkError(f"{self.address}: {t.lost_reason}")
            await elm.init()

    def _read_state(self) -> dict[str, Any]:
        """The state file; a missing or damaged one is a new log (a new epoch: see _open_log)."""
        try:
            data = json.loads(self._state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self, data: dict[str, Any]) -> None:
        jsontable.write_atomic(self._state_file, data)

    def _remembered(self) -> str | None:
        v = self._read_state().get(self.address.upper(), {}).get("vin")
        return v if isinstance(v, str) else None

    def _remember(self, vin: str) -> None:
        data = self._read_state()
        entry = data.setdefault(self.address.upper(), {})
        entry["vin"] = vin
        self._write_state(data)

    async def _open_log(self, device: str) -> None:
        """A new 'boot' of this device: the boot counter and the next sequence number, in the
        device's log epoch (as a dongle's: random when the log is created). The log here is the state
        file: one lost or replaced starts a new epoch, so its records never collide with the
        stored ones of the old numbering."""
        data = self._read_state()
        entry = data.setdefault(self.address.upper(), {}).setdefault("devices", {}).setdefault(device, {})
        if not isinstance(entry.get("epoch"), int) or "next_seq" not in entry:
            entry["epoch"] = int.from_bytes(os.urandom(4), "big") or 1
            entry["next_seq"] = 0
        self._epoch = entry["epoch"]
        self._boot = (int(entry.get("boot", 0)) + 1) & 0xFFFF
        self._seq = max(int(entry["next_seq"]), self._seq if self.stats.records else 0)
        entry["boot"] = self._boot
        self._write_state(data)
        self._small_record(self._signer.anchor(self._small, self._seq, self._boot, self._clock.ms(),
                                               int(self._wall() * 1000)))
        self._event(EVENT_BOOT)

    def _save_seq(self, device: str) -> None:
        data = self._read_state()
        entry = data.setdefault(self.address.upper(), {}).setdefault("devices", {}).setdefault(device, {})
        entry["next_seq"] = self._seq
        entry["boot"] = self._boot
        self._write_state(data)

    async def _housekeeping(self, t: Transport, poller: asyncio.Task[None], elm: ELM327, sched: Scheduler,
                            power: Power) -> None:
        last_flush = time.monotonic()
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), TICK_S)
            except TimeoutError:
                pass
            if not t.is_open:
                raise LinkError(f"{self.address}: {t.lost_reason}")
            if poller.done():
                exc = poller.exception()
                raise LinkError(f"{self.address}: polling stopped: {exc}") from exc
            now = self._clock.ms()
            w = self._writer
            if not w.empty() and mpcompat.ticks_diff(now, w.t0) >= RECORD_MS:
                self._seal()
            if power.state == POWER_SLEEPING and mpcompat.ticks_diff(now, self._slept_at) >= power.config.sleep_ms:
                power.woke()
                sched.set_power(power.state)
            if power.polling and (not elm.ecu or mpcompat.ticks_diff(now, self._ecu_at) > ENGINE_OFF_SILENT_MS):
                power.no_answer()  # a stopped engine answers NO DATA, not RPM 0
            if self._dtc_due and elm.ecu and elm.ready:
                self._dtc_due = False
                sched.submit(self._read_codes)
            self.stats.status = {"millivolts": power.millivolts, "power_state": power.state,
                                 "elm_protocol": elm.protocol,
                                 "rates": {ch: sched.rate[ch] / 100 for ch in bytes(sched.plan.chans[:sched.plan.n])
                                           if sched.rate[ch]}}
            if time.monotonic() - last_flush >= FLUSH_S:
                last_flush = time.monotonic()
                await self._flush()

    # -- the scheduler's callbacks (the firmware app's, on CPython) --------------------------------

    def _parts(self) -> tuple[ELM327, Scheduler, Power]:
        """The session's driver, scheduler and power rules, for the scheduler's callbacks (which
        run only while the session that made all three runs)."""
        if self.elm is None or self.sched is None or self.power is None:
            raise LinkError(f"{self.address}: no session")
        return self.elm, self.sched, self.power

    def _on_answers(self, t_ms: int, n: int, ch: bytearray, off: bytearray, ln: bytearray,
                    data: bytearray) -> None:
        elm, sched, p = self._parts()
        w = self._writer
        nbytes = sum(ln[i] for i in range(n))
        if not w.fits(n, nbytes) or (not w.empty() and t_ms < w.t0):
            self._seal()
        w.group(t_ms)
        code = NONE
        for i in range(n):
            c, o = ch[i], off[i]
            w.add(c, data, o, ln[i])
            e = NONE
            if c == CH_VOLTAGE or (c == PID_MODULE_VOLTAGE and not elm.has_volts):
                # ATRV, or where the adapter has none the ECU's supply reading (PID 0x42, mV too)
                e = p.volts((data[o] << 8) | data[o + 1])
            elif c == PID_RPM:
                e = p.ecu(((data[o] << 8) | data[o + 1]) >> 2, -1)
            elif c == PID_SPEED:
                e = p.ecu(-1, data[o])
            elif c == PID_STATUS and data[o] != self._last_status:
                self._last_status = data[o]  # MIL or DTC count changed: read the codes
                self._dtc_due = True
            if c != CH_VOLTAGE:
                self._ecu_at = t_ms
            if e != NONE:
                code = e
        if code != NONE:
            self._event(code)
            sched.set_power(p.state)
            if code == ENGINE_ON:
                self._dtc_due = True
            elif code == BATTERY_LOW:
                self._slept_at = self._clock.ms()
            elif code == ENGINE_OFF:
                log.info("adapter %s: engine off, polling only the battery", self.address)

    def _on_reset(self, _mv: int) -> None:
        if self._adapter_up:
            self._event(EVENT_ADAPTER_RESET)
            log.warning("adapter %s reset; initialised again", self.address)
        self._adapter_up = True

    async def _read_codes(self) -> None:
        elm, _, _ = self._parts()
        for mode in (0x03, 0x07, 0x0A):
            # As the dongle: only a list read whole is logged (NO DATA or an error says nothing
            # about the codes; a record of none would be a false all-clear), with each code's ECU.
            if await elm.read_dtcs(mode) != elm327.OK:
                continue
            self._seal()
            self._small_record(self._signer.dtc(self._small, self._seq, self._boot, self._clock.ms(), mode,
                                                elm.dtc, elm.dtc_n, elm.dtc_ecu))

    async def _read_vin(self) -> bytes:
        elm, _, _ = self._parts()
        st = await elm.read_vin()
        return bytes(elm.vin[:elm.vin_n]) if st == elm327.OK else b""

    async def _job(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run fn in the scheduler's task: the chip serves one request at a time."""
        _, sched, _ = self._parts()
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        async def job() -> None:
            try:
                fut.set_result(await fn())
            except Exception as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

        sched.submit(job)
        mpcompat.wake()
        return await fut

    # -- records ----------------------------------------------------------------------------------

    def _event(self, code: int) -> None:
        from protocol.record import EVENT_NAMES

        self._seal()
        mv = self.power.millivolts if self.power is not None else 0
        self._small_record(self._signer.event(self._small, self._seq, self._boot, self._clock.ms(), code, mv))
        self.events.append(EVENT_NAMES.get(code, str(code)))

    def _seal(self) -> None:
        w = self._writer
        if w.empty() or self.device is None:
            return
        n = w.seal(self._seq, self._boot)
        self._keep(bytes(w.out[:n]))

    def _small_record(self, n: int) -> None:
        self._keep(bytes(self._small[:n]))

    def _keep(self, raw: bytes) -> None:
        rec = decode_record(raw, self._hmac)  # the store takes what a dongle's link would give it
        self._seq += 1
        self._pending.append(rec)
        self.stats.records += 1
        self.stats.samples += len(getattr(rec, "samples", ()) or ())
        self.stats.last_seen = time.time()
        if len(self._pending) > MAX_PENDING:
            drop = len(self._pending) - MAX_PENDING + 1
            first = self._pending[0].seq
            del self._pending[:drop]
            self.lost_records += drop
            n = self._signer.gap(self._small, self._seq, self._boot, self._clock.ms(), first, drop)
            self._pending.append(decode_record(bytes(self._small[:n]), self._hmac))
            self._seq += 1
            log.error("adapter %s: the store refuses records; %d oldest dropped (a gap)", self.address, drop)

    async def _flush(self) -> None:
        device = self.device
        if not self._pending or device is None:
            return
        batch = list(self._pending)
        try:
            contiguous = await self._sink.ingest(device, batch, epoch=self._epoch, first_unacked=batch[0].seq)
        except Exception as e:  # noqa: BLE001 - the store says why; the records wait in memory
            log.error("adapter %s: could not store %d records (kept, retrying): %s", self.address, len(batch), e)
            return
        self._pending = [r for r in self._pending if r.seq > contiguous]
        self.stats.acked = contiguous
        self._save_seq(device)
