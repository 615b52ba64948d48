"""What main.py does once per boot: safe boot, the wake reason (and a timer wake's look at
the supply, dongle.wake), config.json, the radio, and the Dongle built from them. main.py
calls start() and unloads this module after (dongle.unload), with dongle.wake: main.py is
compiled from source on the board, and a module imported from .mpy keeps its bytecode in
the GC heap while it is loaded, so the boot's code (~3 KB on 32-bit) would stay in RAM for
the whole drive. main.py's docstring says what the boot does and why in this order.
"""

import gc
import sys

from micropython import const

from dongle import unload

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away
# and has no `typing`, so the names they use exist for the checker only.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from typing import Any

    import bluetooth

    from dongle._types import Clock
    from dongle.app import Dongle
    from dongle.power import PowerConfig
    from dongle.sleep import Carried, DeepSleep
    from dongle.uart import Stream


def safe_boot(root: str) -> str | None:
    """Why main must not run, or None."""
    import os

    try:
        os.stat(root + "/safeboot")
        return "flag file safeboot"
    except OSError:
        pass
    if sys.platform == "linux":
        return None
    import machine

    try:
        pin = _config(root)[0].get("safe_pin", 0)
    except (OSError, ValueError, KeyError):
        pin = 0  # no usable config.json yet: the BOOT button still works
    if pin is not None and machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0:
        return "pin %d held" % pin
    return None


def deep_sleep(root: str) -> DeepSleep | None:
    """The board's sleep (dongle.sleep.DeepSleep), or None where there is none."""
    from dongle.sleep import DeepSleep

    try:
        pin = _config(root)[0].get("supply_pin")
    except (OSError, ValueError, KeyError):
        pin = None
    if sys.platform == "linux":
        import os

        if not os.getenv("OBDSYNC_SIM_RTC"):
            return None
        import simsleep

        return DeepSleep(simsleep, simsleep, pin)
    import esp32
    import machine

    return DeepSleep(machine, esp32, pin)


def _stream(root: str) -> Stream:
    """The ELM327's serial line (a machine.UART on the board, the link model's pty here)."""
    if sys.platform == "linux":
        import os

        from dongle.uart import open_pty

        uart = os.getenv("OBDSYNC_UART")
        if not uart:
            raise SystemExit("OBDSYNC_UART is not set: the pty of the ELM327 the dongle talks to")
        return open_pty(uart)
    import machine

    from dongle.uart import from_uart

    cfg = _config(root)[0]
    return from_uart(machine.UART(cfg.get("uart", 2), baudrate=cfg.get("baud", 38400), tx=cfg.get("tx", 17),
                                  rx=cfg.get("rx", 16), timeout=0, rxbuf=1024))


def radio() -> bluetooth.BLE:
    import bluetooth

    ble = bluetooth.BLE()
    ble.active(True)
    return ble


def _config(root: str) -> tuple[dict[str, Any], bytes, bytes]:
    import json

    with open(root + "/config.json") as f:
        cfg = json.load(f)
    return cfg, bytes.fromhex(cfg["secret"]), bytes.fromhex(cfg["device_id"])


def _power(cfg: dict[str, Any]) -> PowerConfig | None:
    # Optional "power": PowerConfig's keywords ("running_mv", "off_after_ms", "floor_mv",
    # "floor_after_ms", "sleep_ms", "rise_mv", "park_sleep_after_ms").
    from dongle.power import PowerConfig

    p = cfg.get("power")
    return PowerConfig(**p) if p else None


def board(ble: bluetooth.BLE, sleeper: DeepSleep | None, carried: Carried | None) -> Dongle:
    import machine

    from dongle.app import Dongle
    from dongle.bonds import Bonds
    from dongle.clock import TicksClock
    from dongle.watchdog import Watchdog

    cfg, secret, device_id = _config("")
    gc.collect()  # the imports' garbage gone before the long-lived buffers are placed
    return Dongle(ble, _stream(""), TicksClock(), "", secret, device_id,
                  pairing=cfg.get("pairing", True), bonds=Bonds("/bonds.json"),
                  log_capacity=cfg.get("log_capacity", 1 << 20), segment_bytes=cfg.get("segment_bytes", 16384),
                  power_config=_power(cfg), sleeper=sleeper, carried=carried,
                  watchdog=Watchdog(machine.WDT(timeout=cfg.get("wdt_ms", 30000))))


def unix_root() -> str:
    import os

    root = os.getenv("OBDSYNC_FLASH")
    if not root:
        raise SystemExit("OBDSYNC_FLASH is not set: the directory that stands in for the board's flash")
    return root


def unix(ble: bluetooth.BLE, root: str, sleeper: DeepSleep | None,
         carried: Carried | None) -> Dongle:  # ble: hil/mpy's simulated radio
    import os

    from dongle.app import Dongle
    from dongle.bonds import Bonds
    from dongle.clock import TicksClock

    stream = _stream(root)
    cfg, secret, device_id = _config(root)
    gc.collect()  # the imports' garbage gone before the long-lived buffers are placed
    watchdog = None
    wdt_ms = os.getenv("OBDSYNC_SIM_WDT_MS")
    if wdt_ms:
        from simwdt import WDT

        from dongle.watchdog import Watchdog

        watchdog = Watchdog(WDT(timeout=int(wdt_ms)))
    clock: Clock
    if os.getenv("OBDSYNC_SIM_CLOCK"):
        from simclock import SimClock

        clock = SimClock()
    else:
        clock = TicksClock()
    return Dongle(ble, stream, clock, root, secret, device_id,
                  pairing=cfg.get("pairing", True), bonds=Bonds(root + "/bonds.json"),
                  log_capacity=cfg.get("log_capacity", 1 << 20), segment_bytes=cfg.get("segment_bytes", 16384),
                  power_config=_power(cfg), heap_report_ms=int(os.getenv("OBDSYNC_HEAP_REPORT_MS") or 0),
                  watchdog=watchdog, sleeper=sleeper, carried=carried)


def start() -> Dongle | None:
    """The dongle to run, or None on a safe boot. A timer wake that finds the car still
    parked sleeps again here (never returns on the board)."""
    root = unix_root() if sys.platform == "linux" else ""
    why = safe_boot(root)
    if why:
        print("safe boot (%s): main.py stops here" % why)
        return None
    sleeper = deep_sleep(root)
    carried = None
    if sleeper is not None:
        from dongle.sleep import COLD, REASONS, TIMER

        reason = sleeper.reason()
        carried = sleeper.carried() if reason != COLD else None
        print("boot", REASONS[reason] if carried is not None else "cold")
        if reason == TIMER and carried is not None:
            from dongle.wake import timer_wake

            timer_wake(_config(root)[0].get("power"), _stream(root), sleeper, carried)
            unload("dongle.wake")
            gc.collect()  # the look's driver and buffers gone before the radio takes its memory
    ble = radio()
    return unix(ble, root, sleeper, carried) if sys.platform == "linux" else board(ble, sleeper, carried)
