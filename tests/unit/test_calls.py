"""The seed's comparison as an instrument: the same stage chained by tail calls, BPF-to-BPF
calls and inlining (bench_calls), and the limits of each tried on this kernel (call_limits)."""

from __future__ import annotations

import pytest

from bpfmagic import UsageProblem


def test_bench_calls_refuses_what_a_chain_cannot_be(session):
    for bad in ([33], [-1], ["2"], [True], []):
        with pytest.raises(UsageProblem, match="hops are whole numbers 0..32"):
            session.bench_calls(depths=bad)
    with pytest.raises(UsageProblem, match="rounds must be a positive integer"):
        session.bench_calls(depths=[1], rounds=0)
