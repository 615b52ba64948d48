"""The obdsync wire protocol: one definition, imported unchanged by the dongle
(MicroPython) and the daemon (CPython). See README.md for the byte layouts."""

VERSION = 1
