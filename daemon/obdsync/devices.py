"""Paired dongles: which addresses `obdsync run` connects to, with their secrets.

The registry (`paired.json` beside the config) holds no secret: each dongle's
secret lives in its own 0600 file (config.save_secret). Label text is what the
dongle's label or QR code says: `obdsync:<device id>:<secret>` in hex, or just
the secret's 64 hex digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from obdsync import jsontable, paths
from obdsync.config import Secret, load_secret, save_secret


class PairingError(ValueError):
    pass


@dataclass(frozen=True)
class Paired:
    device: str
    address: str
    name: str = ""


def parse_label(text: str) -> tuple[str | None, bytes]:
    """(device id or None, secret) from a label's text."""
    t = text.strip()
    device = None
    if t.lower().startswith("obdsync:"):
        parts = t.split(":")
        if len(parts) != 3:
            raise PairingError("label text must be obdsync:<device id>:<secret>")
        try:
            device = paths.normalize_device_id(parts[1])
        except ValueError as e:
            raise PairingError(str(e)) from None
        t = parts[2]
    try:
        secret = bytes.fromhex(t)
    except ValueError:
        raise PairingError("the secret must be hex digits (as printed on the label)") from None
    if len(secret) != 32:
        raise PairingError(f"the secret is 32 bytes (64 hex digits), got {len(secret)} bytes")
    return device, secret


def registry_path(base: Path | None = None) -> Path:
    return (base if base is not None else paths.config_dir()) / "paired.json"


def load(base: Path | None = None) -> list[Paired]:
    p = registry_path(base)
    try:
        entries = jsontable.load(p, "dongles")
        return [Paired(paths.normalize_device_id(device), entry["address"], entry.get("name", ""))
                for device, entry in sorted(entries.items())]
    except (jsontable.TableError, ValueError) as e:  # ValueError: a key that is no device id
        raise PairingError(f"{e}; pair the dongles again") from None
    except KeyError as e:
        raise PairingError(f"{p}: dongle entry without {e}; pair the dongles again") from None


def add(device: str, address: str, secret: bytes, name: str = "", base: Path | None = None) -> Paired:
    device = paths.normalize_device_id(device)
    save_secret(device, secret, base)
    entries = {p.device: p for p in load(base)}
    entries[device] = Paired(device, address, name)
    _write(entries, base)
    return entries[device]


def remove(device: str, base: Path | None = None) -> Paired | None:
    """Forget a paired dongle: its registry entry and its secret file. Returns the
    entry, or None if it was not paired. Its data stays in the database."""
    device = paths.normalize_device_id(device)
    entries = {p.device: p for p in load(base)}
    gone = entries.pop(device, None)
    if gone is not None:
        _write(entries, base)
    paths.secret_path(device, base).unlink(missing_ok=True)
    return gone


def _write(entries: dict[str, Paired], base: Path | None) -> None:
    jsontable.save(registry_path(base), "dongles",
                   {d: {"address": e.address, "name": e.name} for d, e in entries.items()})


def secret_of(device: str, base: Path | None = None) -> Secret[bytes]:
    return load_secret(device, base)
