"""Trouble codes and the MIL.

The dongle reads stored (03), pending (07) and permanent (0A) codes when the MIL or the
DTC count changes and at trip start; each read replaces what is known for its mode. A
code is *present* while the latest stored or pending read holds it: it opens one
``dtc_new`` (however many modes list it) and, when it has gone from both, that event
clears and a ``dtc_cleared`` instant says so. Permanent codes survive a clear by
design (the ECU drops them itself after the repair is verified), so they are reported
in the values but neither open nor hold an event.
"""

from __future__ import annotations

import re

from ..decode import DecodeError, describe_dtc
from .context import DTC_COUNT, MIL, Context, Rule
from .events import INFO, WARNING, Event

STORED, PENDING, PERMANENT = 0x03, 0x07, 0x0A
_CODE = re.compile(r"[PCBU][0-3][0-9A-F]{3}")


def describe(code: str) -> str:
    try:
        return describe_dtc(code)
    except DecodeError:
        return "unknown code"


#: The MIL came on: `mil_on` waits this long for the dongle's DTC read (it reads the codes when
#: the MIL or the count changes), so it goes out naming the codes, not with `codes: []`.
MIL_CODES_WAIT_MS = 60_000


class DtcRule(Rule):
    CHANNELS = (MIL, DTC_COUNT)
    STATE = ("modes", "active", "mil", "count", "mil_at")

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.modes: dict[str, list[str]] = {}   # str(mode) -> codes of its latest read
        self.active: dict[str, Event] = {}      # code -> its open dtc_new
        self.mil: Event | None = None
        self.count: float | None = None
        self.mil_at: int | None = None          # MIL on since, mil_on not out yet (waiting for codes)

    def sample(self, t: int, channel: int, value: float) -> None:
        if channel == DTC_COUNT:
            self.count = value
            return
        if value >= 0.5 and self.mil is None and self.mil_at is None:
            if self.active:
                self._open_mil(t)
            else:
                self.mil_at = t
        elif value < 0.5:
            self.mil_at = None
            if self.mil is not None:
                self.ctx.clear(self.mil, t)
                self.mil = None

    def tick(self, t: int) -> None:
        if self.mil_at is not None and t - self.mil_at >= MIL_CODES_WAIT_MS:
            self._open_mil(self.mil_at)  # no codes came: say so rather than stay silent

    def _open_mil(self, t: int) -> None:
        self.mil_at = None
        n = int(self.count) if self.count is not None else None
        codes = sorted(self.active)
        self.mil = self.ctx.open(
            "mil_on", "", WARNING, t, {"dtc_count": n, "codes": codes},
            "Check-engine light on" + (f": {', '.join(codes)}" if codes else "")
            + " — have the car checked")

    def read(self, t: int, mode: int, codes: list[str], ecus: list[str] | None = None) -> None:
        """One read of a mode's codes; ecus (beside each code its ECU's name, "" unknown) go
        into the event of a code that opens here: two ECUs may hold codes at once."""
        if mode not in (STORED, PENDING, PERMANENT):
            raise ValueError(f"DTC mode must be 0x03, 0x07 or 0x0A, got {mode!r}")
        where: dict[str, list[str]] = {}
        for code, ecu in zip(codes, ecus or [""] * len(codes), strict=True):
            c = code.strip().upper()
            if ecu and ecu not in where.setdefault(c, []):
                where[c].append(ecu)
        clean = sorted({c.strip().upper() for c in codes if _CODE.fullmatch(c.strip().upper())} - {"P0000"})
        self.modes[str(mode)] = clean
        stored = set(self.modes.get(str(STORED), ()))
        present = stored | set(self.modes.get(str(PENDING), ()))
        permanent = set(self.modes.get(str(PERMANENT), ()))
        for code in sorted(present):
            status = "stored" if code in stored else "pending"
            ev = self.active.get(code)
            if ev is None:
                desc = describe(code)
                ecu = ", ".join(where.get(code, ()))
                self.active[code] = self.ctx.open(
                    "dtc_new", code, WARNING if status == "stored" else INFO, t,
                    {"code": code, "description": desc, "status": status, "permanent": code in permanent,
                     **({"ecu": ecu} if ecu else {})},
                    f"Trouble code {code}" + (f" in the {ecu}" if ecu else "") + f": {desc}"
                    + (" (pending)" if status == "pending" else ""))
            elif ev.values.get("status") == "pending" and status == "stored":
                self.active[code] = self.ctx.update(ev, WARNING, {**ev.values, "status": "stored"},
                                                    ev.message.replace(" (pending)", ""))
        if self.mil_at is not None and self.active:
            self._open_mil(self.mil_at)  # after the dtc_new it names
        for code in sorted(set(self.active) - present):
            ev = self.active.pop(code)
            self.ctx.clear(ev, t)
            self.ctx.instant("dtc_cleared", code, INFO, t,
                             {"code": code, "description": ev.values.get("description", ""),
                              "permanent": code in permanent},
                             f"Trouble code {code} cleared"
                             + (" (still listed as permanent until the ECU verifies the repair)"
                                if code in permanent else ""))
