"""Code a cell's own function-like macros write. Kernel samples and benchmarks
build chains with ``#define PROG(X) SEC("...") int bpf_prog##X(ctx) { ...
bpf_tail_call(ctx, &progs, X+1); ... }`` and one ``PROG(n)`` line per stage,
or name handlers ``PROG(SYS__NR_write)(struct pt_regs *ctx) { ... }``. The
syntax tree of the cell sees a macro call where the function is: no name, no
tail call. Here the cell goes through clang's preprocessor with its includes
blanked (only the cell's own macros expand; SEC() and the helpers stay as
written), the expansion is laid back on the cell's lines, and the functions
and tail calls the macros wrote join the cell's syntax under their real names
and the lines of their invocations (where clang's __LINE__ puts them too).

Only done when a cell calls one of its own macros at file scope: the common
cell pays nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace

from .analysis import CellSyntax, _text, analyse
from .sizes import blank_includes


def _macro_bodies(cell: CellSyntax) -> dict[str, object]:
    """name -> value node of each function-like macro the cell defines at file scope."""
    out = {}
    for node in cell.trees[0].root_node.named_children:
        if node.type == "preproc_function_def":
            name, value = node.child_by_field_name("name"), node.child_by_field_name("value")
            if name is not None and value is not None:
                out[_text(name)] = value
    return out


def _invoked_lines(cell: CellSyntax, macros: set[str]) -> set[int]:
    """Lines (1-based) of file-scope code that calls one of MACROS where C has no call: a statement at
    file scope (PROG(0)), a function's type or name (PROG(F)(struct pt_regs *ctx) { ... }). Such a
    macro writes code the syntax tree cannot see."""
    lines = set()
    for node in cell.trees[0].root_node.named_children:
        if node.type.startswith("preproc") or node.type == "comment":
            continue
        stack = [node]
        while stack:
            n = stack.pop()
            if n.type == "compound_statement":
                continue  # a body's own calls are the syntax tree's to read
            stack.extend(n.children)
            if n.type in ("call_expression", "identifier", "type_identifier"):
                head = n.child_by_field_name("function") if n.type == "call_expression" else n
                if head is not None and _text(head) in macros:
                    lines.add(n.start_point[0] + 1)
    return lines


def _on_cell_lines(expanded: str, line_count: int) -> str:
    """clang -E's output laid back on the cell's lines: each output line goes to the
    line its line markers (``# N "file" flags``) say it came from."""
    out = [""] * line_count
    line, in_cell = 1, True
    for text in expanded.split("\n"):
        parts = text.split(" ", 2) if text.startswith("# ") else None
        if parts and len(parts) >= 3 and parts[1].isdigit() and parts[2].startswith('"'):
            line, in_cell = int(parts[1]), parts[2].startswith('"<stdin>"')
            continue
        if in_cell and 1 <= line <= line_count:
            out[line - 1] = (out[line - 1] + " " + text) if out[line - 1] else text
        if in_cell:
            line += 1
    return "\n".join(out)


def expand_macro_code(cell: CellSyntax, cflags=(), include_dirs=()) -> bool:
    """Add to CELL the functions and tail calls its own macros write (see the module's text).
    Returns whether anything was added."""
    macros = set(_macro_bodies(cell))
    if not macros:
        return False
    lines = _invoked_lines(cell, macros)
    clang = shutil.which("clang")
    if not lines or clang is None:
        return False
    source_lines = cell.source.count("\n") + 1
    cmd = [clang, "-E", "-target", "bpf", *(f"-I{os.path.abspath(d)}" for d in include_dirs), *cflags, "-x", "c", "-"]
    try:
        res = subprocess.run(cmd, input=blank_includes(cell.source, keep_local=False), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if res.returncode != 0:
        return False  # the compile itself will say what is wrong
    written = analyse(_on_cell_lines(res.stdout, source_lines))
    added = False
    # Functions: a PROG(0) line's function is new; a function the tree named by its macro
    # call, "(SYS__NR_write)", takes its real name and keeps its place in the cell's text.
    by_line = {f.line: f for f in cell.functions.values()}
    for fn in written.functions.values():
        if fn.line not in lines or fn.name in cell.functions:
            continue
        old = by_line.get(fn.line)
        if old is not None and old.name not in written.functions:
            del cell.functions[old.name]
            named = {"name": fn.name, "section": fn.section or old.section, "context": fn.context or old.context}
            cell.functions[fn.name] = replace(old, **named, prog_type=fn.prog_type or old.prog_type)
        else:
            # No place in the cell's text to instrument (start -1): it is counted by the helper's macro,
            # where the backend's instrumentation works on the expansion.
            cell.functions[fn.name] = replace(fn, start=-1, end=-1, body_start=-1, header_end=-1)
        added = True
    seen = {(t.line, t.array) for t in cell.tail_calls}
    for call in written.tail_calls:
        if call.line in lines and (call.line, call.array) not in seen:
            cell.tail_calls.append(replace(call, start=-1, end=-1, key_start=-1, key_end=-1, expanded=True))
            added = True
    if added:
        for name, nodes in written.identifier_nodes.items():
            if any(n.start_point[0] + 1 in lines for n in nodes):
                cell.identifier_nodes.setdefault(name, []).extend(n for n in nodes if n.start_point[0] + 1 in lines)
        cell.trees += written.trees
        cell.tail_calls.sort(key=lambda t: (t.line, t.start))
    return added
