# What one central's connection keeps on the simulated radio's heap (hil/mpy/bluetooth.py: its
# connection object, receive buffer, socket and reader thread). On the board a connection is
# NimBLE's, outside the GC heap, so figure "board" takes this out of the firmware's live heap
# while a central is connected, as it takes out the radio's own footprint.
#
#   micropython radio_conn.py     (OBDSYNC_SIM_AIR, OBDSYNC_SIM_MAC set)
# Prints "idle BYTES" once advertising, "connected BYTES" once a central connected (and the
# MTU exchange is done), "gone BYTES" after it disconnected; every figure after gc.collect().
# The service is the firmware's shape: info, telemetry, control (protocol.uuids).

import asyncio
import gc

import bluetooth
from micropython import const

from protocol import uuids

_FLAG_READ = const(0x0002)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)
_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_MTU_EXCHANGED = const(21)

state = [0]  # 0 advertising, 1 connected, 2 MTU exchanged, 3 disconnected


def irq(event: int, data: object) -> None:
    if event == _IRQ_CENTRAL_CONNECT:
        state[0] = 1
    elif event == _IRQ_MTU_EXCHANGED:
        state[0] = 2
    elif event == _IRQ_CENTRAL_DISCONNECT:
        state[0] = 3


def live() -> int:
    gc.collect()
    return gc.mem_alloc()


async def until(n: int) -> None:
    while state[0] < n:
        await asyncio.sleep_ms(5)


async def main() -> None:
    ble = bluetooth.BLE()
    ble.active(True)
    ble.irq(irq)
    service = (bluetooth.UUID(uuids.SERVICE), (
        (bluetooth.UUID(uuids.INFO), _FLAG_READ),
        (bluetooth.UUID(uuids.TELEMETRY), _FLAG_NOTIFY),
        (bluetooth.UUID(uuids.CONTROL), _FLAG_WRITE | _FLAG_NOTIFY)))
    ble.gatts_register_services((service,))
    name = b"obd-conn"
    ble.gap_advertise(100000, adv_data=b"\x02\x01\x06" + bytes((len(name) + 1, 9)) + name)
    print("idle", live())
    await until(2)
    print("connected", live())
    await until(3)
    print("gone", live())


asyncio.run(main())
