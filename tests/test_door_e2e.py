"""One running daemon, one door: `obdsync run` (a real process, real SQLite, the rig's
simulated dongle) answers the commands that need the dongle through its control socket
while it holds the dongle; killed with SIGKILL it leaves a stale socket file, which the
commands see through (they connect directly) and the next `run` replaces."""

from __future__ import annotations

import json
import signal
import stat

import pytest
from e2e import Home, short_city, wait_until

from hil.rig import Rig

pytestmark = pytest.mark.slow

POLL = "[poll]\nRPM = [0.5, 2, 0]\n"


def ok(p) -> str:
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}{p.stderr}"
    assert "Traceback" not in p.stderr, p.stderr
    return p.stdout


def test_commands_go_through_the_running_daemon_and_a_stale_socket_is_replaced(tmp_path):
    with Rig(short_city(900, speedup=20), tmp_path / "rig") as rig:
        d = rig.dongle
        home = Home(tmp_path / "home", rig.air)
        home.write_config(POLL)
        try:
            home.pair(d)
            assert not home.control_socket.exists()
            daemon = home.run()
            daemon.wait_for(r"dongle .* connected")
            st = home.control_socket.stat()
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
            assert stat.S_IMODE(home.control_socket.parent.stat().st_mode) == 0o700

            # While it holds the dongle (one central at a time), the dongle is reached through it.
            vin = ok(home.cli("vin", "--live"))
            assert vin.startswith(rig.emulator.vehicle.params.vin), vin
            assert "sent: 1 channel" in ok(home.cli("plan", "set"))
            live = json.loads(ok(home.cli("status", "--json", "--live")))["devices"][0]["live"]
            assert live["connected"] is True and live["volts"], live
            assert live["rates"], live  # the dongle's own STATUS, through the daemon
            p = home.cli("check", "--live")
            assert p.returncode in (0, 2) and "Traceback" not in p.stderr, p.stdout + p.stderr  # 2: a finding
            for op in ("vin.read", "plan.set", "status", "check.live"):
                assert f"control request {op} for dongle {d.device_id}" in daemon.output, daemon.output[-3000:]

            # kill -9: the socket file stays behind, nobody listening on it.
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait(30)
            assert home.control_socket.exists()
            live = json.loads(ok(home.cli("status", "--json")))["devices"][0]["live"]
            assert not (live or {}).get("connected"), live  # not the dead daemon's last word
            # Commands see there is no daemon and connect themselves (once the dongle has
            # noticed its central is gone and advertises again).
            wait_until(lambda: home.cli("vin", "--live").returncode == 0, 60, "a direct VIN read")
            assert ok(home.cli("vin", "--live")).startswith(rig.emulator.vehicle.params.vin)

            # The next run replaces the stale socket and serves again.
            again = home.run()
            again.wait_for(r"removing the stale control socket")
            again.wait_for(r"dongle .* connected")
            assert ok(home.cli("vin", "--live")).startswith(rig.emulator.vehicle.params.vin)
            assert f"control request vin.read for dongle {d.device_id}" in again.output
            live = json.loads(ok(home.cli("status", "--json")))["devices"][0]["live"]
            assert live["connected"] is True, live

            # A second daemon for the same user refuses, naming the first; the first serves on.
            second = home.cli("--db", str(tmp_path / "other.db"), "run", timeout=60)
            assert second.returncode == 1 and "another obdsync run" in second.stderr, second.stderr
            assert ok(home.cli("vin", "--live")).startswith(rig.emulator.vehicle.params.vin)

            assert again.terminate() == 0, again.output[-3000:]
            assert not home.control_socket.exists(), "SIGTERM left the socket file behind"
            assert "Traceback" not in again.output and " ERROR " not in again.output, again.output[-3000:]
        finally:
            home.close()
