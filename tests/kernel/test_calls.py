"""The seed's comparison as an instrument: the same stage chained by tail calls, BPF-to-BPF
calls and inlining (bench_calls), and the limits of each tried on this kernel (call_limits)."""

from __future__ import annotations

from bpfmagic.experiments import calls

from ..conftest import needs_root


@needs_root
def test_bench_calls_table_has_every_mechanism_and_their_sizes(session):
    df = session.bench_calls(depths=(0, 1, 2, 4, 8), repeat=2000, rounds=2)
    assert list(df.columns) == ["mechanism", "hops", "ns_per_run", "jited_bytes", "xlated_insns", "stack_bytes", "verified_insns"]
    assert set(df["mechanism"]) == set(calls.MECHANISMS) and len(df) == 4 * 5
    assert set(df.attrs["ns_per_hop"]) == set(calls.MECHANISMS)
    assert all(v == v for v in df.attrs["ns_per_hop"].values())  # fitted: not NaN
    assert (df["ns_per_run"] > 0).all()
    size = df.pivot(index="hops", columns="mechanism", values="jited_bytes")
    # no hops: the four are the same trivial entry (a tail-call entry also holds its call site)
    assert size.loc[0, "inline"] == size.loc[0, "bpf2bpf"]
    # inlining copies the stage at each hop; a call adds a call instruction; a constant-index chain
    # adds a whole program per hop; a variable-index chain reuses one program in every slot
    inline_step = size.loc[8, "inline"] - size.loc[4, "inline"]
    call_step = size.loc[8, "bpf2bpf"] - size.loc[4, "bpf2bpf"]
    assert 0 < call_step < inline_step, size
    const_step = (size.loc[8, "tail_call_const"] - size.loc[4, "tail_call_const"]) / 4
    assert const_step > inline_step / 4, size
    assert size.loc[1, "tail_call_var"] == size.loc[8, "tail_call_var"], size
    insns = df.pivot(index="hops", columns="mechanism", values="xlated_insns")
    assert insns.loc[8, "inline"] > insns.loc[8, "bpf2bpf"]
    assert not [m for m in session.modules if m.startswith("_bench_calls")] and not [a for a in session.arrays if a.startswith("_bc_")]


@needs_root
def test_call_limits_in_the_kernels_own_words(session):
    limits = session.call_limits().set_index("experiment")
    said = limits["kernel_says"]
    assert limits.loc["8 call frames (main + 7 nested calls)", "loaded"]
    assert not limits.loc["9 call frames (main + 8 nested calls)", "loaded"]
    assert "the call stack of 9 frames is too deep" in said["9 call frames (main + 8 nested calls)"]
    assert limits.loc["stack 256 + 248 B across two frames", "loaded"]
    assert "combined stack size of 2 calls is 576. Too large" in said["stack 256 + 320 B across two frames"]
    assert "tail_calls are not allowed when call stack of previous frames is" in said["a subprogram tail-calls, frames above it 264 B"]
    assert calls.mixing_allowed(limits.reset_index())
    assert "stack 240 + 16 = 256 B" in said["a subprogram tail-calls, frames above it 240 B"]
    assert not [m for m in session.modules if m.startswith("_call_limits")] and "_limits_pa" not in session.arrays


@needs_root
def test_bench_calls_through_the_magic(fresh, capsys):
    df = fresh.run_line_magic("bpf", "bench calls --depths 0,2 --repeat 1000 --rounds 1")
    assert sorted(df["hops"].unique()) == [0, 2] and "ns per hop" in capsys.readouterr().out
    limits = fresh.run_line_magic("bpf", "bench limits")
    assert len(limits) == len(calls.LIMIT_EXPERIMENTS)
