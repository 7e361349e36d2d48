"""The tail-call cost curve: the counts come from the chain itself, the cost
grows with each tail call taken and stops growing at the kernel's limit.
(Correctness only; the figures themselves are for bench/tailcalls.py.)"""

from __future__ import annotations

import pytest

from bpfmagic import UsageProblem
from bpfmagic.experiments import testrun


def test_bad_arguments_are_refused_before_loading_anything():
    from bpfmagic import Session

    s = Session(stats=False, prepare=False)
    try:
        for kwargs in ({"depth": -1}, {"depth": 10_000}, {"index": "indirect"}, {"repeat": 0}, {"rounds": 0}):
            with pytest.raises(UsageProblem):
                s.bench_tailcalls(**kwargs)
        assert not s.modules
    finally:
        s.close()


def test_chain_source_makes_one_program_per_hop_or_one_shared_hop():
    const = testrun.chain_source(3, "const")
    assert [f"hop{i}" in const for i in range(5)] == [True, True, True, True, False]
    assert "call(ctx, 4); return 3;" in const
    var = testrun.chain_source(3, "var")
    assert "int hop(" in var and "int entry(" in var and "taken + 1" in var
