# The dongle's control-command handler (dongle.commands) fed random bytes, seeded:
# unauthenticated, then inside an authenticated session (random commands with valid
# MACs reach the dispatcher), then bit-flipped valid commands. argv: count, seed.
# Every input must give reply bytes or None, never an exception. Prints JSON lines:
# ["stats", {...}] then ["end", null]; an exception prints ["FAIL", input hex, repr].

import asyncio
import binascii
import json
import random
import sys

from dongle.commands import Actions, CommandHandler
from protocol import auth, control, control_central

SECRET = bytes(range(32))
DEVICE = b"\x01\x02\x03\x04\x05\x06\x07\x08"


class Clock:
    def __init__(self):
        self.t = 0

    def ms(self):
        self.t += 1000000  # past the longest auth lock-out (300 s): the fuzz reaches AUTH each time
        return self.t


class Stub(Actions):
    """Records what the handler asked for; refuses nothing."""

    def __init__(self):
        self.calls = 0

    def time_sync(self, wall_ms):
        self.calls += 1
        return control.OK, b""

    def ack(self, seq):
        self.calls += 1
        return control.OK, control.pack_pair(0, 1 << 20)

    def stream(self):
        self.calls += 1
        return control.OK, control.pack_pair(0, 0)

    def set_plan(self, entries):
        self.calls += 1
        return control.OK, b""

    async def read_dtc(self, mode):
        self.calls += 1
        return control.OK, control.pack_dtcs(mode, [])

    async def clear_dtc(self):
        self.calls += 1
        return control.REFUSED_MOVING, b""

    async def read_vin(self):
        self.calls += 1
        return control.OK, b"WVWZZZ1KZAW386754"

    async def read_freeze(self):
        self.calls += 1
        return control.OK, control.pack_freeze([(0xE8, 0x02, b"\x01\x33")])

    def status(self):
        self.calls += 1
        return control.OK, b""


def rbytes(n):
    return bytes(random.getrandbits(8) for _ in range(n))


def well_formed(typ):
    if typ == control.TIME:
        return control_central.pack_u64(random.getrandbits(30) << random.getrandbits(4))
    if typ == control.ACK:
        return control_central.pack_u32(random.getrandbits(32) >> random.getrandbits(5))
    if typ == control.SET_PLAN:
        n = random.getrandbits(6)
        return bytes([n]) + rbytes(7 * (n if random.getrandbits(1) else random.getrandbits(6)))
    if typ == control.READ_DTC:
        return bytes([(3, 7, 10, 4, 0)[random.getrandbits(8) % 5]])
    return b""


async def login(h):
    nonce_c = rbytes(16)
    r = control.decode(await h.handle(control.encode(control.HELLO, 1, nonce_c)), None)
    _dev, nonce_d = control_central.parse_hello_reply(r.payload)
    proof = auth.proof_central(SECRET, nonce_c, nonce_d)
    r = control.decode(await h.handle(control.encode(control.AUTH, 2, proof)), None)
    if r.status != control.OK:
        raise RuntimeError("login refused: %d" % r.status)
    return auth.Session(auth.session_key(SECRET, nonce_c, nonce_d), auth.DIR_CENTRAL)


async def main(n, seed):
    random.seed(seed)
    stub = Stub()
    h = CommandHandler(SECRET, DEVICE, Clock(), stub, rbytes)
    stats = {"inputs": 0, "replies": 0, "none": 0, "ok_replies": 0, "dispatched": 0}
    session = None
    for i in range(n):
        phase = i * 3 // n  # 0: unauthenticated, 1: random commands in a session, 2: bit flips
        if phase == 0:
            kind = random.getrandbits(8) % 4
            if kind == 0:
                data = rbytes(random.getrandbits(7))
            else:  # a plausible head: a real type, random rest
                data = bytes([random.getrandbits(8) % 12, random.getrandbits(8)]) + rbytes(random.getrandbits(6))
        else:
            if session is None or random.getrandbits(5) == 0:
                session = await login(h)
            typ = random.getrandbits(8) % 12 if random.getrandbits(2) else random.getrandbits(8)
            payload = rbytes(random.getrandbits(8) % 80)
            if random.getrandbits(1):  # a payload of the shape the type takes: the dispatcher parses it
                payload = well_formed(typ & 0x7F)
            typ &= 0x7F
            data = control.encode(typ, random.getrandbits(8), payload, session)
            if typ == control.HELLO or typ == control.AUTH:
                session = None  # a handshake ends the session: log in again next time
            if phase == 2:
                b = bytearray(data)
                for _ in range(1 + random.getrandbits(2)):
                    j = random.getrandbits(16) % len(b)
                    b[j] ^= 1 << random.getrandbits(3)
                if random.getrandbits(2) == 0:
                    b = b[:random.getrandbits(16) % (len(b) + 1)]
                data = bytes(b)
        stats["inputs"] += 1
        before = stub.calls
        try:
            reply = await h.handle(data)
        except Exception as e:  # noqa: BLE001 - the finding this fuzz is for
            print(json.dumps(["FAIL", binascii.hexlify(data).decode(), repr(e)]))
            return
        if stub.calls != before:
            stats["dispatched"] += 1
        if reply is None:
            stats["none"] += 1
        elif not isinstance(reply, (bytes, bytearray)):
            print(json.dumps(["FAIL", binascii.hexlify(data).decode(), "reply of type " + str(type(reply))]))
            return
        else:
            stats["replies"] += 1
            if control.peek(reply) is None:
                print(json.dumps(["FAIL", binascii.hexlify(data).decode(), "unparseable reply"]))
                return
            if len(reply) > 6 and reply[6] == control.OK:
                stats["ok_replies"] += 1
    stats["rejected"] = h.rejected
    print(json.dumps(["stats", stats]))
    print(json.dumps(["end", None]))


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
