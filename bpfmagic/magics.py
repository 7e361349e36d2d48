"""IPython magics: ``%%bpf`` and ``%bpf``. They only parse arguments and
display results; every kernel object belongs to the Session.

Long because: the parsers and the %bpf? text of some twenty commands; each command is a
few lines."""

from __future__ import annotations

import argparse
import builtins
import shlex

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser
from traitlets import Integer, TraitError, observe, validate

from . import completion
from . import shell as shell_session  # the shell's Session (not IPython's shell object)
from .c.source_files import split_cflags
from .errors import BpfError, UsageProblem
from .session import Module

CELL_USAGE = """%%bpf NAME [-a FUNC=TARGET]... [-s ARRAY[KEY]=FUNC]... [--file PATH] [--cflags "..."] [--core] [--pin-root DIR] [--no-count] [-v]"""


def _cell_parser() -> MagicArgumentParser:
    p = MagicArgumentParser(prog="%%bpf", add_help=False, description="Compile the cell's BCC C as module NAME, load, attach and slot it.")
    p.add_argument("name", help="module name; after the cell NAME is the Module in the namespace")
    p.add_argument(
        "-a",
        "--attach",
        action="append",
        default=[],
        metavar="FUNC=TARGET",
        help="attach FUNC: raw_tracepoint:EVENT, tracepoint:CAT:EVENT, "
        "uprobe:LIB:SYM, uretprobe:LIB:SYM, xdp:IFACE, tc:IFACE[:ingress|egress], "
        "socket:IFACE, perf:cpu-clock:HZ; kprobe:SYM, kretprobe:SYM only where the kernel "
        "has kprobes (otherwise the cell says what to use)",
    )
    p.add_argument(
        "-s",
        "--slot",
        action="append",
        default=[],
        metavar="ARRAY[KEY]=FUNC",
        help="load FUNC with ARRAY's program type and store it at KEY (integer, syscall or name)",
    )
    p.add_argument("--file", metavar="PATH", help="load this .bpf.c file as the module (cell body empty)")
    p.add_argument(
        "--cflags",
        action="append",
        default=[],
        help='extra compiler flags: several in one quoted string, repeatable, --cflags=... too, e.g. --cflags "-DN=4 -DDEBUG"',
    )
    p.add_argument("--core", action="store_true", help="compile as libbpf CO-RE C (clang + libbpf)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="(--core) set a global variable before load, const volatile (.rodata) ones included",
    )
    p.add_argument(
        "--pin-root",
        metavar="DIR",
        help="(--core) share LIBBPF_PIN_BY_NAME maps pinned in DIR, a directory under /sys/fs/bpf only you or root can write "
        "(default: the session's own directory, removed with it)",
    )
    p.add_argument(
        "--no-count",
        action="store_true",
        help="load without bpfmagic's per-slot tail-call counters (a bare timing, or a header that defines bpf_tail_call itself)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show the full verifier log even on success")
    return p


def _split(text: str, what: str = "the arguments") -> list[str]:
    """The words as a shell splits them (quotes group and go: `--grep "Hello ping"` is the
    pattern Hello ping); an unclosed quote is a usage error, not a traceback."""
    try:
        return shlex.split(text)
    except ValueError as e:
        raise UsageError(f"cannot parse {what}: {e} ({text!r})") from None


def _option_words(line: str) -> list[str]:
    """The words of a %%bpf / %bpf load line, shell-quoted. ``--cflags X`` is
    joined into ``--cflags=X`` so that a value starting with '-' (every
    compiler flag) is taken as the value, not as an option of its own."""
    words = _split(line, "the line")
    out: list[str] = []
    i = 0
    while i < len(words):
        if words[i] == "--cflags" and i + 1 < len(words):
            out.append(f"--cflags={words[i + 1]}")
            i += 2
            continue
        out.append(words[i])
        i += 1
    return out


def _cflags(values: list[str]) -> list[str]:
    """Every --cflags value split into its flags, in order (their inner quotes kept: see split_cflags)."""
    return [flag for value in values for flag in split_cflags(value)]


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        left, eq, right = item.partition("=")
        if not eq or not left.strip() or not right.strip():
            raise UsageError(f"{what}: expected X=Y, got {item!r}")
        out.append((left.strip(), right.strip()))
    return out


