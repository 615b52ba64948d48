"""A BLE backend module for `obdsync --ble-backend` on a host without Bluetooth: bleak
raises what it raises there (BlueZ: "No Bluetooth adapters found.")."""

from bleak.exc import BleakError


class _NoAdapterScanner:
    def __init__(self, *args, **kwargs):
        raise BleakError("No Bluetooth adapters found.")


CLIENT_BACKEND = None
SCANNER_BACKEND = _NoAdapterScanner
