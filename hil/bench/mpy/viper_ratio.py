# How much faster viper and native code run than bytecode on this interpreter, for the one
# loop with published ESP32 figures: the micropython wiki's "Improving performance with Viper
# code" example (an array of 10000; on an ESP32-S3 viper ~16x, native ~1.6x faster than
# bytecode). hil/README.md ("CPU on the board") compares: the calibration factor is measured
# with bytecode, and native code's speed-up here need not be the Xtensa one's.
#
#   micropython viper_ratio.py
# Prints one JSON line {"bytecode_us", "native_us", "viper_us", "native_x", "viper_x"} (best of 15).

import json
import time
from array import array

import micropython
from micropython import const

_TYPE_CHECKING = const(0)  # private const: the block below compiles to nothing (see seal_cost.py)
if _TYPE_CHECKING:
    from collections.abc import Callable


def add_to_array(a: array[int], n: int) -> int:
    sum_array = 0
    for i in range(len(a)):
        a[i] += n
        sum_array += a[i]
    return sum_array


@micropython.native
def native_add_to_array(a: array[int], n: int) -> int:
    sum_array = 0
    for i in range(len(a)):
        a[i] += n
        sum_array += a[i]
    return sum_array


@micropython.viper
def viper_add_to_array(pa: ptr32, n: int, length: int) -> int:  # noqa: F821  # a viper type, no name
    sum_array = 0
    i = 0
    while i < length:
        pa[i] += n
        sum_array += pa[i]
        i += 1
    return sum_array


def best(run: Callable[[], int]) -> int:
    b = 1 << 29
    for _ in range(15):
        t = time.ticks_us()
        run()
        b = min(b, time.ticks_diff(time.ticks_us(), t))
    return b


def main() -> None:
    a = array("i", [0] * 10000)  # "i": 4 bytes on every port, as ptr32 reads it
    tb = best(lambda: add_to_array(a, 1))
    tn = best(lambda: native_add_to_array(a, 1))
    tv = best(lambda: viper_add_to_array(a, 1, len(a)))  # type: ignore[arg-type]
    print(json.dumps({"bytecode_us": tb, "native_us": tn, "viper_us": tv, "native_x": tb / tn, "viper_x": tb / tv}))


main()
