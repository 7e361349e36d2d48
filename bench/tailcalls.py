"""Tail-call cost on this kernel: ns per tail call for a constant index (the
JIT patches a direct jump) and a variable index (an indirect jump, through
a retpoline where those are on), measured the published way: a chain of XDP
programs run with BPF_PROG_TEST_RUN, best of several rounds, the slope of ns
per run against tail calls taken.

Usage: python bench/tailcalls.py [--depth 35] [--repeat 100000] [--rounds 3] [--plot FILE.svg]
Needs root (or CAP_BPF + CAP_NET_ADMIN) and BCC.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

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
    parser.add_argument("--plot", metavar="FILE", help="also write the curves (svg/png/pdf by the extension)")
    args = parser.parse_args(argv)

    from bpfmagic import Session
    from bpfmagic.experiments import testrun

    frames = {}
    with Session() as session:
        for index in ("const", "var"):
            started = time.perf_counter()
            frames[index] = session.bench_tailcalls(depth=args.depth, repeat=args.repeat, index=index, rounds=args.rounds)
            frames[index].attrs["seconds"] = time.perf_counter() - started
        # The same const chain with path recording (%bpf paths --on), in the same run.
        started = time.perf_counter()
        traced = session.bench_tailcalls(depth=min(args.depth, 33), repeat=args.repeat, index="const", rounds=args.rounds, paths=True)
        traced.attrs["seconds"] = time.perf_counter() - started
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
    bare, with_paths = frames["const"].attrs, traced.attrs
    print(
        f"paths on (const index): {with_paths['ns_per_tail_call']:.2f} ns per tail call vs "
        f"{bare['ns_per_tail_call']:.2f} bare: path recording costs "
        f"{with_paths['ns_per_tail_call'] - bare['ns_per_tail_call']:.2f} ns per hop "
        f"({with_paths['ns_per_tail_call'] / bare['ns_per_tail_call']:.1f}x); base "
        f"{with_paths['base_ns']:.0f} vs {bare['base_ns']:.0f} ns per run; {with_paths['seconds']:.1f} s"
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
