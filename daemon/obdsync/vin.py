"""The vehicle behind a dongle: its VIN, as the firmware read it (mode 09 PID 02, carried
in the ``info`` characteristic once known), decoded offline with ``vininfo`` (WMI →
manufacturer, country and region; model-year character; check digit).

The daemon stores the VIN per device when it first reads it (``Store.set_device_info``),
and again if it changes (the dongle moved to another car). What is known is also kept
here per device, for the renderings that have no store at hand (Home Assistant's
device block).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from obdsync.hooks import after_ready
from obdsync.i18n import N_

if TYPE_CHECKING:  # types only: obdsync.link imports bleak
    from obdsync.link import DeviceLink, LinkInfo
    from obdsync.store import Store

log = logging.getLogger("obdsync.vin")

# Where the 9th character must be a check digit: North America (49 CFR 565) and China
# (GB 16735); elsewhere (ISO 3779) it is often a filler such as Z.
CHECK_DIGIT_REGIONS = ("North America",)
CHECK_DIGIT_COUNTRIES = ("China",)
CHECK_DIGIT_WORDS = (N_("valid"), N_("invalid"), N_("not used"))  # Vehicle.check_digit, shown translated


class VinError(ValueError):
    """What the car sent is not a VIN."""


@dataclass(frozen=True)
class Vehicle:
    vin: str
    manufacturer: str | None
    country: str | None
    region: str | None
    model_year: int | None       # the latest year the code can mean that is not in the future
    model_years: tuple[int, ...]  # every year the 10th character can mean (a 30-year cycle)
    check_digit: str             # "valid", "invalid" or "not used"
    model: str | None            # where vininfo knows the make's VDS

    def json(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_years"] = list(self.model_years)
        return d

    @property
    def title(self) -> str:
        """``Volkswagen 2010`` — what a person calls the car."""
        parts = [self.manufacturer or "Vehicle", self.model or "", str(self.model_year or "")]
        return " ".join(p for p in parts if p)


def parse_vin(raw: bytes | str) -> str:
    """The VIN in a mode 09 PID 02 reply as the firmware keeps it (``decode.decode_vin``:
    fill bytes around the 17 characters dropped), or a stored one. Raises VinError."""
    from obdsync.decode import DecodeError, decode_vin

    data = raw.encode("ascii", "replace") if isinstance(raw, str) else bytes(raw)
    try:
        return decode_vin(data)
    except DecodeError as e:
        raise VinError(str(e)) from None


def decode(vin: str, today: dt.date | None = None) -> Vehicle:
    """Decode a VIN offline. Raises VinError for a malformed one."""
    from vininfo import Vin  # imported here: the daemon's hot path never needs it

    vin = parse_vin(vin)
    v = Vin(vin)
    year_now = (today or dt.date.today()).year
    years = tuple(sorted(int(y) for y in (v.years or ())))
    past = [y for y in years if y <= year_now + 1]  # a model year runs ahead of the calendar
    manufacturer = _known(v.manufacturer)
    country, region = _known(v.country), _known(v.region)
    if vin[8] in "0123456789X" and v.verify_checksum():
        check = "valid"
    elif region in CHECK_DIGIT_REGIONS or country in CHECK_DIGIT_COUNTRIES:
        check = "invalid"
    else:
        check = "not used"
    model = None
    try:
        details = v.details
        name = getattr(getattr(details, "model", None), "name", None)  # .code is the raw character
        model = _known(name)
    except Exception:  # noqa: BLE001 - vininfo's per-make tables are best effort
        model = None
    return Vehicle(vin, manufacturer, country, region, max(past) if past else None, years, check, model)


def vehicle_json(vin: str | None) -> dict[str, Any] | None:
    """A stored VIN decoded, as JSON (`status`, the health check); None if absent or not a VIN."""
    try:
        return decode(vin).json() if vin else None
    except VinError:
        return None


def _known(value: Any) -> str | None:
    s = None if value is None else str(value).strip()
    return None if not s or s.lower() in ("unknown", "unsupported", "none") else s


# ---- what is known per device -------------------------------------------------------------------

_known_vehicles: dict[str, Vehicle] = {}


def known(device: str) -> Vehicle | None:
    """The vehicle of ``device`` as this process last learnt it (None: not yet)."""
    return _known_vehicles.get(device)


def learn(device: str, vin: str | None) -> Vehicle | None:
    """Remember a stored or freshly read VIN for ``device``; None if it is not a VIN."""
    if not vin:
        return None
    try:
        v = decode(vin)
    except VinError as e:
        log.warning("dongle %s: %s", device, e)
        return None
    _known_vehicles[device] = v
    return v


async def load(store: Store) -> None:
    """Learn every stored VIN (at start, before anything is forwarded)."""
    for s in await store.status():
        learn(s.device, s.vin)


async def remember(store: Store, device: str, raw: bytes, address: str | None = None) -> Vehicle | None:
    """Store the VIN the dongle's info carries, if it carries one and it is new."""
    if not raw:
        return None
    try:
        vin = parse_vin(raw)
    except VinError as e:
        log.warning("dongle %s sent a VIN that is not one (%s): %s", device, raw.hex(), e)
        return None
    before = known(device)
    if before is not None and before.vin == vin:
        return before
    if before is not None:
        log.warning("dongle %s now reads VIN %s (was %s): moved to another car?", device, vin, before.vin)
    await store.set_device_info(device, vin=vin, address=address)
    v = learn(device, vin)
    if v is not None:
        log.info("dongle %s: VIN %s, %s", device, vin, v.title)
    return v


# When the info carries no VIN yet (the dongle connected before it could ask the ECU),
# ask the dongle for it after these pauses while the link stays up.
ASK_AFTER_S = (2.0, 5.0, 15.0, 60.0, 300.0)


def watch(link: DeviceLink, store: Store) -> None:
    """Store the VIN each time ``link`` is ready (after whatever else it does then)."""

    async def ready(info: LinkInfo) -> None:
        device = info.device_id.hex()
        try:
            got = await remember(store, device, bytes(info.vin or b""), address=link.address)
        except Exception as e:  # noqa: BLE001 - a full disk must not cost the session; next connect retries
            log.warning("dongle %s: could not store the VIN: %s", device, e)
            return
        if got is None and known(device) is None:
            _asking.add(asyncio.create_task(_ask(link, store, device), name=f"vin {device}"))

    after_ready(link, ready)


_asking: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps only weak references)


async def _ask(link: DeviceLink, store: Store, device: str) -> None:
    from obdsync.link import LinkError
    from protocol import control

    try:
        for pause in ASK_AFTER_S:
            await asyncio.sleep(pause)  # a retry schedule, not synchronisation: the ECU may be asleep
            if not link.connected:
                return
            try:
                raw = await link.command(control.READ_VIN)
            except LinkError as e:  # CommandError included: no answer from the ECU yet
                log.debug("dongle %s: no VIN yet: %s", device, e)
                continue
            if await remember(store, device, raw, address=link.address) is not None:
                return
    except Exception as e:  # noqa: BLE001 - best effort; the next connection tries again
        log.warning("dongle %s: reading the VIN failed: %s", device, e)
    finally:
        _asking.discard(asyncio.current_task())
