# A scriptable peripheral on the simulated radio, driven line by line from stdin by
# tests/test_blesim.py. It prints one line per IRQ ("irq ...") and per command result.
# Runs on the MicroPython unix port with hil/mpy on MICROPYPATH.
import asyncio
import gc
import os
import sys

import bluetooth
from micropython import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_GATTS_READ_REQUEST = const(4)
_IRQ_GATTS_INDICATE_DONE = const(20)
_IRQ_MTU_EXCHANGED = const(21)
_IRQ_CONNECTION_UPDATE = const(27)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)
_IRQ_PASSKEY_ACTION = const(31)

_FLAG_READ = const(0x0002)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)
_FLAG_INDICATE = const(0x0020)
_FLAG_READ_AUTHENTICATED = const(0x0400)
_FLAG_WRITE_AUTHENTICATED = const(0x2000)

SERVICE = bluetooth.UUID("0bd5f001-0000-4000-8000-00000000b1e5")
NAMES = ("info", "telemetry", "control", "secret", "ind")
CHARS = (
    (bluetooth.UUID("0bd5f002-0000-4000-8000-00000000b1e5"), _FLAG_READ),
    (bluetooth.UUID("0bd5f003-0000-4000-8000-00000000b1e5"), _FLAG_NOTIFY),
    (bluetooth.UUID("0bd5f004-0000-4000-8000-00000000b1e5"), _FLAG_WRITE | _FLAG_NOTIFY),
    (bluetooth.UUID("0bd5f005-0000-4000-8000-00000000b1e5"),
     _FLAG_READ | _FLAG_WRITE | _FLAG_NOTIFY | _FLAG_READ_AUTHENTICATED | _FLAG_WRITE_AUTHENTICATED),
    (bluetooth.UUID("0bd5f006-0000-4000-8000-00000000b1e5"), _FLAG_INDICATE),
)

PASSKEY = int(os.getenv("DONGLE_PASSKEY") or "123456")
NAME = os.getenv("DONGLE_NAME") or "obd-sim"

ble = bluetooth.BLE()
ble.active(True)
ble.config(gap_name=NAME, mtu=int(os.getenv("DONGLE_MTU") or "247"),
           bond=True, mitm=True, le_secure=True, io=0)
((H_INFO, H_TELEMETRY, H_CONTROL, H_SECRET, H_IND),) = ble.gatts_register_services(((SERVICE, CHARS),))
HANDLES = {"info": H_INFO, "telemetry": H_TELEMETRY, "control": H_CONTROL, "secret": H_SECRET, "ind": H_IND}
BY_HANDLE = {v: k for k, v in HANDLES.items()}
ble.gatts_write(H_INFO, b"info-v1")
ble.gatts_write(H_SECRET, b"s3cret")

secrets = {}
kept = []  # addr memoryviews kept past their IRQ, as a careless handler would


def adv_payload(name, uuid):
    p = bytearray(b"\x02\x01\x06")
    p += bytes((len(name) + 1, 0x09)) + name.encode()
    u = bytes(uuid)
    p += bytes((len(u) + 1, 0x07)) + u
    return p


def hx(b):
    return bytes(b).hex() if b else "-"


def irq(event, data):
    if event == _IRQ_CENTRAL_CONNECT:
        conn, addr_type, addr = data
        kept.append(addr)
        print("irq connect", conn, hx(addr))
    elif event == _IRQ_CENTRAL_DISCONNECT:
        conn, addr_type, addr = data
        print("irq disconnect", conn, hx(addr))
    elif event == _IRQ_GATTS_WRITE:
        conn, handle = data
        print("irq write", conn, BY_HANDLE.get(handle, handle), hx(ble.gatts_read(handle)))
    elif event == _IRQ_GATTS_READ_REQUEST:
        conn, handle = data
        print("irq read_request", conn, BY_HANDLE.get(handle, handle))
    elif event == _IRQ_GATTS_INDICATE_DONE:
        print("irq indicate_done", data[0], BY_HANDLE.get(data[1], data[1]), data[2])
    elif event == _IRQ_MTU_EXCHANGED:
        print("irq mtu", data[0], data[1])
    elif event == _IRQ_CONNECTION_UPDATE:
        print("irq conn_update", *data)
    elif event == _IRQ_ENCRYPTION_UPDATE:
        conn, enc, auth, bonded, key_size = data
        print("irq enc", conn, int(enc), int(auth), int(bonded), key_size)
    elif event == _IRQ_PASSKEY_ACTION:
        conn, action, number = data
        print("irq passkey", conn, action, number)
        ble.gap_passkey(conn, action, PASSKEY)
    elif event == _IRQ_SET_SECRET:
        sec_type, key, value = data
        secrets[(sec_type, bytes(key))] = bytes(value) if value is not None else None
        print("irq set_secret", sec_type)
        return True
    elif event == _IRQ_GET_SECRET:
        sec_type, index, key = data
        print("irq get_secret", sec_type)
        return secrets.get((sec_type, bytes(key))) if key is not None else None
    else:
        print("irq other", event)


