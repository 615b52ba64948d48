"""obdsync daemon: the companion that stores every sample a dongle sends, derives
the events a driver must know and forwards them to a platform.

The package lives in daemon/obdsync and is named `obdsync`: `daemon` is
python-daemon's import name (ELM327-emulator's CLI imports daemon.pidfile)."""

__version__ = "0.1.0"

#: Where a user reports a problem (Home Assistant's device origin, notification assets).
SUPPORT_URL = "https://github.com/obdsync/obdsync/issues"
