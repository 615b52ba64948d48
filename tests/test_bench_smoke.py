"""The benchmark harness runs and writes valid JSON (no timing is asserted: benchmarks
never gate tests). Sizes here are tiny; `make bench` runs the real ones."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hil.bench import calibrate, ingest, pids
from hil.bench.__main__ import main
from hil.bench.common import BenchError


def test_quick_run_of_a_figure_writes_results_json_and_a_table(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert main(["--quick", "--only", "wire", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert set(got["figures"]) == {"wire"}
    assert got["failed"] == {}
    assert got["machine"]["nproc"] >= 1 and got["machine"]["python"]
    for mtu in ("23", "247"):
        fig = got["figures"]["wire"][mtu]
        assert fig["samples"] > 0 and fig["json_bytes_per_sample"] > fig["bytes_per_sample"] > 0
    assert [row[0] for row in got["table"]] == ["BLE bytes per sample, MTU 23", "BLE bytes per sample, MTU 247"]
    printed = capsys.readouterr().out
    assert "| figure | measured |" in printed and "Machine:" in printed


def test_unknown_figure_is_refused(tmp_path, capsys):
    try:
        main(["--only", "nope", "--out", str(tmp_path / "r.json")])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("an unknown figure name was accepted")
    assert "unknown figure" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_ingest_machinery_on_a_tiny_backlog(tmp_path):
    raws, total = ingest.backlog(3000)
    assert total >= 3000 and len(raws) > 2
    r = asyncio.run(ingest._feed(tmp_path / "s.db", raws, with_rules=False))  # raises unless all acked
    assert r["elapsed_s"] > 0 and r["decode_record_s"] > 0
    base = ingest.naive(tmp_path / "n.db", raws, 50)
    assert base["rows"] == 50 and base["rate"] > 0


def test_window_lines_and_link_counters_become_rates_and_the_link_limit():
    lines = ["init OK True", "win_start 0", "win 0 120 20 1000 64 0 90000 0 1", "end 0 0 0 0 0 400000 3"]
    snaps = {("s", 0): {"bytes_to_elm": 100, "bytes_from_elm": 400, "obd_requests": 10},
             ("e", 0): {"bytes_to_elm": 400, "bytes_from_elm": 1360, "obd_requests": 30}}
    (w,) = pids._windows(lines, snaps)
    assert w["values"] == 120 and w["pids_per_s"] == 120.0
    assert w["bytes_to_per_value"] == 2.5 and w["bytes_from_per_value"] == 8.0
    # 1260 bytes x 10 bits at 38400 Bd + 20 requests x 30 ms
    assert abs(w["limit_s"] - (12600 / 38400 + 0.6)) < 1e-9
    assert w["alloc_bytes"] == 64 and w["records_sealed"] == 1


def test_perf_bench_calibration_runs_every_published_benchmark(micropython, tmp_path):
    # The vendored upstream benchmarks run on the interpreter and each gives a positive score
    # to divide by its published ESP32 one (no speed is asserted: that is `make bench`'s).
    cal = calibrate.measure(tmp_path, Path(micropython))
    assert set(cal.per_bench) == set(calibrate.ESP32_SCORES) == set(cal.scores)
    assert all(f > 0 for f in cal.per_bench.values())
    assert cal.low <= cal.factor <= cal.high


def test_a_benchmark_that_skips_is_an_error_not_a_score(tmp_path):
    # A build without big ints prints "-1 -1 SKIP": that must not become a factor.
    fake = tmp_path / "fake-micropython"
    fake.write_text("#!/bin/sh\necho '-1 -1 SKIP: no matching params'\n")
    fake.chmod(0o755)
    with pytest.raises(BenchError, match="skipped or failed"):
        calibrate.score(fake, "bm_pidigits", tmp_path)
