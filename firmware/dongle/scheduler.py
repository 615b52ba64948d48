"""The poll scheduler: batches due channels into requests, keeps rates fair, measures them.

Fairness: each due channel scores lateness / interval (how many of its own intervals it is
overdue) and the highest scores go first. A channel served within one interval of its due
time keeps its cadence (no drift); one that fell further behind owes nothing and competes
from the time it was served. So when the bus is slower than the plan asks, slow channels keep
their rate while they fit, and the fast ones share what is left in proportion to their asked
rates (close to max-min fairness); a waiting channel's score only grows, so nothing starves.
A channel due within 1/8 of its interval may join a request that is being sent anyway (a free
ride on the same bus round trip).

Batches: a multi-PID request answered NO DATA while the ECU answers otherwise (some ECUs and
adapters refuse batches, yet answer each PID alone) marks its PIDs "alone": each goes in a
request of its own, and no miss is charged; so does a PID missing from a batch that others
answered in a clean reply (an ECU answering batches in part) — a miss is charged only when it
fails alone, or when the reply was cut or garbled (that is the line, not the ECU). Every BATCH_RETRY_MS the marks are forgotten and
batches are tried again (an ECU asleep at the first request is not an ECU that refuses them).
A `?` to a batch means the chip has no multi-PID requests at all: batch_max drops to 1.

Misses: a requested PID missing from an answer (NO DATA, or another PID answered instead)
backs off exponentially and is dropped after GIVE_UP misses in a row, until `revive()` (trip
start). When nothing at all has answered for ECU_ASLEEP_MS the ECU is asleep, not the PID
unsupported: that backs off the whole bus instead of charging each PID.

Results go to `sink(t_ms, n, ch, off, ln, data)`: n samples, sample i is channel ch[i] with
data[off[i]:off[i]+ln[i]] (the driver's buffers: consume them before returning), e.g.
    w.group(t_ms); for i in range(n): w.add(ch[i], data, off[i], ln[i])
for a protocol.record.RecordWriter.
"""

from array import array

from protocol import MICROPYTHON
from protocol.channels import CH_VOLTAGE

from . import elm327
from .elm327 import MAX_PIDS, NO_DATA, OK, PENDING
from .plan import DRIVING, PARKED, STATES

if MICROPYTHON:
    import asyncio
    import time

    from micropython import const
else:  # CPython: the daemon's direct mode runs this scheduler unchanged
    from obdsync.direct.mpcompat import asyncio, const, time

# Annotations are for the type checks: MicroPython compiles them away and has no `typing`;
# CPython (the daemon's direct mode) evaluates them, so names from the block below are quoted.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .plan import Plan

    # sink(t_ms, n, ch, off, ln, data): the driver's result arrays (see the module doc).
    Sink = Callable[[int, int, bytearray, bytearray, bytearray, bytearray], object]

GIVE_UP = const(6)
ECU_ASLEEP_MS = const(3000)  # nothing answered this long: the ECU sleeps, no PID is charged a miss
WINDOW_MS = const(10000)  # achieved rates are measured over this window
MAX_HOLD_MS = const(5000)
IDLE_WAKE_MS = const(50)  # longest sleep between looks at the plan (power state changes)
ECU_RETRY_MS = const(10000)
BATCH_RETRY_MS = const(60000)
_CAP = const(3600000)  # lateness cap: keeps scores small ints on the board


