"""Reading the `info` characteristic: the daemon's side of protocol.info (apart so the
firmware, which only encodes it, does not carry this code in the board's RAM)."""

import struct

from protocol import VERSION
from protocol.errors import ProtocolError
from protocol.info import BITMAP_LEN, DEVICE_ID_LEN


class Info:
    def __init__(self, proto: int, caps: int, device_id: bytes, firmware: str, supported: bytes, vin: bytes,
                 epoch: int = 0) -> None:
        self.proto = proto
        self.caps = caps
        self.device_id = device_id
        self.epoch = epoch  # the flash log's (protocol.auth.telemetry_key)
        self.firmware = firmware
        self.supported = supported
        self.vin = vin

    def supports(self, pid: int) -> bool:
        """As the ECU reports it: the bitmap of PID 0x00 lists 0x01-0x20 (bit 7
        of its first byte is PID 0x01), that of 0x20 lists 0x21-0x40, and so on."""
        if pid == 0:
            return True
        i = pid - 1
        return bool(self.supported[i >> 3] & (0x80 >> (i & 7)))

    def __repr__(self) -> str:
        return "Info(device=%s firmware=%s)" % (self.device_id.hex(), self.firmware)


class VersionError(ProtocolError):
    """The dongle speaks another version of the protocol (`proto` is its version)."""

    def __init__(self, proto: int) -> None:
        self.proto = proto
        ProtocolError.__init__(self, "dongle speaks protocol %d, we speak %d" % (proto, VERSION))


def decode_info(data: bytes | bytearray | memoryview) -> Info:
    data = bytes(data)
    if len(data) < 1:
        raise ProtocolError("info is empty")
    if data[0] != VERSION:
        # First: another version's layout may differ anywhere after this byte.
        raise VersionError(data[0])
    if len(data) < 2 + DEVICE_ID_LEN + 4 + 1:
        raise ProtocolError("info shorter than its fixed part")
    proto, caps = data[0], data[1]
    o = 2
    device_id = data[o:o + DEVICE_ID_LEN]
    o += DEVICE_ID_LEN
    epoch: int = struct.unpack_from(">I", data, o)[0]
    o += 4
    n = data[o]
    o += 1
    if o + n + BITMAP_LEN + 1 > len(data):
        raise ProtocolError("info truncated")
    try:
        fw = data[o:o + n].decode()
    except UnicodeError:
        raise ProtocolError("firmware version is not UTF-8")
    o += n
    supported = data[o:o + BITMAP_LEN]
    o += BITMAP_LEN
    n = data[o]
    o += 1
    if o + n != len(data):
        raise ProtocolError("info length does not match its VIN")
    return Info(proto, caps, device_id, fw, supported, data[o:o + n], epoch)
