"""The factor that turns this machine's 32-bit MicroPython CPU time into an ESP32's.

MicroPython's own `tests/perf_bench` (vendored verbatim in hil/bench/mpy/perf_bench: the
pinned source tree is trimmed of tests/) run here on the 32-bit unix build exactly as
`tests/run-perfbench.py 100 100` runs them (the benchmark, then benchrun.py, then
`bm_run(100, 100)`; score = 1e6 x norm / µs), against the scores upstream published for an
ESP32 at 240 MHz with the same N and M (PR 7850, issue 6565). factor = score here / score
there, per benchmark; the figure used is their geometric mean, the spread is reported
beside it. Measured in the same bench run as the figures it translates, so a faster or
slower build machine moves both.

Each benchmark runs REPEATS times in one process and the fastest run counts: on a shared
machine a run that was preempted is slower, never faster (the usual min-of-k of timeit).
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hil import mpy
from hil.bench.common import BenchError

PERF_BENCH = Path(__file__).parent / "mpy" / "perf_bench"
N, M = 100, 100  # the parameters the ESP32 scores were published with
REPEATS = 25

# Published ESP32 (240 MHz, no PSRAM builds) scores for N=100 M=100, low-high over the
# releases reported (they varied about ±30 %); the midpoint is compared with.
ESP32_SCORES: dict[str, tuple[float, float]] = {
    "bm_chaos": (244, 253),
    "bm_fannkuch": (61, 72),
    "bm_hexiom": (26, 31),
    "bm_nqueens": (2232, 3244),
    "bm_pidigits": (590, 590),
    "misc_aes": (335, 438),
    "misc_pystone": (1166, 1732),
}


@dataclass(frozen=True)
class Calibration:
    factor: float  # geometric mean of the per-benchmark factors
    low: float  # the smallest and largest per-benchmark factor
    high: float
    per_bench: dict[str, float]  # benchmark -> score here / published ESP32 score
    scores: dict[str, float]  # benchmark -> score here (best of REPEATS)


def _script(name: str) -> bytes:
    # As run-perfbench.py composes it (sys.path.remove('') dropped: the unix port is
    # started on a file here, not on stdin).
    return (b"import sys\n\n" + (PERF_BENCH / f"{name}.py").read_bytes()
            + (PERF_BENCH / "benchrun.py").read_bytes()
            + b"for _ in range(%d):\n    bm_run(%d, %d)\n" % (REPEATS, N, M))


def score(interpreter: Path, name: str, workdir: Path) -> float:
    """The best of REPEATS scores of one benchmark on `interpreter`."""
    script = workdir / f"perf_{name}.py"
    script.write_bytes(_script(name))
    r = subprocess.run([str(interpreter), str(script)], capture_output=True, text=True, timeout=300)
    best = 0.0
    for line in r.stdout.splitlines():
        us, norm, _ = line.split(None, 2)
        if int(us) <= 0 or int(norm) <= 0:
            raise BenchError(f"perf_bench {name} skipped or failed on {interpreter}: {line}")
        best = max(best, 1e6 * int(norm) / int(us))
    if r.returncode or not best:
        raise BenchError(f"perf_bench {name} failed on {interpreter}:\n{r.stdout[-1000:]}{r.stderr[-1000:]}")
    return best


def measure(workdir: Path, interpreter: Path = mpy.MPY32) -> Calibration:
    workdir.mkdir(parents=True, exist_ok=True)
    scores = {name: score(interpreter, name, workdir) for name in ESP32_SCORES}
    per = {name: s / (sum(ESP32_SCORES[name]) / 2) for name, s in scores.items()}
    factor = math.exp(sum(math.log(f) for f in per.values()) / len(per))
    return Calibration(factor=factor, low=min(per.values()), high=max(per.values()), per_bench=per, scores=scores)
