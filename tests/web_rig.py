"""The dashboard against a database from a HIL scenario, served from a thread of its own
(Selenium is synchronous): the scenario's car (`hil/scenarios/used_car.toml`: a stored
code on the second ECU, a trip, an odometer) logged as an idealised dongle logs it
(`test_health.records_of`), stored through the daemon's Pipeline, so the live hub sees
what the daemon would."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from test_health import DEVICE, records_of

from hil import scenario as hil_scenario
from obdsync.config import parse_config
from obdsync.pipeline import Pipeline
from obdsync.store import Store
from obdsync.web.server import Dashboard
from protocol.record import KIND_SAMPLES


class Rig:
    def __init__(self, db: Path, *, host: str = "127.0.0.1", dongle_op: Any = None,
                 config: dict[str, Any] | None = None) -> None:
        self.db = db
        self.config = parse_config(config or {"fuel": {"price_per_litre": 1.8, "currency": "EUR"}})
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="dashboard", daemon=True)
        self._thread.start()
        self.records = records_of(hil_scenario.load("used_car"))
        self.call(self._open(host, dongle_op))

    def call(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _open(self, host: str, dongle_op: Any) -> None:
        self.store = await Store.open(self.db)
        self.pipeline = Pipeline(self.store, self.config)
        if not await self.store.status():
            await self.pipeline.ingest(DEVICE, self.records)
            await self.pipeline.flush()
        self.dash = Dashboard(self.store, self.config, host=host, port=0, dongle_op=dongle_op,
                              live=lambda: {DEVICE: {"connected": True}})
        self.pipeline.listeners.append(self.dash.hub.feed)
        await self.dash.start()

    def feed_speed(self, kmh: int, rpm: int = 2000) -> int:
        """One more SAMPLES record (speed, RPM) after the scenario's last, through the pipeline."""
        last = self.records[-1]
        rec = SimpleNamespace(kind=KIND_SAMPLES, seq=last.seq + 1, boot=last.boot, t0=last.t0 + 1000,
                              samples=[(last.t0 + 1000, 0x0D, bytes([kmh])),
                                       (last.t0 + 1000, 0x0C, (rpm * 4).to_bytes(2, "big"))])
        self.records.append(rec)
        return self.call(self.pipeline.ingest(DEVICE, [rec]))

    def close(self) -> None:
        async def shut() -> None:
            await self.dash.stop()
            await self.pipeline.close()
            await self.store.close()

        try:
            self.call(shut())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
