"""`make bench`: every figure beside a baseline measured in the same run.

    python -m hil.bench [--quick] [--only NAME[,NAME]] [--out bench/results.json]

One module per figure (its name in `__main__.FIGURES`: pids, heap, wire, ingest, backlog,
latency, idle, board, park, direct, web); each has
`run(ctx) -> dict` and `rows(result) -> list[Row]` for the table. Machines here are
shared and noisy, so a figure is a median over several windows and a ratio against a
baseline measured in the same invocation, never against a remembered number.
Benchmarks never gate tests: nothing here asserts a goal, the table says met or not.
"""
