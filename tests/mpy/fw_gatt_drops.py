# What the dongle's GATT server drops from the control characteristic is counted
# (firmware/dongle/gatt.py `dropped`, shown in STATUS as part of auth_failures): a flood that
# overflows the 16-entry receive queue, fragments that make no message, a partial message cut
# by a new one, a central's unread writes when it leaves. A recording fake `ble` drives the IRQ
# handler as NimBLE would (the hil shim only supplies bluetooth.UUID). Prints one JSON line per
# case; tests/test_firmware_gatt_drops.py holds the expectations. Last line: ["end", null].

import json

from dongle.gatt import Gatt
from protocol import control
from protocol.frames import FIRST, LAST

_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
H_CTL = 3


class FakeBLE:
    def __init__(self):
        self.value = b""

    def active(self, *a):
        return True

    def config(self, *a, **kw):
        return None

    def irq(self, handler):
        self.handler = handler

    def gatts_register_services(self, services):
        return ((1, 2, H_CTL),)

    def gatts_set_buffer(self, *a):
        pass

    def gatts_write(self, *a):
        pass

    def gatts_read(self, handle):
        return self.value

    def gap_advertise(self, *a, **kw):
        pass

    def gap_disconnect(self, conn):
        pass


def new():
    ble = FakeBLE()
    g = Gatt(ble, "obd-test", b"info", pairing=False)
    g._irq(_IRQ_CENTRAL_CONNECT, (1, 0, memoryview(bytes(6))))
    return ble, g


def write(ble, g, data, conn=1):
    ble.value = bytes(data)
    g._irq(_IRQ_GATTS_WRITE, (conn, H_CTL))


def drain(g):
    n = 0
    while g.next_command() is not None:
        n += 1
    return n


BARE_AUTH = bytes((FIRST | LAST,)) + bytes((control.AUTH, 7, 0, 0, 0, 1)) + bytes(16)


def emit(name, g):
    n = drain(g)  # the control task reads what was queued: broken streams are dropped there
    print(json.dumps([name, {"dropped": g.dropped, "read": n}]))


ble, g = new()
for _ in range(26):  # faster than the control task reads: 16 fit, 10 are dropped
    write(ble, g, BARE_AUTH)
emit("flood", g)

ble, g = new()
write(ble, g, bytes((0x05,)) + b"middle")  # a middle fragment without its start
write(ble, g, b"")  # an empty write
write(ble, g, bytes((FIRST | 0,)) + b"half")  # a start ...
write(ble, g, bytes((FIRST | 1,)) + b"new")  # ... cut by a new message
write(ble, g, bytes((3,)) + b"x")  # ... whose next fragment skips a counter (2 was lost)
emit("broken", g)

ble, g = new()
for _ in range(3):
    write(ble, g, BARE_AUTH)
g._irq(_IRQ_CENTRAL_DISCONNECT, (1,))
g._irq(_IRQ_CENTRAL_CONNECT, (2, 0, memoryview(bytes(6))))  # before the control task read them
emit("left", g)

ble, g = new()
write(ble, g, BARE_AUTH, conn=9)  # not the connected central: not ours to queue or count
for _ in range(16):
    write(ble, g, BARE_AUTH)
emit("exact_fit", g)
print(json.dumps(["end", None]))
