"""`obdsync provision`: a new identity, the firmware and config.json on the board (mpremote,
faked here at the process boundary, or a directory), and the label `obdsync pair` takes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hil.provision import provision
from obdsync import devices
from protocol.auth import passkey

FAKE_MPREMOTE = """#!{python}
# mpremote at the process boundary: `connect PORT fs cat :config.json` and
# `connect PORT fs cp -r SRC/. : + reset` against the directory BOARD; every call logged.
import json, shutil, sys
from pathlib import Path
board, log = Path({board!r}), Path({log!r})
args = sys.argv[1:]
with log.open("a") as f:
    f.write(json.dumps(args) + "\\n")
if args[2:] == ["fs", "cat", ":config.json"]:
    cfg = board / "config.json"
    if not cfg.exists():
        sys.exit("mpremote: cat: config.json: No such file or directory")
    print(cfg.read_text())
elif args[2:5] == ["fs", "cp", "-r"] and args[6:] == [":", "+", "reset"]:
    shutil.copytree(args[5].rstrip("."), board, dirs_exist_ok=True)
else:
    sys.exit("unexpected mpremote call")
"""


@pytest.fixture
def fake_board(tmp_path, monkeypatch):
    board, log = tmp_path / "board", tmp_path / "calls.jsonl"
    board.mkdir()
    exe = tmp_path / "mpremote"
    exe.write_text(FAKE_MPREMOTE.format(python=sys.executable, board=str(board), log=str(log)))
    exe.chmod(0o755)
    monkeypatch.setenv("OBDSYNC_MPREMOTE", str(exe))
    return board, log


def printed_label(output: str) -> str:
    return next(x.split(None, 1)[1] for x in output.splitlines() if x.startswith("label:"))


def test_a_directory_target_gets_the_firmware_and_a_config_the_label_matches(tmp_path):
    target = tmp_path / "flash"
    r = CliRunner().invoke(provision, ["--target", str(target)])
    assert r.exit_code == 0, r.output
    cfg = json.loads((target / "config.json").read_text())
    assert (target / "config.json").stat().st_mode & 0o777 == 0o600
    assert {"device_id", "secret", "uart", "tx", "rx"} == set(cfg)
    assert len(cfg["device_id"]) == 16 and len(cfg["secret"]) == 64
    assert (target / "main.py").exists() and (target / "dongle" / "app.mpy").exists()
    assert (target / "protocol" / "record.mpy").exists()
    device, secret = devices.parse_label(printed_label(r.output))  # what `obdsync pair` takes
    assert device == cfg["device_id"] and secret.hex() == cfg["secret"]
    assert f"passkey: {passkey(secret):06d}" in r.output
    qr = [x for x in r.output.splitlines() if "█" in x]
    assert len(qr) >= 15 and len({len(x) for x in qr}) == 1  # a square block of the terminal


def test_two_boards_never_share_an_identity_and_a_provisioned_one_is_kept_unless_forced(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    only = ["--config-only"]  # the identity is the point here, not the firmware
    assert CliRunner().invoke(provision, ["--target", str(a), *only]).exit_code == 0
    assert CliRunner().invoke(provision, ["--target", str(b), *only]).exit_code == 0
    ca, cb = (json.loads((d / "config.json").read_text()) for d in (a, b))
    assert ca["device_id"] != cb["device_id"] and ca["secret"] != cb["secret"]
    again = CliRunner().invoke(provision, ["--target", str(a), *only])
    assert again.exit_code != 0 and "already has a config.json" in again.output
    assert json.loads((a / "config.json").read_text()) == ca
    forced = CliRunner().invoke(provision, ["--target", str(a), "--force", *only])
    assert forced.exit_code == 0 and json.loads((a / "config.json").read_text())["secret"] != ca["secret"]


def test_a_board_is_written_with_mpremote_and_nothing_secret_is_left_behind(fake_board, tmp_path, monkeypatch):
    board, log = fake_board
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    r = CliRunner().invoke(provision, ["/dev/ttyUSB7"])
    assert r.exit_code == 0, r.output
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    assert calls[0] == ["connect", "/dev/ttyUSB7", "fs", "cat", ":config.json"]
    assert calls[1][:5] == ["connect", "/dev/ttyUSB7", "fs", "cp", "-r"] and calls[1][6:] == [":", "+", "reset"]
    assert len(calls) == 2
    cfg = json.loads((board / "config.json").read_text())
    assert printed_label(r.output) == f"obdsync:{cfg['device_id']}:{cfg['secret']}"
    assert (board / "main.py").exists() and (board / "dongle" / "app.mpy").exists()
    assert list((tmp_path / "tmp").iterdir()) == []  # the staged copy (with the secret) is gone
    # the same board again: its identity is kept
    again = CliRunner().invoke(provision, ["/dev/ttyUSB7"])
    assert again.exit_code != 0 and "already has a config.json" in again.output
    assert json.loads((board / "config.json").read_text()) == cfg


def test_config_only_for_a_board_whose_image_has_the_firmware_frozen(fake_board):
    board, _ = fake_board
    r = CliRunner().invoke(provision, ["/dev/ttyUSB7", "--config-only"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in board.iterdir()) == ["config.json"]


def test_either_a_port_or_a_target(tmp_path):
    assert CliRunner().invoke(provision, []).exit_code == 2
    assert CliRunner().invoke(provision, ["/dev/ttyUSB0", "--target", str(tmp_path)]).exit_code == 2


def test_the_provisioned_directory_boots_as_that_dongle(tmp_path):
    from hil.rig import Rig

    r = CliRunner().invoke(provision, ["--target", str(tmp_path / "flash0"), "--config-only"])  # rig: its own .mpy
    cfg = json.loads((tmp_path / "flash0" / "config.json").read_text())
    assert r.exit_code == 0
    with Rig("city", tmp_path) as rig:  # flash0 is the rig's first dongle's flash
        ready = next(x for x in rig.dongle.lines if x.startswith("ready"))
    assert ready.split()[1] == cfg["device_id"]
    assert Path(tmp_path / "flash0" / "log").is_dir()
