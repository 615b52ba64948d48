"""Simulated BLE: MicroPython dongles (hil/mpy/bluetooth.py) and bleak centrals in one "air".

The air is a directory; each advertising dongle listens on `<air>/<ADDRESS>.sock`, nothing leaves
the machine. The dongle gets the air and its address from the environment; the daemon gets only
the backend classes (bleak's `backend=` seam) and `air=` or $OBDSYNC_SIM_AIR.

    # dongle side: one micropython process per dongle, the shim precompiled (see shim.py)
    import subprocess
    from hil import mpy
    from hil.blesim import shim
    env = mpy.env(simulated_ble=False, extra=[shim.module_dir()],
                  OBDSYNC_SIM_AIR="/tmp/air", OBDSYNC_SIM_MAC="AA:BB:CC:00:00:01")
    dongle = subprocess.Popen(mpy.argv("firmware/main.py", heapsize=shim.heapsize("64K")), env=env)

    # daemon side: bleak's public API with the simulated backends
    from bleak import BleakClient, BleakScanner
    from hil.blesim import SimClient, SimScanner
    device = await BleakScanner.find_device_by_address("AA:BB:CC:00:00:01", backend=SimScanner, air="/tmp/air")
    async with BleakClient(device, backend=SimClient, air="/tmp/air", passkey=123456,
                           disconnected_callback=on_gone) as client:
        assert client.mtu_size == 247            # BlueZ offers 517; min(517, firmware's config(mtu=))
        await client.pair()                      # passkey entry: IRQ 31, then IRQ 28 on the dongle
        await client.start_notify(TELEMETRY, on_notification)
        await client.write_gatt_char(CONTROL, command, response=True)

A daemon subprocess with OBDSYNC_SIM_AIR in its environment needs only `backend=SimClient/SimScanner`.
Dongle knobs (environment): OBDSYNC_SIM_RSSI, OBDSYNC_SIM_TX_BUFFERS, OBDSYNC_SIM_PKTS_PER_EVENT.
"""

from .client import SimClient
from .scanner import SimScanner

__all__ = ["SimClient", "SimScanner"]

# What `obdsync --ble-backend hil.blesim` looks up (obdsync.cli.Ctx.backends).
CLIENT_BACKEND = SimClient
SCANNER_BACKEND = SimScanner
