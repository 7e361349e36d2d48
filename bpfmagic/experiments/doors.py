"""The experiments' doors on the Session (it inherits them): each method hands the
session to the module of experiments/ doing the work, which it imports on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from ..module import Program
    from .chain import Chain
    from .graph import ChainGraph
    from .testrun import TestRunResult


class ExperimentDoors:
    """test_run, stats, paths, benches, limits, graph and chains of a Session."""

    def chain(self, name: str, stages: list[str] | None = None, type: str | None = None, capacity: int = 16) -> Chain:
        """The chain NAME described as data: ``stages`` in order, each "MODULE.FUNC" (each stage
        ends with ``CHAIN_NEXT(ctx, NAME)``); the entry program is NAME_entry.entry. Called again
        with other stages, it switches to them atomically for the traffic. Without stages: the
        chain as it is."""
        from . import chain as chains

        return chains.chain(self, name, stages, type=type, capacity=capacity)

    def chain_from_file(self, name: str, path: str) -> Chain:
        """The chain NAME as a YAML file describes it (``stages: [MODULE.FUNC, ...]``; ``type:``
        and ``capacity:`` optional): made, or switched to the file's order atomically."""
        from . import chain as chains

        return chains.load_file(self, name, path)

    def path_graph(self, paths: pd.DataFrame, array: str | None = None) -> ChainGraph:
        """The chain graph with each edge as wide as the runs ``paths`` (from ``s.paths()``) took along it."""
        from . import paths as live_paths

        return live_paths.picture(self, paths, array)

    def test_run(
        self,
        spec: str | Program,
        data: bytes | str | None = None,
        ctx: bytes | str | None = None,
        repeat: int = 1,
        type: str | None = None,
        path: bool = False,
    ) -> TestRunResult:
        """BPF_PROG_TEST_RUN of MODULE.FUNC (or a Program): retval (and its name), ns per run,
        data out, and the slots its tail calls went through. ``path``: also the way the (last)
        run went through the chain (.path DataFrame, .path_text); needs the chain loaded with paths on."""
        from . import testrun

        return testrun.test_run(self, spec, data=data, ctx=ctx, repeat=repeat, type=type, path=path)

    def stats(self, since: pd.DataFrame | None = None) -> pd.DataFrame:
        """Per-program run_cnt, run_time_ns, avg_ns, tail calls in and missed;
        rows for empty slots that tail calls missed. ``since``: an earlier stats()."""
        from . import stats

        return stats.stats(self, since=since)

    def paths(self, array: str | None = None, seconds: float = 1.0, during: Callable[[], object] | None = None) -> pd.DataFrame:
        """The distinct paths live runs took during SECONDS, or while the callable ``during``
        runs (those through ARRAY): DataFrame of path, runs, share, hops, how it ended."""
        from . import paths

        return paths.live(self, seconds=seconds, array=array, during=during)

    def bench_tailcalls(
        self,
        depth: int = 33,
        repeat: int = 100_000,
        index: str = "const",
        rounds: int = 3,
        paths: bool = False,
        count_tail_calls: bool = False,
        floor_counter: bool = False,
    ) -> pd.DataFrame:
        """Tail-call cost curve: DataFrame (depth, tail_calls, ns_per_run); the fit is in .attrs.
        ``paths``: the chain records paths; ``count_tail_calls``: it counts per slot (either's
        cost per hop: the slope minus the bare one); ``floor_counter``: each hop bumps a counter
        of its CPU's row written by hand, the floor of any per-hop counting."""
        from . import tailcalls

        return tailcalls.bench_tailcalls(
            self, depth=depth, repeat=repeat, index=index, rounds=rounds, paths=paths, count_tail_calls=count_tail_calls, floor_counter=floor_counter
        )

    def bench_instruments(self, depth: int = 33, repeat: int = 5_000, rounds: int = 7, best: int = 8) -> pd.DataFrame:
        """What bpfmagic's instruments add to a const-index tail call on this host: the bare chain,
        per-slot counting, path recording and a counter written by hand (the floor), loaded side by
        side and measured in turn at every depth. DataFrame (chain, ns_per_tail_call, added_ns,
        added: a share of the bare tail call), medians over ROUNDS; the rounds in .attrs."""
        from . import tailcalls

        return tailcalls.instruments_frame(tailcalls.bench_instruments(self, depth=depth, repeat=repeat, rounds=rounds, best=best))

    def bench_calls(self, depths=(0, 1, 2, 4, 8, 16, 32), repeat: int = 100_000, rounds: int = 5) -> pd.DataFrame:
        """The same stage work chained by a constant- and a variable-index tail call, a BPF-to-BPF
        call and inlining, at each number of hops: ns per run, JIT bytes, instructions, stack;
        ``attrs["ns_per_hop"]`` per mechanism (experiments/calls.py)."""
        from . import calls

        return calls.bench_calls(self, depths=depths, repeat=repeat, rounds=rounds)

    def call_limits(self) -> pd.DataFrame:
        """The limits of calls and tail calls tried on this kernel, with the verifier's own words."""
        from . import calls

        return calls.call_limits(self)

    def graph(self, array: str | None = None) -> ChainGraph:
        """The tail-call chain (programs, slots, call sites) as data and a picture."""
        from . import graph

        return graph.graph(self, array)
