"""The text each backend compiles from a cell.

bpfmagic adds three things to a cell: the session's prog arrays (shared
through pins in BCC, through map fds in --core), SLOT(array, name) keys, and
counters of the tail calls made into each slot and of those that fell
through. They go in through the preprocessor: macros defined ahead of the
code (for --core after the cell's own includes), with ``#line`` markers so
that every line of the cell keeps its number and, except at BCC's
``ARRAY.call`` sites, its columns. The one textual edit, BCC's call sites,
is taken from the syntax tree and recorded in a column map so diagnostics
on those lines still point at the user's columns."""
from __future__ import annotations

from dataclasses import dataclass, field

from .analysis import CellSyntax
from .records import event_tables, output_calls

COUNTER_PREFIX = "__bm_calls_"
LOST_COUNTER = "__bm_lost"
# The cell's own file name in what clang compiles for --core (the cell's
# origin is a label for messages, never a path); messages are relabelled.
CORE_CELL_FILE = "cell.bpf.c"


def counter_name(array: str) -> str:
    return f"{COUNTER_PREFIX}{array}"


@dataclass
class ColumnMap:
    """Column shifts that BCC's call-site edits made: line -> [(column in the
    compiled text where an edit ended, shift)], to give diagnostics back the
    cell's columns."""
    shifts: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def cell_column(self, line: int, column: int) -> int:
        for end, shift in reversed(self.shifts.get(line, [])):
            if column > end:
                return column - shift
        return column


def _slot_defines(cell: CellSyntax, slot_index) -> list[str]:
    lines = ["#define SLOT(_a, _k) __BM_SLOT_##_a##_##_k"]
    for ref in {(r.array, r.key) for r in cell.slot_refs}:
        lines.append(f"#define __BM_SLOT_{ref[0]}_{ref[1]} {slot_index(*ref)}")
    return lines


def bcc_text(cell: CellSyntax, arrays: dict[str, tuple[str, int, str]], slot_index,
             count_calls: bool) -> tuple[str, str, ColumnMap]:
    """What BCC compiles: (the cell's text, a header BCC force-includes ahead
    of it, the column map). ``arrays``: each session array -> (pin, size,
    counter pin). Every prog array the cell declares is a session array
    (BPF_PROG_ARRAY, or BPF_TABLE("prog", ...)), opened through its pin. The
    header holds bpfmagic's macros, so the cell's text keeps its lines: BCC
    quotes source lines in verifier logs by their number in the text it got."""
    lines = ["#undef BPF_PROG_ARRAY",
             "#define BPF_PROG_ARRAY(_n, _sz) BPF_TABLE_PINNED(\"prog\", u32, u32, _n, _sz, __BM_PIN_##_n) "
             "__BM_COUNTERS_##_n",
             # BPF_TABLE("prog", ...) is renamed to this (same length: columns stay).
             "#define _BM_PROGS(_t, _k, _v, _n, _sz) BPF_PROG_ARRAY(_n, _sz)"]
    for name, (pin, size, counter_pin) in arrays.items():
        lines.append(f'#define __BM_PIN_{name} "{pin}"')
        counters = (f'; BPF_TABLE_PINNED("percpu_array", u32, u64, {counter_name(name)}, {2 * size}, '
                    f'"{counter_pin}")') if count_calls else ""
        lines.append(f"#define __BM_COUNTERS_{name} {counters}")
    lines += _slot_defines(cell, slot_index)
    declared = {a.name for a in cell.arrays}
    # Session arrays the cell uses without declaring: declared in front of its first line
    # of code, on that line (BCC's tables must be declared in the main file).
    undeclared = [f"BPF_PROG_ARRAY({name}, {arrays[name][1]});" for name in sorted(arrays)
                  if name not in declared and (cell.uses(name) or any(t.array == name for t in cell.tail_calls))]

    data = cell.source.encode()
    edits: list[tuple[int, int, bytes]] = []
    # Failed ring/perf outputs bump __bm_lost[slot of the table] per CPU: Stream.lost.
    tables = event_tables(cell.source)
    if tables:
        undeclared.append(f"BPF_PERCPU_ARRAY({LOST_COUNTER}, u64, {len(tables)});")
        slot = {name: i for i, name in enumerate(tables)}
        for out in output_calls(cell.source, set(tables)):
            call = data[out.start:out.end].decode()
            bump = (f"{{ u32 __bm_lk = {slot[out.table]}; u64 *__bm_lv = {LOST_COUNTER}.lookup(&__bm_lk); "
                    f"if (__bm_lv) *__bm_lv += 1; }}")
            if out.method == "ringbuf_reserve":  # keeps the pointer: BCC infers the record type from it
                text = f"({{ void *__bm_rp = {call}; if (!__bm_rp) {bump} __bm_rp; }})"
            else:
                text = f"({{ int __bm_rc = {call}; if (__bm_rc) {bump} __bm_rc; }})"
            edits.append((out.start, out.end, _one_line(text, call)))
    if undeclared:
        at = cell.first_code_offset
        edits.append((at, at, " ".join(undeclared).encode() + b" "))
    for decl in cell.arrays:
        if decl.form == "table":
            edits.append((decl.keyword_start, decl.keyword_start + len("BPF_TABLE"), b"_BM_PROGS"))
    if count_calls:
        for call in cell.tail_calls:
            if call.kind != "call" or call.array not in arrays:
                continue
            counter, size = counter_name(call.array), arrays[call.array][1]
            key = data[call.key_start:call.key_end].decode()
            bump = f"__bm_v = {counter}.lookup(&__bm_i); if (__bm_v) *__bm_v += 1;"
            text = (f"({{ u32 __bm_k = ({key}); u32 __bm_i = __bm_k; u64 *__bm_v; {bump} "
                    f"{call.array}.call({call.ctx}, __bm_k); __bm_i = __bm_k + {size}; {bump} }})")
            edits.append((call.start, call.end, _one_line(text, data[call.start:call.end].decode())))
    edits.sort()
    out, last = [], 0
    columns = ColumnMap()
    line_starts = _line_starts(data)
    for start, end, replacement in edits:
        if start < last:
            continue
        out += [data[last:start], replacement]
        if b"\n" not in data[start:end]:
            line = _line_of(line_starts, start)
            column_end = start - line_starts[line - 1] + len(replacement)
            shift = len(replacement) - (end - start)
            previous = sum(s for _, s in columns.shifts.get(line, []))
            columns.shifts.setdefault(line, []).append((column_end + previous, shift))
        last = end
    out.append(data[last:])
    return b"".join(out).decode(errors="replace"), "\n".join(lines) + "\n", columns


