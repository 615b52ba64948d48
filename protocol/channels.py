"""Sample channels: what a sample's one-byte channel id means on the wire.

0x00-0xFE are mode 01 PIDs carrying the ECU's raw data bytes (after `41 PID`);
0xFF is the adapter's supply voltage (ATRV), 2 bytes in mV like PID 0x42, so
the daemon decodes it with the same rule. DATA_LEN gives the fixed data length
of a channel; 0 means "variable or unknown": such a sample carries its length.
"""

from protocol import MICROPYTHON

if MICROPYTHON:
    from micropython import const
else:  # CPython: the same names, without the compiler's folding
    def const(x: int) -> int:
        return x

CH_VOLTAGE = const(0xFF)

# Mode 01 PIDs we name in code (firmware plan, daemon rules).
PID_SUPPORTED_00 = const(0x00)
PID_STATUS = const(0x01)  # MIL and DTC count
PID_LOAD = const(0x04)
PID_COOLANT = const(0x05)
PID_RPM = const(0x0C)
PID_SPEED = const(0x0D)
PID_INTAKE_TEMP = const(0x0F)
PID_MAF = const(0x10)
PID_THROTTLE = const(0x11)
PID_FUEL_LEVEL = const(0x2F)
PID_DISTANCE_SINCE_CLEAR = const(0x31)
PID_MODULE_VOLTAGE = const(0x42)
PID_FUEL_RATE = const(0x5E)
PID_ODOMETER = const(0xA6)

# SAE J1979 data lengths for 0x00-0x5F (as python-OBD 0.7.3 has them), the
# bitmaps 0x60/0x80/0xA0/0xC0/0xE0, a few fixed ones above 0x5F, and ATRV.
DATA_LEN = bytes(
    [4, 4, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2,
     4, 2, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 1, 1, 1, 1, 1, 2, 2, 1, 4, 4, 4, 4, 4, 4, 4, 4, 2, 2, 2, 2,
     4, 4, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 4, 4, 1, 1, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 2, 1,
     4, 1, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
     4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
     4, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
     4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
     4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
)

# A variable-length sample carries at most this many data bytes (ELM327 mode 01
# replies carry at most 7 data bytes per PID in practice; ISO-TP allows more).
MAX_DATA = const(31)
