"""The tail-call chain seen whole: ``%bpf graph``, ``paths``, ``chain``."""

from __future__ import annotations

from . import display
from .registry import Command, Notebook, argument, command, one_of


@command("graph", python="s.graph(ARRAY)")
@argument("array", nargs="?", completes="array")
def graph(args, notebook: Notebook):
    """the tail-call chain as a picture: programs, slots, call sites, run/missed counts"""
    return notebook.session.graph(args.array)


@command("paths", python="s.enable_paths(), s.disable_paths(); s.paths(ARRAY, seconds=1.0), s.path_graph(paths); s.misses()")
@argument("array", nargs="?", completes="array")
@one_of(
    argument("--on", action="store_true", help="record paths in cells loaded from now on"),
    argument("--off", action="store_true", help="cells loaded from now on run uninstrumented"),
)
@argument("--seconds", type=float, default=1.0, metavar="S", help="collect live paths for S seconds")
@argument("--misses", action="store_true", help="per call site: calls, missed, and of those slot empty vs limit reached")
def paths(args, notebook: Notebook):
    """the way runs go through a chain: --on/--off for cells loaded from now on;
    ARRAY: the distinct live paths with counts; --misses: why calls fell through"""
    session = notebook.session
    if args.on:
        session.enable_paths()
        return print("paths on: cells loaded from now on record each run's way through the chain")
    if args.off:
        session.disable_paths()
        return print("paths off: cells loaded from now on run uninstrumented (loaded ones keep recording)")
    if args.misses:
        return session.misses()
    frame = session.paths(args.array, seconds=args.seconds)
    if len(frame):
        display.show(session.path_graph(frame, args.array))  # the chain with edges as wide as the runs along them
    return frame


@command("chain", python='s.chain(NAME, ["MODULE.FUNC", ...]), s.chain_from_file(NAME, PATH), s.chain(NAME).df()')
@argument("name", completes="chain")
@argument("--file", metavar="YAML", completes="path", help="stages: the chain's MODULE.FUNC in order (type:, capacity: optional)")
@argument("--stages", metavar="M.F,M.F", help="the stages in order, instead of a file")
def chain(args, notebook: Notebook):
    """a chain described as data: --file chain.yaml (stages: [MODULE.FUNC, ...]) makes it or
    switches it to the file's order atomically; without --file, its stages with run counts"""
    session = notebook.session
    if args.file:
        described = session.chain_from_file(args.name, args.file)
        print(described)
    elif args.stages:
        described = session.chain(args.name, [x.strip() for x in args.stages.split(",") if x.strip()])
        print(described)
    else:
        described = session.chain(args.name)
    return described.df()


COMMANDS: tuple[Command, ...] = (graph, paths, chain)