class Scheduler:
    def __init__(self, elm: elm327.ELM327, plan: "Plan", sink: "Sink", clock: "Callable[[], int]" = time.ticks_ms,
                 on_reset: "Callable[[int], object] | None" = None) -> None:
        self.elm = elm
        self.plan = plan
        self.sink = sink
        self.clock = clock
        self.on_reset = on_reset  # called after the adapter was re-initialised (EVENT record)
        self.beat = time.ticks_ms()  # when run() last turned (dongle.watchdog)
        self.power = DRIVING
        self.batch_max = MAX_PIDS
        self._due = array("i", bytes(4 * 256))
        self._miss = bytearray(256)
        self._alone = bytearray(256)  # 1: this PID's batches answered NO DATA, ask it alone
        self._alone_n = 0
        self._alone_at = 0
        self._hits = array("H", bytes(2 * 256))
        self.rate = array("H", bytes(2 * 256))  # centihertz, last full window
        self._batch = bytearray(MAX_PIDS)
        self._score = array("i", bytes(4 * MAX_PIDS))
        self._n = 0
        self._wait = 0
        self._volt = False
        now = clock()
        self._win0 = now
        self._last_answer = now
        self._hold_until = now
        self._streak = 0
        self.requests = 0
        self.given_up = 0
        self.bus_errors = 0
        self.running = False
        self._pv = -1  # plan version the due times were set for
        # One-off requests (DTCs, VIN, clear) run here, between two polls: the chip
        # serves one request at a time and this task owns it (see submit).
        self.jobs: list[Callable[[], Awaitable[object]]] = []

    def submit(self, job: "Callable[[], Awaitable[object]]") -> None:
        """Run the coroutine function `job` between two polls, after those already waiting."""
        self.jobs.append(job)

    # ---- power state (set by the power manager) ---------------------------------------------

    def set_power(self, state: int) -> None:
        if state == self.power:
            return
        if state == DRIVING:
            self.revive()
        self.power = state
        now = self.clock()
        # Channels start afresh in the new state: due now, not owed from the old state.
        for j in range(self.plan.n):
            self._due[self.plan.chans[j]] = now

    def revive(self) -> None:
        """Give dropped PIDs another chance (a new trip, another ECU awake)."""
        for j in range(self.plan.n):
            self._miss[self.plan.chans[j]] = 0

    def dropped(self, ch: int) -> bool:
        return self._miss[ch] >= GIVE_UP

    # ---- STATUS -----------------------------------------------------------------------------

    def rates_into(self, buf: bytearray | memoryview, off: int) -> int:
        """Write `channel u8, centihertz u16` per plan channel at buf[off:]; returns the count."""
        n = 0
        for j in range(self.plan.n):
            ch = self.plan.chans[j]
            if off + 3 > len(buf):
                break
            r = self.rate[ch]
            buf[off] = ch
            buf[off + 1] = r >> 8
            buf[off + 2] = r & 0xFF
            off += 3
            n += 1
        return n

    # ---- one cycle: begin() sends, the caller polls the driver, end() accounts ---------------

    def begin(self, now: int) -> int:
        """Send the next request: PENDING, or the ms to wait before trying again."""
        hold = time.ticks_diff(self._hold_until, now)
        if hold > 0:
            # The bus is held (the ECU is silent), not the adapter: ATRV costs the
            # car nothing and the power rules need it.
            if not self._atrv_due(now):
                return hold
            self._volt = True
            self._batch[0] = CH_VOLTAGE
            n = 1
        else:
            n = self._select(now)
        if n == 0:
            return self._wait
        self._n = n
        self.requests += 1
        if self._volt:
            st = self.elm.start_voltage()
        else:
            st = self.elm.start_pids(self._batch, n)
        if st != PENDING:
            self._n = 0
            return IDLE_WAKE_MS
        return PENDING

    def end(self, now: int, st: int) -> int:
        """Account for a finished request. Returns st (TIMEOUT / RESET / NOT_READY ask the
        caller to run elm.recover() / elm.init())."""
        self._roll(now)
        n = self._n
        self._n = 0
        elm = self.elm
        if st == OK or st == NO_DATA:
            if elm.res_n and not self._volt:  # ATRV is the adapter speaking, not the ECU
                self._last_answer = now
                self._streak = 0
            elif not self._volt and time.ticks_diff(now, self._last_answer) > ECU_ASLEEP_MS:
                # The ECU is silent: not the PIDs' fault, so no miss is charged, but
                # they were asked: next due one interval on (else their lateness
                # grows without bound and starves ATRV).
                for i in range(n):
                    ch = self._batch[i]
                    self._due[ch] = time.ticks_add(now, self.plan.interval(ch, self.power) * 100)
                self._backoff(now)
                return st
            elif n > 1 and not self._volt:
                # The ECU answers, but not this batch: ask its PIDs one by one (no miss charged).
                for i in range(n):
                    self._mark_alone(self._batch[i], now)
                return st
            plan = self.plan
            for i in range(n):
                ch = CH_VOLTAGE if self._volt else self._batch[i]
                iv = plan.interval(ch, self.power) * 100
                if self._answered(ch):
                    if self._hits[ch] < 65535:
                        self._hits[ch] += 1
                    self._miss[ch] = 0
                    nd = time.ticks_add(self._due[ch], iv)
                    if time.ticks_diff(now, nd) > 0:
                        nd = now  # far behind: owe nothing, compete from now on
                    self._due[ch] = nd
                elif n > 1 and not self._volt and not self._alone[ch] and not elm.flaws:
                    # Missing from a batch others answered: asked alone next (some ECUs answer
                    # a batch only in part), a miss only if it does not answer alone either.
                    self._mark_alone(ch, now)
                else:
                    m = self._miss[ch] + 1
                    self._miss[ch] = m
                    if m >= GIVE_UP:
                        self.given_up += 1
                    self._due[ch] = time.ticks_add(now, iv << m)
            if elm.res_n:
                self.sink(now, elm.res_n, elm.res_ch, elm.res_off, elm.res_len, elm.msg)
            return st
        if st == elm327.UNKNOWN and n > 1:
            self.batch_max = 1  # a chip (clone) without multi-PID requests
        elif st == elm327.BUFFER_FULL and self.batch_max > 1:
            self.batch_max -= 1
        elif st != elm327.UNKNOWN and st != elm327.BAD_ARG:
            self._backoff(now)
        return st

    # ---- the task -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until stop(); re-initialises the adapter when it reset or was lost."""
        self.running = True
        elm = self.elm
        poll_ms = elm.stream.poll_ms
        clock = self.clock
        last_init = clock()
        while self.running:
            self.beat = time.ticks_ms()  # real ticks: the watchdog's proof of progress
            while self.jobs:
                await self.jobs.pop(0)()
            # Re-initialise when the chip reset or was lost, and look for the ECU again every
            # ECU_RETRY_MS while the car is not parked (ignition came on after an UNABLE).
            if not elm.ready or (not elm.ecu and self.power < PARKED
                                 and time.ticks_diff(clock(), last_init) > ECU_RETRY_MS):
                was_ready = elm.ready
                st = await elm.init()
                last_init = clock()
                if not elm.ready:
                    self._backoff(clock())
                    await asyncio.sleep_ms(time.ticks_diff(self._hold_until, clock()))
                    continue
                self.batch_max = MAX_PIDS
                if st == OK:
                    self.revive()
                if self.on_reset and not was_ready:
                    self.on_reset(elm.mv)
            w = self.begin(clock())
            if w != PENDING:
                await asyncio.sleep_ms(w if w < IDLE_WAKE_MS else IDLE_WAKE_MS)
                continue
            st = elm.poll()
            while st == PENDING:
                await asyncio.sleep_ms(poll_ms)
                st = elm.poll()
            st = self.end(clock(), st)
            if st == elm327.TIMEOUT:
                if await elm.recover() != OK:
                    elm.ready = False

    def stop(self) -> None:
        self.running = False

    # ---- internals ------------------------------------------------------------------------------

    def _answered(self, ch: int) -> bool:
        elm = self.elm
        for j in range(elm.res_n):
            if elm.res_ch[j] == ch:
                return True
        return False

    def _mark_alone(self, ch: int, now: int) -> None:
        if not self._alone[ch]:
            if not self._alone_n:
                self._alone_at = now  # batches are tried again BATCH_RETRY_MS from here
            self._alone[ch] = 1
            self._alone_n += 1

    def _backoff(self, now: int) -> None:
        self.bus_errors += 1
        s = self._streak
        if s < 6:
            self._streak = s + 1
        h = 100 << s
        self._hold_until = time.ticks_add(now, h if h < MAX_HOLD_MS else MAX_HOLD_MS)

    def _roll(self, now: int) -> None:
        el = time.ticks_diff(now, self._win0)
        if el < WINDOW_MS:
            return
        ds = el // 100
        for j in range(self.plan.n):
            ch = self.plan.chans[j]
            self.rate[ch] = self._hits[ch] * 1000 // ds
            self._hits[ch] = 0
        self._win0 = now

    def _atrv_due(self, now: int) -> bool:
        if self.power >= STATES or not self.elm.has_volts:
            return False
        iv = self.plan.interval(CH_VOLTAGE, self.power)
        return iv != 0 and time.ticks_diff(now, self._due[CH_VOLTAGE]) >= 0

    def _select(self, now: int) -> int:
        """Fill _batch with the most overdue channels, return how many; _wait = ms until the
        next is due (no tuple: this runs every cycle)."""
        st = self.power
        self._wait = IDLE_WAKE_MS
        if st >= STATES:
            return 0
        plan = self.plan
        if plan.version != self._pv:
            # new or changed rows: due now (an unset due time is not comparable with ticks)
            self._pv = plan.version
            for j in range(plan.n):
                self._due[plan.chans[j]] = now
        elm = self.elm
        if self._alone_n and time.ticks_diff(now, self._alone_at) > BATCH_RETRY_MS:
            for j in range(plan.n):
                self._alone[plan.chans[j]] = 0
            self._alone_n = 0
            self._alone_at = 0
        limit = self.batch_max if elm.is_can else 1
        bt = self._batch
        sc = self._score
        n = 0
        alone = -1  # the best channel that must go in a request of its own
        alone_sc = 0
        wait = IDLE_WAKE_MS
        for j in range(plan.n):
            ch = plan.chans[j]
            iv = plan.iv[st * 256 + ch] * 100
            if not iv:
                continue
            if ch != CH_VOLTAGE and (self._miss[ch] >= GIVE_UP or not elm.pid_supported(ch)):
                continue
            if ch == CH_VOLTAGE and not elm.has_volts:
                continue  # an adapter without ATRV
            late = time.ticks_diff(now, self._due[ch])
            if late < 0 and -late < wait:
                wait = -late
            if late < -(iv >> 3):
                continue
            if late > _CAP:
                late = _CAP
            s = late * 64 // iv
            if not plan.batchable(ch) or not elm.is_can or self._alone[ch]:
                if late >= 0 and (alone < 0 or s > alone_sc):
                    alone = ch
                    alone_sc = s
                continue
            # insertion into the top-`limit` list, best first
            k = n
            if k == limit:
                if s <= sc[k - 1]:
                    continue
                k -= 1
            else:
                n += 1
            while k > 0 and sc[k - 1] < s:
                sc[k] = sc[k - 1]
                bt[k] = bt[k - 1]
                k -= 1
            sc[k] = s
            bt[k] = ch
        if alone >= 0 and (n == 0 or alone_sc >= sc[0]):
            self._volt = alone == CH_VOLTAGE
            bt[0] = alone
            return 1
        if n == 0 or sc[0] < 0:
            self._wait = wait if wait > 1 else 1
            return 0
        self._volt = False
        return n
