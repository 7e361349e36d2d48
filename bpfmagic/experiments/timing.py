"""What the benches share: a timed BPF_PROG_TEST_RUN with nobody's kernel run stats
on, the check of a repeat count, the straight-line fit of ns per run against hops, and
the figures (matplotlib's Figure, no pyplot: no GUI backend, no global state). The
benches: tailcalls.py (the tail-call cost curve), calls.py (tail calls vs calls vs inlining)."""

from __future__ import annotations

import io
import operator

from ..errors import UsageProblem
from ..kernel import libbpf


def check_repeat(repeat) -> int:
    """repeat as the kernel gets it: libbpf's bpf_test_run_opts.repeat is a C
    int, so anything past 2**31 - 1 would wrap (2**32 + 1 runs once)."""
    try:
        n = None if isinstance(repeat, bool) else operator.index(repeat)
    except TypeError:
        n = None
    if n is None or not 1 <= n <= libbpf.MAX_REPEAT:
        raise UsageProblem(f"repeat must be a positive integer up to {libbpf.MAX_REPEAT:,} (libbpf passes it as a C int); got {repeat!r}")
    return n


def run_without_stats(entry, packet: bytes, repeat: int, tries: int = 5):
    """One timed test run while no process holds kernel run stats on: the
    entry's run_cnt only moves when someone does (its ~70 ns a run would
    spoil the figure), so such a run is tried again. Returns (result, True
    if every try ran with stats on)."""
    for _ in range(tries):
        before = entry.run_cnt
        out = libbpf.test_run(entry.fd, data=packet, repeat=repeat)
        if entry.run_cnt == before:
            return out, False
    return out, True


def fit_line(x, y) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through (X, Y); NaNs when X has fewer than two values."""
    import numpy as np

    if len(set(x)) < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def slope_stderr(x, y) -> float:
    """The standard error of fit_line's slope (how far the run's noise moves it); NaN under four values of X."""
    import numpy as np

    if len(set(x)) < 4:
        return float("nan")
    return float(np.sqrt(np.polyfit(x, y, 1, cov=True)[1][0, 0]))


def figure(width: float, height: float, columns: int = 1):
    """(a new Figure, its axes: one, or a list of COLUMNS side by side)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, (fig.add_subplot() if columns == 1 else list(fig.subplots(1, columns)))


def figure_svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    return buf.getvalue()
