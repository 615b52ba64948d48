"""The dongle: poll the car, log every record, serve the daemon over BLE.

Tasks (MicroPython asyncio):
- the scheduler polls the ELM327 and hands each answer to `_sink`, which stages
  it in the record being built;
- housekeeping seals a record once it is a second old (the loss bound on a power
  cut is that plus the log's flush interval), ticks the log, runs the power rules
  and sends the dongle to deep sleep when parked and idle (dongle.sleep: a reset);
- the control task authenticates the daemon and executes its commands;
- the sender replays the log from the first unacked record, then follows it live.

Hardware comes in through the constructor; main.py decides what is real.
"""

import asyncio
import gc
import time

from micropython import const

from protocol import auth
from protocol.channels import CH_VOLTAGE, PID_RPM, PID_SPEED, PID_STATUS
from protocol.control import POWER_SLEEPING
from protocol.record import EVENT_ADAPTER_RESET, EVENT_BOOT, EVENT_NAMES, MAX_RECORD, RecordWriter, Signer

from . import elm327, unload
from .actions import DongleActions
from .commands import CommandHandler
from .elm327 import ELM327
from .flashlog import FlashLog
from .gatt import Gatt
from .plan import Plan
from .power import BATTERY_LOW, ENGINE_OFF, ENGINE_ON, NONE, Power
from .scheduler import Scheduler

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away
# and has no `typing`, so the names they use exist for the checker only.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import TypeVar

    import bluetooth

    from dongle._types import Clock, ElmStream
    from protocol._types import Bytes

    from .bonds import Bonds
    from .flashlog import Cursor
    from .power import PowerConfig
    from .sleep import Carried, DeepSleep
    from .watchdog import Watchdog

    T = TypeVar("T")

FIRMWARE_VERSION = "0.1.0"
RECORD_MS = const(1000)  # a record is sealed at this age: bounds loss on a power cut
HOUSEKEEPING_MS = const(100)
ENGINE_OFF_SILENT_MS = const(5000)  # no ECU answer this long: the engine is off (for the power rules)
PID_CMV = const(0x42)  # control module voltage: the supply reading where the adapter has no ATRV
VOLTS_STALE_MS = const(120000)  # a supply reading at least this often, even if the plan has none


