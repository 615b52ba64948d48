"""Provision a board in one command: a new device id and secret, the firmware and its
config.json copied with mpremote, and the label text (with a QR code in the terminal)
that `obdsync pair` takes.

    obdsync provision /dev/ttyUSB0          # or: make provision PORT=/dev/ttyUSB0
    obdsync provision --target DIR          # the same files into a directory

The firmware is built as `make firmware` builds it (hil.build_firmware: boot.py, main.py,
.mpy modules). With a board whose image freezes the firmware (firmware/manifest.py) use
--config-only: only config.json is copied. A board that already has a config.json keeps
it unless --force: a new identity would lock out every daemon paired with the old one.
The secret goes to the board and to this terminal only: the staged copy lives in a
private temporary directory removed afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TypedDict

import click

from hil.build_firmware import build


class ProvisionError(click.ClickException):
    pass


def new_identity() -> tuple[str, str]:
    """(device id: 16 hex digits, secret: 64 hex digits), from the OS's CSPRNG."""
    return secrets.token_hex(8), secrets.token_hex(32)


class BoardConfig(TypedDict):
    """config.json on the board (firmware/main.py reads it)."""
    device_id: str  # 16 hex digits
    secret: str  # 64 hex digits
    uart: int
    tx: int
    rx: int


def board_config(device_id: str, secret: str, uart: int = 2, tx: int = 17, rx: int = 16) -> BoardConfig:
    """config.json as firmware/main.py reads it on the board."""
    return {"device_id": device_id, "secret": secret, "uart": uart, "tx": tx, "rx": rx}


def label_text(device_id: str, secret: str) -> str:
    return f"obdsync:{device_id}:{secret}"


def qr_text(text: str) -> str:
    """The QR code of `text` for a terminal (qrcode's half-block rendering)."""
    import io

    import qrcode

    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
    qr.add_data(text)
    qr.make(fit=True)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    return out.getvalue()


def mpremote() -> str:
    """The mpremote executable: $OBDSYNC_MPREMOTE, beside this Python, or on PATH."""
    chosen = os.environ.get("OBDSYNC_MPREMOTE")
    if chosen:
        return chosen
    here = Path(sys.executable).with_name("mpremote")
    if here.exists():
        return str(here)
    found = shutil.which("mpremote")
    if not found:
        raise ProvisionError("mpremote is not installed: pip install mpremote (or `make setup`)")
    return found


def stage(out: Path, cfg: BoardConfig, config_only: bool) -> Path:
    """What goes on the board's filesystem, in `out`."""
    if not config_only:
        build(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f)
    return out


def _has_config_on_board(port: str) -> bool:
    r = subprocess.run([mpremote(), "connect", port, "fs", "cat", ":config.json"], capture_output=True,
                       text=True, timeout=60)
    return r.returncode == 0 and r.stdout.strip().startswith("{")


def to_board(port: str, tree: Path) -> None:
    r = subprocess.run([mpremote(), "connect", port, "fs", "cp", "-r", f"{tree}/.", ":", "+", "reset"],
                       capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise ProvisionError(f"mpremote could not write the board at {port}:\n{r.stdout}{r.stderr}")


def to_directory(target: Path, tree: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tree, target, dirs_exist_ok=True)
    os.chmod(target / "config.json", 0o600)


@click.command("provision")
@click.argument("port", required=False)
@click.option("--target", type=click.Path(file_okay=False, path_type=Path),
              help="Write into this directory instead of a board (a board's filesystem stand-in).")
@click.option("--force", is_flag=True, help="Replace a config.json already there: a new identity, old pairings lost.")
@click.option("--config-only", is_flag=True, help="Only config.json: the board's image has the firmware frozen in.")
@click.option("--uart", default=2, show_default=True, help="The UART wired to the ELM327.")
@click.option("--tx", default=17, show_default=True, help="The dongle's TX pin (to the ELM327's RX).")
@click.option("--rx", default=16, show_default=True, help="The dongle's RX pin (from the ELM327's TX).")
def provision(port: str | None, target: Path | None, force: bool, config_only: bool, uart: int, tx: int,
              rx: int) -> None:
    """Give a board its identity and the firmware, and print the label for `obdsync pair`."""
    if target is not None and port is None:
        if (target / "config.json").exists() and not force:
            raise ProvisionError(f"{target} already has a config.json (its dongle is paired with it): --force "
                                 "to replace it")
        where = f"in {target}"
    elif port is not None and target is None:
        if _has_config_on_board(port) and not force:
            raise ProvisionError(f"the board at {port} already has a config.json (its dongle is paired with it): "
                                 "--force to replace it")
        where = f"on {port}"
    else:
        raise click.UsageError("give either a serial PORT or --target DIR")
    device_id, secret = new_identity()
    with tempfile.TemporaryDirectory(prefix="obdsync-provision-") as tmp:  # 0700
        tree = stage(Path(tmp) / "board", board_config(device_id, secret, uart, tx, rx), config_only)
        if target is not None:
            to_directory(target, tree)
        elif port is not None:
            to_board(port, tree)
    from protocol.auth import passkey

    label = label_text(device_id, secret)
    click.echo(f"dongle {device_id} provisioned {where}")
    click.echo(f"label:   {label}")
    click.echo(f"passkey: {passkey(bytes.fromhex(secret)):06d}  (BLE pairing; the dongle derives it from the secret)")
    click.echo(qr_text(label))
    click.echo("Put the label on the dongle, then: obdsync pair <address> --secret-file - (and paste the label).")


def main(argv: list[str] | None = None) -> int:
    return provision.main(args=argv, prog_name="python -m hil.provision", standalone_mode=True)


if __name__ == "__main__":
    raise SystemExit(main())
