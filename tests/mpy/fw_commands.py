# The dongle's command handler (firmware/dongle/commands.py) on the unix port, driven as a
# hostile central would: a fake Actions records what really ran, a fake clock drives the
# lock-out. Prints one JSON line per case, [name, observation]; tests/test_firmware_commands.py
# holds the expectations. Last line: ["end", null].

import json
import random
import time

from dongle.commands import Actions, CommandHandler
from protocol import auth, control, control_central
from protocol.errors import ProtocolError

SECRET = bytes(range(32))
DEVICE = bytes((0xD0, 0x11, 0x6E, 0x00, 0x00, 0x00, 0x00, 0x42))
NONCE_D = bytes(range(100, 116))
AUTHED = (control.TIME, control.ACK, control.STREAM, control.SET_PLAN, control.READ_DTC,
          control.CLEAR_DTC, control.READ_VIN, control.STATUS, control.READ_FREEZE)
# A well-formed payload for every authenticated command.
GOOD = {control.TIME: control_central.pack_u64(1700000000000), control.ACK: control_central.pack_u32(5),
        control.STREAM: b"", control.SET_PLAN: control_central.pack_plan([(0x0D, 2, 10, 0)]),
        control.READ_DTC: b"\x03", control.CLEAR_DTC: b"", control.READ_VIN: b"", control.STATUS: b"",
        control.READ_FREEZE: b""}


class Clock:
    def __init__(self):
        self.now = 1000

    def ms(self):
        return self.now


class Recorder(Actions):
    """Every action that ran, by name: a refused command must leave no trace here."""

    def __init__(self):
        self.ran = []

    def time_sync(self, wall_ms):
        self.ran.append("time")
        return control.OK, b""

    def ack(self, seq):
        self.ran.append("ack")
        return control.OK, control.pack_pair(0, 100)

    def stream(self):
        self.ran.append("stream")
        return control.OK, control.pack_pair(0, 0)

    def set_plan(self, entries):
        self.ran.append("set_plan")
        return control.OK, b""

    async def read_dtc(self, mode):
        self.ran.append("read_dtc")
        return control.OK, bytes((mode,))

    async def clear_dtc(self):
        self.ran.append("clear_dtc")
        return control.OK, b""

    async def read_vin(self):
        self.ran.append("read_vin")
        return control.OK, b"WVWZZZ1KZAW386754"

    async def read_freeze(self):
        self.ran.append("read_freeze")
        return control.OK, control.pack_freeze([(0xE8, 2, b"\x01\x33")])

    def status(self):
        self.ran.append("status")
        return control.OK, b""


def run(coro):
    # The fake actions never wait, so one step finishes the coroutine.
    try:
        coro.send(None)
    except StopIteration as e:
        return e.value
    raise AssertionError("handle() waited on something")


def new():
    clock = Clock()
    acts = Recorder()
    return CommandHandler(SECRET, DEVICE, clock, acts, lambda n: NONCE_D[:n]), acts, clock


def status_of(reply, session=None):
    """The reply's status (None: no reply at all); the reply must decode as the central would."""
    if reply is None:
        return None
    return control.decode(reply, session).status


def hello(h, req=1, nonce_c=bytes(16)):
    r = run(h.handle(control.encode(control.HELLO, req, nonce_c)))
    return control.decode(r)


def auth_with(h, proof, req=2):
    return control.decode(run(h.handle(control.encode(control.AUTH, req, proof))))


def login(h, nonce_c=bytes(range(16))):
    """A full handshake; the central's session."""
    m = hello(h, 1, nonce_c)
    _, nonce_d = control_central.parse_hello_reply(m.payload)
    r = auth_with(h, auth.proof_central(SECRET, nonce_c, nonce_d))
    assert r.status == control.OK, r
    return auth.Session(auth.session_key(SECRET, nonce_c, nonce_d), auth.DIR_CENTRAL)


def emit(name, obs):
    print(json.dumps([name, obs]))


