"""Session prog arrays and their slots: ``%bpf progarray``, ``slots``, ``slot``, ``unslot``."""

from __future__ import annotations

from IPython.core.error import UsageError

from . import display
from .registry import Command, Notebook, argument, command


@command("progarray", python="s.progarray(NAME, SIZE, type=None, keys=None, slots=None)")
@argument("name")
@argument("size", type=int)
@argument("--type", help="program type (xdp, raw_tracepoint, sched_cls, ...)")
@argument("--keys", choices=["syscalls"], help="keys are the architecture's syscall names")
@argument("--slots", help="names for indices 0, 1, ... (a,b,c) or explicit (a=3,b=7)")
def progarray(args, notebook: Notebook):
    """create a session prog array"""
    array = notebook.session.progarray(args.name, args.size, type=args.type, keys=args.keys, slots=args.slots)
    print(display.describe_array(array))


@command("slots", python="s.slots(ARRAY, all_keys=False)")
@argument("array", nargs="?", completes="array")
@argument("--all", action="store_true", help="every index, empty ones too")
def slots(args, notebook: Notebook):
    """slots of every array (or ARRAY): tail calls per slot since the array was created
    (whoever sat in it; %bpf stats splits them per program), run counts"""
    frame = notebook.session.slots(args.array, all_keys=args.all)
    display.not_counted(frame)
    return frame


@command("slot", python='s.slot("ARRAY[KEY]", "MODULE.FUNC")')
@argument("assignment", metavar="ARRAY[KEY]=MODULE.FUNC", completes="slot_assignment")
def slot(args, notebook: Notebook):
    """put a loaded program into a slot: ARRAY[KEY]=MODULE.FUNC (one atomic map update)"""
    spec, eq, program = args.assignment.partition("=")
    if not eq:
        raise UsageError("write %bpf slot ARRAY[KEY]=MODULE.FUNC")
    notebook.session.slot(spec.strip(), program.strip())
    print(f"{spec.strip()} <- {program.strip()}")


@command("unslot", python='s.unslot("ARRAY[KEY]")')
@argument("spec", metavar="ARRAY[KEY]", completes="slot_key")
def unslot(args, notebook: Notebook):
    """empty a slot: ARRAY[KEY]"""
    had = notebook.session.unslot(args.spec)
    print(f"{args.spec} emptied" if had else f"{args.spec} was already empty")


COMMANDS: tuple[Command, ...] = (progarray, slots, slot, unslot)
