"""A forwarder in its own process, for the kill -9 test: forwards from a SQLite file to
an MQTT broker and logs each step to stdout.

    python forward_child.py DB PORT DEVICE
"""

from __future__ import annotations

import asyncio
import logging
import sys

from obdsync.config import ForwardConfig, MqttTarget
from obdsync.forward import Backoff, Forwarder
from obdsync.store import Store

TARGET = "mqtt-test"


async def main(db: str, port: int, device: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    log = logging.getLogger("obdsync.forward")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    store = await Store.open(db)
    # A long PUBACK timeout: the test kills us while we wait for one.
    fwd = Forwarder(store, ForwardConfig(mqtt=(MqttTarget(host="127.0.0.1", port=port, name=TARGET),)),
                    backoff=Backoff(0.05, 0.5), idle_poll_s=0.05, mqtt_timeout_s=60)
    await fwd.start()
    fwd.publish_state(device, {"fuel_pct": 50.0})
    print("started", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