ble.irq(irq)


def notify_many(conn, handle, buf, count):
    """Notify until ENOMEM or count; returns how many went out. No allocation in the loop."""
    sent = 0
    while sent < count:
        try:
            ble.gatts_notify(conn, handle, buf)
        except OSError:
            return sent
        sent += 1
    return sent


def heap_per_notify(conn, handle, count):
    buf = bytearray(40)
    mv = memoryview(buf)
    for i in range(40):
        buf[i] = i
    gc.collect()
    before = gc.mem_alloc()
    sent = 0
    refused = 0
    while sent < count:
        try:
            ble.gatts_notify(conn, handle, mv)
            sent += 1
        except OSError:
            refused += 1  # the exception object is allocated: count the successful ones only
            if refused > 1000000:
                break
    after = gc.mem_alloc()
    return sent, refused, after - before


def command(words):
    cmd = words[0]
    if cmd == "adv":
        ble.gap_advertise(100000, adv_payload(NAME, SERVICE))
        print("advertising")
    elif cmd == "stop":
        ble.gap_advertise(None)
        print("stopped")
    elif cmd == "notify":
        conn, handle, n = int(words[1]), HANDLES[words[2]], int(words[3])
        data = bytes(i & 0xFF for i in range(n))
        try:
            ble.gatts_notify(conn, handle, data)
            print("notified", n)
        except OSError as e:
            print("notify error", e.errno)
    elif cmd == "indicate":
        ble.gatts_indicate(int(words[1]), HANDLES[words[2]], bytes.fromhex(words[3]))
        print("indicated")
    elif cmd == "flood":
        conn, count = int(words[1]), int(words[2])
        sent = notify_many(conn, H_TELEMETRY, b"x" * 20, count)
        print("flood", sent)
    elif cmd == "heap":
        sent, refused, delta = heap_per_notify(int(words[1]), H_TELEMETRY, int(words[2]))
        print("heap", sent, delta)
    elif cmd == "read":
        print("value", words[1], hx(ble.gatts_read(HANDLES[words[1]])))
    elif cmd == "write":
        ble.gatts_write(HANDLES[words[1]], bytes.fromhex(words[2]))
        print("written")
    elif cmd == "setbuf":
        ble.gatts_set_buffer(HANDLES[words[1]], int(words[2]), len(words) > 3)
        print("buffer", words[1], words[2])
    elif cmd == "disconnect":
        print("disconnect", ble.gap_disconnect(int(words[1])))
    elif cmd == "pair":
        ble.gap_pair(int(words[1]))
        print("pair requested")
    elif cmd == "kept":
        print("kept", " ".join(hx(a) for a in kept))
    elif cmd == "mac":
        t, mac = ble.config("mac")
        print("mac", t, hx(mac))
    elif cmd == "quit":
        return False
    else:
        print("unknown command", cmd)
    return True


async def main():
    stdin = asyncio.StreamReader(sys.stdin)
    print("ready", hx(ble.config("mac")[1]))
    while True:
        line = await stdin.readline()
        if not line:
            break
        words = line.decode().split()
        if not words:
            continue
        try:
            if not command(words):
                break
        except Exception as e:
            print("command failed", repr(e))
    ble.active(False)
    print("bye")


asyncio.run(main())