def case_happy():
    h, acts, _ = new()
    nonce_c = bytes(range(16))
    m = hello(h, 7, nonce_c)
    dev, nonce_d = control_central.parse_hello_reply(m.payload)
    r = auth_with(h, auth.proof_central(SECRET, nonce_c, nonce_d), 8)
    central = auth.Session(auth.session_key(SECRET, nonce_c, nonce_d), auth.DIR_CENTRAL)
    s = control.decode(run(h.handle(control.encode(control.STATUS, 9, b"", central))), central)
    emit("happy", {"hello": [m.status, m.req, dev.hex(), nonce_d.hex()],
                   "auth": [r.status, r.req, r.payload == auth.proof_dongle(SECRET, nonce_c, nonce_d)],
                   "authenticated": h.authenticated, "status": [s.status, s.req], "ran": acts.ran})


def case_wrong_proof():
    h, acts, _ = new()
    hello(h)
    r = auth_with(h, bytes(16))
    emit("wrong_proof", {"status": r.status, "authenticated": h.authenticated,
                         "failures": h.total_failures, "ran": acts.ran})


def attempt(h, good):
    """HELLO then AUTH (right or wrong proof): the AUTH status."""
    nonce_c = bytes(16)
    m = hello(h, 1, nonce_c)
    _, nonce_d = control_central.parse_hello_reply(m.payload)
    proof = auth.proof_central(SECRET, nonce_c, nonce_d) if good else b"\x55" * 16
    return auth_with(h, proof).status


def case_lockout():
    h, acts, clock = new()
    free = [attempt(h, False) for _ in range(3)]
    fourth = attempt(h, False)  # the first failure that costs
    # Each lock is probed just before and at its expected end (1 s, doubling): before, even the
    # right proof is refused and proves nothing, also after a reconnect; at the end a wrong
    # proof is judged again (and starts the next, longer lock).
    locks = []
    length = 1000
    for _ in range(12):
        t0 = clock.now
        during = attempt(h, True)
        h.disconnected()
        clock.now = t0 + length - 1
        late = attempt(h, True)
        clock.now = t0 + length
        locks.append([length, during, late, attempt(h, False), h.authenticated])
        length = min(length * 2, 300000)
    clock.now += 300000
    ok = attempt(h, True)
    emit("lockout", {"free": free, "fourth": fourth, "locks": locks, "ok": ok, "authenticated": h.authenticated,
                     "failures_after_success": h.auth_failures, "total_failures": h.total_failures,
                     "ran": acts.ran})


def case_lockout_across_the_wrap():
    # The clock is ticks (dongle.clock): a lock-out set just before the wrap ends on time
    # after it, instead of lasting until the clock comes round again.
    h, acts, clock = new()
    t0 = clock.now = time.ticks_add(0, -500)
    for _ in range(4):
        attempt(h, False)  # the fourth starts a 1 s lock
    clock.now = time.ticks_add(t0, 999)
    late = attempt(h, True)
    clock.now = time.ticks_add(t0, 1000)
    emit("lockout_wrap", {"wrapped": clock.now < t0, "late": late, "at_end": attempt(h, True),
                          "authenticated": h.authenticated})


def case_one_guess_per_hello():
    h, acts, _ = new()
    nonce_c = bytes(16)
    m = hello(h, 1, nonce_c)
    _, nonce_d = control_central.parse_hello_reply(m.payload)
    first = auth_with(h, b"\x00" * 16).status
    # the right proof for that HELLO, too late: its nonce is spent
    second = auth_with(h, auth.proof_central(SECRET, nonce_c, nonce_d)).status
    h2, _, _ = new()
    no_hello = auth_with(h2, auth.proof_central(SECRET, nonce_c, nonce_d)).status
    emit("one_guess", {"first": first, "second": second, "no_hello": no_hello,
                       "authenticated": [h.authenticated, h2.authenticated]})


def case_refused_before_auth():
    out = {}
    # a session key the attacker made up, a MAC-less message, and after a HELLO without AUTH
    fake = auth.Session(bytes(32), auth.DIR_CENTRAL)
    for t in AUTHED:
        h, acts, _ = new()
        forged = control.encode(t, 3, GOOD[t], fake)
        bare = bytes((t, 3, 0, 0, 0, 1)) + GOOD[t]
        got = [status_of(run(h.handle(forged))), status_of(run(h.handle(bare)))]
        hello(h)
        got.append(status_of(run(h.handle(forged))))
        got.append(h.authenticated)
        got.append(acts.ran)
        out[str(t)] = got
    emit("refused_before_auth", out)