def _one_line(text: str, original: str) -> bytes:
    """TEXT on one line, then as many line breaks as ORIGINAL had: later lines keep their numbers."""
    return text.replace("\n", " ").encode() + b"\n" * original.count("\n")


def _line_starts(data: bytes) -> list[int]:
    starts = [0]
    i = data.find(b"\n")
    while i >= 0:
        starts.append(i + 1)
        i = data.find(b"\n", i + 1)
    return starts


def _line_of(starts: list[int], offset: int) -> int:
    import bisect
    return bisect.bisect_right(starts, offset)


# --core: declarations that need no header (uapi-style cells include none of vmlinux.h).
_CORE_PRELUDE = """#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
"""
_CORE_BASE = r"""#ifndef BPF_PROG_ARRAY
#define BPF_PROG_ARRAY(_name, _n) struct { int (*type)[3]; int (*max_entries)[_n]; unsigned int *key; \
    unsigned int *value; } _name __attribute__((section(".maps"), used))
#endif
#define __BM_SIZE(_a) (sizeof(*(_a).max_entries) / sizeof(int))
static __attribute__((always_inline)) inline void __bm_bump(void *map, unsigned int i)
{
    unsigned long long *v = ((void *(*)(void *, const void *))1)(map, &i); /* bpf_map_lookup_elem */
    if (v)
        *v += 1;
}
"""
# Each tail call compares its map with every prog array the cell may declare: __BM_TRY_<name> is
# empty until that array's declaration has been seen (in whatever #if branch the compiler keeps),
# then bumps its counter. With a constant map argument clang folds the comparisons to the one that matches.
_CORE_COUNTING = r"""#define bpf_tail_call(_c, _m, _k) ({ unsigned int __bm_k = (_k); __BM_COUNT(_m, __bm_k, 0); \
    long __bm_r = (bpf_tail_call)(_c, _m, __bm_k); __BM_COUNT(_m, __bm_k, 1); __bm_r; })
#define bpf_tail_call_static(_c, _m, _k) ({ __BM_COUNT(_m, _k, 0); (bpf_tail_call_static)(_c, _m, _k); \
    __BM_COUNT(_m, _k, 1); })
"""
_CORE_LOSS = r"""#define bpf_ringbuf_output(_r, _d, _s, _f) ({ long __bm_rc = (bpf_ringbuf_output)(_r, _d, _s, _f); \
    if (__bm_rc) __BM_LOST(_r); __bm_rc; })
#define bpf_ringbuf_reserve(_r, _s, _f) ({ void *__bm_rp = (bpf_ringbuf_reserve)(_r, _s, _f); \
    if (!__bm_rp) __BM_LOST(_r); __bm_rp; })
"""


