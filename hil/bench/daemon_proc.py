"""A minimal daemon process for the idle figure when `obdsync run` is not usable:
DongleLink + Store, reconnecting, until SIGTERM/SIGINT.

    python -m hil.bench.daemon_proc ADDRESS SECRET_HEX DB   ($OBDSYNC_SIM_AIR names the air)
"""

from __future__ import annotations

import asyncio
import signal
import sys


async def main(address: str, secret: bytes, db: str) -> None:
    from hil.bench.common import StoreSink
    from hil.blesim import SimClient
    from obdsync.link import DongleLink, LinkError
    from obdsync.store import Store

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store = await Store.open(db)
    link = DongleLink(address, secret, StoreSink(store), backend=SimClient)
    try:
        while not stop.is_set():
            task = asyncio.create_task(link.session())
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if stop.is_set():
                link.stop()
                await asyncio.gather(task, return_exceptions=True)
                break
            try:
                task.result()
            except LinkError as e:
                print("link:", e, flush=True)
            await asyncio.sleep(1.0)  # reconnect backoff
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3]))
