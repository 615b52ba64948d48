"""BLE bonding keys on flash (IRQs 29/30: get/set secret), so a paired phone
reconnects encrypted without the passkey. Small: a handful of bonds at most."""

import json

_MAX = 8


class Bonds:
    def __init__(self, path):
        self._path = path
        self._items = []  # [sec_type, key hex, value hex], oldest first
        try:
            with open(path) as f:
                self._items = json.load(f)
        except (OSError, ValueError):
            self._items = []

    def get(self, sec_type, index, key):
        i = 0
        for t, k, v in self._items:
            if t != sec_type:
                continue
            if key is None:
                if i == index:
                    return bytes.fromhex(v)
                i += 1
            elif k == key.hex():
                return bytes.fromhex(v)
        return None

    def set(self, sec_type, key, value):
        kh = key.hex()
        self._items = [e for e in self._items if not (e[0] == sec_type and e[1] == kh)]
        if value is not None:
            self._items.append([sec_type, kh, value.hex()])
            while len(self._items) > _MAX:
                self._items.pop(0)
        tmp = self._path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self._items, f)
        import os
        os.rename(tmp, self._path)
        return True
