"""A timer wake's look at the car, before the radio, the log or the watchdog are touched.

Deep sleep is a reset (dongle.sleep), so this runs from main.py at every timer wake: one
ATRV through the ELM327 driver, and back to sleep at once while the car is still parked
(power.stays_asleep). A module rather than main.py's text: main.py is compiled from source
on the board and its bytecode stays on the heap for as long as the dongle runs; this is
.mpy (or frozen), and the look's buffers are garbage before the radio asks for memory.
"""

import asyncio

from micropython import const

from .elm327 import ELM327, OK
from .power import PowerConfig, stays_asleep

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from .sleep import Carried, DeepSleep
    from .uart import Stream


def timer_wake(power: dict[str, int] | None, stream: Stream, sleeper: DeepSleep, carried: Carried) -> None:
    """`power`: config.json's "power" (PowerConfig's keywords). Sleeps again (does not
    return) while the car is still parked; returns when the dongle must start in full."""
    config = PowerConfig(**power) if power else PowerConfig()
    elm = ELM327(stream)

    async def volts() -> int:
        mv = await elm.read_voltage()
        if mv < 0 and await elm.recover() == OK:  # the chip was mid-reply or echoing: once more
            mv = await elm.read_voltage()
        return mv

    mv = asyncio.run(volts())
    if stays_asleep(config, carried, mv, config.sleep_ms, sleeper.supply_pin is not None):
        print("wake timer %d mV: parked, sleep %d" % (mv, config.sleep_ms))
        sleeper.sleep(config.sleep_ms, carried)  # does not return
    print("wake timer %d mV: start" % mv)
    stream.close()
