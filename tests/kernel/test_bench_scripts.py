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

from ..conftest import needs_root
from ..paths import REPO


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


@needs_root
def test_flood_bench_smoke_run_puts_every_delivered_event_in_the_parquet_file():
    r = run_bench("flood.py", "--smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "with Parquet follow: 300,000 events" in r.stdout and "every event accounted for in both runs" in r.stdout
    assert any(line.strip().startswith("delivered events in the file  100.00%") for line in lines), r.stdout
    assert any("x the producer's rate in this run; the producer ran at" in line for line in lines), r.stdout
    # the smoke run's queue (8,192 rows) is far smaller than the flood; whether the reader had to
    # wait depends on the machine's speed (tests/kernel/test_reliability.py stalls the writer to be sure)
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


@needs_root
def test_calls_bench_smoke_run_checks_every_chain():
    r = run_bench("calls.py", "--smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    for m in ("tail_call_const", "tail_call_var", "bpf2bpf", "inline"):
        assert any(line.startswith(m) and "ns per hop" in line for line in r.stdout.splitlines()), (m, r.stdout)
    assert "independent chains built from cells" in r.stdout and "JIT bytes by hops" in r.stdout
