"""Running programs and timing them: ``%bpf run``, ``stats``, ``bench``."""

from __future__ import annotations

from ..errors import UsageProblem
from . import display
from .registry import Command, Notebook, argument, command, one_of


@command("run", python='s.test_run("MODULE.FUNC", data=None, ctx=None, repeat=1, type=None, path=False)')
@argument("program", metavar="MODULE.FUNC", completes="program")
@argument("--repeat", type=int, default=1, metavar="N", help="runs to average over, 1..2,147,483,647 (not raw_tracepoint)")
@argument("--data", metavar="HEX", help="packet bytes in hex (default: a UDP/IPv4 frame); {pkt.hex()} passes a Python value")
@argument("--ctx", metavar="HEX", help="context in: xdp_md/__sk_buff bytes, or raw_tp u64 args")
@argument("--type", help="load FUNC as this program type (default: what its context parameter implies)")
@argument("--path", action="store_true", help="the way the run went through the chain (paths on)")
def run(args, notebook: Notebook):
    """BPF_PROG_TEST_RUN: run MODULE.FUNC on a packet/context; retval, ns per run, data out"""
    result = notebook.session.test_run(args.program, data=args.data, ctx=args.ctx, repeat=args.repeat, type=args.type, path=args.path)
    if args.path:
        print(result.path_text)
    return result


@command("stats", python="s.stats(since=None); s.enable_stats(), s.disable_stats()")
@one_of(
    argument("--on", action="store_true", help="keep kernel run stats on (the default)"),
    argument("--off", action="store_true", help="stop the kernel's run stats (they cost ~10-70 ns per run)"),
)
def stats(args, notebook: Notebook):
    """per-program run_cnt, run_time_ns, avg_ns, tail calls in, missed"""
    session = notebook.session
    if args.off:
        session.disable_stats()
        print("kernel run stats off for this session (counts stay where they are)")
    elif args.on:
        session.enable_stats()
    frame = session.stats()
    if not session.stats_enabled and not args.off:
        print("note: kernel run stats are off in this session (`%bpf stats --on`); run_cnt may be stale")
    display.not_counted(frame)
    return frame


@command(
    "bench",
    python='s.bench_tailcalls(depth=33, repeat=100_000, index="const", rounds=3), s.bench_calls(depths=..., repeat=..., rounds=5), '
    "s.bench_instruments(depth=33, repeat=5_000, rounds=7), s.call_limits()",
)
@argument("what", choices=["tailcalls", "calls", "instruments", "limits"])
@argument("--depth", type=int, default=33, help="tailcalls: tail calls asked for, 0..DEPTH (past 33 shows the limit)")
@argument("--depths", default="0,1,2,4,8,16,32", metavar="H,H,...", help="calls: the numbers of hops (0..32), comma-separated")
@argument("--repeat", type=int, default=None, metavar="N", help="runs per test run (100000; instruments: 5000)")
@argument("--rounds", type=int, default=None, metavar="R", help="tailcalls: best of R rounds (3); calls, instruments: median of R (5, 7)")
@argument("--index", choices=["const", "var"], default="const", help="const: direct jumps the JIT patches; var: indirect (retpoline) path")
def bench(args, notebook: Notebook):
    """benchmarks: `tailcalls` is the tail-call cost curve; `calls` chains the same stage by tail calls,
    BPF-to-BPF calls and inlining; `instruments` is what per-slot counting and path recording add to a
    tail call here; `limits` tries the limits of calls and tail calls on this kernel"""
    from ..experiments import calls, tailcalls, testrun

    session = notebook.session
    if args.what == "limits":
        return session.call_limits()
    if args.what == "instruments":
        repeat = 5_000 if args.repeat is None else args.repeat
        frame = session.bench_instruments(depth=args.depth, repeat=repeat, rounds=args.rounds or 7)
        print(tailcalls.describe_instruments(frame))
        return frame
    if args.repeat is None:
        args.repeat = 100_000
    if args.what == "calls":
        try:
            depths = [int(d) for d in args.depths.split(",") if d.strip()]
        except ValueError:
            raise UsageProblem(f"--depths takes whole numbers separated by commas (got {args.depths!r})") from None
        frame = session.bench_calls(depths=depths, repeat=args.repeat, rounds=args.rounds or 5)
        print(calls.describe(frame))
        display.show_figure(calls.plot_calls(frame))
        return frame
    frame = session.bench_tailcalls(depth=args.depth, repeat=args.repeat, index=args.index, rounds=args.rounds or 3)
    print(testrun.describe_fit(frame))
    display.show_figure(testrun.plot_tailcalls(frame))
    return frame


COMMANDS: tuple[Command, ...] = (run, stats, bench)
