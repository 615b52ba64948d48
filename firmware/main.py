"""Start the dongle. The same firmware runs on the ESP32 and on the MicroPython
unix port (hil); only what is constructed here differs.

The board reads /config.json (device id, secret, UART pins), written at
provisioning. The unix port takes everything from the environment:
OBDSYNC_FLASH (a directory standing in for the board's filesystem, holding
config.json), OBDSYNC_UART (the link model's pty), OBDSYNC_SIM_CLOCK (optional),
OBDSYNC_HEAP_REPORT_MS (optional: print "heap ALLOC FREE" every so many ms of
the dongle's clock). config.json may hold "power": PowerConfig's keywords.

The radio is activated before anything else is imported or allocated: NimBLE takes
its memory from ESP-IDF's heap at active(True), and once the firmware's modules and
buffers have grown MicroPython's heap into it (about 40 KB are left then on an
ESP32 without PSRAM) activation fails or, on older builds, crashes the board
(upstream issue 14293). hil/README.md has the memory budget.
"""

import gc
import sys


def radio():
    import bluetooth

    ble = bluetooth.BLE()
    ble.active(True)
    return ble


def _config(root):
    import json

    with open(root + "/config.json") as f:
        cfg = json.load(f)
    return cfg, bytes.fromhex(cfg["secret"]), bytes.fromhex(cfg["device_id"])


def _power(cfg):
    # Optional "power": {"running_mv", "off_after_ms", "floor_mv", "floor_after_ms", "sleep_ms"}.
    from dongle.power import PowerConfig

    p = cfg.get("power")
    return PowerConfig(**p) if p else None


def board(ble):
    import machine

    from dongle.app import Dongle
    from dongle.bonds import Bonds
    from dongle.clock import TicksClock
    from dongle.uart import from_uart

    cfg, secret, device_id = _config("")
    uart = machine.UART(cfg.get("uart", 2), baudrate=cfg.get("baud", 38400), tx=cfg.get("tx", 17),
                        rx=cfg.get("rx", 16), timeout=0, rxbuf=1024)
    return Dongle(ble, from_uart(uart), TicksClock(), "", secret, device_id,
                  pairing=cfg.get("pairing", True), bonds=Bonds("/bonds.json"),
                  log_capacity=cfg.get("log_capacity", 1 << 20), segment_bytes=cfg.get("segment_bytes", 16384),
                  power_config=_power(cfg), sleeper=machine.deepsleep)


def unix(ble):  # ble: hil/mpy's simulated radio
    import os

    from dongle.app import Dongle
    from dongle.bonds import Bonds
    from dongle.clock import TicksClock
    from dongle.uart import open_pty

    root = os.getenv("OBDSYNC_FLASH")
    if not root:
        raise SystemExit("OBDSYNC_FLASH is not set: the directory that stands in for the board's flash")
    cfg, secret, device_id = _config(root)
    if os.getenv("OBDSYNC_SIM_CLOCK"):
        from simclock import SimClock

        clock = SimClock()
    else:
        clock = TicksClock()
    return Dongle(ble, open_pty(os.getenv("OBDSYNC_UART")), clock, root, secret, device_id,
                  pairing=cfg.get("pairing", True), bonds=Bonds(root + "/bonds.json"),
                  log_capacity=cfg.get("log_capacity", 1 << 20), segment_bytes=cfg.get("segment_bytes", 16384),
                  power_config=_power(cfg), heap_report_ms=int(os.getenv("OBDSYNC_HEAP_REPORT_MS") or 0))


def main():
    ble = radio()
    dongle = unix(ble) if sys.platform == "linux" else board(ble)
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
