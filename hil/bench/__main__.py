"""python -m hil.bench [--quick] [--only NAME[,NAME…]] [--out PATH] [--keep]

Runs the figures in order, writes the raw numbers to bench/results.json (or --out)
and prints a Markdown table. A figure that fails is reported as failed, with why, and
the others still run; the exit status is 1 then. Goals not met do not fail the run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TypedDict

from hil.bench.common import Context, MachineInfo, Row, machine

# Order matters: heap reuses the firmware run of pids when both are asked for.
FIGURES = ("pids", "heap", "wire", "ingest", "backlog", "latency", "idle", "board", "park", "direct", "web")
DEFAULT_OUT = Path(__file__).resolve().parent.parent.parent / "bench" / "results.json"


class Results(TypedDict, total=False):
    """bench/results.json."""
    machine: MachineInfo
    quick: bool
    figures: dict[str, dict[str, object]]  # each figure's run(ctx), and how long it took (took_s)
    failed: dict[str, str]  # figure -> traceback
    elapsed_s: float
    table: list[list[str]]


def table(rows: list[Row], info: Results) -> str:
    head = ["figure", "measured", "baseline (same run)", "ratio", "goal", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r.cells()) + " |" for r in rows]
    m = info["machine"]
    lines.append("")
    lines.append(f"Machine: {m['nproc']} × {m['cpu']}; Python {m['python']}; MicroPython {m['micropython']}; "
                 f"{m['platform']}; {m['when']}; {'quick' if info['quick'] else 'full'} run, "
                 f"{info['elapsed_s']:.0f} s.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hil.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, short windows: under a minute")
    ap.add_argument("--only", default="", help=f"comma-separated figures among {','.join(FIGURES)}")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the raw numbers go (JSON)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (databases, flash dirs)")
    args = ap.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    bad = [n for n in only if n not in FIGURES]
    if bad:
        ap.error(f"unknown figure(s) {bad}; known: {', '.join(FIGURES)}")
    names = [n for n in FIGURES if not only or n in only]

    work = Path(tempfile.mkdtemp(prefix="obdsync-bench-"))
    ctx = Context(quick=args.quick, workdir=work)
    info: Results = {"machine": machine(), "quick": args.quick, "figures": {}, "failed": {}}
    rows: list[Row] = []
    t0 = time.monotonic()
    try:
        for name in names:
            mod = importlib.import_module(f"hil.bench.{name}")
            t = time.monotonic()
            try:
                res = mod.run(ctx)
            except Exception as e:  # noqa: BLE001 - one figure's failure must not hide the others
                ctx.log(f"{name}: FAILED: {e}")
                info["failed"][name] = "".join(traceback.format_exception(e))[-4000:]
                rows.append(Row(name, f"FAILED: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__}"))
                continue
            took_s = time.monotonic() - t
            info["figures"][name] = {**res, "took_s": took_s}
            rows.extend(mod.rows(res))
            ctx.log(f"{name}: done in {took_s:.1f} s")
    finally:
        if args.keep:
            ctx.log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    info["elapsed_s"] = time.monotonic() - t0
    info["table"] = [r.cells() for r in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=1, default=str))
    tmp.replace(args.out)
    print(table(rows, info))
    prof = info["figures"].get("ingest", {}).get("profile")
    if isinstance(prof, dict):
        print("\nIngest profile (wall s by stage, one profiled run):")
        for k, v in prof["stages_s"].items():
            print(f"  {v:7.3f}  {k}")
    print(f"\nRaw numbers: {args.out}")
    return 1 if info["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
