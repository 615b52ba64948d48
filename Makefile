# obdsync — every target creates the environment it needs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PORT    ?=

.PHONY: setup test demo bench bench-quick soak firmware flash lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --target $(VENV)/stubs micropython-esp32-stubs
	touch $(STAMP)

# Most tests wait on real time (the emulator's pty, the simulated radio, the broker),
# not on the CPU: four workers on two cores finish in about half the time.
test: $(STAMP)
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

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf build .pytest_cache
