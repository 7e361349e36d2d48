"""What is loaded, and letting it go: ``%bpf ls``, ``unload``, ``reset``, ``globals``,
``dump``; and ``doctor``, what this machine lets a cell do."""

from __future__ import annotations

from ..session import Module
from .registry import Command, Notebook, argument, command, one_of


@command("ls", python="s.ls()")
def ls(args, notebook: Notebook):
    """modules, programs (type, id, attached to, slots) and tables"""
    return notebook.session.ls()


@command("unload", python="s.unload(NAME)")
@argument("name", completes="module_or_array")
def unload(args, notebook: Notebook):
    """detach and free a module (or an unused array)"""
    emptied = notebook.session.unload(args.name)
    if isinstance(notebook.namespace.get(args.name), Module):
        del notebook.namespace[args.name]
    print(f"unloaded {args.name}")
    if emptied:
        print(f"slots emptied (tail calls into them fall through now): {', '.join(emptied)}")


@command("reset", python="s.reset()")
def reset(args, notebook: Notebook):
    """unload every module and free every array"""
    session = notebook.session
    names = list(session.modules)
    session.reset()
    for name in names:
        if isinstance(notebook.namespace.get(name), Module):
            del notebook.namespace[name]
    print(f"reset: unloaded {len(names)} module(s)")


@command("globals", python="s.module(MODULE).globals.df()")
@argument("module", completes="module")
def globals_(args, notebook: Notebook):
    """a --core module's global variables (.bss, .data, .rodata): name, section, type, value"""
    return notebook.session.module(args.module).globals.df()


@command("dump", python='s.program("MODULE.FUNC").dump("xlated" | "jited", source=True)')
@argument("program", metavar="MODULE.FUNC", completes="program")
@one_of(
    argument("--xlated", action="store_true", help="the BPF the kernel runs, after its rewrites (default)"),
    argument("--jited", action="store_true", help="the JIT's x86-64 code (patched jumps of tail calls)"),
)
@argument("--source", action="store_true", help="interleave the cell's source lines (the default)")
@argument("--no-source", action="store_true", help="the code alone")
def dump(args, notebook: Notebook):
    """a program's code: translated BPF (bpftool) or the JIT's x86 (capstone), with the cell's source lines and each tail-call site marked"""
    program = notebook.session.program(args.program)
    print(program.dump("jited" if args.jited else "xlated", source=not args.no_source))


@command("doctor", python="bpfmagic.doctor.report()")
def doctor(args, notebook: Notebook):
    """environment report with the fix for each problem"""
    from .. import doctor as environment

    return environment.report()


COMMANDS: tuple[Command, ...] = (ls, unload, reset, globals_, dump, doctor)
