"""Mode 04 only at a standstill, judged by asking the car right then.

Clearing codes resets the emissions monitors and, on some cars, adaptations the engine
runs on: never while the car moves. The rule cannot rest on what the poll plan last read:
an authenticated SET_PLAN may switch speed off (the last reading, 0 from a standstill,
then stays) or every mode 01 PID (the silent bus then looks like an engine off). So right
before mode 04 the dongle sends its own speed request (RPM rides along where the bus takes
several PIDs in one request) and clears only when the answer to *that* request says 0 km/h.
No answer, NO DATA, an answer without speed, a timeout, anything it cannot parse: moving.
"""

from micropython import const

from protocol.channels import PID_RPM, PID_SPEED

from . import elm327

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away
# and has no `typing`, so the names they use exist for the checker only.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from collections.abc import Callable

_ASK = bytes((PID_SPEED, PID_RPM))  # speed first: it decides; RPM is for the record
_TRIES = const(3)  # a clone without multi-PID requests, then one without the count digit


def speed_in_answer(elm: elm327.ELM327) -> int:
    """The speed (km/h) in the driver's last mode 01 answer, or -1 when it holds none."""
    for i in range(elm.res_n):
        if elm.res_ch[i] == PID_SPEED and elm.res_len[i] == 1:
            return elm.msg[elm.res_off[i]]
    return -1


async def speed_now(elm: elm327.ELM327, multi: bool = True) -> int:
    """Ask the car for its speed now (with RPM when `multi` and the bus is CAN). Returns km/h,
    or -1 when the car did not say. The answer stays in elm.res_* for the caller to log.
    Runs where the chip is free (the scheduler's job queue)."""
    n = 2 if multi and elm.is_can else 1
    for _ in range(_TRIES):
        digit = elm.digit
        st = await elm.query_pids(_ASK, n)
        if st == elm327.OK:
            return speed_in_answer(elm)
        if st == elm327.UNKNOWN and n > 1:
            n = 1  # `?` to two PIDs: ask for speed alone
        elif st == elm327.UNKNOWN and digit and not elm.digit:
            pass  # the driver turned the count digit off: the same request once more
        else:
            if st == elm327.TIMEOUT and await elm.recover() != elm327.OK:
                elm.ready = False  # as the scheduler does: it re-initialises the chip
            return -1
    return -1


async def clear_if_still(elm: elm327.ELM327, seen: Callable[[], object] | None = None, multi: bool = True) -> int | None:
    """Mode 04 if the car says it stands still now. Returns the driver's status of the clear,
    or None when refused (moving, or its speed unknown). `seen()`, if given, is called with the
    fresh answer in elm.res_* before the decision (the dongle logs it)."""
    speed = await speed_now(elm, multi)
    if seen is not None and elm.res_n:
        seen()
    if speed != 0:
        return None
    return await elm.clear_dtcs()