def _line_parsers() -> dict[str, MagicArgumentParser]:
    parsers: dict[str, MagicArgumentParser] = {}

    def parser(name: str, help: str) -> MagicArgumentParser:
        p = MagicArgumentParser(prog=f"%bpf {name}", description=help, add_help=False)
        parsers[name] = p
        return p

    parser("ls", "modules, programs (type, id, attached to, slots) and tables")
    load = _cell_parser()
    load.prog = "%bpf load"
    load.description = "load module NAME from --file PATH, like a %%bpf cell with that file as its body"
    parsers["load"] = load
    p = parser(
        "slots",
        "slots of every array (or ARRAY): tail calls per slot since the array was created "
        "(whoever sat in it; %bpf stats splits them per program), run counts",
    )
    p.add_argument("array", nargs="?")
    p.add_argument("--all", action="store_true", help="every index, empty ones too")
    p = parser("slot", "put a loaded program into a slot: ARRAY[KEY]=MODULE.FUNC")
    p.add_argument("assignment")
    p = parser("unslot", "empty a slot: ARRAY[KEY]")
    p.add_argument("spec")
    p = parser("progarray", "create a session prog array")
    p.add_argument("name")
    p.add_argument("size", type=int)
    p.add_argument("--type", help="program type (xdp, raw_tracepoint, sched_cls, ...)")
    p.add_argument("--keys", choices=["syscalls"], help="keys are the architecture's syscall names")
    p.add_argument("--slots", help="names for indices 0, 1, ... (a,b,c) or explicit (a=3,b=7)")
    p = parser("unload", "detach and free a module (or an unused array)")
    p.add_argument("name")
    parser("reset", "unload every module and free every array")
    parser("doctor", "environment report with the fix for each problem")
    p = parser("run", "BPF_PROG_TEST_RUN: run MODULE.FUNC on a packet/context; retval, ns per run, data out")
    p.add_argument("program", metavar="MODULE.FUNC")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="runs to average over (not raw_tracepoint)")
    p.add_argument("--data", metavar="HEX", help="packet bytes in hex (default: a UDP/IPv4 frame); {pkt.hex()} passes a Python value")
    p.add_argument("--ctx", metavar="HEX", help="context in: xdp_md/__sk_buff bytes, or raw_tp u64 args")
    p.add_argument("--type", help="load FUNC as this program type (default: what its context parameter implies)")
    p.add_argument("--path", action="store_true", help="the way the run went through the chain (paths on)")
    p = parser("globals", "a --core module's global variables (.bss, .data, .rodata): name, section, type, value")
    p.add_argument("module")
    p = parser("stats", "per-program run_cnt, run_time_ns, avg_ns, tail calls in, missed")
    onoff = p.add_mutually_exclusive_group()
    onoff.add_argument("--on", action="store_true", help="keep kernel run stats on (the default)")
    onoff.add_argument("--off", action="store_true", help="stop the kernel's run stats (they cost ~10-70 ns per run)")
    p = parser(
        "bench",
        "benchmarks: `tailcalls` is the tail-call cost curve; `calls` chains the same stage by tail calls, "
        "BPF-to-BPF calls and inlining; `limits` tries the limits of calls and tail calls on this kernel",
    )
    p.add_argument("what", choices=["tailcalls", "calls", "limits"])
    p.add_argument("--depth", type=int, default=33, help="tailcalls: tail calls asked for, 0..DEPTH (past 33 shows the limit)")
    p.add_argument("--depths", default="0,1,2,4,8,16,32", metavar="H,H,...", help="calls: the numbers of hops (0..32), comma-separated")
    p.add_argument("--repeat", type=int, default=100_000, metavar="N", help="runs per test run")
    p.add_argument("--rounds", type=int, default=None, metavar="R", help="tailcalls: best of R rounds (3); calls: median of R (5)")
    p.add_argument("--index", choices=["const", "var"], default="const", help="const: direct jumps the JIT patches; var: indirect (retpoline) path")
    p = parser("graph", "the tail-call chain as a picture: programs, slots, call sites, run/missed counts")
    p.add_argument("array", nargs="?")
    p = parser("df", "DataFrame of the events streamed from TABLE (or MODULE.TABLE) so far")
    p.add_argument("table")
    p.add_argument("--last", type=int, metavar="N", help="only the last N rows")
    p.add_argument("--counts", metavar="COL", help="rows per value of COL instead of the rows")
    p = parser(
        "watch", "live view of a stream (events, rate, lost, last rows, counts by a column) or of a map (its entries with deltas and rates per key)"
    )
    p.add_argument("table")
    p.add_argument("--by", metavar="COL", help="stream: also show the number of rows per value of COL")
    p.add_argument("--rows", type=int, default=10, metavar="N", help="stream: how many of the last rows to show")
    p.add_argument("--top", type=int, default=20, metavar="N", help="map: the N keys with the highest rate")
    p.add_argument("--sort", metavar="COL", help="map: order by the rate of COL (default: the first counter)")
    p.add_argument("--interval", type=float, default=0.5, metavar="S", help="seconds between updates")
    p = parser(
        "map",
        "any map of a module as a DataFrame: hash, array, LRU, per-CPU (a column per CPU), "
        "LPM trie, queue/stack (peek), prog array (slots), --core globals (MODULE.bss/.data/.rodata)",
    )
    p.add_argument("table", metavar="[MODULE.]TABLE")
    p.add_argument("--sum", action="store_true", help="per-CPU maps: sum the values over CPUs")
    p.add_argument("--sort", metavar="COL", help="order by COL, largest first")
    p.add_argument("--top", type=int, metavar="N", help="only the N largest (by --sort, else the first value)")
    p.add_argument("--hist", action="store_true", help="a log2 histogram (BPF_HISTOGRAM): buckets low..high with counts, and a plot")
    p = parser("trace", "bpf_trace_printk lines from trace_pipe (ts, cpu, pid, comm, msg)")
    p.add_argument("--seconds", type=float, default=1.0, metavar="S", help="read for S seconds (default 1)")
    p.add_argument("--lines", type=int, metavar="N", help="stop after N lines")
    p.add_argument("--grep", metavar="REGEX", help="keep only messages matching REGEX")
    p.add_argument("--older", action="store_true", help="also lines printed before this session began (left unread in trace_pipe)")
    parser("streams", "every stream: kind, events, rows kept, dropped, lost, max_rows")
    p = parser(
        "paths",
        "the way runs go through a chain: --on/--off for cells loaded from now on; "
        "ARRAY: the distinct live paths with counts; --misses: why calls fell through",
    )
    p.add_argument("array", nargs="?")
    onoff = p.add_mutually_exclusive_group()
    onoff.add_argument("--on", action="store_true", help="record paths in cells loaded from now on")
    onoff.add_argument("--off", action="store_true", help="cells loaded from now on run uninstrumented")
    p.add_argument("--seconds", type=float, default=1.0, metavar="S", help="collect live paths for S seconds")
    p.add_argument("--misses", action="store_true", help="per call site: calls, missed, and of those slot empty vs limit reached")
    p = parser(
        "chain",
        "a chain described as data: --file chain.yaml (stages: [MODULE.FUNC, ...]) makes it or "
        "switches it to the file's order atomically; without --file, its stages with run counts",
    )
    p.add_argument("name")
    p.add_argument("--file", metavar="YAML", help="stages: the chain's MODULE.FUNC in order (type:, capacity: optional)")
    p.add_argument("--stages", metavar="M.F,M.F", help="the stages in order, instead of a file")
    p = parser(
        "dump", "a program's code: translated BPF (bpftool) or the JIT's x86 (capstone), with the cell's source lines and each tail-call site marked"
    )
    p.add_argument("program", metavar="MODULE.FUNC")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--xlated", action="store_true", help="the BPF the kernel runs, after its rewrites (default)")
    mode.add_argument("--jited", action="store_true", help="the JIT's x86-64 code (patched jumps of tail calls)")
    p.add_argument("--source", action="store_true", help="interleave the cell's source lines (the default)")
    p.add_argument("--no-source", action="store_true", help="the code alone")
    return parsers


