"""The tail-call cost curve (Cloudflare LPC 2020, pchaigno 2021): a chain of XDP
programs run with BPF_PROG_TEST_RUN, best of several rounds, one row per number of
tail calls asked for; its fit and its figure. Beside it calls.py times tail calls
against BPF-to-BPF calls and inlining; both use timing.py's run, fit and figures."""

from __future__ import annotations

import platform

from ..errors import UsageProblem
from ..kernel.counters import CounterTable
from .progress import progress
from .timing import check_repeat, figure, fit_line, run_without_stats

MAX_TAIL_CALL_CNT = 33  # the kernel's limit; used only to label the plot, never to fill in results

BENCH_MODULE = "_bench_tailcalls"
BENCH_ARRAY = "_bench_tc"
FLOOR_COUNTERS = "bm_bench_floor"  # the table of the hand-written per-hop counter (chain_source)
MAX_BENCH_DEPTH = 256


def chain_source(depth: int, index: str, floor_counter=None, array: str = BENCH_ARRAY) -> str:
    """XDP programs for a chain of ``depth`` tail calls. Each program returns
    how many tail calls were taken to reach it, so when the chain ends (an
    empty slot, or the kernel's limit) the test run's retval is the count,
    measured by the programs themselves at no cost per hop.

    const: hop_i calls slot i+1 with a constant index (the JIT patches a direct jump).
    var: one program in every slot reads the count from the packet's first
    byte and calls slot count+1 (an indirect jump, through a retpoline where on).

    floor_counter (const only): a kernel/counters.CounterTable of at least depth + 1 counters;
    each hop first adds 1 to a counter of its own in this CPU's row, at the table's address, written
    by hand: the least any per-hop tail-call counting can cost, beside bpfmagic's counting.
    ``array``: the prog array's name.
    """
    size = depth + 2
    lines = [f"BPF_PROG_ARRAY({array}, {size});"]
    if floor_counter is not None and index != "const":
        raise UsageProblem("the floor counter is measured on the const chain only")
    if index == "const":
        for i in range(depth + 1):
            count = ""
            if floor_counter is not None:
                table = floor_counter
                count = (
                    f"u64 *t = (u64 *)bpf_pseudo_fd(2, {table.fd}); u32 cpu = bpf_get_smp_processor_id(); "
                    f"if (cpu < {table.rows}) t[cpu * {table.width} + {i}] += 1; "
                )
            lines.append(f"int hop{i}(struct xdp_md *ctx) {{ {count}{array}.call(ctx, {i + 1}); return {i}; }}")
    elif index == "var":
        # The count lives in the packet: a value loaded from packet memory is
        # unknown to the verifier, so the index is a variable one.
        lines.append(
            r"""
static __always_inline int step(struct xdp_md *ctx, int first) {
    u8 *count = (u8 *)(long)ctx->data;
    if ((void *)(count + 1) > (void *)(long)ctx->data_end)
        return XDP_ABORTED;
    if (first)
        *count = 0;  /* the packet is reused across repeats: the entry resets the count */
    u32 taken = *count;
    *count = taken + 1;
    TC_ARRAY.call(ctx, taken + 1);
    return taken;
}
int entry(struct xdp_md *ctx) { return step(ctx, 1); }
int hop(struct xdp_md *ctx) { return step(ctx, 0); }
""".replace("TC_ARRAY", array)
        )
    else:
        raise UsageProblem(f"index must be 'const' or 'var' (got {index!r})")
    return "\n".join(lines) + "\n"


