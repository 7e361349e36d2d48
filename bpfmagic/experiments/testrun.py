"""BPF_PROG_TEST_RUN for one program of the session.

``test_run`` runs MODULE.FUNC on chosen input (a packet for XDP, tc and
socket filters; a context for raw tracepoints) and reports the return value
by name, the kernel's ns per run, the data out and which slots the run's
tail calls went through.

The benches built on it: tailcalls.py (the tail-call cost curve) and
calls.py, sharing timing.py (the timed run, the fit, the figures). Their
names are also read from here, where they were first (notebooks, tests).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from ..errors import UsageProblem
from ..kernel import libbpf
from ..progarray import slot_counts, uncounted_callers
from . import packets
from .tailcalls import BENCH_ARRAY, BENCH_MODULE, MAX_TAIL_CALL_CNT, bench_tailcalls, chain_source, describe_fit, plot_tailcalls
from .timing import check_repeat, figure_svg, run_without_stats

# The benches' names are read from here too, where they were first (notebooks, tests, bench/).
__all__ = [
    "BENCH_ARRAY",
    "BENCH_MODULE",
    "MAX_TAIL_CALL_CNT",
    "bench_tailcalls",
    "chain_source",
    "describe_fit",
    "plot_tailcalls",
    "figure_svg",
    "run_without_stats",
    "check_repeat",
    "TestRunResult",
    "test_run",
    "retval_name",
    "reachable",
    "hexdump",
    "as_bytes",
]

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
            # bench/tailcalls.py: one add per hop in this CPU's row at a fixed address (kernel/counters.py),
            # as cheap as a hand-written counter; still not nothing beside a ~7 ns tail call
            text += (
                f"\nnote: per-slot tail-call counters are in this chain's timed path ({', '.join(self.counters_in)}); "
                "load with --no-count (count_tail_calls=False) for a bare timing"
            )
        if self.not_counted:
            text += (
                "\nnote: tail calls not counted in "
                + "; ".join(f"{array} (by {', '.join(mods)})" for array, mods in sorted(self.not_counted.items()))
                + ": the table of tail calls leaves those arrays out (--no-count)"
            )
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


def test_run(session, spec, data=None, ctx=None, repeat: int = 1, type: str | None = None, path: bool = False) -> TestRunResult:
    """Run SPEC (MODULE.FUNC, or a Program) once or ``repeat`` times through BPF_PROG_TEST_RUN.

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
    with session.lock:
        if isinstance(spec, str):
            program = session.program(spec, type)
        else:  # a Program in hand (Program.test_run): this version, refused if its module was freed
            program, spec = spec, spec.qualname
            program.require_loaded()
        # Only the arrays this program's chain can reach: a dispatcher attached elsewhere
        # keeps counting during the run, and its slots have nothing to do with it.
        arrays, chain_modules = reachable(session, program)
        counted = [m.name for m in chain_modules if m.counts_tail_calls]
        blind = {name: mods for name, mods in uncounted_callers(chain_modules).items() if name in arrays}
        path_maps = session.instruments.path_maps
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
            with session.lock:  # names the hops from the registry
                rows, text = describe(session, entry, raw_hops)
            hops = path_frame(rows)
        else:
            hops, text = path_frame([]), f"{program.qualname} (no path recorded)"
    with session.lock:
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
    with session.lock:
        if path_maps is None or session.instruments.path_maps is not path_maps:
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

        serials = [decode(r)[3] for r in _path_records(session, session.instruments.path_maps)]

    def counts():
        with session.lock:
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
    if e.errno in (errno.ENOTSUP, libbpf.ENOTSUPP):
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