def case_replay_reorder():
    h, acts, _ = new()
    c = login(h)
    m1 = control.encode(control.STATUS, 1, b"", c)
    m2 = control.encode(control.ACK, 2, control_central.pack_u32(1), c)
    m3 = control.encode(control.TIME, 3, control_central.pack_u64(5), c)
    seq = [status_of(run(h.handle(m1)), c)]
    seq.append(status_of(run(h.handle(m1))))  # replay
    seq.append(status_of(run(h.handle(m3)), c))  # skips 2: allowed (counters only grow)
    seq.append(status_of(run(h.handle(m2))))  # 2 after 3: reordered
    seq.append(status_of(run(h.handle(m3))))  # replay of the last
    emit("replay_reorder", {"statuses": seq, "ran": acts.ran})


def case_bitflip():
    out = {}
    for t in (control.ACK, control.CLEAR_DTC, control.SET_PLAN):
        h, acts, _ = new()
        c = login(h)
        msg = control.encode(t, 0x21, GOOD[t], c)
        statuses = {}
        for i in range(len(msg) * 8):
            bad = bytearray(msg)
            bad[i >> 3] ^= 1 << (i & 7)
            st = status_of(run(h.handle(bytes(bad))))
            statuses[str(st)] = statuses.get(str(st), 0) + 1
        ran_during = list(acts.ran)
        after = status_of(run(h.handle(msg)), c)  # the genuine one still works
        out[str(t)] = {"bits": len(msg) * 8, "statuses": statuses, "ran_during": ran_during,
                       "after": after, "ran": acts.ran}
    emit("bitflip", out)


def case_reflected():
    h, acts, _ = new()
    nonce_c = bytes(range(16))
    m = hello(h, 1, nonce_c)
    _, nonce_d = control_central.parse_hello_reply(m.payload)
    auth_with(h, auth.proof_central(SECRET, nonce_c, nonce_d))
    key = auth.session_key(SECRET, nonce_c, nonce_d)
    central = auth.Session(key, auth.DIR_CENTRAL)
    # a command MACed in the dongle's direction (what reflecting its own traffic gives)
    mirror = auth.Session(key, auth.DIR_DONGLE)
    mirror.tx_counter = 100
    reflected = control.encode(control.CLEAR_DTC, 4, b"", mirror)
    got = [status_of(run(h.handle(reflected)))]
    # the dongle's own reply sent back to it, and with its reply bit cleared
    reply = run(h.handle(control.encode(control.STATUS, 5, b"", central)))
    ran_before = list(acts.ran)
    got.append(status_of(run(h.handle(reply))))
    flipped = bytearray(reply)
    flipped[0] &= 0x7F
    got.append(status_of(run(h.handle(bytes(flipped)))))
    emit("reflected", {"statuses": got, "ran": acts.ran[len(ran_before):], "before": ran_before})


def case_unknown_types():
    h, acts, _ = new()
    before = []
    for t in (0x00, 0x0C, 0x0D, 0x3F, 0x7F, 0x80, 0xFF):
        before.append(run(h.handle(bytes((t, 1, 0, 0, 0, 0)) + bytes(12))))
    c = login(h)
    after = []
    for t in (0x00, 0x0C, 0x0D, 0x3F, 0x7F, 0x80, 0xFF):
        raw = bytes((t, 1, 0, 0, 0, c.next_counter())) + bytes(4)
        after.append(run(h.handle(raw + c.mac(c.tx_dir, raw))))
    emit("unknown_types", {"before": before, "after": after, "ran": acts.ran, "rejected": h.rejected})


