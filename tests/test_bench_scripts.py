"""bench/*.py as the suite can afford them: a smoke run of each (a few
thousand events, one round) must pass its own correctness checks, and a
target that falls short must make the script exit non-zero (so `make bench`
fails). Their speed is not judged here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from .conftest import needs_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_bench(script: str, *args: str, patch: str = "") -> subprocess.CompletedProcess:
    """Run bench/SCRIPT with ARGS in a fresh interpreter on this checkout;
    PATCH (Python) runs after the script is imported and before its main()."""
    code = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("bench_script", {os.path.join(REPO, "bench", script)!r})
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        {patch}
        sys.exit(bench.main({list(args)!r}))
    """)
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


def load_bench(script: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", os.path.join(REPO, "bench", script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_root
def test_compile_bench_smoke_run_checks_both_sides():
    r = run_bench("compile.py", "--smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every cell loaded; both sides' programs attached and counted; the --core rows loaded" in r.stdout
    assert "first compile" in r.stdout and "unchanged re-run" in r.stdout
    for label in ("raw tracepoint counter", "dispatcher with tail call"):
        assert any(line.startswith(label) and line.endswith("x") for line in r.stdout.splitlines()), r.stdout


@needs_root
def test_ingest_bench_smoke_run_delivers_every_record_in_order():
    r = run_bench("ingest.py", "--smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5,000 records per round" in r.stdout and "1 rounds (paths interleaved)" in r.stdout
    for path in ("(a) ", "(b) ", "(a0)", "(c0)", "(c) "):
        assert any(line.startswith(path) for line in r.stdout.splitlines()), (path, r.stdout)
    assert "every record arrived, in order, on every path" in r.stdout


@needs_root
def test_a_missed_target_makes_each_bench_exit_1():
    r = run_bench("compile.py", "--rounds", "1", patch="bench.TARGET_RATIO = 0.0")
    assert r.returncode == 1 and "TARGET MISSED: worst ratio" in r.stderr, r.stdout + r.stderr
    r = run_bench("ingest.py", "--events", "5000", "--rounds", "1", patch="bench.TARGET_BULK_RATE = 1e15")
    assert r.returncode == 1 and "TARGET MISSED: (c) decodes" in r.stderr, r.stdout + r.stderr
    r = run_bench("flood.py", "--smoke", patch="bench.TARGET_FILE_SHARE = 1.01")
    assert r.returncode == 1 and "TARGET MISSED: 100.00% of the delivered events in the Parquet file" in r.stderr, r.stdout + r.stderr
    short = ("--depth", "12", "--repeat", "2000", "--rounds", "1", "--overhead-rounds", "1")
    r = run_bench("tailcalls.py", *short, patch="bench.TARGET_COUNTING = float('-inf')")
    assert r.returncode == 1 and "TARGET MISSED: per-slot counting adds" in r.stderr, r.stdout + r.stderr


def test_targets_are_judged_on_the_figures():
    compile_bench, ingest = load_bench("compile.py"), load_bench("ingest.py")
    assert compile_bench.shortfalls(1.10, 1.10, 0.30) == []
    assert [m.split()[0] for m in compile_bench.shortfalls(1.11, 1.0, 0.2)] == ["worst"]
    assert [m.split()[1] for m in compile_bench.shortfalls(1.0, 1.11, 0.2)] == ["first"]
    assert [m.split()[1] for m in compile_bench.shortfalls(1.0, 1.0, 0.31)] == ["unchanged"]
    assert ingest.shortfalls(8.0, 40e6) == []
    assert [m[:3] for m in ingest.shortfalls(7.9, 40e6)] == ["(b)"]
    assert [m[:3] for m in ingest.shortfalls(8.0, 39.9e6)] == ["(c)"]
    assert len(ingest.shortfalls(1.0, 1e6)) == 2


@needs_root
def test_flood_bench_smoke_run_puts_every_delivered_event_in_the_parquet_file():
    r = run_bench("flood.py", "--smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "with Parquet follow: 300,000 events" in r.stdout and "every event accounted for in both runs" in r.stdout
    assert any(line.strip().startswith("delivered events in the file  100.00%") for line in lines), r.stdout
    assert any("x the producer's rate in this run; the producer ran at" in line for line in lines), r.stdout
    # the smoke run's queue (8,192 rows) is far smaller than the flood; whether the reader had to
    # wait depends on the machine's speed (tests/test_reliability.py stalls the writer to be sure)
    queued = re.search(r"peak queued ([\d,]+) rows of 8,192 at most; the reader waited for the writer [\d,]+ times", r.stdout)
    assert queued and 0 < int(queued[1].replace(",", "")) <= 8192, r.stdout
    assert "target met" in r.stdout


@needs_root
def test_tailcalls_bench_smoke_run_shows_the_instruments_beside_the_bare_call():
    r = run_bench("tailcalls.py", "--smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("instruments' cost per tail call") and "/proc/loadavg" in line for line in lines), r.stdout
    for chain in ("bare", "counting", "paths"):
        assert any(line.startswith(chain + " ") for line in lines), (chain, r.stdout)
    assert "smoke run: the instruments' targets are not judged" in r.stdout


def test_tailcalls_targets_are_judged_on_the_figures():
    tailcalls = load_bench("tailcalls.py")
    assert tailcalls.shortfalls(0.10, 1.0) == []
    assert [m.split()[0] for m in tailcalls.shortfalls(0.11, 1.0)] == ["per-slot"]
    assert [m.split()[0] for m in tailcalls.shortfalls(0.10, 1.01)] == ["path"]
    assert len(tailcalls.shortfalls(float("nan"), float("nan"))) == 2  # a figure that could not be measured is no pass


def test_flood_target_is_judged_on_the_figures():
    flood = load_bench("flood.py")
    ok = {"count": 1000, "file_rows": 1000, "peak_queued_rows": 64, "max_queued_rows": 64}
    assert flood.shortfalls(ok) == []
    assert [m.split("%")[1].strip()[:6] for m in flood.shortfalls({**ok, "file_rows": 999})] == ["of the"]
    assert ["beyond the bound" in m for m in flood.shortfalls({**ok, "peak_queued_rows": 65})] == [True]
    assert flood.shortfalls({**ok, "count": 0, "file_rows": 0}) == []


def test_ingest_delivery_check_refuses_missing_and_reordered_records():
    import numpy as np

    ingest = load_bench("ingest.py")
    ingest.check_in_order(np.arange(5, 10, dtype=np.uint64), 5, 5, "ok")
    for bad in ([5, 6, 8, 7, 9], [5, 6, 7, 8], [5, 6, 7, 8, 9, 9]):
        with pytest.raises(SystemExit, match="in order"):
            ingest.check_in_order(np.array(bad, dtype=np.uint64), 5, 5, "bad")


@needs_root
def test_calls_bench_smoke_run_checks_every_chain():
    r = run_bench("calls.py", "--smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    for m in ("tail_call_const", "tail_call_var", "bpf2bpf", "inline"):
        assert any(line.startswith(m) and "ns per hop" in line for line in r.stdout.splitlines()), (m, r.stdout)
    assert "independent chains built from cells" in r.stdout and "JIT bytes by hops" in r.stdout


def test_calls_bench_judges_agreement_both_ways():
    calls_bench = load_bench("calls.py")
    ours = {"tail_call_const": 5.0, "bpf2bpf": 3.0, "inline": 1.0}
    assert calls_bench.disagreements(ours, {"tail_call_const": 6.2, "bpf2bpf": 2.5, "inline": 1.2}, 1.25) == []
    missed = calls_bench.disagreements(ours, {"tail_call_const": 6.3, "bpf2bpf": 2.3, "inline": -0.1}, 1.25)
    assert [m.split(":")[0] for m in missed] == ["tail_call_const", "bpf2bpf", "inline"]