def bench_tailcalls(
    session,
    depth: int = 33,
    repeat: int = 100_000,
    index: str = "const",
    rounds: int = 3,
    paths: bool = False,
    count_tail_calls: bool = False,
    floor_counter: bool = False,
):
    """The tail-call cost curve: DataFrame with one row per depth 0..depth
    (tail calls asked for), ``tail_calls`` (taken: the chain's own count) and
    ``ns_per_run`` (best of ``rounds`` test runs of ``repeat`` runs each);
    ``df.attrs`` holds the fit (ns_per_tail_call, intercept_ns) and the setup.
    Loads its own module and array and frees both afterwards. The chain is bare
    unless ``paths`` (path recording) or ``count_tail_calls`` (bpfmagic's per-slot
    counting) put an instrument in it: its cost per hop is the difference of the slopes.
    ``floor_counter``: each hop bumps a counter of its CPU's row written by hand (chain_source),
    the floor any per-hop counting stands on."""
    import pandas as pd

    if not isinstance(depth, int) or not 0 <= depth <= MAX_BENCH_DEPTH:
        raise UsageProblem(f"depth must be an integer 0..{MAX_BENCH_DEPTH} (got {depth!r})")
    repeat = check_repeat(repeat)
    if not isinstance(rounds, int) or rounds < 1:
        raise UsageProblem(f"rounds must be a positive integer (got {rounds!r})")
    if index not in ("const", "var"):
        raise UsageProblem(f"index must be 'const' or 'var' (got {index!r})")
    if BENCH_MODULE in session.modules or BENCH_ARRAY in session.arrays:
        raise UsageProblem(
            f"{BENCH_MODULE}/{BENCH_ARRAY} already exist in this session: is another benchmark "
            f"running? `%bpf unload {BENCH_MODULE}` then `%bpf unload {BENCH_ARRAY}` if not"
        )
    packet = bytes(64)
    best: dict[int, int] = {}
    taken: dict[int, set[int]] = {d: set() for d in range(depth + 1)}
    stats_on_runs = 0
    # Kernel run stats add ~70 ns to every run here (not to each tail call): off while measuring.
    floor_table = CounterTable(FLOOR_COUNTERS, depth + 1) if floor_counter else None
    with session.instrumentation(stats=False):
        try:
            with session.instrumentation(paths=paths):  # the chain records paths only when asked
                source = chain_source(depth, index, floor_table)
                session.load(BENCH_MODULE, source, count_tail_calls=count_tail_calls, origin="bench_tailcalls")
            entry = session.program(f"{BENCH_MODULE}.{'hop0' if index == 'const' else 'entry'}")

            def fill(slot: int) -> None:
                session.slot(f"{BENCH_ARRAY}[{slot}]", f"{BENCH_MODULE}.{f'hop{slot}' if index == 'const' else 'hop'}")

            # Depth d = slots 1..d filled and d+1 empty. Rounds alternate going up
            # (fill slot d, run) and down (empty slot d+1, run): one map update per
            # step, and a disturbance (another process switching kernel stats on,
            # a noisy neighbour) spoils one pass over several depths rather than
            # every run of one depth; each depth keeps its best round.
            with progress(rounds * (depth + 1), "bench tailcalls") as bar:
                for round_number in range(rounds):
                    upward = round_number % 2 == 0
                    for d in range(depth + 1) if upward else range(depth, -1, -1):
                        bar.update()
                        if upward and d >= 1:
                            fill(d)
                        elif not upward and d < depth:
                            session.unslot(f"{BENCH_ARRAY}[{d + 1}]")
                        out, stats_on = run_without_stats(entry, packet, repeat)
                        stats_on_runs += stats_on
                        taken[d].add(out["retval"])
                        best[d] = min(best.get(d, out["duration_ns"]), out["duration_ns"])
        finally:
            if BENCH_MODULE in session.modules:
                session.unload(BENCH_MODULE)
            if BENCH_ARRAY in session.arrays:
                session.unload(BENCH_ARRAY)
            if floor_table is not None:
                floor_table.close()
    rows = []
    for d in range(depth + 1):
        if len(taken[d]) != 1:
            raise RuntimeError(f"the chain of depth {d} took different numbers of tail calls: {sorted(taken[d])}")
        rows.append({"depth": d, "tail_calls": taken[d].pop(), "ns_per_run": best[d]})
    df = pd.DataFrame(rows, columns=["depth", "tail_calls", "ns_per_run"])
    df["index"] = index

    # Fit against tail calls taken, not asked for: past the limit the extra calls
    # fall through and the cost stops growing. The curve has two regimes here:
    # the first few calls overlap with the run's fixed overhead, then each call
    # pays the full latency of the JIT's tail-call counter (kept in memory, via
    # a pointer) — so the per-call figure is the slope of the long-chain part.
    def slope_of(part):
        return fit_line(part["tail_calls"], part["ns_per_run"])

    steady = df[df["tail_calls"] >= STEADY_FROM]
    if steady["tail_calls"].nunique() < 2:  # a short curve: one fit over all of it
        steady = df
    slope, intercept = slope_of(steady)
    df.attrs.update(
        {
            "ns_per_tail_call": slope,
            "intercept_ns": intercept,
            "fit_from": int(steady["tail_calls"].min()),
            "ns_per_tail_call_short": slope_of(df[df["tail_calls"] <= SHORT_UP_TO])[0],
            "ns_per_tail_call_all": slope_of(df)[0],
            "base_ns": float(df.loc[df["tail_calls"] == 0, "ns_per_run"].min()) if (df["tail_calls"] == 0).any() else None,
            "index": index,
            "repeat": repeat,
            "rounds": rounds,
            "max_tail_calls": int(df["tail_calls"].max()),
            "paths": paths,
            "count_tail_calls": count_tail_calls,
            "floor_counter": floor_counter,
            "kernel": platform.release(),
            "stats_on_runs": stats_on_runs,
        }
    )
    return df


