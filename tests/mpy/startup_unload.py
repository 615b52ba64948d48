# main.py boots the dongle through dongle.startup and unloads it (dongle.unload) before the
# dongle runs: on a board running .mpy a loaded module keeps its bytecode in the GC heap.
#
#   micropython startup_unload.py MAIN_PY
# Runs MAIN_PY (the board tree's main.py) with asyncio.run replaced by a look at what is
# loaded at the moment the dongle would start running, then a Ctrl-C (main.py's clean stop).
# Prints one JSON line: {"modules": [boot-only modules still loaded], "attribute": bool
# (dongle.startup still the package's), "cost": what importing dongle.startup again takes}.

import asyncio
import gc
import json
import sys


def look(coro):
    import dongle

    coro.close()
    import protocol

    # the boot's own code, and what only the boot uses: the info encoding (loaded again for a
    # moment when the adapter comes up and after the VIN) and the service's UUIDs
    loaded = [m for m in ("dongle.startup", "dongle.wake", "protocol.info", "protocol.uuids") if m in sys.modules]
    attribute = hasattr(dongle, "startup") or hasattr(protocol, "info") or hasattr(protocol, "uuids")
    gc.collect()
    a = gc.mem_alloc()
    import dongle.startup  # noqa: F401 - measured: what it would hold if it stayed

    gc.collect()
    print(json.dumps({"modules": loaded, "attribute": attribute, "cost": gc.mem_alloc() - a}))
    raise KeyboardInterrupt


asyncio.run = look
with open(sys.argv[1]) as f:
    src = f.read()
exec(src, {"__name__": "__main__"})