class Dongle:
    def __init__(self, ble: bluetooth.BLE, stream: ElmStream, clock: Clock, flash_root: str, secret: bytes,
                 device_id: Bytes, *, pairing: bool = True, bonds: Bonds | None = None,
                 log_capacity: int = 1 << 20, segment_bytes: int = 16384, power_config: PowerConfig | None = None,
                 sleeper: DeepSleep | None = None, random_bytes: Callable[[int], bytes] | None = None,
                 name: str | None = None, out: Callable[[str], object] = print, heap_report_ms: int = 0,
                 watchdog: Watchdog | None = None, carried: Carried | None = None) -> None:
        # sleeper: the board's deep sleep (None: no sleep hardware, the dongle stays awake);
        # carried: what the deep sleep this boot woke from carried in RTC memory, or None.
        self.clock = clock
        self._out = out
        self.device_id = bytes(device_id)
        if random_bytes is None:
            import os
            random_bytes = os.urandom
        # The log picks its epoch (random when it is created); its records' key follows.
        self.log = FlashLog(flash_root + "/log", lambda epoch: auth.telemetry_key(secret, epoch), log_capacity,
                            segment_bytes, clock, random_bytes=random_bytes)
        key = self.log.key
        self.writer = RecordWriter(key)
        self.signer = Signer(key)
        self.small = bytearray(MAX_RECORD)  # event/anchor/dtc records
        self._txbuf = bytearray(MAX_RECORD)  # the record being notified
        # Serial timeouts are physics (baud, ECU latency): real ticks, never the
        # simulation's warped clock. Poll intervals and records use `clock`.
        self.elm = ELM327(stream)
        self.plan = Plan()
        self.sched = Scheduler(self.elm, self.plan, self.sink, clock.ms, on_reset=self._on_reset)
        self.power = Power(clock, power_config)
        self._sleeper = sleeper
        self._carried = carried
        if carried is not None:
            self.power.resume(carried)  # parked, as it went to sleep
            self.sched.set_power(self.power.state)
        self._pairing = pairing
        self._bonds = bonds
        self._watchdog = watchdog  # a dongle.watchdog.Watchdog, fed by housekeeping
        from protocol.uuids import adv_name  # boot-only, as in Gatt: unloaded below

        self.gatt = Gatt(ble, name or adv_name(self.device_id), self._info(), pairing, auth.passkey(secret),
                         bonds)
        unload("protocol.uuids")
        # The commands act through an object of their own: nothing else of the dongle is reachable
        # from BLE.
        self.cmd = CommandHandler(secret, self.device_id, clock, DongleActions(self), random_bytes)
        self._cursor: Cursor | None = None
        self._wake_sender = asyncio.ThreadSafeFlag()
        self._last_status = -1  # the last PID 0x01 data (MIL + count), to notice changes
        self.dtc_due = False
        self._adapter_up = False
        self._closed = False
        self._ecu_at = 0  # clock ms of the last ECU answer (ECU silence: the engine is off)
        self._mv_at = 0  # ... and of the last supply reading (the power rules' input)
        self._volts_job = False
        self._vin_asked = False
        self._gen = 0  # the gatt generation the session belongs to
        self._heap_ms = heap_report_ms  # > 0: print "heap ALLOC FREE" this often (tests watch it)
        self._heap_at = 0
        self.running = True
        self._event(EVENT_BOOT)

    # -- info -------------------------------------------------------------------

    def _info(self) -> bytes:
        # At boot, when the adapter came up and after the VIN: protocol.info is loaded for the
        # encoding and unloaded after (a loaded .mpy module's bytecode stays in the heap).
        from protocol.info import CAP_CAN, CAP_PAIRING, encode_info

        try:
            caps = (CAP_CAN if self.elm.is_can else 0) | (CAP_PAIRING if self._pairing else 0)
            vin = bytes(self.elm.vin[: self.elm.vin_n]) if self.elm.vin_n else b""
            return encode_info(self.device_id, FIRMWARE_VERSION, bytes(self.elm.supported), vin, caps,
                               self.log.epoch)
        finally:
            unload("protocol.info")

    # -- records ----------------------------------------------------------------

    def sink(self, t_ms: int, n: int, ch: bytearray, off: bytearray, ln: bytearray, data: bytearray) -> None:
        """Answers of one request (the scheduler's callback; allocation-free)."""
        w = self.writer
        nbytes = 0
        for i in range(n):
            nbytes += ln[i]
        if not w.fits(n, nbytes) or (not w.empty() and t_ms < w.t0):
            self.seal()  # full, or the clock wrapped (dongle.clock): a record's times only rise
        w.group(t_ms)
        p = self.power
        code = NONE
        for i in range(n):
            c = ch[i]
            o = off[i]
            w.add(c, data, o, ln[i])
            e = NONE
            if c == CH_VOLTAGE or (c == PID_CMV and not self.elm.has_volts):
                # ATRV, or where the adapter has none the ECU's own supply reading (PID 0x42,
                # mV as well): the power rules need one
                self._mv_at = t_ms
                e = p.volts((data[o] << 8) | data[o + 1])
            elif c == PID_RPM:
                e = p.ecu(((data[o] << 8) | data[o + 1]) >> 2, -1)
            elif c == PID_SPEED:
                e = p.ecu(-1, data[o])
            elif c == PID_STATUS:
                # MIL bit and DTC count: read the codes when they change.
                s = data[o]
                if s != self._last_status:
                    self._last_status = s
                    self.dtc_due = True
            if c != CH_VOLTAGE:
                self._ecu_at = t_ms
            if e != NONE:
                code = e
        # After the group: an event seals the record, which must not split a group.
        self._power_event(code)

    def seal(self) -> None:
        w = self.writer
        if w.empty():
            return
        log = self.log
        n = w.seal(log.next_seq, log.boot)
        log.append(w.out, n)

    def append_small(self, n: int) -> None:
        self.log.append(self.small, n)

    def _event(self, code: int) -> None:
        self.seal()  # keep the order: samples before the event they led to
        log = self.log
        self.append_small(self.signer.event(self.small, log.next_seq, log.boot, self.clock.ms(), code,
                                              self.power.millivolts))
        self._out("event %s" % EVENT_NAMES.get(code, code))

    def _power_event(self, code: int) -> None:
        if code == NONE:
            return
        self._event(code)
        if code == ENGINE_OFF:
            self.sched.set_power(self.power.state)
        elif code == ENGINE_ON:
            self.sched.set_power(self.power.state)
            self.dtc_due = True  # trip start
        elif code == BATTERY_LOW:
            self.sched.set_power(self.power.state)
            self._deep_sleep("battery low")

    def _deep_sleep(self, why: str) -> None:
        """Flush, keep the power rules' state in RTC memory, power down. Does not return
        where there is sleep hardware: the wake is a boot (main.py)."""
        self.seal()
        self.log.flush()
        ms = self.power.config.sleep_ms
        if self._sleeper is None:
            # No sleep hardware (a rig without it): stay parked and awake, watching the supply.
            self._out("no deep sleep (%s): no sleep hardware" % why)
            self.power.stay_awake()
            self.sched.set_power(self.power.state)
            return
        self._out("sleep %d (%s)" % (ms, why))
        from .sleep import Carried  # here: a boot that never sleeps never loads it

        self._sleeper.sleep(ms, self.power.carry(self._carried or Carried()))

    def _on_reset(self, mv: int) -> None:
        # The adapter came up: the first time at boot, later after a reset or loss.
        if self._adapter_up:
            self._event(EVENT_ADAPTER_RESET)
        self._adapter_up = True
        self.gatt.set_info(self._info())  # protocol and supported PIDs are known now

    async def _read_codes(self) -> None:
        elm = self.elm
        for mode in (0x03, 0x07, 0x0A):
            # Only a list read whole is logged: NO DATA (no ECU answered this mode) or an error
            # says nothing about the codes, and a record of none would be a false all-clear.
            if await elm.read_dtcs(mode) != elm327.OK:
                continue
            self.seal()
            log = self.log
            n = self.signer.dtc(self.small, log.next_seq, log.boot, self.clock.ms(), mode, elm.dtc, elm.dtc_n,
                                 elm.dtc_ecu)
            self.append_small(n)

    async def elm_job(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run fn (an async function using the chip) in the scheduler's task; return its result,
        or raise here what it raised. The scheduler's task never sees a job's error: it would
        end the poll loop, and the command would get None for a result (clear_dtc took that
        for "refused: the car moves")."""
        done = asyncio.Event()
        box: list[T] = []
        err: list[Exception] = []

        async def job() -> None:
            try:
                box.append(await fn())
            except Exception as e:  # noqa: BLE001 - handed to the caller below
                err.append(e)
            finally:
                done.set()

        self.sched.submit(job)
        await done.wait()
        if err:
            raise err[0]
        return box[0]

    # -- tasks ------------------------------------------------------------------

    async def housekeeping(self) -> None:
        """The periodic duties, one named method each, every HOUSEKEEPING_MS."""
        while self.running:
            await asyncio.sleep_ms(HOUSEKEEPING_MS)
            now = self.clock.ms()
            self._feed_watchdog()
            if self._bonds is not None:
                self._bonds.flush()  # what the pairing IRQ could not schedule
            self._seal_if_due(now)
            self._tick_log()
            self._sleep_if_parked_and_idle(now)
            self._judge_engine_silence(now)
            self._keep_volts_fresh(now)
            self._queue_reads()
            self._report_heap(now)

    def _feed_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.check(self.sched.beat)

    def _seal_if_due(self, now: int) -> None:
        """A record is sealed at RECORD_MS of age: the loss bound on a power cut."""
        w = self.writer
        if not w.empty() and time.ticks_diff(now, w.t0) >= RECORD_MS:
            self.seal()

    def _tick_log(self) -> None:
        self.log.tick()
        if self.log.flushed_seq >= self.log.first_unacked:
            self._wake_sender.set()

    def _sleep_if_parked_and_idle(self, now: int) -> None:
        """Parked for park_sleep_after_ms with the link idle: deep sleep with timer wakes
        (and the supply pin where the board has one). Idle: no central connected, or one
        that has acknowledged every record; a backlog waits on flash for the next start."""
        p = self.power
        after = p.config.park_sleep_after_ms
        if self._sleeper is None or not after or p.parked_for(now) < after:
            return
        if not p.millivolts and self.elm.has_volts:
            return  # no supply reading yet this boot: the rules have not looked (a battery_low due)
        if self.gatt.conn is not None and (not self.writer.empty() or self.log.first_unacked < self.log.next_seq):
            return
        self._deep_sleep("parked")

    def _judge_engine_silence(self, now: int) -> None:
        if self.power.polling and (not self.elm.ecu or time.ticks_diff(now, self._ecu_at) > ENGINE_OFF_SILENT_MS):
            # A stopped engine answers NO DATA, not RPM 0: silence counts as RPM 0.
            self.power.no_answer()

    def _keep_volts_fresh(self, now: int) -> None:
        if (self.power.state != POWER_SLEEPING and not self._volts_job and self.elm.ready
                and self.elm.has_volts and time.ticks_diff(now, self._mv_at) > self._volts_stale_ms()):
            # The power rules need a fresh supply reading whatever the plan says (a
            # SET_PLAN without ATRV, or a scheduler starving it while the bus is held).
            self._volts_job = True
            self.sched.submit(self._read_volts)

    def _queue_reads(self) -> None:
        """DTCs when the status PID says they changed (or at a trip start), the VIN once."""
        if self.dtc_due and self.elm.ecu:
            self.dtc_due = False
            self.sched.submit(self._read_codes)
        if not self._vin_asked and self.elm.ecu and self.elm.ready:
            self._vin_asked = True
            self.sched.submit(self._read_vin_once)

    def _report_heap(self, now: int) -> None:
        if self._heap_ms and time.ticks_diff(now, self._heap_at) >= self._heap_ms:
            self._heap_at = now
            gc.collect()  # what stays allocated, not garbage waiting for a collection
            self._out("heap %d %d" % (gc.mem_alloc(), gc.mem_free()))

    def _volts_stale_ms(self) -> int:
        iv = self.plan.interval(CH_VOLTAGE, self.power.state) * 100
        return 2 * iv if iv else VOLTS_STALE_MS

    async def _read_volts(self) -> None:
        try:
            if self.power.state == POWER_SLEEPING:
                return  # queued before the dongle went to sleep: asleep, nothing is read
            mv = await self.elm.read_voltage()
            if mv >= 0:
                now = self.clock.ms()
                self._mv_at = now
                self._power_event(self.power.volts(mv))
        finally:
            self._volts_job = False

    async def _read_vin_once(self) -> None:
        if await self.elm.read_vin() == elm327.OK:
            self.gatt.set_info(self._info())

    def _peer_changed(self) -> bool:
        """Whether the central changed since the session was made; if so the session and
        the stream end here, before anything else is done for the new one."""
        g = self.gatt
        if g.generation == self._gen:
            return False
        self._gen = g.generation
        self.cmd.disconnected()
        self._stop_stream()
        return True

    async def control(self) -> None:
        g = self.gatt
        while self.running:
            await g.rx_ready.wait()
            while True:
                msg = g.next_command()
                if msg is None:
                    break
                self._peer_changed()
                gen = g.generation
                try:
                    reply = await self.cmd.handle(msg)
                except Exception as e:  # noqa: BLE001 - one bad command must not deafen the dongle
                    self._out("command error %r" % (e,))
                    continue
                if reply is not None and g.generation == gen:
                    await g.reply(reply)

    async def connection(self) -> None:
        g = self.gatt
        seen_c = 0
        seen_d = 0
        while self.running:
            await g.changed.wait()
            self._peer_changed()
            # Every connect and disconnect once, in order, even when both happened since the
            # last look (the HIL kit waits for these lines).
            while seen_c < g.connects or seen_d < g.disconnects:
                if seen_c == seen_d:
                    seen_c += 1
                    self._out("connected")
                else:
                    seen_d += 1
                    self._out("disconnected")

    def _stop_stream(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None

    def start_stream(self) -> FlashLog:
        """Replay from the first unacked record, then follow the log live (STREAM); the log."""
        self._stop_stream()
        log = self.log
        self._cursor = log.cursor()
        self._wake_sender.set()
        return log

    async def sender(self) -> None:
        g = self.gatt
        buf = self._txbuf
        while self.running:
            self._peer_changed()
            c = self._cursor
            if c is None or g.conn is None or not self.cmd.authenticated:
                await self._wake_sender.wait()
                continue
            n = c.read_into(buf)
            if n == 0:
                await self._wake_sender.wait()
                continue
            if not await g.send_record(buf, n):
                self._stop_stream()

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.sched.run()), asyncio.create_task(self.housekeeping()),
                 asyncio.create_task(self.control()), asyncio.create_task(self.connection()),
                 asyncio.create_task(self.sender())]
        try:
            while self.running:
                await asyncio.sleep_ms(200)
                for t in tasks:
                    if t.done() and self.running:
                        # A task that died leaves a dongle half alive (a dead sender still
                        # answers STATUS but streams nothing, and feeds the watchdog): stop
                        # here, loudly. On the board the unfed watchdog then resets the chip.
                        await t  # raises what ended it
                        raise RuntimeError("a dongle task ended")
        finally:
            self.sched.stop()
            for t in tasks:
                t.cancel()
            self.shutdown()

    def stop(self) -> None:
        self.running = False

    def shutdown(self) -> None:
        """Seal the record being built and flush the log (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.seal()
        self.log.close()
