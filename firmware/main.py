"""Start the dongle. The same firmware runs on the ESP32 and on the MicroPython
unix port (hil); only what is constructed here differs.

The board reads /config.json (device id, secret, UART pins), written at
provisioning. The unix port takes everything from the environment:
OBDSYNC_FLASH (a directory standing in for the board's filesystem, holding
config.json), OBDSYNC_UART (the link model's pty), OBDSYNC_SIM_CLOCK (optional),
OBDSYNC_HEAP_REPORT_MS (optional: print "heap ALLOC FREE" every so many ms of
the dongle's clock), OBDSYNC_SIM_WDT_MS (optional: a simulated watchdog,
hil/mpy/simwdt.py), OBDSYNC_SIM_RTC (optional: the deep-sleep stand-in,
hil/mpy/simsleep.py; without it the dongle never sleeps). config.json may hold
"power": PowerConfig's keywords, "wdt_ms" (the watchdog's timeout, default 30000),
"safe_pin" and "supply_pin" (the RTC GPIO the supply-rise comparator drives, high
when the engine runs: hil/README.md "The board"; default none, timer wakes only).

Deep sleep is a reset (dongle.sleep): every wake runs this file from the top. A timer
wake reads the supply with one ATRV, before the radio or the log are touched, and
sleeps again at once while the car is still parked (power.stays_asleep); the engine
started, a battery_low to log, or the supply pin's wake, and the dongle starts in full,
parked, with what the power rules knew before the sleep.

Safe boot: with a file `safeboot` on the filesystem (`mpremote fs touch :safeboot`,
`mpremote fs rm :safeboot` to boot normally again), or on the board the pin
config.json names as "safe_pin" (default 0: the BOOT button, pulled up, pressed =
low) held while main.py starts, main.py returns at once: no radio, no UART, no
watchdog, and the REPL stays free for mpremote whatever the firmware would do.
(GPIO0 held *at* reset selects the ROM bootloader: press BOOT just after EN.)

The radio is activated before anything else is imported or allocated: NimBLE takes
its memory from ESP-IDF's heap at active(True), and once the firmware's modules and
buffers have grown MicroPython's heap into it (about 40 KB are left then on an
ESP32 without PSRAM) activation fails or, on older builds, crashes the board
(upstream issue 14293). hil/README.md has the memory budget.

All of that is dongle.startup: this file is compiled from source on the board and its
bytecode stays in the heap while the dongle runs, so it holds only what runs for the
whole drive, and the boot's code is unloaded once the dongle is built.
"""

import gc

from micropython import const

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from dongle.app import Dongle


def _start() -> Dongle | None:
    # A function of its own: the module is referenced from this frame only, gone on return.
    import dongle
    from dongle import startup

    try:
        return startup.start()
    finally:
        dongle.unload("dongle.startup")


def main() -> None:
    dongle = _start()
    if dongle is None:
        return  # safe boot: the REPL stays free
    gc.collect()
    # The heap figure lets the HIL kit watch the firmware's memory from outside.
    print("ready", dongle.device_id.hex(), "heap", gc.mem_alloc(), gc.mem_free())
    import asyncio

    try:
        asyncio.run(dongle.run())
    except KeyboardInterrupt:
        # Ctrl-C on the REPL (or SIGINT on the unix port): asyncio.run is gone before
        # run()'s cleanup, so seal and flush here — a clean stop loses nothing.
        dongle.shutdown()


main()
