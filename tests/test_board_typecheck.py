"""The board's type check (firmware/mypy.ini: micropython-esp32-stubs with the corrections in
typings/) takes the ESP32's API as MicroPython implements it and refuses what the board would:
a call that is right passes, each mistake below is reported on its line. Guards the overlay
(typings/bluetooth.pyi, time.pyi): without it the right calls fail (the stubs drop
gatts_notify's conn_handle, type handles as memoryview and ticks as classes)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RIGHT = """
    import time

    import bluetooth
    import machine

    ble = bluetooth.BLE()
    ble.active(True)
    ((h,),) = ble.gatts_register_services(((bluetooth.UUID(0x180F), ((bluetooth.UUID(0x2A19), bluetooth.FLAG_NOTIFY),)),))
    ble.gatts_notify(1, h, b"x")
    ble.gatts_indicate(1, h)
    n: int = ble.gatts_write(h, b"abc")
    adv = bytes(bluetooth.UUID("0bd50001-5d5c-4f1e-9b8a-6f6264737963"))
    machine.UART(2, baudrate=38400, tx=17, rx=16, timeout=0, rxbuf=1024)
    machine.WDT(timeout=30000).feed()
    t0: int = time.ticks_ms()  # ticks kept in ints, arrays, attributes: small ints on the board
    deadline = time.ticks_add(t0, 100)
    print(time.ticks_diff(deadline, time.ticks_ms()) > 0, n, adv)
"""

# line (in the file below) -> what is wrong there
WRONG = {
    6: "gatts_notify without its conn_handle",
    7: "a misspelt flag",
    8: "a keyword machine.UART does not take",
    9: "deepsleep's milliseconds as a str",
    10: "None where ticks_diff needs a tick",
}
WRONG_SOURCE = """
    import time

    import bluetooth
    import machine

    bluetooth.BLE().gatts_notify(7, b"x")
    print(bluetooth.FLAG_NOTFY)
    machine.UART(2, baud=38400)
    machine.deepsleep("1000")
    time.ticks_diff(time.ticks_ms(), None)
"""


def board_check(tmp_path: Path, **sources: str) -> dict[str, set[int]]:
    """Lines with an error, per file, as `make lint`'s board run sees them."""
    files = []
    for name, src in sources.items():
        f = tmp_path / f"{name}.py"
        f.write_text(textwrap.dedent(src).lstrip("\n"))
        files.append(str(f))
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "firmware" / "mypy.ini"),
                        "--cache-dir", str(tmp_path / "cache"), *files],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode in (0, 1), r.stdout + r.stderr  # 2: the check itself broke
    out: dict[str, set[int]] = {name: set() for name in sources}
    for m in re.finditer(r"^.*/(\w+)\.py:(\d+): error:", r.stdout, re.M):
        out[m.group(1)].add(int(m.group(2)))
    return out


def test_the_board_api_used_right_passes_and_each_mistake_is_reported(tmp_path):
    errors = board_check(tmp_path, right=RIGHT, wrong=WRONG_SOURCE)
    assert errors["right"] == set()
    assert errors["wrong"] == set(WRONG), {line: WRONG.get(line, "?") for line in errors["wrong"] ^ set(WRONG)}
