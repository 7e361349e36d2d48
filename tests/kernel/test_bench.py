"""The tail-call cost curve: the counts come from the chain itself, the cost
grows with each tail call taken and stops growing at the kernel's limit.
(Correctness only; the figures themselves are for bench/tailcalls.py.)"""

from __future__ import annotations

import pytest

from bpfmagic.errors import UsageProblem
from bpfmagic.experiments import testrun

from ..conftest import needs_root


@needs_root
@pytest.mark.parametrize("index", ["const", "var"])
def test_curve_counts_tail_calls_up_to_the_limit(session, index):
    df = session.bench_tailcalls(depth=35, repeat=20_000, index=index)
    assert list(df.columns[:3]) == ["depth", "tail_calls", "ns_per_run"]
    assert list(df["depth"]) == list(range(36))
    taken = df.set_index("depth")["tail_calls"]
    # One more tail call per hop up to the kernel's limit, then flat: depths 34 and 35 ask for
    # more, the counters the chain keeps itself show the kernel stopped it at 33.
    assert list(taken[:34]) == list(range(34))
    assert list(taken[33:]) == [33, 33, 33]
    assert (df["ns_per_run"] > 0).all() and (df["index"] == index).all()
    assert df.attrs["ns_per_tail_call"] > 0
    assert df.attrs["max_tail_calls"] == 33 and df.attrs["index"] == index
    # The fitted line drawn in the plot is flat past the limit too.
    fit = testrun.plot_tailcalls(df).axes[0].lines[1]
    fit_at = dict(zip(fit.get_xdata(), fit.get_ydata()))
    assert fit_at[33] == fit_at[34] == fit_at[35] > fit_at[32]
    assert session.stats_enabled  # switched off while measuring, back on afterwards
    # The benchmark's own module and array are gone (the fixture checks the kernel side).
    assert testrun.BENCH_MODULE not in session.modules and testrun.BENCH_ARRAY not in session.arrays


@needs_root
def test_chain_without_the_limit_and_the_plot(session):
    df = session.bench_tailcalls(depth=4, repeat=1000, rounds=2)
    assert list(df["tail_calls"]) == [0, 1, 2, 3, 4]
    fig = testrun.plot_tailcalls(df)
    ax = fig.axes[0]
    measured, fit = ax.lines[0], ax.lines[1]
    assert list(measured.get_xdata()) == [0, 1, 2, 3, 4] and list(measured.get_ydata()) == list(df["ns_per_run"])
    # A short curve is fitted over all its points: the line drawn is the least-squares line of the
    # measurements (computed here in closed form, not read from the attrs it was drawn from).
    x, y = df["tail_calls"].to_numpy(float), df["ns_per_run"].to_numpy(float)
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert list(fit.get_xdata()) == [0, 1, 2, 3, 4]
    assert fit.get_ydata() == pytest.approx(y.mean() + slope * (x - x.mean()))
    assert testrun.figure_svg(fig).lstrip().startswith("<?xml")
    assert "ns per tail call (const index" in testrun.describe_fit(df)


@needs_root
def test_bench_frees_its_programs_even_when_a_run_fails(session, monkeypatch):
    def failing_test_run(*args, **kwargs):
        raise OSError(22, "injected")

    monkeypatch.setattr(testrun.libbpf, "test_run", failing_test_run)
    with pytest.raises(OSError):
        session.bench_tailcalls(depth=3, repeat=10)
    assert not session.modules and not session.arrays


@needs_root
def test_the_instruments_bench_measures_four_chains_side_by_side_and_frees_them(session):
    from bpfmagic.experiments import tailcalls

    df = session.bench_instruments(depth=14, repeat=200, rounds=2, best=1)
    assert list(df["chain"]) == ["bare", "counting", "paths", "floor"]
    assert df.attrs["max_tail_calls"] == 14 and df.attrs["rounds"] == 2
    assert all(len(v) == 2 for v in df.attrs["slopes"].values())  # a slope per chain and round
    bare = df.set_index("chain").loc["bare"]
    assert (bare["added_ns"], bare["added"]) == (0.0, 0.0)
    for _, row in df.iterrows():  # each row's added ns is its median slope minus bare's
        assert row["added_ns"] == pytest.approx(row["ns_per_tail_call"] - bare["ns_per_tail_call"])
    assert "counting +" in tailcalls.describe_instruments(df)
    assert not session.modules and not session.arrays  # the four chains and their arrays are gone
    assert session.stats_enabled  # switched off while measuring, back on afterwards
    with pytest.raises(UsageProblem) as refused:
        session.bench_instruments(depth=5)  # too short a chain to fit a slope from STEADY_FROM on
    assert "depth must be" in str(refused.value)


@needs_root
def test_bench_instruments_in_a_cell(ip, capsys):
    frame = ip.run_line_magic("bpf", "bench instruments --depth 12 --repeat 100 --rounds 1")
    assert list(frame["chain"]) == ["bare", "counting", "paths", "floor"] and frame.attrs["max_tail_calls"] == 12
    assert "a const-index tail call:" in capsys.readouterr().out
