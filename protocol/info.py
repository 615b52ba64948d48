"""The `info` characteristic: readable before authentication, nothing secret.

The dongle encodes it (encode_info); the daemon's reading is protocol.info_decode, apart
so that the firmware does not load it (a .mpy module's bytecode lives in the board's RAM).
"""

import struct

from protocol import VERSION
from protocol.errors import ProtocolError

CAP_CAN = 0x01
CAP_PAIRING = 0x02  # LE Secure Connections with MITM required
DEVICE_ID_LEN = 8
BITMAP_LEN = 32


def encode_info(device_id: bytes | bytearray, firmware: str | bytes, supported: bytes | bytearray,
                vin: bytes | bytearray = b"", caps: int = 0, epoch: int = 0) -> bytes:
    if len(device_id) != DEVICE_ID_LEN:
        raise ProtocolError("device id must be 8 bytes")
    if len(supported) != BITMAP_LEN:
        raise ProtocolError("supported-PID bitmap must be 32 bytes")
    fw = firmware.encode() if isinstance(firmware, str) else bytes(firmware)
    if not 0 <= epoch <= 0xFFFFFFFF:
        raise ProtocolError("epoch must be a u32")
    return (bytes((VERSION, caps)) + bytes(device_id) + struct.pack(">I", epoch) + bytes((len(fw),)) + fw
            + bytes(supported) + bytes((len(vin),)) + bytes(vin))
