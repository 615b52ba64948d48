"""MicroPython's `const`, `time.ticks_*` and `asyncio.sleep_ms` on CPython, for the firmware's driver.

Direct mode runs firmware/dongle/elm327.py, scheduler.py, plan.py and power.py unchanged on
CPython (the same source as on the board): those modules import these names from here when `micropython` is absent.
Ticks wrap at 2**30 as on the ESP32, so the driver's wrap-safe arithmetic is exercised the same
way on both interpreters.

`sleep_ms` is where the driver waits for its stream (it polls a non-blocking `readinto` and
sleeps `poll_ms` between looks). On the board the UART's ring buffer fills meanwhile; here a
transport that receives bytes calls `wake()`, which ends every pending `sleep_ms` at once, so a
reply is read as soon as it arrives instead of at the next poll (a waiter woken early just
looks again: the driver and scheduler re-check their state after every sleep).
"""

from __future__ import annotations

import asyncio as _asyncio
import time as _time
import types
import weakref
from typing import TypeVar

_T = TypeVar("_T")

_PERIOD = 1 << 30
_MASK = _PERIOD - 1
_HALF = _PERIOD >> 1


def const(x: _T) -> _T:
    return x


def ticks_ms() -> int:
    return int(_time.monotonic() * 1000) & _MASK


def ticks_diff(a: int, b: int) -> int:
    return ((a - b + _HALF) & _MASK) - _HALF


def ticks_add(a: int, delta: int) -> int:
    return (a + delta) & _MASK


# One "data arrived" future per event loop (tests run a loop per test).
_waiters: weakref.WeakKeyDictionary[_asyncio.AbstractEventLoop, _asyncio.Future[None]] = weakref.WeakKeyDictionary()


def _waiter(loop: _asyncio.AbstractEventLoop) -> _asyncio.Future[None]:
    fut = _waiters.get(loop)
    if fut is None or fut.done():
        fut = loop.create_future()
        _waiters[loop] = fut
    return fut


def wake() -> None:
    """Bytes arrived on some transport: end the pending sleep_ms waits of this loop."""
    try:
        loop = _asyncio.get_running_loop()
    except RuntimeError:
        return
    fut = _waiters.pop(loop, None)
    if fut is not None and not fut.done():
        fut.set_result(None)


async def sleep_ms(ms: int) -> None:
    if ms <= 0:
        await _asyncio.sleep(0)
        return
    loop = _asyncio.get_running_loop()
    await _asyncio.wait((_waiter(loop),), timeout=ms / 1000)


time = types.SimpleNamespace(ticks_ms=ticks_ms, ticks_diff=ticks_diff, ticks_add=ticks_add,
                             monotonic=_time.monotonic)
asyncio = types.SimpleNamespace(sleep_ms=sleep_ms, sleep=_asyncio.sleep, Event=_asyncio.Event,
                                ThreadSafeFlag=_asyncio.Event, get_running_loop=_asyncio.get_running_loop)
