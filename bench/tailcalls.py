"""Tail-call cost on this kernel: ns per tail call for a constant index (the
JIT patches a direct jump) and a variable index (an indirect jump, through
a retpoline where those are on), measured the published way: a chain of XDP
programs run with BPF_PROG_TEST_RUN, best of several rounds, the slope of ns
per run against tail calls taken.

Then what bpfmagic's instruments add to a tail call (issue 24), measured in
the same run: the const chain bare, with per-slot counting (what every cell
gets unless --no-count), with path recording (%bpf paths --on), and the floor
of any per-hop counting: one add per hop in this CPU's row of a counter table
reached by address, written by hand (what the counting does: kernel/counters.py).
The four chains are loaded side by side and measured in turn at every depth
(experiments/tailcalls.bench_instruments), so the machine's drift falls on all
of them alike; each one's slope against the bare one's of the same round,
median over rounds. Exits 1 when counting adds more than
TARGET_COUNTING or paths more than TARGET_PATHS of the bare tail call (the
floor row says whether per-hop counting could meet its target at all).

Usage: python bench/tailcalls.py [--depth 35] [--repeat 100000] [--rounds 3] [--overhead-rounds 7]
       [--overhead-repeat 5000] [--overhead-best 8] [--plot FILE.svg] [--smoke]
Needs root (or CAP_BPF + CAP_NET_ADMIN) and BCC.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

TARGET_COUNTING = 0.10  # per-slot counting: at most 10% added to a tail call
TARGET_PATHS = 1.0  # path recording: at most 1x the tail call's own cost per hop

# Published figures, for context (same method: XDP chain, BPF_PROG_TEST_RUN).
PUBLISHED = [
    ("Cloudflare, LPC 2020", "kernels before 5.5", "20-30 ns"),
    ("Cloudflare, LPC 2020", "5.5 and later", "under 10 ns"),
    ("pchaigno, 2021", "5.5-5.9", "about 2.8 ns"),
    ("pchaigno, 2021", "5.10", "about 9 ns"),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=35, help="tail calls asked for, 0..DEPTH (default 35)")
    parser.add_argument("--repeat", type=int, default=100_000, help="runs per test run (default 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="best of ROUNDS (default 3)")
    parser.add_argument("--overhead-rounds", type=int, default=7, help="interleaved rounds of bare / counting / paths / floor (default 7)")
    parser.add_argument("--overhead-repeat", type=int, default=5_000, help="runs per test run of the instruments' chains (default 5000)")
    parser.add_argument("--overhead-best", type=int, default=8, help="best of this many test runs per depth, per chain and round (default 8)")
    parser.add_argument("--plot", metavar="FILE", help="also write the curves (svg/png/pdf by the extension)")
    parser.add_argument("--smoke", action="store_true", help="a short run that checks the script works; targets not judged")
    args = parser.parse_args(argv)
    if args.smoke:
        args.depth, args.repeat, args.rounds, args.overhead_rounds, args.overhead_repeat, args.overhead_best = 12, 2_000, 1, 1, 2_000, 2

    from bpfmagic import Session
    from bpfmagic.experiments import testrun

    frames = {}
    with Session() as session:
        for index in ("const", "var"):
            started = time.perf_counter()
            frames[index] = session.bench_tailcalls(depth=args.depth, repeat=args.repeat, index=index, rounds=args.rounds)
            frames[index].attrs["seconds"] = time.perf_counter() - started
        # the four chains side by side, in turn at every depth (experiments/tailcalls.bench_instruments)
        overhead = session.bench_instruments(min(args.depth, 33), args.overhead_repeat, args.overhead_rounds, args.overhead_best)
        overhead.attrs["loadavg"] = _loadavg()
    print(
        f"tail-call cost, XDP chain, kernel {platform.release()}, depth 0..{args.depth}, "
        f"best of {args.rounds} x {args.repeat:,} runs, kernel run stats off while measuring"
    )
    print(f"{'index':<6} {'ns/tail call':>12} {'first 6 each':>12} {'base ns/run':>12} {'max taken':>10} {'ns at max':>10} {'seconds':>8}")
    for index, df in frames.items():
        a = df.attrs
        print(
            f"{index:<6} {a['ns_per_tail_call']:>12.2f} {a['ns_per_tail_call_short']:>12.2f} {a['base_ns']:>12.1f} "
            f"{a['max_tail_calls']:>10} {int(df['ns_per_run'].iloc[-1]):>10} {a['seconds']:>8.1f}"
        )
    const, var = (frames[i].attrs["ns_per_tail_call"] for i in ("const", "var"))
    print(
        f"var / const: {var / const:.1f}x per tail call (ns/tail call: slope fitted from "
        f"{frames['const'].attrs['fit_from']} tail calls on, where each call pays its full latency)"
    )
    held = sum(df.attrs["stats_on_runs"] for df in frames.values())
    if held:
        print(f"({held} runs had kernel run stats on despite retries: another process holds them)")
    print("\npublished, for context:")
    for source, kernels, figure in PUBLISHED:
        print(f"  {source:<22} {kernels:<20} {figure}")

    if args.plot:
        fig = testrun.plot_tailcalls(frames["const"], frames["var"])
        fig.savefig(args.plot)
        print(f"\nplot: {args.plot}")

    print_overhead(overhead, args)
    if args.smoke:
        print("smoke run: the instruments' targets are not judged on so short a run")
        return 0
    added = overhead.set_index("chain")["added"]
    missed = shortfalls(added["counting"], added["paths"])
    for message in missed:
        print(f"TARGET MISSED: {message}", file=sys.stderr)
    if not missed:
        print("targets met")
    return 1 if missed else 0


def print_overhead(overhead, args) -> None:
    """OVERHEAD: Session.bench_instruments' DataFrame (a row per chain), its rounds in .attrs."""
    a = overhead.attrs
    print(
        f"\ninstruments' cost per tail call (const chain, depth 0..{a['depth']}, {a['rounds']} rounds, the chains "
        f"in turn at each depth, best-of-{a['best']} x {a['repeat']:,} runs per depth; slopes, median over rounds; "
        f"/proc/loadavg {a['loadavg']}):"
    )
    print(f"{'chain':<10} {'ns/tail call':>12} {'added ns':>9} {'added':>8} {'target':>8}   rounds (ns/tail call)")
    targets = {"counting": TARGET_COUNTING, "paths": TARGET_PATHS}
    for row in overhead.itertuples():
        added = f"{row.added * 100:>7.0f}%" if row.chain != "bare" else f"{'':>8}"
        target = f"<={targets[row.chain] * 100:.0f}%" if row.chain in targets else ""
        every = " ".join(f"{x:.2f}" for x in a["slopes"][row.chain])
        print(f"{row.chain:<10} {row.ns_per_tail_call:>12.2f} {row.added_ns:>9.2f} {added} {target:>8}   {every}")
    print("(added: the instrument's slope minus the bare one of the same round, over the bare one;")
    print(" floor: one add per hop in this CPU's row at a fixed address, by hand: the least per-hop counting can add)")
    by = overhead.set_index("chain")
    floor, counting = by.loc["floor", "added"], by.loc["counting", "added"]
    print(f"counting adds {counting * 100:.0f}% where the floor adds {floor * 100:.0f}%", end="")
    if counting > TARGET_COUNTING and floor > TARGET_COUNTING:
        print(f": the floor itself is over the {TARGET_COUNTING * 100:.0f}% target in this run, so no per-hop counting met it")
    elif abs(counting - floor) * by.loc["bare", "ns_per_tail_call"] < 1.0:
        print(" (the same code: a difference under 1 ns is this machine's noise)")
    else:
        print()


def shortfalls(counting: float, paths: float) -> list[str]:
    """The instruments' targets missed, given what each adds per tail call (a fraction of the bare one)."""
    out = []
    if not counting <= TARGET_COUNTING:
        out.append(f"per-slot counting adds {counting * 100:.0f}% to a tail call (target <= {TARGET_COUNTING * 100:.0f}%)")
    if not paths <= TARGET_PATHS:
        out.append(f"path recording adds {paths:.2f}x a tail call per hop (target <= {TARGET_PATHS:.2f}x)")
    return out


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
