# Decoded protocol objects as plain JSON-able values (hex strings for bytes).
#
# Imported by the pytest side on CPython AND by the MicroPython scripts, so both
# interpreters describe a decoded record, message or info in the very same shape
# and pytest can compare them with ==. Must run on MicroPython: no f-strings with
# format specs, no typing, no bytes.hex() reliance (binascii is on both).

import binascii


def hx(b):
    return binascii.hexlify(bytes(b)).decode()


def unhx(s):
    return binascii.unhexlify(s)


def record_fields(rec):
    d = {"kind": rec.kind, "seq": rec.seq, "boot": rec.boot, "t0": rec.t0}
    if rec.kind == 1:
        d["samples"] = [[t, ch, hx(data)] for (t, ch, data) in rec.samples]
    elif rec.kind == 2:
        d["first"] = rec.first
        d["count"] = rec.count
    elif rec.kind == 3:
        d["wall_ms"] = rec.wall_ms
    elif rec.kind == 4:
        d["code"] = rec.code
        d["millivolts"] = rec.millivolts
    elif rec.kind == 5:
        d["mode"] = rec.mode
        d["codes"] = [hx(c) for c in rec.codes]
        if rec.ecus:
            d["ecus"] = rec.ecus
    return d


def message_fields(msg):
    return {"type": msg.type, "req": msg.req, "counter": msg.counter, "status": msg.status,
            "payload": hx(msg.payload)}


def info_fields(info):
    return {"proto": info.proto, "caps": info.caps, "device_id": hx(info.device_id), "epoch": info.epoch,
            "firmware": info.firmware, "supported": hx(info.supported), "vin": hx(info.vin)}


def decoded_record(data, key=None):
    from protocol.record_decode import decode_record

    return record_fields(decode_record(data, key))


def decoded_message(data, session=None):
    from protocol.control import decode

    return message_fields(decode(data, session))


def verdict(fn, *args):
    """[True, value] or [False, the ProtocolError's message]; any other exception
    escapes, because decoding must raise nothing else."""
    from protocol.errors import ProtocolError

    try:
        return [True, fn(*args)]
    except ProtocolError as e:
        return [False, str(e)]
