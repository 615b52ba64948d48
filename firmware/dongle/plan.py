"""The poll plan: per channel, how often to poll it in each power state (OVMS's table shape).

Intervals are in 100 ms units, 0 = off. Channels are mode 01 PIDs and CH_VOLTAGE (ATRV).
"""

from array import array

from protocol import MICROPYTHON
from protocol.channels import CH_VOLTAGE, DATA_LEN

if MICROPYTHON:
    from micropython import const
else:  # CPython: the daemon's direct mode
    from obdsync.direct.mpcompat import const

# Annotations are for the type checks: MicroPython compiles them away and has no `typing`;
# CPython (the daemon's direct mode) evaluates them, so names from the block below are quoted.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from collections.abc import Callable, Iterable

DRIVING = const(0)
IDLE = const(1)
PARKED = const(2)
SLEEPING = const(3)  # nothing is polled
STATES = const(3)  # states with a column in the table

MAX_INTERVAL = const(36000)  # 1 hour: a slower poll is a plan error, not a wish
MIN_INTERVAL = const(1)  # 100 ms
MAX_CHANNELS = const(32)
KEEP = const(0xFFFF)  # SET_PLAN: leave this state's interval unchanged

# channel, driving, idle, parked (100 ms units)
DEFAULT = (
    (0x0D, 2, 10, 0),  # speed: 5 Hz driving
    (0x0C, 2, 10, 0),  # RPM
    (0x04, 2, 10, 0),  # engine load
    (0x11, 2, 10, 0),  # throttle
    (0x05, 10, 10, 0),  # coolant temperature: 1 Hz
    (0x0F, 10, 10, 0),  # intake air temperature
    (0x10, 10, 10, 0),  # MAF (fuel estimate where 0x5E is missing)
    (0x5E, 10, 10, 0),  # engine fuel rate
    (0x2F, 100, 100, 0),  # fuel level: 0.1 Hz
    (0x31, 100, 100, 0),  # distance since codes cleared
    (0xA6, 100, 100, 0),  # odometer, where supported
    (0x01, 100, 100, 0),  # MIL and DTC count
    (0x42, 100, 100, 0),  # control module voltage
    # The health check's (obdsync check), slow: they change over minutes, not seconds.
    (0x06, 300, 300, 0),  # short-term fuel trim, bank 1
    (0x07, 300, 300, 0),  # long-term fuel trim, bank 1: ±10 % is a lean/rich engine
    (0x08, 300, 300, 0),  # bank 2 (V engines; skipped where unsupported)
    (0x09, 300, 300, 0),
    (0x21, 600, 600, 0),  # distance with the MIL on
    (0x4E, 600, 600, 0),  # time since codes cleared
    (0x41, 600, 600, 0),  # readiness monitors, this drive cycle
    (CH_VOLTAGE, 50, 50, 100),  # ATRV (no bus traffic): parked, the only poll — every 10 s it watches
    # for the alternator (an engine start), so the car's modules can sleep
)


def is_bitmap(ch: int) -> bool:
    """PIDs 0x00, 0x20 … 0xE0 are the supported-PID bitmaps: discovery, not data."""
    return ch != CH_VOLTAGE and ch & 0x1F == 0


class Plan:
    def __init__(self, rows: "Iterable[tuple[int, int, int, int]]" = DEFAULT) -> None:
        self.iv = array("H", bytes(2 * 256 * STATES))  # [state * 256 + channel]
        self.chans = bytearray(MAX_CHANNELS)  # channels with any interval set, in plan order
        self.n = 0
        self.version = 0  # bumped on every change: the scheduler re-times on a new plan
        for ch, d, i, p in rows:
            self.set(ch, d, i, p)

    def interval(self, ch: int, state: int) -> int:
        """Interval in 100 ms units (0 = off) of ch in state."""
        if state >= STATES:
            return 0
        return self.iv[state * 256 + ch]

    def set(self, ch: int, driving: int, idle: int, parked: int) -> bool:
        """Set one row (intervals bounded). False when the table is full or ch is not pollable."""
        if not 0 <= ch <= 0xFF or is_bitmap(ch):
            return False
        k = -1
        for j in range(self.n):
            if self.chans[j] == ch:
                k = j
                break
        if k < 0 and ((driving and driving != KEEP) or (idle and idle != KEEP) or (parked and parked != KEEP)):
            if self.n >= MAX_CHANNELS:
                return False
            self.chans[self.n] = ch
            self.n += 1
        self.version += 1
        # KEEP in a state's column leaves that state's interval as it was (the daemon
        # overrides one state without knowing the firmware's defaults).
        if driving == KEEP:
            driving = self.iv[ch]
        if idle == KEEP:
            idle = self.iv[256 + ch]
        if parked == KEEP:
            parked = self.iv[512 + ch]
        v = (driving, idle, parked)
        for s in range(STATES):
            x = v[s]
            if x:
                x = MIN_INTERVAL if x < MIN_INTERVAL else (MAX_INTERVAL if x > MAX_INTERVAL else x)
            self.iv[s * 256 + ch] = x
        if k >= 0 and not (driving or idle or parked):
            for j in range(k, self.n - 1):
                self.chans[j] = self.chans[j + 1]
            self.n -= 1
        return True

    def apply(self, payload: bytes | bytearray | memoryview,
              supported: "Callable[[int], int] | None" = None) -> int:
        """SET_PLAN: `n u8`, n x (`channel u8, driving u16, idle u16, parked u16`), big-endian.

        Rows update the plan; channels not named keep their rows (0, 0, 0 turns one off).
        A malformed payload raises ValueError and changes nothing. Rows for bitmap PIDs, for
        PIDs the ECU does not support (when `supported`, a callable pid -> bool, is given) or
        past a full table are skipped. Returns how many rows were applied."""
        if len(payload) < 1 or len(payload) != 1 + 7 * payload[0]:
            raise ValueError("SET_PLAN: want 1 + 7*n bytes")
        applied = 0
        for r in range(payload[0]):
            o = 1 + 7 * r
            ch = payload[o]
            if ch != CH_VOLTAGE and supported is not None and not supported(ch):
                continue
            d = (payload[o + 1] << 8) | payload[o + 2]
            i = (payload[o + 3] << 8) | payload[o + 4]
            p = (payload[o + 5] << 8) | payload[o + 6]
            if self.set(ch, d, i, p):
                applied += 1
        return applied

    def apply_entries(self, entries: "Iterable[tuple[int, int, int, int]]",
                      supported: "Callable[[int], int] | None" = None) -> int:
        """The same, for rows already parsed (protocol.control.parse_plan's (ch, d, i, p))."""
        applied = 0
        for ch, d, i, p in entries:
            if ch != CH_VOLTAGE and supported is not None and not supported(ch):
                continue
            if self.set(ch, d, i, p):
                applied += 1
        return applied

    def batchable(self, ch: int) -> bool:
        """Whether ch can share a multi-PID request (its reply length is known)."""
        return ch != CH_VOLTAGE and DATA_LEN[ch] != 0
