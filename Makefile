# obdsync — every target creates the environment it needs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PORT    ?=

.DELETE_ON_ERROR:  # a half-built interpreter is never taken for a built one
.PHONY: setup test demo bench bench-quick soak firmware flash provision lint clean mpy32

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --target $(VENV)/stubs micropython-esp32-stubs
	touch $(STAMP)

# A 32-bit MicroPython unix port (the ESP32's word size: 4-byte pointers, small ints
# below 2**30) built from the pinned source, with the firmware frozen in through
# firmware/manifest.py exactly as an ESP32 image freezes it. MPY_SRC is the tarball of
# ../shared/vendor or a MicroPython source directory (left untouched: objects go to
# build/mpy32). Only what changed is rebuilt: the first build takes 30-60 s, a firmware
# edit a few seconds. Needs gcc-multilib. Without the source the 32-bit test runs skip,
# saying why (in CI, CI=true, they fail instead).
MPY_SRC   ?= ../shared/vendor/micropython-1c3c2011.tar.gz
MPY32_DIR := build/mpy32
MPY32     := $(MPY32_DIR)/unix/micropython
MPY32_TOP  = $(if $(filter %.tar.gz,$(MPY_SRC)),$(MPY32_DIR)/src/micropython,$(MPY_SRC))
MPY32_MAKE = -C $(MPY32_TOP)/ports/unix BUILD=$(abspath $(MPY32_DIR)/unix) \
	CC="gcc -m32" LD="gcc -m32" LDFLAGS_EXTRA=-m32 \
	MICROPY_PY_BTREE=0 MICROPY_PY_SSL=0 MICROPY_SSL_MBEDTLS=0 MICROPY_PY_FFI=0 \
	MICROPY_MPYCROSS=$(abspath $(MPY32_DIR)/mpy-cross/mpy-cross) FROZEN_MANIFEST=$(abspath $(MPY32_DIR)/manifest.py)
FROZEN_SRC := firmware/manifest.py $(wildcard firmware/dongle/*.py protocol/*.py)

mpy32: $(MPY32)

$(MPY32_DIR)/src/micropython/.unpacked: $(filter %.tar.gz,$(MPY_SRC))
	rm -rf $(MPY32_DIR)/src && mkdir -p $(MPY32_DIR)/src
	tar xzf $(MPY_SRC) -C $(MPY32_DIR)/src
	touch $@

$(MPY32): $(if $(filter %.tar.gz,$(MPY_SRC)),$(MPY32_DIR)/src/micropython/.unpacked) $(FROZEN_SRC)
	@test -d $(MPY32_TOP)/ports/unix || (echo "no MicroPython source at $(MPY_SRC) (set MPY_SRC)" >&2; exit 2)
	mkdir -p $(MPY32_DIR)
	printf 'include("$$(MPY_DIR)/extmod/asyncio")\ninclude("%s", port_manifest=False)\n' \
		"$(abspath firmware/manifest.py)" > $(MPY32_DIR)/manifest.py
	$(MAKE) -s -j2 -C $(MPY32_TOP)/mpy-cross BUILD=$(abspath $(MPY32_DIR)/mpy-cross)
	$(MAKE) -s -j2 $(MPY32_MAKE)
	$(MPY32) -c "import sys, dongle.flashlog, protocol.record; assert sys.maxsize == 2**31 - 1"
	touch $@

# Most tests wait on real time (the emulator's pty, the simulated radio, the broker),
# not on the CPU: four workers on two cores finish in about half the time. The
# firmware and protocol tests run on the 64-bit PyPI MicroPython and on the 32-bit one.
# In CI the 32-bit build must succeed; elsewhere a machine without the source or without
# gcc-multilib runs the 64-bit tests and the 32-bit ones skip, saying why.
test: $(STAMP)
	@if [ -n "$(CI)" ]; then $(MAKE) --no-print-directory mpy32; \
	elif [ -e "$(MPY_SRC)" ]; then $(MAKE) --no-print-directory mpy32 || \
		echo "make test: the 32-bit MicroPython did not build (gcc-multilib installed?): its runs skip" >&2; fi
	$(BIN)/python -m pytest -p no:cacheprovider -n 4

demo: $(STAMP)
	$(BIN)/obdsync hil demo

bench: $(STAMP)
	$(BIN)/python -m hil.bench

bench-quick: $(STAMP)
	$(BIN)/python -m hil.bench --quick

soak: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -s -m soak

# The board's filesystem: boot.py and main.py stay source (MicroPython runs them
# by name), every module of the firmware package and protocol/ becomes .mpy.
firmware: $(STAMP)
	rm -rf build/board
	$(BIN)/python -m hil.build_firmware build/board

flash: firmware
	@test -n "$(PORT)" || (echo "usage: make flash PORT=/dev/ttyUSB0" >&2; exit 2)
	$(BIN)/mpremote connect $(PORT) fs cp -r build/board/. : + reset

# A board in one command: a new identity, the firmware and config.json with mpremote,
# the label text and its QR code for `obdsync pair` (hil/provision.py).
provision: $(STAMP)
	@test -n "$(PORT)" || (echo "usage: make provision PORT=/dev/ttyUSB0" >&2; exit 2)
	$(BIN)/obdsync provision $(PORT)

# Style, then types: the daemon and hil strictly ([tool.mypy] in pyproject.toml, the CPython
# view); the firmware and protocol/ as the board sees them, against micropython-esp32-stubs
# and the corrections in typings/ (firmware/mypy.ini); the unix port's shims and benchmark
# scripts the same way (hil/mpy/mypy.ini, a run of its own: its `bluetooth` is the shim).
# All three type runs report, then the target fails if any did.
lint: $(STAMP)
	$(BIN)/ruff check .
	@status=0; \
	echo "mypy: daemon/obdsync, hil (CPython)"; $(BIN)/mypy || status=1; \
	echo "mypy: firmware/, protocol/ (the board: firmware/mypy.ini)"; \
	$(BIN)/mypy --config-file firmware/mypy.ini || status=1; \
	echo "mypy: hil/mpy/, hil/bench/mpy/ (the unix port: hil/mpy/mypy.ini)"; \
	$(BIN)/mypy --config-file hil/mpy/mypy.ini || status=1; \
	exit $$status

clean:
	rm -rf build .pytest_cache  # build/mpy32 too: the next test run rebuilds it
