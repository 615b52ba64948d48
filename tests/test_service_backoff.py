"""The reconnect loop's backoff (obdsync.service.DeviceRunner): quick again after a session
that streamed, growing while sessions bring nothing."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from obdsync.link import LinkError
from obdsync.service import Backoff, DeviceRunner


class _NoWait(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return 0.0  # the loop goes on at once: the test reads the attempts, not the clock


@dataclass
class _Stats:
    records: int = 0


@dataclass
class _Link:
    """A dongle link whose sessions deliver `plan[i]` records, then drop."""

    plan: list[int]
    address: str = "AA:BB:CC:DD:EE:FF"
    stats: _Stats = field(default_factory=_Stats)
    on_ready: object = None
    runner: DeviceRunner | None = None

    async def session(self) -> None:
        assert self.runner is not None
        if not self.plan:
            self.runner.stop()
            return
        self.stats.records += self.plan.pop(0)
        raise LinkError("link lost")

    def stop(self) -> None:
        pass


class _Counting(Backoff):
    def __init__(self) -> None:
        super().__init__(1.0, 60.0, rng=_NoWait())
        self.ceilings: list[float] = []

    def next(self) -> float:
        self.ceilings.append(min(self.cap, self.base * 2 ** self.attempt))
        return super().next()


async def test_the_backoff_grows_while_sessions_bring_nothing_and_restarts_after_one_that_streamed():
    link = _Link(plan=[5, 0, 0, 0, 3, 0, 0])
    backoff = _Counting()
    runner = DeviceRunner(link, backoff)  # type: ignore[arg-type]  # what DeviceRunner uses of a link, no radio
    link.runner = runner
    await runner.run()
    # streamed, nothing x3 (growing), streamed (quick again), nothing x2 (growing again)
    assert backoff.ceilings == [1.0, 2.0, 4.0, 8.0, 1.0, 2.0, 4.0]
    assert runner.available is False and runner.last_error == "link lost"
