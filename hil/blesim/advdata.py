"""Advertising data (Core Spec Supplement, part A) to bleak's AdvertisementData fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from .wire import uuid_str

_NAME_SHORT, _NAME_COMPLETE = 0x08, 0x09
_UUIDS = {0x02: 2, 0x03: 2, 0x04: 4, 0x05: 4, 0x06: 16, 0x07: 16}
_TX_POWER = 0x0A
_SERVICE_DATA = {0x16: 2, 0x20: 4, 0x21: 16}
_MANUFACTURER = 0xFF


@dataclass
class Advertisement:
    local_name: str | None = None
    service_uuids: list[str] = field(default_factory=list)
    service_data: dict[str, bytes] = field(default_factory=dict)
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    tx_power: int | None = None


def parse(*payloads: bytes) -> Advertisement:
    """Advertisement and scan response together; a malformed structure ends its payload
    (as scanners do) rather than failing the whole device."""
    ad = Advertisement()
    for data in payloads:
        i = 0
        while i < len(data):
            length = data[i]
            if length == 0 or i + 1 + length > len(data):
                break
            kind, value = data[i + 1], data[i + 2 : i + 1 + length]
            i += 1 + length
            if kind in (_NAME_SHORT, _NAME_COMPLETE):
                if kind == _NAME_COMPLETE or ad.local_name is None:
                    ad.local_name = value.decode("utf-8", "replace")
            elif kind in _UUIDS:
                size = _UUIDS[kind]
                for j in range(0, len(value) - size + 1, size):
                    u = uuid_str(value[j : j + size])
                    if u not in ad.service_uuids:
                        ad.service_uuids.append(u)
            elif kind in _SERVICE_DATA:
                size = _SERVICE_DATA[kind]
                if len(value) >= size:
                    ad.service_data[uuid_str(value[:size])] = bytes(value[size:])
            elif kind == _MANUFACTURER and len(value) >= 2:
                ad.manufacturer_data[int.from_bytes(value[:2], "little")] = bytes(value[2:])
            elif kind == _TX_POWER and len(value) == 1:
                ad.tx_power = int.from_bytes(value, "little", signed=True)
    return ad
