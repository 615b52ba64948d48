"""The obdsync wire protocol: one definition, imported unchanged by the dongle
(MicroPython) and the daemon (CPython). See README.md for the byte layouts."""

# 2: the log epoch (info, STREAM reply, the telemetry key).
VERSION = 2
