"""BPF_PROG_TEST_RUN for one program of the session, and the tail-call cost
curve measured with it.

``test_run`` runs MODULE.FUNC on chosen input (a packet for XDP, tc and
socket filters; a context for raw tracepoints) and reports the return value
by name, the kernel's ns per run, the data out and which slots the run's
tail calls went through.

``bench_tailcalls`` is the published method (Cloudflare LPC 2020, pchaigno
2021): a chain of XDP programs run with BPF_PROG_TEST_RUN, best of several
rounds, one row per number of tail calls asked for.
"""

from __future__ import annotations

import errno
import io
import operator
import os
import platform
from dataclasses import dataclass, field

from ..errors import UsageProblem
from ..kernel import libbpf
from ..progarray import slot_counts, uncounted_callers
from . import packets

MAX_TAIL_CALL_CNT = 33  # the kernel's limit; used only to label the plot, never to fill in results

XDP_ACTIONS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}
TC_ACTIONS = {
    -1: "TC_ACT_UNSPEC",
    0: "TC_ACT_OK",
    1: "TC_ACT_RECLASSIFY",
    2: "TC_ACT_SHOT",
    3: "TC_ACT_PIPE",
    4: "TC_ACT_STOLEN",
    5: "TC_ACT_QUEUED",
    6: "TC_ACT_REPEAT",
    7: "TC_ACT_REDIRECT",
    8: "TC_ACT_TRAP",
}
PACKET_TYPES = {"xdp", "sched_cls", "sched_act", "socket_filter", "cgroup_skb", "lwt_in", "flow_dissector"}
# struct bpf_raw_tracepoint_args is u64 args[]; the kernel accepts up to
# MAX_BPF_FUNC_ARGS (12) of them, and a program may read any of the 12.
RAW_TP_CTX_SIZE = 12 * 8


def retval_name(prog_type: str, retval: int) -> str | None:
    """XDP_PASS, TC_ACT_SHOT, ... for the program types whose return value is an action."""
    if prog_type == "xdp":
        return XDP_ACTIONS.get(retval)
    if prog_type in ("sched_cls", "sched_act"):
        return TC_ACTIONS.get(retval)
    if prog_type == "socket_filter":  # the number of bytes to keep
        return "drop" if retval == 0 else f"keep {retval} bytes"
    if prog_type == "cgroup_skb":
        return {0: "drop", 1: "allow"}.get(retval)
    return None


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


