"""``%%bpf NAME [options]`` and ``%bpf load NAME --file PATH [options]``: one set of options,
a module loaded through ``Session.load`` and named in the notebook."""

from __future__ import annotations

import builtins

from IPython.core.error import UsageError

from ..session import Module
from . import display
from .registry import Command, Notebook, argument, command, with_arguments
from .words import asks_help, cflags, option_words, pairs

# The options of a cell, which `%bpf load` takes too.
LOAD_OPTIONS = with_arguments(
    argument("name", help="module name; after the cell NAME is the Module in the namespace", completes="module"),
    argument(
        "-a",
        "--attach",
        action="append",
        default=[],
        metavar="FUNC=TARGET",
        completes="attach",
        help="attach FUNC: raw_tracepoint:EVENT, tracepoint:CAT:EVENT, "
        "uprobe:LIB:SYM, uretprobe:LIB:SYM, xdp:IFACE, tc:IFACE[:ingress|egress], "
        "socket:IFACE, perf:cpu-clock:HZ; kretprobe:SYM and kprobe:SYM only where the kernel "
        "has kprobes (otherwise the cell says what to use)",
    ),
    argument(
        "-s",
        "--slot",
        action="append",
        default=[],
        metavar="ARRAY[KEY]=FUNC",
        completes="cell_slot",
        help="load FUNC with ARRAY's program type and store it at KEY (integer, syscall or name)",
    ),
    argument("--file", metavar="PATH", completes="path", help="load this .bpf.c file as the module (cell body empty)"),
    argument(
        "--cflags",
        action="append",
        default=[],
        help='extra compiler flags: several in one quoted string, repeatable, --cflags=... too, e.g. --cflags "-DN=4 -DDEBUG"',
    ),
    argument("--core", action="store_true", help="compile as libbpf CO-RE C (clang + libbpf)"),
    argument(
        "--set",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="(--core) set a global variable before load, const volatile (.rodata) ones included",
    ),
    argument(
        "--pin-root",
        metavar="DIR",
        completes="path",
        help="(--core) share LIBBPF_PIN_BY_NAME maps pinned in DIR, a directory under /sys/fs/bpf only you or root can write "
        "(default: the session's own directory, removed with it)",
    ),
    argument(
        "--no-count",
        action="store_true",
        help="load without bpfmagic's per-slot tail-call counters (a bare timing, or a header that defines bpf_tail_call itself)",
    ),
    argument("-v", "--verbose", action="store_true", help="show the full verifier log even on success"),
)

# What %bpf? says of a cell beyond its options: the C conventions a cell may use.
CELL_TEXT = """\
The cell's body is BCC C, or libbpf-style C with ``--core``.
BCC's own conventions (RAW_TRACEPOINT_PROBE, TRACEPOINT_PROBE) auto-attach as usual.
``BPF_PROG_ARRAY(progs, N)`` is the session-wide array ``progs``, shared by every cell;
``SLOT(progs, name)`` in C is the index of a named slot; every tail call into a session
array is counted per slot (calls, taken, missed), unless ``--no-count``. ``--core`` compiles
with clang against the running kernel's vmlinux.h and loads with libbpf (SEC() programs,
BPF_CORE_READ, BPF-to-BPF calls, tp_btf), sharing the same arrays. Re-running a cell
replaces the module only after the new version loaded; if it fails, the previous version
keeps running. After the cell, NAME is the Module object."""


@command("%%bpf", prog="%%bpf", python='s.load(NAME, SOURCE, attach={FUNC: TARGET}, slots={"ARRAY[KEY]": FUNC}, cflags=..., core=..., globals=...)')
@LOAD_OPTIONS
def cell(args, notebook: Notebook, body: str = ""):
    """Compile the cell's BCC C as module NAME, load, attach and slot it."""
    return load_into(notebook, args, body)


@command("load", python="s.load(NAME, file=PATH, attach=..., slots=..., core=...)")
@LOAD_OPTIONS
def load(args, notebook: Notebook):
    """load module NAME from --file PATH, like a %%bpf cell with that file as its body"""
    if not args.file:
        raise UsageError("%bpf load NAME --file PATH [...]: the C comes from --file (or use a %%bpf cell)")
    return load_into(notebook, args, "")


def run_cell(line: str, body: str, notebook: Notebook):
    """A %%bpf cell: its line's options (or its --help), then the load."""
    words = option_words(line)
    if asks_help(cell.parser, words):
        return print(cell.parser.format_help().rstrip())
    return cell.run(cell.parser.parse_args(words), notebook, body)


def load_into(notebook: Notebook, args, body: str) -> None:
    """Load the module and give it its name in the notebook; print what the cell did."""
    namespace = notebook.namespace
    existing = namespace.get(args.name)
    if existing is not None and not isinstance(existing, Module):
        raise UsageError(
            f"{args.name!r} is already a {type(existing).__name__} in this notebook; "
            "name the module something else (the module object takes that name)"
        )
    if existing is None and hasattr(builtins, args.name):
        raise UsageError(f"{args.name!r} is a Python builtin; name the module something else (the module object takes that name in the notebook)")
    attach: dict[str, list[str]] = {}
    for func, target in pairs(args.attach, "-a"):
        attach.setdefault(func, []).append(target)
    slots = {}
    for spec, func in pairs(args.slot, "-s"):
        if spec in slots:
            raise UsageError(f"-s {spec} given twice")
        slots[spec] = func
    module = notebook.session.load(
        args.name,
        body,
        attach=attach,
        slots=slots,
        cflags=cflags(args.cflags),
        globals=dict(pairs(args.set, "--set")),
        file=args.file,
        verbose=args.verbose,
        core=args.core,
        count_tail_calls=not args.no_count,
        origin="cell",
        pin_root=args.pin_root,
    )
    namespace[args.name] = module
    messages = display.compile_messages(module, args.verbose)
    if messages:
        print(messages)
    print(display.module_summary(module))


COMMANDS: tuple[Command, ...] = (load,)  # the cell magic is not a %bpf command
