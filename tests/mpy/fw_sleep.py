# The deep-sleep rules of the firmware on the unix port: what crosses a sleep in RTC memory
# (dongle.sleep.Carried), the boot's reading of machine's reset cause and wake reason
# (DeepSleep.reason, against a fake `machine` with the ESP32 port's constants), the timer
# wake's decision (power.stays_asleep) and a full start after a sleep (Power.resume). Prints
# one JSON line per case; last line ["end", null]. tests/test_firmware_power_sleep.py holds the
# expectations.

import json

from dongle.power import BATTERY_LOW, ENGINE_ON, NONE, Power, PowerConfig, stays_asleep
from dongle.sleep import Carried, DeepSleep
from protocol.control import POWER_PARKED


def emit(name, obs):
    print(json.dumps([name, obs]))


class FakeMachine:
    PWRON_RESET = 1
    WDT_RESET = 3
    DEEPSLEEP_RESET = 4
    EXT0_WAKE = 2
    EXT1_WAKE = 3
    TIMER_WAKE = 4

    def __init__(self, cause, wake, memory=b""):
        self.cause = cause
        self.wake = wake
        self.mem = memory
        self.slept = None
        m = self

        class RTC:
            def memory(self, data=None):
                if data is None:
                    return m.mem
                m.mem = bytes(data)

        class Pin:
            IN = 1

            def __init__(self, n, mode):
                self.n = n

        self.RTC = RTC
        self.Pin = Pin

    def reset_cause(self):
        return self.cause

    def wake_reason(self):
        return self.wake

    def deepsleep(self, ms):
        self.slept = ms


class FakeEsp32:
    WAKEUP_ALL_LOW = False
    WAKEUP_ANY_HIGH = True

    def __init__(self):
        self.ext0 = None

    def wake_on_ext0(self, pin, level):
        self.ext0 = [pin.n, level]


class Clock:
    def __init__(self):
        self.t = 0

    def ms(self):
        return self.t


def fields(c):
    return [c.rest_mv, c.low_ms, c.low_logged, c.sleeps]


def case_carried():
    c = Carried(12480, 300000, True, 7)
    back = Carried.decode(c.encode())
    emit("carried", {"roundtrip": fields(back), "size": len(c.encode()), "empty": Carried.decode(b"") is None,
                     "foreign": Carried.decode(b"x" * len(c.encode())) is None,
                     "negative_low": fields(Carried.decode(Carried(0, -1).encode()))})


def case_reason():
    m = FakeMachine
    out = {}
    for name, cause, wake in (("power_on", m.PWRON_RESET, 0), ("watchdog", m.WDT_RESET, 0),
                              ("timer", m.DEEPSLEEP_RESET, m.TIMER_WAKE), ("ext0", m.DEEPSLEEP_RESET, m.EXT0_WAKE),
                              ("ext1", m.DEEPSLEEP_RESET, m.EXT1_WAKE), ("touch", m.DEEPSLEEP_RESET, 5)):
        out[name] = ("cold", "timer", "supply")[DeepSleep(FakeMachine(cause, wake), FakeEsp32()).reason()]
    emit("reason", out)


def case_sleep_arms_and_keeps():
    fm = FakeMachine(1, 0)
    fe = FakeEsp32()
    DeepSleep(fm, fe, supply_pin=32).sleep(900000, Carried(12500))
    with_pin = {"ms": fm.slept, "ext0": fe.ext0, "kept": fields(Carried.decode(fm.RTC().memory()))}
    fm2 = FakeMachine(1, 0)
    fe2 = FakeEsp32()
    DeepSleep(fm2, fe2).sleep(60000, Carried())
    emit("sleep", {"with_pin": with_pin, "timer_only": {"ms": fm2.slept, "ext0": fe2.ext0}})


def case_stays_asleep():
    cfg = PowerConfig(running_mv=13000, rise_mv=500, floor_mv=11800, floor_after_ms=300000)
    out = {}

    def look(name, c, mv, pin=True, slept=900000):
        stay = stays_asleep(cfg, c, mv, slept, pin)
        out[name] = [stay, fields(c)]

    look("parked", Carried(12600), 12550)
    look("lower_rest", Carried(12600), 12400)
    look("alternator", Carried(12600), 13900)
    look("weak_alternator_rise", Carried(12300), 12850)
    look("small_rise", Carried(12300), 12700)
    look("no_reading_with_pin", Carried(12600), -1, True)
    look("no_reading_timer_only", Carried(12600), -1, False)
    look("first_low", Carried(11900), 11700)
    look("low_again_due", Carried(11700, 0), 11650)
    look("low_logged", Carried(11650, 300000, True), 11600)
    look("recovered", Carried(11650, 300000, True), 12100)
    emit("stays_asleep", out)


def case_resume():
    cfg = PowerConfig(running_mv=13000, rise_mv=500, floor_mv=11800, floor_after_ms=300000)
    out = {}
    clk = Clock()
    p = Power(clk, cfg)
    p.resume(Carried(12300))
    out["state_parked"] = p.state == POWER_PARKED
    out["rise"] = p.volts(12850) == ENGINE_ON
    clk = Clock()
    p = Power(clk, cfg)
    p.resume(Carried(11700, 300000, False))
    out["low_due_first_reading"] = p.volts(11650) == BATTERY_LOW
    clk = Clock()
    p = Power(clk, cfg)
    p.resume(Carried(11700, 300000, True))
    e1 = p.volts(11650)
    clk.t = 600000
    out["low_logged_stays_quiet"] = e1 == NONE and p.volts(11600) == NONE
    # what goes back into RTC memory
    c = p.carry(Carried())
    out["carry"] = [c.rest_mv, c.low_ms >= 300000, c.low_logged]
    emit("resume", out)


case_carried()
case_reason()
case_sleep_arms_and_keeps()
case_stays_asleep()
case_resume()
print(json.dumps(["end", None]))
