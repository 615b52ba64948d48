# machine.WDT for the MicroPython unix port (simulation only): WDT(timeout=ms), feed().
#
# A thread watches the last feed; when `timeout` ms pass without one it prints "wdt reset"
# and SIGKILLs the process, which is what the chip's reset is to the firmware: RAM gone, the
# flash (a directory here) as it was. The HIL rig starts the dongle again, as the chip boots
# again. The thread runs even while the main thread spins in Python (the GIL is handed over
# every few bytecodes) or blocks in a system call.

import _thread
import os
import time


class WDT:
    def __init__(self, id: int = 0, timeout: int = 5000) -> None:
        if timeout < 1:
            raise ValueError("timeout must be >= 1 ms")
        self._timeout = timeout
        self._fed = time.ticks_ms()
        _thread.start_new_thread(self._watch, ())

    def feed(self) -> None:
        self._fed = time.ticks_ms()

    def _watch(self) -> None:
        while True:
            time.sleep_ms(20)
            if time.ticks_diff(time.ticks_ms(), self._fed) > self._timeout:
                print("wdt reset")
                os.system("kill -9 $PPID")  # the shell's parent: this interpreter
                time.sleep_ms(1000)
