"""`SimScanner`: a bleak scanner backend that listens to the simulated air."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Literal

from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner

from . import advdata
from . import air as air_mod

logger = logging.getLogger(__name__)


class SimScanner(BaseBleakScanner):
    """Pass as `BleakScanner(..., backend=SimScanner, air=DIR)` (or set $OBDSYNC_SIM_AIR).

    Every `interval` seconds (the simulated advertising interval, 0.1 s by default) it asks each
    dongle advertising in the air for its advertisement and reports it, as a radio reports
    each advertising event. `BLEDevice.details` is the dongle's socket path.
    """

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        *,
        air: str | os.PathLike[str] | None = None,
        interval: float = 0.1,
        **kwargs: Any,  # bluez=, cb=: other backends' options
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._air = air_mod.air_dir(air)
        self._interval = interval
        self._passive = scanning_mode == "passive"
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.seen_devices = {}
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await self.scan_once()
            await asyncio.sleep(self._interval)  # the advertising interval of the simulated radio

    async def scan_once(self) -> None:
        """One sweep over the air: every advertising dongle reported once."""
        try:
            paths = sorted(p for p in self._air.iterdir() if p.name.endswith(".sock"))
        except FileNotFoundError:
            return
        results = await asyncio.gather(*(air_mod.query(p) for p in paths))
        for path, result in zip(paths, results, strict=True):
            address = air_mod.address_of(path)
            if result is None or address is None:
                continue
            rssi, _connectable, adv, resp = result
            # A passive scanner sends no scan request, so it never sees the scan response.
            ad = advdata.parse(adv) if self._passive else advdata.parse(adv, resp)
            if not self.is_allowed_uuid(ad.service_uuids):
                continue
            data = AdvertisementData(
                local_name=ad.local_name,
                manufacturer_data=ad.manufacturer_data,
                service_data=ad.service_data,
                service_uuids=ad.service_uuids,
                tx_power=ad.tx_power,
                rssi=rssi,
                platform_data=(str(path), adv, resp),
            )
            device = self.create_or_update_device(address, address, ad.local_name, str(path), data)
            self.call_detection_callbacks(device, data)