@magics_class
class BpfMagics(Magics):
    """The bpfmagic magics; the state lives in shell_session.session()."""

    max_rows = Integer(1_000_000, help="rows each event stream keeps (the oldest are dropped); `%config BpfMagics.max_rows = N`").tag(config=True)

    @validate("max_rows")
    def _check_max_rows(self, proposal):
        value = proposal["value"]
        if not _valid_max_rows(value):  # %config must refuse it: a stream cannot keep fewer than one row
            raise TraitError(_max_rows_refusal(value))
        return value

    @observe("max_rows")
    def _max_rows_changed(self, change):
        # only when the config changes: streams.max_rows set from Python stays until then
        if shell_session.current() is not None:
            shell_session.current().streams.max_rows = change["new"]

    def _configure_session(self, session) -> None:
        """Run once for each new shell session (shell_session.session())."""
        session.streams.max_rows = self.max_rows

    def __init__(self, shell):
        super().__init__(shell)
        shell_session.hooks.append(self._configure_session)
        self._cell_parser = _cell_parser()
        self._line = _line_parsers()

    @line_cell_magic
    def bpf(self, line: str, cell: str | None = None):
        """eBPF tail-call experiments with BCC.

        Cell magic::

            %%bpf NAME [-a FUNC=TARGET]... [-s ARRAY[KEY]=FUNC]... [--file PATH] [--cflags "..."] [--core] [--set VAR=VALUE]... [--no-count] [-v]
            <BCC C source, or libbpf-style C with --core>

        compiles the cell as module NAME, loads it, attaches FUNC to TARGET
        (raw_tracepoint:EVENT, tracepoint:CAT:EVENT, uprobe:LIB:SYM, xdp:IFACE,
        tc:IFACE[:ingress|egress], socket:IFACE, perf:cpu-clock:HZ; kprobe:SYM
        only where the kernel has kprobes, else the cell says what to use)
        and stores FUNC in slot KEY of prog array ARRAY. BCC's own conventions
        (RAW_TRACEPOINT_PROBE, TRACEPOINT_PROBE) auto-attach as usual.
        ``BPF_PROG_ARRAY(progs, N)`` is the session-wide array ``progs``,
        shared by every cell; ``SLOT(progs, name)`` in C is the index of a
        named slot; every tail call into a session array is counted per slot
        (calls, taken, missed), unless ``--no-count``. ``--core`` compiles with clang against the
        running kernel's vmlinux.h and loads with libbpf (SEC() programs,
        BPF_CORE_READ, BPF-to-BPF calls, tp_btf), sharing the same arrays.
        ``-v`` shows the full verifier log. Re-running a cell replaces the
        module only after the new version loaded; if it fails, the previous
        version keeps running. After the cell, NAME is the Module object.

        Line magic::

            %bpf ls                                   modules, programs, tables
            %bpf load NAME --file PATH [-a ...] [-s ...] [--core]   a module from a .bpf.c file
            %bpf slots [ARRAY] [--all]                slots: program, calls, taken, missed, run counts
            %bpf slot ARRAY[KEY]=MODULE.FUNC          hot-swap a slot
            %bpf unslot ARRAY[KEY]                    empty a slot
            %bpf progarray NAME SIZE [--type T] [--keys syscalls] [--slots a,b,c]
            %bpf unload NAME                          detach and free a module
            %bpf reset                                free everything
            %bpf doctor                               environment report with fixes
            %bpf run MODULE.FUNC [--repeat N] [--data HEX] [--ctx HEX] [--type T] [--path]
                                                      BPF_PROG_TEST_RUN: retval, ns/run, data out
            %bpf globals MODULE                       a --core module's global variables: name, section, type, value
            %bpf stats [--on|--off]                   per-program runs, avg ns, tail calls in, missed
            %bpf bench tailcalls [--depth 33] [--repeat N] [--rounds R] [--index const|var]
            %bpf bench calls [--depths 0,1,2,4,8,16,32] [--repeat N] [--rounds R]   tail calls vs calls vs inline
            %bpf bench limits                                    frames, stack, mixing: the kernel's words
                                                      tail-call cost curve: DataFrame and plot
            %bpf graph [ARRAY]                        the tail-call chain as a picture (.nodes, .edges)
            %bpf df TABLE [--last N] [--counts COL]   events streamed from TABLE (or MODULE.TABLE)
            %bpf watch TABLE [--by COL] [--rows N] [--interval S]   live view: events, rate, lost, last rows
            %bpf watch MAP [--top N] [--sort COL] [--interval S]    live view of a map: values, deltas, rates per key
            %bpf map [MODULE.]TABLE [--sum] [--sort COL] [--top N] [--hist]
                                                      any map as a DataFrame (per-CPU: a column per CPU)
            %bpf trace [--seconds S] [--lines N] [--grep RE] [--older]   bpf_trace_printk lines (ts, cpu, pid, comm, msg)
            %bpf streams                              every stream with its counters
            %bpf paths --on|--off                     record paths in cells loaded from now on (off by default)
            %bpf paths [ARRAY] [--seconds S]          distinct live paths with runs and shares
            %bpf paths --misses                       per call site: missed split into slot empty / limit reached
            %bpf chain NAME [--file chain.yaml | --stages M.F,M.F]   a chain as data: stages, atomic reorder, run counts
            %bpf dump MODULE.FUNC [--xlated|--jited] [--source|--no-source]   the code, source lines, tail calls marked

        Streams keep at most ``BpfMagics.max_rows`` rows each (``%config
        BpfMagics.max_rows = N``; per stream: ``stream.max_rows = N``).
        """
        # A BpfError propagates: the custom exception handler shows it without a traceback.
        if cell is None:
            return self._line_command(line)
        return self._cell(line, cell)

    # -------------------------------------------------------------- cell
    def _cell(self, line: str, cell: str):
        words = _option_words(line)
        if _asks_help(self._cell_parser, words):
            return print(_help(self._cell_parser))
        return self._load_module(self._cell_parser.parse_args(words), cell)

    def _cmd_load(self, args):
        if not args.file:
            raise UsageError("%bpf load NAME --file PATH [...]: the C comes from --file (or use a %%bpf cell)")
        return self._load_module(args, "")

    def _load_module(self, args, body: str):
        existing = self.shell.user_ns.get(args.name)
        if existing is not None and not isinstance(existing, Module):
            raise UsageError(
                f"{args.name!r} is already a {type(existing).__name__} in this notebook; "
                "name the module something else (the module object takes that name)"
            )
        if existing is None and hasattr(builtins, args.name):
            raise UsageError(f"{args.name!r} is a Python builtin; name the module something else (the module object takes that name in the notebook)")
        attach: dict[str, list[str]] = {}
        for func, target in _pairs(args.attach, "-a"):
            attach.setdefault(func, []).append(target)
        slots = {}
        for spec, func in _pairs(args.slot, "-s"):
            if spec in slots:
                raise UsageError(f"-s {spec} given twice")
            slots[spec] = func
        module = shell_session.session().load(
            args.name,
            body,
            attach=attach,
            slots=slots,
            cflags=_cflags(args.cflags),
            globals=dict(_pairs(args.set, "--set")),
            file=args.file,
            verbose=args.verbose,
            core=args.core,
            count_tail_calls=not args.no_count,
            origin="cell",
            pin_root=args.pin_root,
        )
        self.shell.user_ns[args.name] = module
        if args.verbose and module.compile_log.strip():
            print(module.compile_log.rstrip())
        else:
            warnings = [ln for ln in module.compile_log.splitlines() if "warning:" in ln]
            if warnings:
                print("\n".join(warnings))
        print(_summary(module))

    # -------------------------------------------------------------- line
    def _line_command(self, line: str):
        words = _split(line)
        if words and (words[0] == "load" or "--file" in words):  # `%bpf load ...` takes %%bpf's options
            words = _option_words(line)
        comment = next((i for i, w in enumerate(words) if w.startswith("#")), None)
        if comment is not None:  # `%bpf slots   # what this shows` reads naturally in a cell
            words = words[:comment]
        if not words:
            raise UsageError("%bpf needs a command: " + ", ".join(self._line) + " (see %bpf?)")
        command, rest = words[0], words[1:]
        if command in ("-h", "--help", "help"):
            return print(_commands_help(self._line))
        parser = self._line.get(command)
        if parser is not None and _asks_help(parser, rest):  # before parsing: a missing argument is no error here
            return print(_help(parser))
        if parser is None and "--file" in rest:  # `%bpf NAME --file PATH`: IPython's hint for a body-less %%bpf
            return self._cmd_load(self._line["load"].parse_args(words))
        if parser is None:
            raise UsageError(f"unknown %bpf command {command!r}; commands: {', '.join(self._line)} (see %bpf?)")
        args = parser.parse_args(rest)
        return getattr(self, "_cmd_" + command)(args)

    def _cmd_ls(self, args):
        return shell_session.session().ls()

    def _cmd_slots(self, args):
        df = shell_session.session().slots(args.array, all_keys=args.all)
        if "not_counted" in df.attrs:
            print("note: " + df.attrs["not_counted"])
        return df

    def _cmd_slot(self, args):
        spec, eq, program = args.assignment.partition("=")
        if not eq:
            raise UsageError("write %bpf slot ARRAY[KEY]=MODULE.FUNC")
        shell_session.session().slot(spec.strip(), program.strip())
        print(f"{spec.strip()} <- {program.strip()}")

    def _cmd_unslot(self, args):
        had = shell_session.session().unslot(args.spec)
        print(f"{args.spec} emptied" if had else f"{args.spec} was already empty")

    def _cmd_progarray(self, args):
        array = shell_session.session().progarray(args.name, args.size, type=args.type, keys=args.keys, slots=args.slots)
        print(_describe_array(array))

    def _cmd_unload(self, args):
        emptied = shell_session.session().unload(args.name)
        value = self.shell.user_ns.get(args.name)
        if isinstance(value, Module):
            del self.shell.user_ns[args.name]
        print(f"unloaded {args.name}")
        if emptied:
            print(f"slots emptied (tail calls into them fall through now): {', '.join(emptied)}")

    def _cmd_reset(self, args):
        s = shell_session.session()
        names = list(s.modules)
        s.reset()
        for name in names:
            if isinstance(self.shell.user_ns.get(name), Module):
                del self.shell.user_ns[name]
        print(f"reset: unloaded {len(names)} module(s)")

    def _cmd_doctor(self, args):
        from . import doctor

        return doctor.report()

    def _cmd_run(self, args):
        result = shell_session.session().test_run(args.program, data=args.data, ctx=args.ctx, repeat=args.repeat, type=args.type, path=args.path)
        if args.path:
            print(result.path_text)
        return result

    def _cmd_globals(self, args):
        return shell_session.session().module(args.module).globals.df()

    def _cmd_stats(self, args):
        s = shell_session.session()
        if args.off:
            s.disable_stats()
            print("kernel run stats off for this session (counts stay where they are)")
        elif args.on:
            s.enable_stats()
        df = s.stats()
        if not s.stats_enabled and not args.off:
            print("note: kernel run stats are off in this session (`%bpf stats --on`); run_cnt may be stale")
        if "not_counted" in df.attrs:
            print("note: " + df.attrs["not_counted"])
        return df

    def _cmd_bench(self, args):
        from IPython.display import SVG, display

        from .experiments import calls, testrun

        session = shell_session.session()
        if args.what == "limits":
            return session.call_limits()
        if args.what == "calls":
            try:
                depths = [int(d) for d in args.depths.split(",") if d.strip()]
            except ValueError:
                raise UsageProblem(f"--depths takes whole numbers separated by commas (got {args.depths!r})") from None
            df = session.bench_calls(depths=depths, repeat=args.repeat, rounds=args.rounds or 5)
            print(calls.describe(df))
            display(SVG(testrun.figure_svg(calls.plot_calls(df))))
            return df
        df = session.bench_tailcalls(depth=args.depth, repeat=args.repeat, index=args.index, rounds=args.rounds or 3)
        print(testrun.describe_fit(df))
        display(SVG(testrun.figure_svg(testrun.plot_tailcalls(df))))
        return df

    def _cmd_graph(self, args):
        return shell_session.session().graph(args.array)

    def _cmd_df(self, args):
        stream = shell_session.session().stream(args.table)
        if args.counts:
            return stream.counts(args.counts)
        return stream.tail(args.last) if args.last is not None else stream.df()

    def _cmd_watch(self, args):
        from .widgets import MapWatch, Watch

        s = shell_session.session()
        if _is_stream(s, args.table):
            return Watch(s.stream(args.table), by=args.by, rows=args.rows, interval=args.interval)
        if args.by:
            raise UsageError(f"--by counts the rows of a stream; {args.table} is a map (use --sort COL)")
        return MapWatch(s.map(args.table), top=args.top, sort=args.sort, interval=args.interval)

    def _cmd_map(self, args):
        view = shell_session.session().map(args.table)
        if args.hist:
            from IPython.display import SVG, display

            from .experiments.testrun import figure_svg

            hist = view.hist()
            display(SVG(figure_svg(view.plot_hist(hist=hist))))
            return hist
        return view.df(sum=args.sum, sort=args.sort, top=args.top)

    def _cmd_trace(self, args):
        return shell_session.session().trace(seconds=args.seconds, max_lines=args.lines, grep=args.grep, older=args.older)

    def _cmd_streams(self, args):
        return shell_session.session().streams.summary()

    def _cmd_paths(self, args):
        s = shell_session.session()
        if args.on:
            s.enable_paths()
            return print("paths on: cells loaded from now on record each run's way through the chain")
        if args.off:
            s.disable_paths()
            return print("paths off: cells loaded from now on run uninstrumented (loaded ones keep recording)")
        if args.misses:
            return s.misses()
        df = s.paths(args.array, seconds=args.seconds)
        from IPython.display import display

        from .experiments.paths import picture

        if len(df):
            display(picture(s, df, args.array))  # the chain with edges as wide as the runs along them
        return df

    def _cmd_chain(self, args):
        s = shell_session.session()
        if args.file:
            from .experiments.chain import load_file

            chain = load_file(s, args.name, args.file)
            print(chain)
        elif args.stages:
            chain = s.chain(args.name, [x.strip() for x in args.stages.split(",") if x.strip()])
            print(chain)
        else:
            chain = s.chain(args.name)
        return chain.df()

    def _cmd_dump(self, args):
        program = shell_session.session().program(args.program)
        print(program.dump("jited" if args.jited else "xlated", source=not args.no_source))


