"""Direct mode: the driver's own ELM327 adapter (BLE, Bluetooth serial, USB serial, Wi-Fi) as a device.

The firmware's ELM327 driver, poll scheduler, plan and power rules (firmware/dongle/) run
unchanged on CPython over a transport (transports.py, ble.py); the logger (logger.py) seals
their answers into the same records a dongle sends and hands them to the same store, rules and
outbox, as a device of their own.
"""
