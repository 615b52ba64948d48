# machine's and esp32's deep-sleep API for the MicroPython unix port (simulation only):
# reset_cause(), wake_reason(), deepsleep(ms), RTC().memory(), Pin, wake_on_ext0(pin, level)
# and their constants, with the ESP32 port's values (ports/esp32/modmachine.c, modesp32.c).
#
# On the board deep sleep powers the chip down: RAM is lost, RTC memory and the wake
# configuration survive, and the wake is a boot. Here the same: deepsleep() writes the RTC
# memory, the sleep length and the armed pin to the file OBDSYNC_SIM_RTC, prints
# "deepsleep MS" and ends the process (exit code SLEEP_EXIT, no cleanup runs, as on the
# board). The rig (hil.rig.SimDongle) is the sleeping chip's RTC: it wakes it when the sim
# clock has run MS, or when the supply pin's comparator would switch (the emulated car's
# voltage above the threshold), and starts main.py again with the reason written into
# the file. A start without the file (or with one the rig did not wake from) is a power-on.

import json
import os
import sys

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True
SLEEP_EXIT = 75  # the process's exit code for "asleep" (hil.rig.SLEEP_EXIT)

_PATH = os.getenv("OBDSYNC_SIM_RTC")
_state = {}
if _PATH:
    try:
        with open(_PATH) as f:
            _state = json.load(f)
    except (OSError, ValueError):
        _state = {}
_woke = _state.get("woke")  # set by the rig when it woke us; absent: a power-on
_memory = bytes.fromhex(_state.get("memory", "")) if _woke else b""
_ext0 = None


def reset_cause() -> int:
    return DEEPSLEEP_RESET if _woke else PWRON_RESET


def wake_reason() -> int:
    return _woke or 0


class Pin:
    IN = 1

    def __init__(self, id: int, mode: int = -1) -> None:
        self.id = id


class RTC:
    def memory(self, data: bytes | None = None) -> bytes | None:
        global _memory
        if data is None:
            return _memory
        if len(data) > 2048:  # MICROPY_HW_RTC_USER_MEM_MAX on the ESP32
            raise ValueError("buffer too long")
        _memory = bytes(data)
        return None


def wake_on_ext0(pin: Pin | None, level: bool) -> None:
    global _ext0
    _ext0 = None if pin is None else [pin.id, 1 if level else 0]


def deepsleep(ms: int = 0) -> None:
    if not _PATH:
        raise OSError("OBDSYNC_SIM_RTC is not set: nowhere to keep the RTC memory")
    tmp = _PATH + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"sleep_ms": ms, "ext0": _ext0, "memory": _memory.hex()}, f)
    os.rename(tmp, _PATH)
    print("deepsleep %d" % ms)
    sys.exit(SLEEP_EXIT)
