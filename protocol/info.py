"""The `info` characteristic: readable before authentication, nothing secret."""

from protocol import VERSION
from protocol.errors import ProtocolError

CAP_CAN = 0x01
CAP_PAIRING = 0x02  # LE Secure Connections with MITM required
DEVICE_ID_LEN = 8
BITMAP_LEN = 32


class Info:
    def __init__(self, proto, caps, device_id, firmware, supported, vin):
        self.proto = proto
        self.caps = caps
        self.device_id = device_id
        self.firmware = firmware
        self.supported = supported
        self.vin = vin

    def supports(self, pid):
        """As the ECU reports it: the bitmap of PID 0x00 lists 0x01-0x20 (bit 7
        of its first byte is PID 0x01), that of 0x20 lists 0x21-0x40, and so on."""
        if pid == 0:
            return True
        i = pid - 1
        return bool(self.supported[i >> 3] & (0x80 >> (i & 7)))

    def __repr__(self):
        return "Info(device=%s firmware=%s)" % (self.device_id.hex(), self.firmware)


def encode_info(device_id, firmware, supported, vin=b"", caps=0):
    if len(device_id) != DEVICE_ID_LEN:
        raise ProtocolError("device id must be 8 bytes")
    if len(supported) != BITMAP_LEN:
        raise ProtocolError("supported-PID bitmap must be 32 bytes")
    fw = firmware.encode() if isinstance(firmware, str) else bytes(firmware)
    return (bytes((VERSION, caps)) + bytes(device_id) + bytes((len(fw),)) + fw + bytes(supported)
            + bytes((len(vin),)) + bytes(vin))


def decode_info(data):
    data = bytes(data)
    if len(data) < 2 + DEVICE_ID_LEN + 1:
        raise ProtocolError("info shorter than its fixed part")
    proto, caps = data[0], data[1]
    if proto != VERSION:
        raise ProtocolError("dongle speaks protocol %d, we speak %d" % (proto, VERSION))
    o = 2
    device_id = data[o:o + DEVICE_ID_LEN]
    o += DEVICE_ID_LEN
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
    return Info(proto, caps, device_id, fw, supported, data[o:o + n])
