"""BLE bonding keys on flash (IRQs 29/30: get/set secret), so a paired phone
reconnects encrypted without the passkey. Small: a handful of bonds at most.

set() runs inside the radio's IRQ, on the NimBLE task with its ~5 KB stack on the
board: it changes only the copy in RAM and hands the file write to the main task
with micropython.schedule (and flush(), which the housekeeping task calls, writes
whatever a full schedule queue left unwritten)."""

import json

import micropython
from micropython import const

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away
# and has no `typing`, so the names they use exist for the checker only.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_MAX = 8


class Bonds:
    def __init__(self, path: str,
                 schedule: Callable[[Callable[[Any], None], Any], None] = micropython.schedule) -> None:
        self._path = path
        self._schedule = schedule
        self._save_cb = self._save  # bound once: the IRQ allocates no bound method
        self._dirty = False
        self._items: list[list[Any]] = []  # [sec_type, key hex, value hex], oldest first
        try:
            with open(path) as f:
                self._items = json.load(f)
        except (OSError, ValueError):
            self._items = []

    def get(self, sec_type: int, index: int, key: bytes | memoryview | None) -> bytes | None:
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

    def set(self, sec_type: int, key: bytes | memoryview, value: bytes | memoryview | None) -> bool:
        kh = key.hex()
        self._items = [e for e in self._items if not (e[0] == sec_type and e[1] == kh)]
        if value is not None:
            self._items.append([sec_type, kh, value.hex()])
            while len(self._items) > _MAX:
                self._items.pop(0)
        self._dirty = True
        try:
            self._schedule(self._save_cb, None)
        except RuntimeError:
            pass  # the schedule queue is full: flush() writes it
        return True

    def flush(self) -> None:
        """Write the bonds if set() changed them (the housekeeping task calls this)."""
        if self._dirty:
            self._save(None)

    def _save(self, _: object) -> None:
        if not self._dirty:
            return
        self._dirty = False
        tmp = self._path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self._items, f)
        import os
        os.rename(tmp, self._path)
