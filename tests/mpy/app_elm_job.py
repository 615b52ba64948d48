# Dongle.elm_job (firmware/dongle/app.py) on the unix port: a command's adapter job runs in the
# scheduler's task. A job that raises must raise in the command that asked for it (not hand it
# None: clear_dtc reads None as "refused: the car moves") and must not end the scheduler's task
# (the poll loop). Prints one JSON line per case, [name, observation];
# tests/test_firmware_elm_job.py holds the expectations. Last line: ["end", null].

import asyncio
import json

from elm_fake import Clock, FakeChip

from dongle import elm327 as E
from dongle import plan as P
from dongle.app import Dongle
from dongle.scheduler import Scheduler


class Host:
    """What elm_job uses of a Dongle: its scheduler."""

    def __init__(self, sched):
        self.sched = sched


async def main():
    elm = E.ELM327(FakeChip(), Clock(1))
    s = Scheduler(elm, P.Plan(), lambda *a: None, Clock(1))
    task = asyncio.create_task(s.run())
    host = Host(s)

    async def failing():
        raise OSError(5)  # EIO: what a dead UART or pty gives

    try:
        out = ["returned", repr(await Dongle.elm_job(host, failing))]
    except OSError as e:
        out = ["raised", e.args[0]]
    print(json.dumps(["failing_job", out]))

    async def answer():
        return 42

    # A bound on a hang, not a timing: a dead scheduler never runs the job.
    try:
        out = await asyncio.wait_for(Dongle.elm_job(host, answer), 10)
    except asyncio.TimeoutError:  # noqa: UP041 - MicroPython has no builtin TimeoutError
        out = "never ran"
    print(json.dumps(["next_job", out]))
    print(json.dumps(["scheduler_running", not task.done()]))
    s.stop()
    task.cancel()


asyncio.run(main())
print(json.dumps(["end", None]))
