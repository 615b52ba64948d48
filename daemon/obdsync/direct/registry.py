"""Added adapters: which ELM327 adapters `obdsync run` logs from (`adapters.json` beside the config).

An adapter has no secret (ELM327 adapters authenticate nobody), so the registry is all there is:
the address as the user gave it (`AA:BB:…` BLE, `/dev/ttyUSB0`, `HOST:PORT`, `rfcomm:AA:BB:…`),
its kind, and a name. Its devices (one per car it was plugged into) are found by the logger.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from obdsync import jsontable, paths
from obdsync.direct.transports import classify

# Names ELM327 BLE adapters advertise (for `scan`, where the serial service is not advertised).
ADAPTER_NAMES = ("OBD", "ELM", "VLINK", "VLINKER", "IOS-VLINK", "VEEPEAK", "LELINK", "WICAN", "KONNWEI",
                 "VGATE", "CARISTA", "BAFX", "KIWI")


@dataclass(frozen=True)
class Adapter:
    address: str
    kind: str
    name: str = ""


def registry_path(base: Path | None = None) -> Path:
    return (base if base is not None else paths.config_dir()) / "adapters.json"


def load(base: Path | None = None) -> list[Adapter]:
    try:
        entries = jsontable.load(registry_path(base), "adapters")
    except jsontable.TableError as e:
        raise jsontable.TableError(f"{e}; add the adapters again") from None
    return [Adapter(a, e.get("kind", ""), e.get("name", "")) for a, e in sorted(entries.items())]


def add(spec: str, name: str = "", base: Path | None = None) -> Adapter:
    kind, address = classify(spec)  # TransportError (a ValueError's cousin) for nonsense
    key = f"rfcomm:{address}" if kind == "rfcomm" else address  # open_transport(key) finds the kind again
    entries = {a.address: a for a in load(base)}
    entries[key] = Adapter(key, kind, name)
    _write(entries, base)
    return entries[key]


def remove(address: str, base: Path | None = None) -> Adapter | None:
    entries = {a.address: a for a in load(base)}
    gone = entries.pop(address.strip(), None) or entries.pop(address.strip().upper(), None)
    if gone is not None:
        _write(entries, base)
    return gone


def _write(entries: dict[str, Adapter], base: Path | None) -> None:
    jsontable.save(registry_path(base), "adapters",
                   {a.address: {"kind": a.kind, "name": a.name} for a in entries.values()})


def looks_like_adapter(name: str | None, service_uuids: list[str]) -> bool:
    from obdsync.direct.ble import SERIAL_SERVICES

    if any(u.lower() in SERIAL_SERVICES for u in service_uuids):
        return True
    n = (name or "").upper()
    return any(n.startswith(p) or p in n for p in ADAPTER_NAMES)