STEADY_FROM = 10  # tail calls from which the per-call cost is fitted (the long-chain regime)

INSTRUMENTS = {"counting": {"count_tail_calls": True}, "paths": {"paths": True}, "floor": {"floor": True}}


def bench_instruments(session, depth: int = 33, repeat: int = 5_000, rounds: int = 7, best: int = 8) -> dict:
    """What bpfmagic's instruments add to a const-index tail call: the bare chain, per-slot
    counting, path recording and the floor (a counter written by hand: chain_source) loaded
    side by side, each its own module and array, and measured in turn at every depth
    (best of BEST test runs of REPEAT runs each), so that a drift of the machine between
    variants is a few milliseconds' worth, not a whole sweep's. Per round, each variant's ns per
    tail call is its slope (from STEADY_FROM tail calls on); each instrument's share is
    (its slope - bare's) / bare's of the same round. Returns {"slopes": variant -> [per round],
    instrument -> median share over rounds, "max_tail_calls": ...}; frees what it loaded."""
    import numpy as np

    if not isinstance(depth, int) or not STEADY_FROM + 2 <= depth <= MAX_BENCH_DEPTH:
        raise UsageProblem(f"depth must be an integer {STEADY_FROM + 2}..{MAX_BENCH_DEPTH} (got {depth!r})")
    repeat = check_repeat(repeat)
    variants = {"bare": {}, **INSTRUMENTS}
    loaded, tables, entries = [], [], {}
    packet = bytes(64)
    slopes: dict[str, list[float]] = {name: [] for name in variants}
    taken: dict[int, set[int]] = {}
    stats_on_runs = 0  # runs another process's kernel run stats spoiled despite retries
    try:
        with session.instrumentation(stats=False):
            for name, how in variants.items():
                module, array = f"{BENCH_MODULE}_{name}", f"{BENCH_ARRAY}_{name}"
                floor = CounterTable(FLOOR_COUNTERS, depth + 1) if how.get("floor") else None
                if floor is not None:
                    tables.append(floor)
                with session.instrumentation(paths=bool(how.get("paths"))):
                    source = chain_source(depth, "const", floor, array)
                    session.load(module, source, count_tail_calls=bool(how.get("count_tail_calls")), origin="bench_instruments")
                loaded += [module, array]
                entries[name] = (session.program(f"{module}.hop0"), module, array)
            with progress(rounds * (depth + 1), "bench instruments") as bar:
                for round_number in range(rounds):
                    best_ns: dict[str, dict[int, int]] = {name: {} for name in variants}
                    upward = round_number % 2 == 0
                    for step, d in enumerate(range(depth + 1) if upward else range(depth, -1, -1)):
                        bar.update()
                        order = list(variants)[step % len(variants) :] + list(variants)[: step % len(variants)]
                        for name in order:
                            entry, module, array = entries[name]
                            if upward and d >= 1:
                                session.slot(f"{array}[{d}]", f"{module}.hop{d}")
                            elif not upward and d < depth:
                                session.unslot(f"{array}[{d + 1}]")
                            for _ in range(best):
                                out, stats_on = run_without_stats(entry, packet, repeat)
                                stats_on_runs += stats_on
                                taken.setdefault(d, set()).add(out["retval"])
                                best_ns[name][d] = min(best_ns[name].get(d, out["duration_ns"]), out["duration_ns"])
                    for name in variants:
                        points = sorted(best_ns[name].items())
                        xs = [min(taken[d]) for d, _ in points]  # taken, not asked for: the chain's own count
                        keep = [i for i, x in enumerate(xs) if x >= STEADY_FROM]
                        slope, _ = fit_line(np.array(xs)[keep], np.array([ns for _, ns in points])[keep])
                        slopes[name].append(slope)
    finally:
        for name in loaded[0::2] + loaded[1::2]:  # the modules, then their arrays
            if name in session.modules or name in session.arrays:
                session.unload(name)
        for table in tables:
            table.close()
    wrong = {d: sorted(v) for d, v in taken.items() if len(v) != 1}
    if wrong:  # the instruments must not change what the chain does
        raise RuntimeError(f"the chains took different numbers of tail calls at some depths: {wrong}")
    shares = {name: float(np.median([(slopes[name][r] - slopes["bare"][r]) / slopes["bare"][r] for r in range(rounds)])) for name in INSTRUMENTS}
    most = max(max(v) for v in taken.values())
    setup = {"depth": depth, "repeat": repeat, "rounds": rounds, "best": best, "max_tail_calls": most, "stats_on_runs": stats_on_runs}
    return {"slopes": slopes, **setup, **shares}


