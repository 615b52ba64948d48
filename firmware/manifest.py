# The firmware frozen into a MicroPython image: the `dongle` package and `protocol/`
# (bytecode in flash, off the GC heap). boot.py, main.py and config.json stay on the
# board's filesystem, so a board with this image still boots them by name.
#
# ESP32 (ESP-IDF v5.2+ exported, in a micropython checkout of the same version as the
# rig's, ../shared/vendor/README.md):
#     make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/obdsync/firmware/manifest.py
#     make -C ports/esp32 BOARD=ESP32_GENERIC deploy PORT=/dev/ttyUSB0
# That keeps the port's own frozen modules ($(PORT_DIR)/boards/manifest.py: _boot,
# asyncio, ...). The 32-bit unix rig (`make mpy32`) includes this file with
# port_manifest=False beside extmod/asyncio: the unix port's manifest wants
# micropython-lib, which the vendored tree does not carry.
options.defaults(port_manifest=True)
if options.port_manifest:
    include("$(PORT_DIR)/boards/manifest.py")
package("dongle", base_path=".")  # paths are relative to this file
package("protocol", base_path="..")
