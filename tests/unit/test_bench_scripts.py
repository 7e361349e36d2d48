"""bench/*.py as the suite can afford them: a smoke run of each (a few
thousand events, one round) must pass its own correctness checks, and a
target that falls short must make the script exit non-zero (so `make bench`
fails). Their speed is not judged here."""

from __future__ import annotations

import os

import pytest

from ..paths import REPO


def load_bench(script: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", os.path.join(REPO, "bench", script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_calls_bench_judges_agreement_both_ways():
    calls_bench = load_bench("calls.py")
    ours = {"tail_call_const": 5.0, "bpf2bpf": 3.0, "inline": 1.0}
    assert calls_bench.disagreements(ours, {"tail_call_const": 6.2, "bpf2bpf": 2.5, "inline": 1.2}, 1.25) == []
    missed = calls_bench.disagreements(ours, {"tail_call_const": 6.3, "bpf2bpf": 2.3, "inline": -0.1}, 1.25)
    assert [m.split(":")[0] for m in missed] == ["tail_call_const", "bpf2bpf", "inline"]