def _is_stream(session, name: str) -> bool:
    """NAME names an event stream (else, perhaps, a map)."""
    if name in session.streams.names():
        return True
    return any(q.split(".", 1)[1] == name for q in session.streams.names())


def _asks_help(parser, words: list[str]) -> bool:
    """-h or --help among WORDS as an option of its own: not after `--`, not
    the value of an option that takes one (`%bpf trace --grep -h`)."""
    takes_value = {opt for action in parser._actions for opt in action.option_strings if action.nargs != 0}
    for i, w in enumerate(words):
        if w == "--":
            return False
        if w in ("-h", "--help") and not (i and words[i - 1] in takes_value):
            return True
    return False


def _help(parser) -> str:
    """The parser's help with a plain usage line: IPython's MagicHelpFormatter
    puts another '%' in front of the prog (it expects 'bpf', we name '%bpf watch')."""
    parser.formatter_class = argparse.HelpFormatter
    return parser.format_help().rstrip()


def _commands_help(parsers) -> str:
    width = max(map(len, parsers))
    lines = ["%bpf COMMAND [...]; `%bpf COMMAND --help` for one command, `%%bpf?` for the cell magic:", ""]
    lines += [f"  {name:<{width}}  {p.description or ''}" for name, p in parsers.items()]
    return "\n".join(lines)


