"""What a command asks of a dongle, by name: the same code runs on the running daemon's
link (a request through the control door, `obdsync.door`) and on the CLI's own short
connection when no daemon runs — so both paths give the same answers and the same errors.

An operation is ``async def fn(link, **args)`` returning JSON-able data; register it with
``@op("name")`` and it is reachable both ways (`obdsync.cli.dongle_request`). A later
command (the health check) adds its own the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from protocol import control, control_central
from protocol.errors import ProtocolError

if TYPE_CHECKING:  # types only: obdsync.link imports bleak, decode python-OBD
    from obdsync.decode import FreezeFrame
    from obdsync.link import DeviceLink

Op = Callable[..., Awaitable[Any]]
OPS: dict[str, Op] = {}

DTC_MODES = (0x03, 0x07, 0x0A)  # stored, pending, permanent


def op(name: str) -> Callable[[Op], Op]:
    def register(fn: Op) -> Op:
        if name in OPS:
            raise ValueError(f"dongle operation {name!r} registered twice")
        OPS[name] = fn
        return fn

    return register


@op("dtc.read")
async def read_dtcs(link: DeviceLink) -> list[list[Any]]:
    """[[mode, [code, ...], [ecu, ...]], ...] for stored, pending and permanent codes; beside
    each code the name of the ECU that holds it ("" where the adapter printed no header)."""
    from obdsync.decode import dtcs_with_ecus

    out = []
    for mode in DTC_MODES:
        m, codes, ecus = control_central.parse_dtcs(await link.command(control.READ_DTC, bytes((mode,))), True)
        out.append([m, *dtcs_with_ecus(codes, ecus)])
    return out


@op("dtc.clear")
async def clear_dtcs(link: DeviceLink) -> None:
    await link.command(control.CLEAR_DTC)


@op("status")
async def dongle_status(link: DeviceLink) -> dict[str, Any]:
    """The dongle's STATUS (supply, log fill, power state, poll rates...)."""
    st: dict[str, Any] = control_central.parse_status(await link.command(control.STATUS))
    st["rates"] = {str(ch): hz for ch, hz in st["rates"].items()}  # JSON keys are strings either way
    return st


@op("plan.set")
async def set_plan(link: DeviceLink, rows: list[list[int]]) -> int:
    """Send SET_PLAN rows (channel, driving, idle, parked in 100 ms units). A dongle's link keeps
    them, so a daemon's next connection sends them again instead of its start-up plan (a direct
    adapter's refuses SET_PLAN by name)."""
    from obdsync.link import DongleLink

    plan = [(int(ch), int(d), int(i), int(p)) for ch, d, i, p in rows]
    await link.command(control.SET_PLAN, control_central.pack_plan(plan))
    if isinstance(link, DongleLink):
        link.plan = plan
    return len(plan)


@op("vin.read")
async def read_vin(link: DeviceLink) -> str:
    """The VIN as the car reports it now (mode 09 PID 02 through the dongle)."""
    from obdsync.vin import parse_vin

    return parse_vin(await link.command(control.READ_VIN))


@op("freeze.read")
async def read_freeze(link: DeviceLink) -> dict[str, FreezeFrame]:
    """The freeze frame (mode 02 frame 0) by the code that stored it: {code: {"ecu": name,
    "values": {name: [value, unit]}}}, {} when no code holds one."""
    from obdsync.decode import decode_freeze

    return decode_freeze(control_central.parse_freeze(await link.command(control.READ_FREEZE)))


@op("check.live")
async def check_live(link: DeviceLink) -> dict[str, Any]:
    """What `obdsync check --live` needs of the dongle: its codes now, their freeze frame, the
    protocol the adapter found, and the PIDs the car supports (from the dongle's info). A
    freeze frame that cannot be read is {"error": why}: the codes stand without it."""
    from obdsync.decode import DecodeError
    from obdsync.link import CommandError

    st = control_central.parse_status(await link.command(control.STATUS))
    dtcs = await read_dtcs(link)
    try:
        freeze: dict[str, Any] = await read_freeze(link) if any(codes for _m, codes, _e in dtcs) else {}
    except (CommandError, DecodeError, ProtocolError) as e:
        freeze = {"error": str(e)}
    return {"dtcs": dtcs, "freeze": freeze, "elm_protocol": st.get("elm_protocol"),
            "supported": link.info.supported.hex() if link.info is not None else None}
