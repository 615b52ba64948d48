"""The simulated air's wire, defined once for both interpreters: the dongle's `bluetooth` shim
(hil/mpy/bluetooth.py, MicroPython) imports it as `blewire`, the centrals (hil/blesim/wire.py,
CPython) load this very file. A message is `[length u16 LE][type u8][payload]`.

MicroPython-compatible on purpose (it runs in the shim); public `const()`s, so both sides read
the same names."""

import sys

# Which interpreter, as protocol.MICROPYTHON (this file imports nothing of the project: CPython
# loads it by path); the type checks take one side by this name (hil/mpy/mypy.ini).
MICROPYTHON = sys.implementation.name == "micropython"
if MICROPYTHON:
    from micropython import const
else:  # CPython
    def const(x: int) -> int:
        return x

SCAN = const(0x01)  # () -> ADV
CONNECT = const(0x02)  # addr_type u8, addr[6], interval_ms u16, latency u16, timeout_ms u16 -> CONNECTED | REJECT
MTU = const(0x03)  # client mtu u16 -> MTU_RSP server mtu u16
DISCOVER = const(0x04)  # () -> SERVICES entries
READ = const(0x05)  # handle u16 -> READ_RSP status u8, value
WRITE = const(0x06)  # handle u16, data -> WRITE_RSP status u8
WRITE_CMD = const(0x07)  # handle u16, data (no reply)
CONFIRM = const(0x08)  # handle u16: indication confirmed
PAIR = const(0x09)  # io u8, auth u8 (AUTH_*), passkey u32 (NO_PASSKEY: none) -> PAIR_RSP
ENCRYPT = const(0x0A)  # ltk[16] of an earlier bond -> PAIR_RSP
CONN_UPDATE = const(0x0B)  # interval_ms u16, latency u16, timeout_ms u16
ADV = const(0x81)  # rssi i8, connectable u8, adv_len u8, adv, scan response
CONNECTED = const(0x82)  # conn_handle u16
MTU_RSP = const(0x83)
SERVICES = const(0x84)  # entries: kind u8 (KIND_*), handle u16, extra u16, uuid_len u8, uuid (LE)
READ_RSP = const(0x85)
WRITE_RSP = const(0x86)
NOTIFY = const(0x88)  # handle u16, value
INDICATE = const(0x89)  # handle u16, value
PAIR_RSP = const(0x8A)  # status u8, encrypted u8, authenticated u8, bonded u8, key_size u8, ltk[16] if bonded
SECURITY_REQ = const(0x8B)  # the dongle asks the central to pair (gap_pair)
DISCONNECT = const(0x8C)  # reason u8: the dongle drops the link (gap_disconnect)
REJECT = const(0x8D)  # the dongle refuses the connection

# SERVICES entry kinds
KIND_SVC = const(1)
KIND_CHR = const(2)
KIND_DSC = const(3)

# PAIR's auth bits and passkey
AUTH_BOND = const(0x01)
AUTH_MITM = const(0x04)
AUTH_SC = const(0x08)
NO_PASSKEY = const(0xFFFFFFFF)