def _describe_array(array) -> str:
    if array.keys == "syscalls":
        keys = "keys are syscall names (" + ", ".join(f"{array.key_name(i)}={i}" for i in range(min(3, array.size)) if array.key_name(i)) + ", ...)"
    elif array.names:
        keys = "named slots: " + ", ".join(f"{n}={i}" for n, i in sorted(array.names.items(), key=lambda kv: kv[1]))
    else:
        keys = "integer keys; new names take the lowest free index"
    kind = array.owner_type or "any program type (fixed by the first program that uses it)"
    return f"prog array {array.name}: {array.size} slots for {kind}; {keys}"


def _summary(module) -> str:
    parts = []
    for p in module.programs.values():
        where = module.session.placement(p)
        parts.append(f"{p.name} ({p.type}{': ' + ', '.join(where) if where else ''})")
    tables = [t for t in module.tables]
    text = f"{module.name}: " + ("; ".join(parts) if parts else "compiled, no program loaded yet")
    if module.new_slot_names:  # a slot named for the first time (a typo in SLOT() shows up here)
        text += f" | new slot names: {', '.join(module.new_slot_names)}"
    if tables:
        text += f" | tables: {', '.join(tables)}"
    # what the re-run did to slots the old version held, then anything else the cell should say
    return "\n".join([text, *module.slot_notes, *(f"note: {n}" for n in module.notes)])