SHORT_UP_TO = 6  # the short-chain regime, reported beside it


def describe_fit(df) -> str:
    a = df.attrs
    text = f"{a['ns_per_tail_call']:.2f} ns per tail call ({a['index']} index, fitted from {a['fit_from']} tail calls on)"
    if a.get("ns_per_tail_call_short") == a.get("ns_per_tail_call_short"):  # not NaN
        text += f"; {a['ns_per_tail_call_short']:.2f} ns each for the first {SHORT_UP_TO}"
    if a.get("base_ns") is not None:
        text += f"; {a['base_ns']:.0f} ns per run without tail calls"
    text += f"; at most {a['max_tail_calls']} tail calls taken; kernel {a['kernel']}, best of {a['rounds']} x {a['repeat']:,} runs"
    if a.get("stats_on_runs"):
        text += f" ({a['stats_on_runs']} runs had kernel run stats on: another process holds them)"
    return text


def instruments_frame(result: dict):
    """bench_instruments' result as a DataFrame: a row per chain, its median ns per tail call, what it
    adds to the bare chain's (ns, and as a share of it: the median of the rounds' shares)."""
    import statistics

    import pandas as pd

    slopes = result["slopes"]
    bare = statistics.median(slopes["bare"])
    rows = [
        {
            "chain": name,
            "ns_per_tail_call": statistics.median(values),
            "added_ns": statistics.median(values) - bare,
            "added": result.get(name, 0.0),
        }
        for name, values in slopes.items()
    ]
    df = pd.DataFrame(rows, columns=["chain", "ns_per_tail_call", "added_ns", "added"])
    df.attrs.update({k: v for k, v in result.items() if k not in INSTRUMENTS} | {"kernel": platform.release()})
    return df


def describe_instruments(df) -> str:
    a = df.attrs
    by = df.set_index("chain")
    text = ", ".join(f"{name} +{by.loc[name, 'added_ns']:.2f} ns ({by.loc[name, 'added'] * 100:.0f}%)" for name in INSTRUMENTS)
    held = f"; {a['stats_on_runs']} runs had kernel run stats on (another process holds them)" if a.get("stats_on_runs") else ""
    return (
        f"a const-index tail call: {by.loc['bare', 'ns_per_tail_call']:.2f} ns bare; {text} "
        f"(floor: a counter written by hand; medians of {a['rounds']} rounds, kernel {a['kernel']}; "
        f"a difference under a nanosecond may be this machine's noise{held})"
    )


def plot_tailcalls(*frames, ax=None):
    """ns_per_run against depth for each bench_tailcalls DataFrame, with its
    fit (flat past the most tail calls taken). Returns the matplotlib Figure."""
    import numpy as np

    fig, ax = figure(7, 4) if ax is None else (ax.figure, ax)
    for df in frames:
        a = df.attrs
        points = ax.plot(df["depth"], df["ns_per_run"], "o", ms=4, label=f"{a['index']} index (measured)")
        depth = np.arange(a.get("fit_from", 0), int(df["depth"].max()) + 1)  # the fitted regime only
        taken = np.minimum(depth, a["max_tail_calls"])
        ax.plot(
            depth,
            a["intercept_ns"] + a["ns_per_tail_call"] * taken,
            "-",
            color=points[0].get_color(),
            label=f"fit from {a.get('fit_from', 0)}: {a['ns_per_tail_call']:.2f} ns/tail call",
        )
    if frames and max(int(df["depth"].max()) for df in frames) > MAX_TAIL_CALL_CNT:
        ax.axvline(MAX_TAIL_CALL_CNT, color="grey", ls="--", lw=1)
        ax.annotate(
            f"kernel limit ({MAX_TAIL_CALL_CNT})",
            (MAX_TAIL_CALL_CNT, ax.get_ylim()[0]),
            xytext=(-4, 4),
            textcoords="offset points",
            ha="right",
            color="grey",
            fontsize=8,
        )
    ax.set_xlabel("tail calls asked for (chain depth)")
    ax.set_ylabel("ns per run (BPF_PROG_TEST_RUN)")
    ax.set_title(f"Tail-call cost, XDP, kernel {platform.release()}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
