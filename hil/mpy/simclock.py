# The simulated clock on the MicroPython unix port: same algorithm as hil/simclock.py.
#
# OBDSYNC_SIM_CLOCK = "v1;<epoch_us>;<sim_ms>@<speedup_milli>,..." (see hil/simclock.py).
# SimClock(spec).ms() -> int sim ms since the object was made (the firmware's boot), the
# same contract as the board's wrapper around time.ticks_ms. Integer microseconds from
# time.time_ns() (a small int on 64-bit unix): time.time() is a boxed float, and ms() is
# called per sample, so it must not allocate.

import time

ENV = "OBDSYNC_SIM_CLOCK"


class ClockSpecError(ValueError):
    pass


def _now_us():
    return time.time_ns() // 1000


class SimClock:
    def __init__(self, spec=None, now_us=None):
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
            sims = []
            millis = []
            for item in parts[2].split(","):
                a, b = item.split("@")
                sims.append(int(a))
                millis.append(int(b))
        except ValueError:
            raise ClockSpecError(ENV + ": not integers in " + spec)
        for i in range(len(sims)):
            if sims[i] < 0 or millis[i] < 1:
                raise ClockSpecError(ENV + ": negative duration or speedup < 1 in " + spec)
        self._milli = millis
        self._n = len(sims)
        start_sim = [0]
        start_real = [0]
        for i in range(self._n):
            start_sim.append(start_sim[-1] + sims[i])
            start_real.append(start_real[-1] + sims[i] * 1000000 // millis[i])
        self._start_sim = start_sim
        self._start_real = start_real
        self._boot = self.sim_ms_at_us(_now_us() if now_us is None else now_us)

    def sim_ms_at_us(self, real_us):
        e = real_us - self._epoch
        if e < 0:
            return e // 1000  # before the epoch time runs at speedup 1
        i = 0
        n1 = self._n - 1
        sr = self._start_real
        while i < n1 and e >= sr[i + 1]:
            i += 1
        return self._start_sim[i] + (e - sr[i]) * self._milli[i] // 1000000

    def ms(self):
        return self.sim_ms_at_us(_now_us()) - self._boot

    def speedup_milli(self):
        # sim ms per real second: lets the firmware turn a sim interval into a real sleep
        e = _now_us() - self._epoch
        if e < 0:
            return 1000
        i = 0
        while i < self._n - 1 and e >= self._start_real[i + 1]:
            i += 1
        return self._milli[i]