# ------------------------------------------------------------ registration


def _show_bpf_error(shell, etype, value, tb, tb_offset=None):
    """BpfError: the message in the cell, no Python traceback (it is the
    user's C or arguments that are wrong, not Python code)."""
    stb = [f"\x1b[0;31m{etype.__name__}\x1b[0m: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


_saved_custom_exc = None


def _valid_max_rows(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _max_rows_refusal(value) -> str:
    return f"BpfMagics.max_rows must be an integer >= 1 (rows each stream keeps), not {value!r}"


def _drop_refused_config(ipython, keep=None) -> str | None:
    """Take out of the shell's config a BpfMagics.max_rows the magics refuse;
    returns what was taken out ("BpfMagics.max_rows = -5") or None.
    %config stores a value in the shell's config even when BpfMagics rejects
    it; left there, the next %load_ext bpfmagic would fail on it (TraitError)
    and %bpf would be gone. KEEP: the value to put back (the one in force)."""
    config = getattr(ipython, "config", None)
    if config is None or "BpfMagics" not in config or "max_rows" not in config["BpfMagics"]:
        return None
    value = config["BpfMagics"]["max_rows"]
    if _valid_max_rows(value):
        return None
    if keep is None:
        del config["BpfMagics"]["max_rows"]
    else:
        config["BpfMagics"]["max_rows"] = keep
    return f"BpfMagics.max_rows = {value!r}"


def _after_cell(result=None) -> None:
    """post_run_cell: a refused %config value does not stay in the shell's config."""
    ipython = _registered_shell
    if ipython is None:
        return
    magics = ipython.magics_manager.registry.get("BpfMagics")
    _drop_refused_config(ipython, keep=magics.max_rows if magics is not None else None)


_registered_shell = None


def register(ipython) -> None:
    global _saved_custom_exc, _registered_shell
    dropped = _drop_refused_config(ipython)
    if dropped:
        import warnings

        warnings.warn_explicit(
            f"bpfmagic: ignored {dropped} from the config (it must be an integer >= 1); streams keep the default",
            UserWarning,
            filename="bpfmagic",
            lineno=0,
        )
    magics = BpfMagics(ipython)
    ipython.register_magics(magics)
    _registered_shell = ipython
    completion.register(ipython, magics._line, magics._cell_parser)  # candidates from the same parsers
    if _after_cell not in ipython.events.callbacks["post_run_cell"]:
        ipython.events.register("post_run_cell", _after_cell)
    _saved_custom_exc = (ipython.custom_exceptions, getattr(ipython, "CustomTB", None))
    ipython.set_custom_exc((BpfError,), _show_bpf_error)


def unregister(ipython) -> None:
    global _saved_custom_exc, _registered_shell
    if _after_cell in ipython.events.callbacks["post_run_cell"]:
        ipython.events.unregister("post_run_cell", _after_cell)
    _registered_shell = None
    completion.unregister(ipython)
    if _saved_custom_exc is not None:
        exceptions, handler = _saved_custom_exc
        ipython.custom_exceptions = exceptions
        if handler is not None:
            ipython.CustomTB = handler
        _saved_custom_exc = None
    shell_session.hooks[:] = [h for h in shell_session.hooks if not isinstance(getattr(h, "__self__", None), BpfMagics)]
    magics = ipython.magics_manager.magics
    for kind in ("line", "cell"):
        magics[kind].pop("bpf", None)
    # An unloaded instance would still be configured (and refuse values) by every later %config.
    if hasattr(ipython, "configurables"):
        ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, BpfMagics)]
    ipython.magics_manager.registry.pop("BpfMagics", None)
    # The modules are freed with the session: don't leave dead objects under their names.
    for name, value in list(ipython.user_ns.items()):
        if isinstance(value, Module):
            del ipython.user_ns[name]