def _dispatch(macro: str, args: str, names: list[str]) -> str:
    """``#define MACRO(args) ({ MACRO_TRY_a(args); MACRO_TRY_b(args); })`` with every TRY empty for now."""
    tries = " ".join(f"{macro}_TRY_{n}({args});" for n in names)
    empties = "\n".join(f"#define {macro}_TRY_{n}({args}) ((void)0)" for n in names)
    return f"#define {macro}({args}) ({{ {tries} }})\n{empties}"


def _count_try(name: str) -> str:
    return (f"#undef __BM_COUNT_TRY_{name}\n#define __BM_COUNT_TRY_{name}(_m, _k, _x) "
            f"({{ if ((const void *)(_m) == (const void *)&{name}) "
            f"__bm_bump(&{counter_name(name)}, (_k) + (_x) * __BM_SIZE({name})); }})")


def _loss_try(name: str, slot: int) -> str:
    return (f"#undef __BM_LOST_TRY_{name}\n#define __BM_LOST_TRY_{name}(_r) "
            f"({{ if ((const void *)(_r) == (const void *)&{name}) __bm_bump(&{LOST_COUNTER}, {slot}); }})")


def _percpu_u64_map(name: str, entries: int) -> str:
    # type 6: BPF_MAP_TYPE_PERCPU_ARRAY. A counter that reuses the session's map takes its size from it.
    return (f"struct {{ int (*type)[6]; int (*max_entries)[{entries}]; unsigned int *key; "
            f"unsigned long long *value; }} {name} __attribute__((section(\".maps\"), used));")


def core_text(cell: CellSyntax, session_arrays: dict[str, int], slot_index, count_calls: bool,
              count_losses: bool = True) -> str:
    """The text clang compiles for a --core cell: the cell's includes first
    (vmlinux.h and libbpf's headers when it has none), then bpfmagic's
    declarations, then the rest of the cell, every line under its own number
    (``#line N "cell.bpf.c"``). ``session_arrays``: name -> size of the
    session's arrays; those the cell uses without declaring are declared."""
    data = cell.source.encode()
    insert_at = cell.instrument_offset if cell.includes else 0
    head, tail = data[:insert_at], data[insert_at:]
    resume_line = head.count(b"\n") + 1
    if head and not head.endswith(b"\n"):
        tail = tail.split(b"\n", 1)[1] if b"\n" in tail else b""
        head_line_rest = data[insert_at:].split(b"\n", 1)[0]
        head = head + head_line_rest + b"\n"
        resume_line += 1

    block = [_CORE_BASE]
    block += _slot_defines(cell, slot_index)
    declared = sorted({a.name for a in cell.arrays})
    undeclared = [n for n in sorted(session_arrays) if n not in declared and cell.uses(n)]
    for name in undeclared:
        block.append(f"BPF_PROG_ARRAY({name}, {session_arrays[name]});")
    after: dict[int, list[str]] = {}  # line of the cell -> directives that go after it
    if count_calls:
        block.append(_CORE_COUNTING)
        block.append(_dispatch("__BM_COUNT", "_m, _k, _x", undeclared + declared))
        for name in undeclared + declared:
            block.append(_percpu_u64_map(counter_name(name), 1))
        block += [_count_try(name) for name in undeclared]
        for decl in cell.arrays:
            after.setdefault(decl.end_line, []).append(_count_try(decl.name))
    rings = sorted({r.name for r in cell.rings})
    if count_losses and rings:
        block.append(_CORE_LOSS)
        block.append(_dispatch("__BM_LOST", "_r", rings))
        block.append(_percpu_u64_map(LOST_COUNTER, len(rings)))
        for ring in cell.rings:
            after.setdefault(ring.end_line, []).append(_loss_try(ring.name, rings.index(ring.name)))

    out = []
    if not cell.includes:
        out.append(_CORE_PRELUDE)
    out.append(f'#line 1 "{CORE_CELL_FILE}"\n')
    out.append(head.decode(errors="replace"))
    out.append('#line 1 "bpfmagic-instrumentation.h"\n')
    out.append("\n".join(block) + "\n")
    out.append(f'#line {resume_line} "{CORE_CELL_FILE}"\n')
    tail_lines = tail.decode(errors="replace").split("\n")
    for i, text in enumerate(tail_lines):
        line = resume_line + i
        out.append(text + ("\n" if i < len(tail_lines) - 1 else ""))
        if line in after:
            if i == len(tail_lines) - 1:
                out.append("\n")
            out.append("\n".join(after[line]) + f'\n#line {line + 1} "{CORE_CELL_FILE}"\n')
    if not cell.has_license:
        out.append('\nchar __bm_license[] __attribute__((section("license"), used)) = "GPL";\n')
    return "".join(out)