def case_malformed():
    h, acts, _ = new()
    c = login(h)
    bad = [
        (control.TIME, b"\x00" * 7), (control.TIME, b""), (control.ACK, b"\x00" * 3), (control.ACK, b"\x00" * 5),
        (control.STREAM, b"\x00"), (control.SET_PLAN, b""), (control.SET_PLAN, b"\x01\x0D\x00"),
        (control.SET_PLAN, b"\x02" + b"\x0D\x00\x01\x00\x01\x00\x01" * 2),  # a channel twice
        (control.SET_PLAN, bytes((33,)) + bytes(7 * 33)), (control.READ_DTC, b""), (control.READ_DTC, b"\x04"),
        (control.READ_DTC, b"\x01"), (control.READ_DTC, b"\x03\x03"), (control.CLEAR_DTC, b"\x00"),
        (control.READ_VIN, b"\x02"), (control.STATUS, b"\x00"), (control.READ_FREEZE, b"\x02"),
    ]
    out = []
    for t, p in bad:
        r = run(h.handle(control.encode(t, 9, p, c)))
        m = control.decode(r, c)  # refusals inside a session are MACed
        out.append([t, p.hex(), m.status, m.counter > 0])
    # HELLO/AUTH malformed: a short nonce, a counter where none belongs, a short proof
    pre, pre_acts, _ = new()
    pre_out = [status_of(run(pre.handle(control.encode(control.HELLO, 1, bytes(15))))),
               status_of(run(pre.handle(bytes((control.HELLO, 1, 0, 0, 0, 1)) + bytes(16)))),
               status_of(run(pre.handle(bytes((control.HELLO | 0x80, 1, 0, 0, 0, 0, 0)))))]
    hello(pre)
    pre_out.append(status_of(run(pre.handle(control.encode(control.AUTH, 2, bytes(15))))))
    # too short to even name a command: silently dropped
    pre_out.append(run(pre.handle(b"")))
    pre_out.append(run(pre.handle(b"\x0a")))
    emit("malformed", {"session": out, "ran": acts.ran, "pre": pre_out, "pre_ran": pre_acts.ran})


def case_fuzz():
    random.seed(20240611)
    raised = []
    stats = {"n": 0, "replies": 0, "bad_replies": 0}
    h, acts, clock = new()
    c = None
    templates = [control.encode(control.HELLO, 1, bytes(16)), control.encode(control.AUTH, 2, bytes(16))]
    for i in range(6000):
        if i == 3000:
            h, acts, clock = new()
            c = login(h)
            for t in AUTHED:
                templates.append(control.encode(t, 7, GOOD[t], c))
        clock.now += random.getrandbits(6)
        k = random.getrandbits(2)
        if k == 0:  # pure noise
            data = bytes(random.getrandbits(8) for _ in range(random.getrandbits(6)))
        else:  # a real message, mangled: flips, truncation, splices
            data = bytearray(templates[random.getrandbits(8) % len(templates)])
            for _ in range(1 + random.getrandbits(2)):
                op = random.getrandbits(2)
                if op == 0 and data:
                    j = random.getrandbits(8) % len(data)
                    data[j] ^= 1 << random.getrandbits(3)
                elif op == 1 and data:
                    data = data[: random.getrandbits(8) % len(data)]
                elif op == 2:
                    data += bytes(random.getrandbits(8) for _ in range(random.getrandbits(4)))
                else:
                    data = data[:6] + bytes(random.getrandbits(8) for _ in range(random.getrandbits(5)))
            data = bytes(data)
        stats["n"] += 1
        try:
            r = run(h.handle(data))
        except Exception as e:  # the contract: never
            if len(raised) < 5:
                raised.append([data.hex(), repr(e)])
            continue
        if r is not None:
            stats["replies"] += 1
            try:
                control.decode(r, None if c is None else _replay_safe(c, r))
            except ProtocolError:
                stats["bad_replies"] += 1
    # After all that, the genuine session still works (or was ended by a fuzzed HELLO).
    stats["ran"] = acts.ran
    stats["raised"] = raised
    emit("fuzz", stats)


def _replay_safe(c, reply):
    # A reply checked out of order (some replies are unMACed refusals): a fresh view of the
    # session with the receive counter just below this reply's, so only the MAC is judged.
    s = auth.Session(b"", auth.DIR_CENTRAL)
    s._hmac = c._hmac
    return s


for case in (case_happy, case_wrong_proof, case_lockout, case_lockout_across_the_wrap, case_one_guess_per_hello,
             case_refused_before_auth, case_replay_reorder, case_bitflip, case_reflected, case_unknown_types, case_malformed, case_fuzz):
    case()
print(json.dumps(["end", None]))
