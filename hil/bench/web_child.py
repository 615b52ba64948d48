"""The dashboard bench's server process: a store holding a synthetic 2-hour trip (speed,
RPM, fuel at 1 Hz) ingested through the daemon's Pipeline, the Dashboard on a free
loopback port fed by it as `obdsync run` feeds it. Prints `READY URL TRIP_ID`; then each
stdin line `feed KMH` stores one more SAMPLES record (the parent times it to the gauge's
event). No radio, no forwarder: the RSS it reports is the store + pipeline + dashboard."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from obdsync.config import Config
from obdsync.pipeline import Pipeline
from obdsync.store import Store
from obdsync.web.server import Dashboard
from protocol.record import KIND_ANCHOR, KIND_SAMPLES
from protocol.record_decode import Record

DEVICE = "bbbbbbbbbbbbbbbb"
EPOCH_MS = 1_700_000_000_000
TRIP_S = 2 * 3600


def _samples(seq: int, t0: int, samples: list[tuple[int, int, bytes]]) -> Record:
    rec = Record(KIND_SAMPLES, seq, 1, t0)
    rec.samples = samples
    return rec


def drive() -> list[Record]:
    anchor = Record(KIND_ANCHOR, 0, 1, 0)
    anchor.wall_ms = EPOCH_MS
    recs = [anchor]
    for s in range(TRIP_S + 600):  # the trip, then 10 minutes parked-idle to end it
        on = s < TRIP_S
        kmh = (60 + (s % 600) // 10) if on and s > 30 else 0
        rpm = 800 + kmh * 30 if on else 0
        fuel = int((80 - 30 * min(s, TRIP_S) / TRIP_S) * 255 / 100)
        ms = s * 1000
        samples = [(ms, 0x0D, bytes([kmh])), (ms, 0x2F, bytes([fuel]))]
        if rpm:
            samples.append((ms, 0x0C, (rpm * 4).to_bytes(2, "big")))
        recs.append(_samples(len(recs), ms, samples))
    return recs


async def main(db: Path) -> None:
    cfg = Config()
    store = await Store.open(db)
    pipe = Pipeline(store, cfg)
    recs = drive()
    for i in range(0, len(recs), 500):
        await pipe.ingest(DEVICE, recs[i:i + 500])
    await pipe.flush()
    trips = await store.trips(DEVICE)
    dash = Dashboard(store, cfg, port=0)
    pipe.listeners.append(dash.hub.feed)
    await dash.start()
    print("READY", dash.url, trips[0].id if trips else "-", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        kmh = int(line.split()[1])
        last = recs[-1]
        rec = _samples(last.seq + 1, last.t0 + 1000, [(last.t0 + 1000, 0x0D, bytes([kmh]))])
        recs.append(rec)
        await pipe.ingest(DEVICE, [rec])
    await dash.stop()
    await pipe.close()
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
