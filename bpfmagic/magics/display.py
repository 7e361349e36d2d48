"""What the commands print or show beside the value they return: a module's summary after
a cell, a prog array's description, figures. Text only, from public attributes."""

from __future__ import annotations


def module_summary(module) -> str:
    """One line per cell: each program with its type and where it sits, new slot names, tables;
    then what the re-run did to the old version's slots and the cell's notes."""
    parts = []
    for p in module.programs.values():
        where = module.session.placement(p)
        parts.append(f"{p.name} ({p.type}{': ' + ', '.join(where) if where else ''})")
    tables = list(module.tables)
    text = f"{module.name}: " + ("; ".join(parts) if parts else "compiled, no program loaded yet")
    if module.new_slot_names:  # a slot named for the first time (a typo in SLOT() shows up here)
        text += f" | new slot names: {', '.join(module.new_slot_names)}"
    if tables:
        text += f" | tables: {', '.join(tables)}"
    return "\n".join([text, *module.slot_notes, *(f"note: {n}" for n in module.notes)])


def compile_messages(module, verbose: bool) -> str | None:
    """The compiler's and verifier's log with -v, else its warnings alone (None: nothing to say)."""
    if verbose and module.compile_log.strip():
        return module.compile_log.rstrip()
    warnings = [ln for ln in module.compile_log.splitlines() if "warning:" in ln]
    return "\n".join(warnings) if warnings else None


def describe_array(array) -> str:
    """A new prog array: its size, the program type it holds and how its keys are named."""
    if array.keys == "syscalls":
        keys = "keys are syscall names (" + ", ".join(f"{array.key_name(i)}={i}" for i in range(min(3, array.size)) if array.key_name(i)) + ", ...)"
    elif array.names:
        keys = "named slots: " + ", ".join(f"{n}={i}" for n, i in sorted(array.names.items(), key=lambda kv: kv[1]))
    else:
        keys = "integer keys; new names take the lowest free index"
    kind = array.owner_type or "any program type (fixed by the first program that uses it)"
    return f"prog array {array.name}: {array.size} slots for {kind}; {keys}"


def not_counted(frame) -> None:
    """The note of a slots or stats frame whose tail-call counts are unknown (<NA>), and why."""
    if "not_counted" in frame.attrs:
        print("note: " + frame.attrs["not_counted"])


def show(value) -> None:
    """Show VALUE in the cell's output now (the command returns another value)."""
    from IPython.display import display

    display(value)


def show_figure(figure) -> None:
    """A matplotlib figure as SVG in the cell's output."""
    from IPython.display import SVG

    from ..experiments.testrun import figure_svg

    show(SVG(figure_svg(figure)))
