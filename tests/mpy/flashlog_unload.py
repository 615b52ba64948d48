# FlashLog's boot-only code (dongle.flashlog_boot) is gone once a log is open: not in
# sys.modules, not an attribute of the package, and its heap freed.
#
#   micropython flashlog_unload.py DIR
# Prints "modules N", "attribute N" (0: gone), "freed BYTES" (what importing the boot module
# alone costs, against what is left after a log was opened and it was dropped).

import gc
import sys

import dongle
from dongle.flashlog import FlashLog


class Clock:
    def ms(self):
        return 0


gc.collect()
a = gc.mem_alloc()
import dongle.flashlog_boot  # noqa: E402 - measured: its cost when it stays

gc.collect()
cost = gc.mem_alloc() - a
dongle.unload("dongle.flashlog_boot")
gc.collect()
b = gc.mem_alloc()
log = FlashLog(sys.argv[1], bytes(32), 200000, 16384, Clock())
log.close()
del log
gc.collect()
print("modules", sum(1 for m in sys.modules if m == "dongle.flashlog_boot"))
print("attribute", int(hasattr(dongle, "flashlog_boot")))
print("cost", cost)
print("left", gc.mem_alloc() - b)
