"""The obdsync wire protocol: one definition, imported unchanged by the dongle
(MicroPython) and the daemon (CPython). See README.md for the byte layouts."""

import sys

# 2: the log epoch (info, STREAM reply, the telemetry key).
VERSION = 2

# Which interpreter this is, for the modules that run on both and import differently
# (micropython.const, the C hmac). A name rather than a try/except around the import so
# the type checks can take one side: firmware/mypy.ini (the board) sets
# `always_true = MICROPYTHON`, pyproject.toml (the daemon) `always_false`.
MICROPYTHON = sys.implementation.name == "micropython"