def _signed32(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


def as_bytes(value, what: str) -> bytes | None:
    """bytes-like, or hex text ('45 00 ...', 'de:ad:..')."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return packets.parse_hex(value)
        except ValueError as e:
            raise UsageProblem(f"{what}: {e}") from None
    try:
        return bytes(value)
    except TypeError:
        raise UsageProblem(f"{what}: give bytes or hex text, not {type(value).__name__}") from None


@dataclass
class TestRunResult:
    """What one BPF_PROG_TEST_RUN returned."""

    __test__ = False  # not a pytest test class, whatever its name says

    program: str
    type: str
    retval: int
    retval_name: str | None
    ns_per_run: int | None  # the kernel's average over `repeat` runs; None where it does not time (raw_tp)
    repeat: int
    data_in: bytes | None
    data_out: bytes | None
    tail_calls: object = None  # DataFrame: slots of this chain whose counters moved during the run
    stats_on: bool = False  # kernel run stats were on: each run's time includes their accounting
    path: object = None  # DataFrame of the (last) run's hops, with test_run(..., path=True)
    path_text: str = ""  # the same as one line: entry → parse_eth → parse_ip ✗ jt[5] empty
    counters_in: list = field(default_factory=list)  # modules of the chain whose tail calls bump per-slot counters
    not_counted: dict = field(default_factory=dict)  # array -> modules of the chain whose tail calls into it go uncounted

    @property
    def retval_text(self) -> str:
        return f"{self.retval} ({self.retval_name})" if self.retval_name else str(self.retval)

    def summary(self) -> str:
        parts = [f"{self.program} ({self.type}): retval {self.retval_text}"]
        if self.ns_per_run is not None:
            timing = f"{self.ns_per_run} ns/run over {self.repeat:,} run{'s' if self.repeat != 1 else ''}"
            if self.stats_on:
                timing += " (with kernel run stats on, which add their own cost to every run: `%bpf stats --off`)"
            parts.append(timing)
        if self.data_out is not None:
            changed = "unchanged" if self.data_out == self.data_in else "changed"
            parts.append(f"data out {len(self.data_out)} bytes ({changed}): {packets.describe(self.data_out)}")
        text = "; ".join(parts)
        if self.ns_per_run is not None and self.counters_in:
            # bench/tailcalls.py: about 25% on a const-key tail call (one per-CPU counter per hop; 120% before)
            text += (
                f"\nnote: per-slot tail-call counters are in this chain's timed path ({', '.join(self.counters_in)}); "
                "load with --no-count (count_tail_calls=False) for a bare timing"
            )
        if self.not_counted:
            text += "\nnote: tail calls not counted in " + "; ".join(
                f"{array} (by {', '.join(mods)})" for array, mods in sorted(self.not_counted.items())
            ) + ": the table of tail calls leaves those arrays out (--no-count)"
        if self.path_text:
            text += f"\npath: {self.path_text}"
        if self.type == "socket_filter":
            text += (
                "\nnote: BPF_PROG_TEST_RUN hands a socket filter the packet from L3 on (the Ethernet "
                "header is pulled: offset 0 is the IP header), unlike an AF_PACKET socket, where it "
                "sees the frame from L2"
            )
        return text

    def __repr__(self) -> str:
        text = self.summary()
        if self.tail_calls is not None and len(self.tail_calls):
            text += "\ntail calls during the run:\n" + self.tail_calls.to_string(index=False)
        return text

    def _repr_html_(self) -> str:
        import html

        out = f"<p><code>{html.escape(self.summary())}</code></p>"
        if self.data_out is not None:
            out += f"<pre>{html.escape(hexdump(self.data_out, limit=128))}</pre>"
        if self.tail_calls is not None and len(self.tail_calls):
            out += "<p>tail calls during the run:</p>" + self.tail_calls.to_html(index=False)
        return out


def hexdump(data: bytes, width: int = 16, limit: int | None = None) -> str:
    shown = data if limit is None else data[:limit]
    lines = [f"{i:04x}  {shown[i : i + width].hex(' ')}" for i in range(0, len(shown), width)]
    if limit is not None and len(data) > limit:
        lines.append(f"... {len(data) - limit} more bytes")
    return "\n".join(lines)


TAIL_CALL_COLUMNS = ["slot", "array", "index", "key", "program", "calls", "taken", "missed"]


def _count_delta(arrays, before, after, blind=()):
    import pandas as pd

    rows = []
    for (name, index), (calls, missed) in sorted(after.items()):
        if name in blind:
            continue  # some callers count nothing: a part of the calls is no count
        c0, m0 = before.get((name, index), (0, 0))
        if calls - c0 or missed - m0:
            array = arrays[name]
            program = array.entries.get(index)
            rows.append(
                {
                    "slot": array.label(index),
                    "array": name,
                    "index": index,
                    "key": array.key_name(index),
                    "program": program.qualname if program else None,
                    "calls": calls - c0,
                    "taken": (calls - c0) - (missed - m0),
                    "missed": missed - m0,
                }
            )
    return pd.DataFrame(rows, columns=TAIL_CALL_COLUMNS)


def reachable(session, program) -> tuple[dict, list]:
    """The session arrays a tail-call chain starting at PROGRAM can reach:
    those its module's code calls into, then those called by the modules of
    the programs sitting in them, and so on; and the modules whose code that
    chain can run."""
    found: dict = {}
    modules, seen, visited = [program.module], set(), []
    while modules:
        module = modules.pop()
        if module.name in seen:
            continue
        seen.add(module.name)
        visited.append(module)
        # Call sites the front end resolved, and arrays the code names (a call inside a macro, a pointer).
        names = {t.array for t in module.syntax.tail_calls if t.array} | {n for n in session.arrays if module.syntax.uses(n)}
        for name in names:
            array = session.arrays.get(name)
            if array is not None and name not in found:
                found[name] = array
                modules += [p.module for p in array.entries.values()]
    return found, visited


def test_run(session, spec: str, data=None, ctx=None, repeat: int = 1, type: str | None = None, path: bool = False) -> TestRunResult:
    """Run MODULE.FUNC once or ``repeat`` times through BPF_PROG_TEST_RUN.

    data: the packet (bytes or hex text) for XDP/tc/socket filters; default a
        small UDP/IPv4 frame (packets.udp_packet()).
    ctx: the context in (bytes or hex): xdp_md / __sk_buff fields, or the
        raw tracepoint's u64 args (default: 12 zero args).
    type: load FUNC with this program type instead of the one its context
        parameter implies (only when it is not loaded yet).

    With repeat > 1 the kernel runs every repeat on the same buffer, so a
    program's writes to the packet accumulate. Socket filters see the packet
    from the IP header on (the kernel strips the Ethernet header and zeroes
    it in data out).
    """
    repeat = check_repeat(repeat)
    data, ctx = as_bytes(data, "data"), as_bytes(ctx, "ctx")
    # The registry is read in one piece under the session's lock; the run itself goes
    # outside it (a long --repeat must not stop other threads) on a duplicate of the
    # program's fd, which keeps the program loaded if another thread re-runs its cell.
    with session._lock:
        program = session.program(spec, type)
        # Only the arrays this program's chain can reach: a dispatcher attached elsewhere
        # keeps counting during the run, and its slots have nothing to do with it.
        arrays, chain_modules = reachable(session, program)
        counted = [m.name for m in chain_modules if m.counts_tail_calls]
        blind = {name: mods for name, mods in uncounted_callers(chain_modules).items() if name in arrays}
        path_maps = session._path_maps
        fd = os.dup(program.fd)
    try:
        out, before, after, runs, serials, data, ctx = _run_held(session, spec, program, fd, arrays, path, data, ctx, repeat)
    finally:
        os.close(fd)
    retval = out["retval"]
    if program.type in ("sched_cls", "sched_act"):
        retval = _signed32(retval)
    hops = text = None
    if path:
        from .paths import decode, describe, path_frame

        # The run used one CPU: the record whose serial moved (a new run began there).
        records = _path_records(session, path_maps)
        moved = [r for r, s0 in zip(records, serials) if decode(r)[3] != s0]
        if moved:
            entry, raw_hops, _, _ = decode(moved[-1])
            with session._lock:  # names the hops from the registry
                rows, text = describe(session, entry, raw_hops)
            hops = path_frame(rows)
        else:
            hops, text = path_frame([]), f"{program.qualname} (no path recorded)"
    with session._lock:
        tail_calls = _count_delta(arrays, before, after, blind)
    return TestRunResult(
        path=hops,
        path_text=text or "",
        program=program.qualname,
        type=program.type,
        retval=retval,
        retval_name=retval_name(program.type, retval),
        ns_per_run=None if program.type == "raw_tracepoint" else out["duration_ns"],
        repeat=repeat,
        data_in=data,
        data_out=out["data_out"],
        tail_calls=tail_calls,
        stats_on=runs > 0,
        counters_in=counted,
        not_counted=blind,
    )


def _path_records(session, path_maps) -> list[bytes]:
    """The path maps' records, read under the session's lock while they are still the session's."""
    with session._lock:
        if path_maps is None or session._path_maps is not path_maps:
            raise UsageProblem("the session's path maps were freed (a reset) during the run; run it again")
        return path_maps.records()


def _run_held(session, spec: str, program, fd: int, arrays: dict, path: bool, data, ctx, repeat: int):
    """One BPF_PROG_TEST_RUN on FD (PROGRAM's, held): (its output, slot counts before and
    after, kernel runs counted, path serials before, the data and ctx it ran with). The
    slot counters are read under the session's lock, from the arrays still in the session
    (another thread may free one)."""
    if program.type == "raw_tracepoint":
        if data is not None:
            raise UsageProblem(
                f"{spec} is a raw_tracepoint program: the kernel test-runs those with a context (--ctx, the u64 args) only, no data (EINVAL)"
            )
        if repeat != 1:
            raise UsageProblem(
                f"{spec} is a raw_tracepoint program: the kernel runs those once per test run "
                f"(repeat is refused with EINVAL) and does not time them; drop --repeat"
            )
        if ctx is None:
            ctx = bytes(RAW_TP_CTX_SIZE)
        elif len(ctx) % 8 or len(ctx) > RAW_TP_CTX_SIZE:
            raise UsageProblem(f"raw_tracepoint ctx: a whole number of u64 args, at most 12 (got {len(ctx)} bytes)")
    elif program.type in PACKET_TYPES and data is None:
        data = packets.udp_packet()
    if path and not program.module.paths:
        raise UsageProblem(f"{spec} was loaded without paths: `%bpf paths --on` (Session.enable_paths()), then load (or re-run) the chain's cells")
    serials = None
    if path:
        from .paths import decode

        serials = [decode(r)[3] for r in _path_records(session, session._path_maps)]

    def counts():
        with session._lock:
            return slot_counts(a for a in arrays.values() if session.arrays.get(a.name) is a)

    before = counts()
    runs_before = int(libbpf.fdinfo(fd).get("run_cnt", 0))
    try:
        # The kernel counts repeat 0 as 1; raw_tp wants exactly 0.
        out = libbpf.test_run(fd, data=data, ctx=ctx, repeat=0 if program.type == "raw_tracepoint" else repeat)
    except OSError as e:
        raise _test_run_error(spec, program.type, e, data, ctx) from None
    after = counts()
    runs = int(libbpf.fdinfo(fd).get("run_cnt", 0)) - runs_before  # moves only while some process holds kernel run stats on
    return out, before, after, runs, serials, data, ctx


def _test_run_error(spec: str, ptype: str, e: OSError, data, ctx) -> UsageProblem:
    if e.errno in (errno.ENOTSUP, 524):  # 524: the kernel's ENOTSUPP
        return UsageProblem(
            f"{spec}: the kernel cannot test-run {ptype} programs (BPF_PROG_TEST_RUN: not "
            f"supported). It can: xdp, sched_cls, socket_filter, raw_tracepoint, ...; load the "
            f"function as one of those with type=... / --type."
        )
    if e.errno == errno.EINVAL:
        hint = ""
        if data is not None and len(data) < 14 and ptype in PACKET_TYPES:
            hint = f" The packet has {len(data)} bytes; the kernel wants at least an Ethernet header (14)."
        elif ctx is not None:
            hint = f" The kernel refused the ctx ({len(ctx)} bytes): it must fit the program type's context struct."
        return UsageProblem(f"{spec} ({ptype}): BPF_PROG_TEST_RUN refused the input (EINVAL).{hint}")
    return UsageProblem(f"{spec} ({ptype}): BPF_PROG_TEST_RUN failed: {e.strerror}")


# ------------------------------------------------------------ tail-call curve

BENCH_MODULE = "_bench_tailcalls"
BENCH_ARRAY = "_bench_tc"
MAX_BENCH_DEPTH = 256


def chain_source(depth: int, index: str) -> str:
    """XDP programs for a chain of ``depth`` tail calls. Each program returns
    how many tail calls were taken to reach it, so when the chain ends (an
    empty slot, or the kernel's limit) the test run's retval is the count,
    measured by the programs themselves at no cost per hop.

    const: hop_i calls slot i+1 with a constant index (the JIT patches a direct jump).
    var: one program in every slot reads the count from the packet's first
    byte and calls slot count+1 (an indirect jump, through a retpoline where on).
    """
    size = depth + 2
    lines = [f"BPF_PROG_ARRAY({BENCH_ARRAY}, {size});"]
    if index == "const":
        for i in range(depth + 1):
            lines.append(f"int hop{i}(struct xdp_md *ctx) {{ {BENCH_ARRAY}.call(ctx, {i + 1}); return {i}; }}")
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
""".replace("TC_ARRAY", BENCH_ARRAY)
        )
    else:
        raise UsageProblem(f"index must be 'const' or 'var' (got {index!r})")
    return "\n".join(lines) + "\n"


def bench_tailcalls(
    session, depth: int = 33, repeat: int = 100_000, index: str = "const", rounds: int = 3, paths: bool = False, count_tail_calls: bool = False
):
    """The tail-call cost curve: DataFrame with one row per depth 0..depth
    (tail calls asked for), ``tail_calls`` (taken: the chain's own count) and
    ``ns_per_run`` (best of ``rounds`` test runs of ``repeat`` runs each);
    ``df.attrs`` holds the fit (ns_per_tail_call, intercept_ns) and the setup.
    Loads its own module and array and frees both afterwards. The chain is bare
    unless ``paths`` (path recording) or ``count_tail_calls`` (bpfmagic's per-slot
    counting) put an instrument in it: its cost per hop is the difference of the slopes."""
    import numpy as np
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
    had_stats = session.stats_enabled
    session.disable_stats()
    try:
        had_paths = session.paths_enabled
        if paths:
            session.enable_paths()
        else:
            session.paths_enabled = False
        try:
            session.load(BENCH_MODULE, chain_source(depth, index), count_tail_calls=count_tail_calls, origin="bench_tailcalls")
        finally:
            session.paths_enabled = had_paths
        entry = session.program(f"{BENCH_MODULE}.{'hop0' if index == 'const' else 'entry'}")

        def fill(slot: int) -> None:
            session.slot(f"{BENCH_ARRAY}[{slot}]", f"{BENCH_MODULE}.{f'hop{slot}' if index == 'const' else 'hop'}")

        # Depth d = slots 1..d filled and d+1 empty. Rounds alternate going up
        # (fill slot d, run) and down (empty slot d+1, run): one map update per
        # step, and a disturbance (another process switching kernel stats on,
        # a noisy neighbour) spoils one pass over several depths rather than
        # every run of one depth; each depth keeps its best round.
        for round_number in range(rounds):
            upward = round_number % 2 == 0
            for d in range(depth + 1) if upward else range(depth, -1, -1):
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
        if had_stats:
            session.enable_stats()
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
        if part["tail_calls"].nunique() < 2:
            return float("nan"), float("nan")
        slope, intercept = np.polyfit(part["tail_calls"], part["ns_per_run"], 1)
        return float(slope), float(intercept)

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
            "kernel": platform.release(),
            "stats_on_runs": stats_on_runs,
        }
    )
    return df


STEADY_FROM = 10  # tail calls from which the per-call cost is fitted (the long-chain regime)
SHORT_UP_TO = 6  # the short-chain regime, reported beside it


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


def plot_tailcalls(*frames, ax=None):
    """ns_per_run against depth for each bench_tailcalls DataFrame, with its
    fit (flat past the most tail calls taken). Returns the matplotlib Figure."""
    import numpy as np

    # no pyplot: no GUI backend, no global figure state
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(7, 4), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
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


def figure_svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    return buf.getvalue()
