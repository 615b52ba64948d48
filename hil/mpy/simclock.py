# The simulated clock on the MicroPython unix port: same algorithm as hil/simclock.py.
#
# OBDSYNC_SIM_CLOCK = "v1;<epoch_us>;<sim_ms>@<speedup_milli>,..." (see hil/simclock.py).
# SimClock(spec).ms() -> int sim ms since the object was made (the firmware's boot), the
# same contract as the board's wrapper around time.ticks_ms. ms() is called per sample, so
# it must not allocate: time.time() is a boxed float and time.time_ns() a big int here, so
# real time is an anchor (time_ns, read once every few minutes) plus time.ticks_us() since
# then, all small ints. On a 32-bit port small ints stop at 2**30: the speedup product is
# taken apart (_sim_ms) so it stays below that for any run shorter than ~17 minutes of
# real time, and ms() wraps with the port's ticks like the board's clock (dongle.clock).

import time

from micropython import const

ENV = "OBDSYNC_SIM_CLOCK"
_REANCHOR_US = const(1 << 28)  # well inside ticks_diff's half period
_TICKS_MASK = time.ticks_add(0, -1)  # the port's ticks period - 1 (2**30 - 1 on 32-bit)


class ClockSpecError(ValueError):
    pass


class SimClock:
    def __init__(self, spec: str | None = None, now_us: int | None = None) -> None:
        if spec is None:
            import os

            spec = os.getenv(ENV)
        if not spec:
            raise ClockSpecError(ENV + " is not set")
        parts = spec.strip().split(";")
        if len(parts) != 3 or parts[0] != "v1":
            raise ClockSpecError(ENV + ": expected v1;EPOCH_US;SIM_MS@SPEEDUP_MILLI,... got " + spec)
        try:
            self._epoch = int(parts[1])
            sims: list[int] = []
            millis: list[int] = []
            for item in parts[2].split(","):
                a, b = item.split("@")
                sims.append(int(a))
                millis.append(int(b))
        except ValueError:
            raise ClockSpecError(ENV + ": not integers in " + spec) from None
        for i in range(len(sims)):
            if sims[i] < 0 or millis[i] < 1:
                raise ClockSpecError(ENV + ": negative duration or speedup < 1 in " + spec)
        self._milli = millis
        self._m1 = [m // 1000 for m in millis]  # speedup = m1 + m0 / 1000
        self._m0 = [m % 1000 for m in millis]
        self._n = len(sims)
        start_sim = [0]
        start_real = [0]
        for i in range(self._n):
            start_sim.append(start_sim[-1] + sims[i])
            start_real.append(start_real[-1] + sims[i] * 1000000 // millis[i])
        self._start_sim = start_sim
        self._start_real = start_real
        self._reanchor()
        if now_us is None:
            self._boot = self._sim_ms(self._elapsed_us())
        else:
            self._boot = self.sim_ms_at_us(now_us)

    def _reanchor(self) -> None:
        self._anchor_e = time.time_ns() // 1000 - self._epoch
        self._anchor_t = time.ticks_us()

    def _elapsed_us(self) -> int:
        # real microseconds since the epoch
        d = time.ticks_diff(time.ticks_us(), self._anchor_t)
        if d < 0 or d > _REANCHOR_US:
            self._reanchor()
            d = time.ticks_diff(time.ticks_us(), self._anchor_t)
        return self._anchor_e + d

    def sim_ms_at_us(self, real_us: int) -> int:
        # sim ms at a real Unix time in integer microseconds (the algorithm of hil/simclock.py)
        return self._sim_ms(real_us - self._epoch)

    def _sim_ms(self, e: int) -> int:
        if e < 0:
            return e // 1000  # before the epoch time runs at speedup 1
        i = 0
        n1 = self._n - 1
        sr = self._start_real
        while i < n1 and e >= sr[i + 1]:
            i += 1
        # = (e - sr[i]) * milli // 10**6, exactly, without the product (a big int on a
        # 32-bit port): d = 1000a + b and milli = 1000 m1 + m0.
        d = e - sr[i]
        a = d // 1000  # not divmod: its tuple is a heap object
        b = d - a * 1000
        m1 = self._m1[i]
        m0 = self._m0[i]
        x = a * m0 + b * m1
        return self._start_sim[i] + a * m1 + x // 1000 + ((x % 1000) * 1000 + b * m0) // 1000000

    def ms(self) -> int:
        return (self._sim_ms(self._elapsed_us()) - self._boot) & _TICKS_MASK

    def speedup_milli(self) -> int:
        # sim ms per real second: lets the firmware turn a sim interval into a real sleep
        e = self._elapsed_us()
        if e < 0:
            return 1000
        i = 0
        while i < self._n - 1 and e >= self._start_real[i + 1]:
            i += 1
        return self._milli[i]
