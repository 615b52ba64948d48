"""Our packages and python-daemon live side by side: the daemon's package is `obdsync`
(daemon/obdsync) because ELM327-emulator's CLI imports `daemon.pidfile`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hil import mpy

PROBE = """
import json, obdsync, protocol, hil, daemon, daemon.pidfile
print(json.dumps({m.__name__: getattr(m, "__file__", None) for m in (obdsync, protocol, hil, daemon)}
                 | {"protocol.VERSION": getattr(protocol, "VERSION", None),
                    "obdsync.__version__": getattr(obdsync, "__version__", None)}))
"""


@pytest.mark.parametrize("where", ["repo", "elsewhere"])
def test_our_packages_and_python_daemon_import_side_by_side(where, tmp_path):
    # From elsewhere: how the `obdsync` console script and the benchmarks run. A stale
    # editable install (made before a package had its __init__.py) shows up only there.
    cwd = mpy.ROOT if where == "repo" else tmp_path
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    files = json.loads(proc.stdout)
    root = str(mpy.ROOT)
    assert files["obdsync"] == f"{root}/daemon/obdsync/__init__.py", "stale install? pip install -e ."
    assert files["protocol"] == f"{root}/protocol/__init__.py", "stale install? pip install -e ."
    assert files["hil"] == f"{root}/hil/__init__.py"
    assert files["protocol.VERSION"] == 2 and files["obdsync.__version__"]
    # python-daemon's package, not our daemon/ folder (which holds no package of that name).
    assert files["daemon"] and not files["daemon"].startswith(root + "/daemon/")
    assert "site-packages" in files["daemon"]
