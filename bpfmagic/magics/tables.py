"""A module's maps and event streams: ``%bpf map``, ``df``, ``watch``, ``streams``, ``trace``."""

from __future__ import annotations

from IPython.core.error import UsageError

from . import display
from .registry import Command, Notebook, argument, command


@command("map", python='s.map("[MODULE.]TABLE").df(sum=False, sort=None, top=None); .hist(), .plot_hist()')
@argument("table", metavar="[MODULE.]TABLE", completes="map")
@argument("--sum", action="store_true", help="per-CPU maps: sum the values over CPUs")
@argument("--sort", metavar="COL", help="order by COL, largest first")
@argument("--top", type=int, metavar="N", help="only the N largest (by --sort, else the first value)")
@argument("--hist", action="store_true", help="a log2 histogram (BPF_HISTOGRAM): buckets low..high with counts, and a plot")
def map_(args, notebook: Notebook):
    """any map of a module as a DataFrame: hash, array, LRU, per-CPU (a column per CPU),
    LPM trie, queue/stack (peek), prog array (slots), --core globals (MODULE.bss/.data/.rodata)"""
    view = notebook.session.map(args.table)
    if args.hist:
        hist = view.hist()
        display.show_figure(view.plot_hist(hist=hist))
        return hist
    return view.df(sum=args.sum, sort=args.sort, top=args.top)


@command("df", python='s.stream("TABLE").df(); .tail(N), .counts(COL)')
@argument("table", completes="stream")
@argument("--last", type=int, metavar="N", help="only the last N rows")
@argument("--counts", metavar="COL", help="rows per value of COL instead of the rows")
def df(args, notebook: Notebook):
    """DataFrame of the events streamed from TABLE (or MODULE.TABLE) so far"""
    stream = notebook.session.stream(args.table)
    if args.counts:
        return stream.counts(args.counts)
    return stream.tail(args.last) if args.last is not None else stream.df()


@command("watch", python='bpfmagic.widgets.Watch(s.stream("TABLE")), MapWatch(s.map("MAP"))')
@argument("table", completes="stream_or_map")
@argument("--by", metavar="COL", help="stream: also show the number of rows per value of COL")
@argument("--rows", type=int, default=10, metavar="N", help="stream: how many of the last rows to show")
@argument("--top", type=int, default=20, metavar="N", help="map: the N keys with the highest rate")
@argument("--sort", metavar="COL", help="map: order by the rate of COL (default: the first counter)")
@argument("--interval", type=float, default=0.5, metavar="S", help="seconds between updates")
def watch(args, notebook: Notebook):
    """live view of a stream (events, rate, lost, last rows, counts by a column) or of a map (its entries with deltas and rates per key)"""
    from ..widgets import MapWatch, Watch

    session = notebook.session
    if _is_stream(session, args.table):
        return Watch(session.stream(args.table), by=args.by, rows=args.rows, interval=args.interval)
    if args.by:
        raise UsageError(f"--by counts the rows of a stream; {args.table} is a map (use --sort COL)")
    return MapWatch(session.map(args.table), top=args.top, sort=args.sort, interval=args.interval)


def _is_stream(session, name: str) -> bool:
    """NAME names an event stream (else, perhaps, a map)."""
    if name in session.streams.names():
        return True
    return any(q.split(".", 1)[1] == name for q in session.streams.names())


@command("streams", python="s.streams.summary()")
def streams(args, notebook: Notebook):
    """every stream: kind, events, rows kept, dropped, lost, max_rows"""
    return notebook.session.streams.summary()


@command("trace", python="s.trace(seconds=1.0, max_lines=None, grep=None, older=False)")
@argument("--seconds", type=float, default=1.0, metavar="S", help="read for S seconds (default 1)")
@argument("--lines", type=int, metavar="N", help="stop after N lines")
@argument("--grep", metavar="REGEX", help="keep only messages matching REGEX")
@argument("--older", action="store_true", help="also lines printed before this session began (left unread in trace_pipe)")
def trace(args, notebook: Notebook):
    """bpf_trace_printk lines from trace_pipe (ts, cpu, pid, comm, msg)"""
    return notebook.session.trace(seconds=args.seconds, max_lines=args.lines, grep=args.grep, older=args.older)


COMMANDS: tuple[Command, ...] = (map_, df, watch, streams, trace)
