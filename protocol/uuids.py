"""GATT identifiers. 128-bit UUIDs of our own (the obdsync base, 0bd5xxxx)."""

SERVICE = "0bd50001-5d5c-4f1e-9b8a-6f6264737963"
INFO = "0bd50002-5d5c-4f1e-9b8a-6f6264737963"
TELEMETRY = "0bd50003-5d5c-4f1e-9b8a-6f6264737963"
CONTROL = "0bd50004-5d5c-4f1e-9b8a-6f6264737963"

NAME_PREFIX = "obd-"


def adv_name(device_id: bytes | bytearray) -> str:
    """`obd-` and the last 4 hex digits of the 8-byte device id: fits the 31-byte
    advertisement beside the 128-bit service UUID."""
    return NAME_PREFIX + "%02x%02x" % (device_id[-2], device_id[-1])
