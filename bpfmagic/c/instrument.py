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

from .analysis import CellSyntax, constant_key
from .records import event_tables, output_calls

COUNTER_PREFIX = "__bm_calls_"
# Per call site counters, session-wide, in runs of SITES: [base + line] calls made at the call site
# on that line of the cell, [SITES + base + line] those that fell through, [2 * SITES + ...] of those
# the limit (paths on); each loaded module gets its own base. A site whose key is one constant slot
# counts only in the last two runs (IMPLIED_CALLS, IMPLIED_MISSED): one counter per hop tells both the
# site and the slot, which sites.py credits to that slot (const_site_keys).
SITES_MAP = "__bm_sites"  # a kernel/counters.CounterTable: a row of counters per CPU
SITES = 1 << 15
IMPLIED_CALLS, IMPLIED_MISSED = 3 * SITES, 4 * SITES
SITES_ENTRIES = 5 * SITES
PATH_RECORDS = "__bm_path"  # each CPU's path record, in one array element (experiments/paths.PathMaps)
CURSOR_MAP = "__bm_cursor"  # chains as data: each CPU's position in the chain it runs
LOST_COUNTER = "__bm_lost"
# The cell's own file name in what clang compiles for --core (the cell's
# origin is a label for messages, never a path); messages are relabelled.
CORE_CELL_FILE = "cell.bpf.c"


def counter_name(array: str) -> str:
    return f"{COUNTER_PREFIX}{array}"


# Counters are bumped at a fixed address (kernel/counters.py says why): the element of a one-entry
# array, reached through an ld_imm64 of BPF_PSEUDO_MAP_VALUE (src_reg 2), which BCC cells make from
# the session map's fd (LLVM's llvm.bpf.pseudo intrinsic, as BCC's own bpf_pseudo_fd) and --core
# cells as a global in a section of its own that libbpf relocates. __bm_add adds 1 in this CPU's
# row: plainly when every CPU has a row, atomically when CPUs share rows (``shared``).
BUMP_HELPER = r"""extern unsigned long long __bm_pseudo(unsigned long long, unsigned long long) __asm__("llvm.bpf.pseudo");
#define __BM_TABLE(_fd) ((unsigned long long *)__bm_pseudo(2, (_fd)))
static __attribute__((always_inline)) inline void __bm_add(unsigned long long *t, unsigned int i, unsigned int width,
                                                           unsigned int rows, int shared)
{
    /* bpf_get_smp_processor_id (inlined by the verifier on x86-64 since 6.10), taken as the u64 it is */
    unsigned long long cpu = ((unsigned long long (*)(void))8)();
    unsigned long long at;
    if (i >= width)
        return;
    if (shared)
        cpu %= rows;
    if (__builtin_constant_p(i)) {
        if (cpu >= rows)
            return;
        at = cpu * width + i;
    } else {
        at = cpu * width + i;
        /* clang would check a copy and index with the original: the bound on the register used */
        __asm__ volatile("" : "+r"(at));
        if (at >= (unsigned long long)rows * width)
            return;
    }
    if (shared)
        __sync_fetch_and_add(&t[at], 1);
    else
        t[at] += 1;
}
"""


def bump(table, index: str, address: str | None = None) -> str:
    """C that adds 1 to counter INDEX of TABLE (a kernel/counters.CounterTable, or anything with its
    fd, width, rows and shared): at ADDRESS (a --core global), else at the map's own (its fd)."""
    where = address if address is not None else f"__BM_TABLE({table.fd})"
    return f"__bm_add({where}, {index}, {table.width}, {table.rows}, {int(table.shared)});"


# BCC writes the struct of a tracepoint's args (read from tracefs, as many lines as the event has
# fields) in front of each function that takes one, which moves every later line. bpfmagic numbers
# such a function's first line from REMAP_BASE * (i + 1) (``#line``: the struct's lines come out
# there too) and gives the line after its header its own number back.
REMAP_BASE = 1_000_000


@dataclass
class ColumnMap:
    """Where the text BCC compiled puts the cell's positions: column shifts that
    BCC's call-site edits made, line -> [(column in the compiled text where an
    edit ended, shift)], and the cell's line of each region numbered from
    REMAP_BASE (a tracepoint function's first line and the struct BCC put in
    front of it), to give diagnostics back the cell's lines and columns."""

    shifts: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    remapped: list[int] = field(default_factory=list)

    def cell_line(self, line: int) -> int:
        region = line // REMAP_BASE - 1
        return self.remapped[region] if 0 <= region < len(self.remapped) else line

    def cell_column(self, line: int, column: int) -> int:
        for end, shift in reversed(self.shifts.get(line, [])):
            if column > end:
                return column - shift
        return column


def _tracepoint_functions(cell: CellSyntax) -> list:
    """Functions BCC writes a tracepoint struct in front of: TRACEPOINT_PROBE()s, and
    functions of their own that take a ``struct tracepoint__CAT__EVENT *``."""
    found = [
        fn
        for fn in cell.functions.values()
        if not fn.static
        and fn.header_end >= 0
        and ((fn.prog_type == "tracepoint" and fn.context is None) or (fn.context or "").startswith("tracepoint__"))
    ]
    return sorted(found, key=lambda fn: fn.start)


def _slot_defines(cell: CellSyntax, slot_index) -> list[str]:
    lines = ["#define SLOT(_a, _k) __BM_SLOT_##_a##_##_k"]
    for ref in {(r.array, r.key) for r in cell.slot_refs}:
        lines.append(f"#define __BM_SLOT_{ref[0]}_{ref[1]} {slot_index(*ref)}")
    return lines


def bcc_text(
    cell: CellSyntax,
    arrays: dict[str, tuple[str, int, str]],
    slot_index,
    count_calls: bool,
    sites: tuple[str, int] | None = None,
    paths: dict | None = None,
    cursor: str | None = None,
    implied: dict[int, tuple[str, int]] | None = None,
) -> tuple[str, str, ColumnMap]:
    """What BCC compiles: (the cell's text, a header BCC force-includes ahead
    of it, the column map). ``arrays``: each session array -> (pin, size,
    its counter table). Every prog array the cell declares is a session array
    (BPF_PROG_ARRAY, or BPF_TABLE("prog", ...)), opened through its pin. The
    header holds bpfmagic's macros, so the cell's text keeps its lines: BCC
    quotes source lines in verifier logs by their number in the text it got.
    ``implied``: const_site_keys() of the cell, when the caller has it already."""
    lines = [
        "#undef BPF_PROG_ARRAY",
        '#define BPF_PROG_ARRAY(_n, _sz) BPF_TABLE_PINNED("prog", u32, u32, _n, _sz, __BM_PIN_##_n) __BM_COUNTERS_##_n',
        # BPF_TABLE("prog", ...) is renamed to this (same length: columns stay).
        "#define _BM_PROGS(_t, _k, _v, _n, _sz) BPF_PROG_ARRAY(_n, _sz)",
    ]
    for name, (pin, _size, _counters) in arrays.items():
        lines.append(f'#define __BM_PIN_{name} "{pin}"')
        lines.append(f"#define __BM_COUNTERS_{name}")  # the counters are reached by their fd (bump())
    lines += _slot_defines(cell, slot_index)
    if count_calls or (paths and sites is not None):
        lines.append(BUMP_HELPER)
    if paths:  # the session's path maps (bpfmagic/experiments/paths.py), opened by their pins
        from .path_record import C_TYPES, PATH_COUNTS

        pins = paths["pins"]
        lines += [
            C_TYPES,
            f'BPF_TABLE_PINNED("hash", struct __bm_path_key, u64, __bm_pathc, {PATH_COUNTS}, "{pins["bm_pathc"]}");',
            f'BPF_TABLE_PINNED("array", u32, u32, __bm_pathctl, 1, "{pins["bm_pathctl"]}");',
        ]
    chained = any(t.kind == "chain" for t in cell.tail_calls)
    if cursor and (chained or cell.uses(CURSOR_MAP)):  # chains as data: the per-CPU position of the run
        lines.append(f'BPF_TABLE_PINNED("percpu_array", u32, u32, {CURSOR_MAP}, 1, "{cursor}");')
    declared = {a.name for a in cell.arrays}
    # Session arrays the cell uses without declaring: declared in front of its first line
    # of code, on that line (BCC's tables must be declared in the main file).
    undeclared = [
        f"BPF_PROG_ARRAY({name}, {arrays[name][1]});"
        for name in sorted(arrays)
        if name not in declared and (cell.uses(name) or any(t.array == name for t in cell.tail_calls))
    ]

    data = cell.source.encode()
    edits: list[tuple[int, int, bytes]] = []
    # Failed ring/perf outputs bump __bm_lost[slot of the table] per CPU: Stream.lost.
    tables = event_tables(cell.source)
    if tables:
        undeclared.append(f"BPF_PERCPU_ARRAY({LOST_COUNTER}, u64, {len(tables)});")
        slot = {name: i for i, name in enumerate(tables)}
        for out in output_calls(cell.source, set(tables)):
            call = data[out.start : out.end].decode()
            count_lost = f"{{ u32 __bm_lk = {slot[out.table]}; u64 *__bm_lv = {LOST_COUNTER}.lookup(&__bm_lk); if (__bm_lv) *__bm_lv += 1; }}"
            if out.method == "ringbuf_reserve":  # keeps the pointer: BCC infers the record type from it
                text = f"({{ void *__bm_rp = {call}; if (!__bm_rp) {count_lost} __bm_rp; }})"
            else:
                text = f"({{ int __bm_rc = {call}; if (__bm_rc) {count_lost} __bm_rc; }})"
            edits.append((out.start, out.end, _one_line(text, call)))
    if undeclared:
        at = cell.first_code_offset
        edits.append((at, at, " ".join(undeclared).encode() + b" "))
    if paths and sites is not None:
        from .path_record import c_helpers, record_at

        at = cell.first_code_offset
        helpers = c_helpers(
            record_at(f"__BM_TABLE({paths['rec_fd']})", paths["rows"]),
            "__bm_pathctl.lookup(&__bm_z)",
            "__bm_pathc.lookup(K)",
            "__bm_pathc.update(K, V)",
            bump(sites[0], f"{2 * SITES} + site"),
        )
        edits.append((at, at, b"\x00" + helpers.encode() + b" "))  # \x00: sorts first; stripped below
        for fn in cell.functions.values():
            if fn.body_start > 0 and not fn.static and fn.ctx_name:
                edits.append((fn.body_start, fn.body_start, f" __bm_path_enter({fn.ctx_name}, {sites[1] + fn.line});".encode()))
    for decl in cell.arrays:
        if decl.form == "table":
            edits.append((decl.keyword_start, decl.keyword_start + len("BPF_TABLE"), b"_BM_PROGS"))
    columns = ColumnMap()
    line_starts = _line_starts(data)
    for i, fn in enumerate(_tracepoint_functions(cell)):
        first, header_last = _line_of(line_starts, fn.start), _line_of(line_starts, fn.header_end)
        columns.remapped.append(first)
        # Leading NULs order what goes in at one line's start (stripped below): the previous function's
        # own number back, then this one's number, then anything else.
        edits.append((line_starts[first - 1], line_starts[first - 1], f"\x00\x00#line {REMAP_BASE * (i + 1)}\n".encode()))
        if header_last < len(line_starts):
            at = line_starts[header_last]
            edits.append((at, at, f"\x00\x00\x00#line {header_last + 1}\n".encode()))
    for call in cell.tail_calls:
        if call.expanded:
            continue  # inside a macro's expansion: no text of its own to rewrite
        if call.kind == "chain" and call.array in arrays and cursor:
            # CHAIN_NEXT(ctx, chain): the run's position + 1, counted like any call site
            _, size, counters = arrays[call.array]
            # An index past the end has no slot (the kernel falls through): only the site counts it.
            slot_bump = f"if (__bm_k < {size}) {{ {bump(counters, '__bm_i')} }}" if count_calls else ""
            path_in = path_out = site_in = site_out = ""
            if sites is not None and count_calls:
                site = sites[1] + call.line
                site_in, site_out = f" {bump(sites[0], str(site))}", f" {bump(sites[0], str(SITES + site))}"
            if paths and sites is not None:
                site = sites[1] + call.line
                path_in, path_out = f" __bm_path_call({call.ctx}, {site}, __bm_k);", f" __bm_path_miss({site});"
            text = (
                f"({{ u32 __bm_z = 0; u32 *__bm_c = {CURSOR_MAP}.lookup(&__bm_z); if (__bm_c) {{ "
                f"u32 __bm_k = *__bm_c + 1; *__bm_c = __bm_k; u32 __bm_i = __bm_k; "
                f"{slot_bump}{site_in}{path_in} {call.array}.call({call.ctx}, __bm_k); __bm_i = __bm_k + {size}; "
                f"{slot_bump}{site_out}{path_out} }} }})"
            )
            original = data[call.start : call.end]
            edits.append((call.start, call.end, text.encode() + b"\n" * original.count(b"\n")))
    if implied is None:
        implied = const_site_keys(cell, slot_index, {n: a[1] for n, a in arrays.items()}) if count_calls and sites is not None else {}
    if count_calls or (paths and sites is not None):
        for call in cell.tail_calls:
            if call.kind != "call" or call.array not in arrays or call.expanded:
                continue
            _, size, counters = arrays[call.array]
            key = data[call.key_start : call.key_end].decode()
            count_in = count_out = ""
            if count_calls:
                # An index past the end has no slot (the kernel falls through): counted once, at [2 * size].
                slot_in = bump(counters, f"(__bm_k < {size} ? __bm_k : {2 * size})")
                slot_out = f"if (__bm_k < {size}) {{ {bump(counters, f'__bm_k + {size}')} }}"
                count_in, count_out = slot_in, slot_out
                if sites is not None:
                    site = sites[1] + call.line
                    count_in += f" {bump(sites[0], str(site))}"
                    count_out += f" {bump(sites[0], str(SITES + site))}"
                    if call.line in implied:
                        # clang keeps one branch: with the key the constant slot, one counter per hop
                        # names both the site and the slot; otherwise the slot's and the site's.
                        known = f"__builtin_constant_p(__bm_k) && __bm_k == {implied[call.line][1]}"
                        count_in = f"if ({known}) {{ {bump(sites[0], str(IMPLIED_CALLS + site))} }} else {{ {count_in} }}"
                        count_out = f"if ({known}) {{ {bump(sites[0], str(IMPLIED_MISSED + site))} }} else {{ {count_out} }}"
            path_in = path_out = ""
            if paths and sites is not None:
                site = sites[1] + call.line
                path_in = f" __bm_path_call({call.ctx}, {site}, __bm_k);"
                path_out = f" __bm_path_miss({site});"
            text = f"({{ u32 __bm_k = ({key}); {count_in}{path_in} {call.array}.call({call.ctx}, __bm_k); {count_out}{path_out} }})"
            original = data[call.start : call.end]
            # One line for the wrapper, then the call's own line breaks: later lines keep their numbers.
            edits.append((call.start, call.end, text.replace("\n", " ").encode() + b"\n" * original.count(b"\n")))
    edits.sort()
    out, last = [], 0
    for start, end, replacement in edits:
        if start < last:
            continue
        replacement = replacement.lstrip(b"\x00")
        out += [data[last:start], replacement]
        if b"\n" not in data[start:end] and not replacement.startswith(b"#line "):
            line = _line_of(line_starts, start)
            column_end = start - line_starts[line - 1] + len(replacement)
            shift = len(replacement) - (end - start)
            previous = sum(s for _, s in columns.shifts.get(line, []))
            columns.shifts.setdefault(line, []).append((column_end + previous, shift))
        last = end
    out.append(data[last:])
    return b"".join(out).decode(errors="replace"), "\n".join(lines) + "\n", columns


def const_site_keys(cell: CellSyntax, slot_index, sizes: dict[str, int]) -> dict[int, tuple[str, int]]:
    """Lines whose one tail call (an ``ARRAY.call``) names a constant slot of a session array:
    line -> (array, index). Such a site counts its calls and misses once, in the sites map
    (IMPLIED_CALLS/IMPLIED_MISSED), and they are credited to that slot. The C checks the
    constant again (``__builtin_constant_p``), so a key the text misreads still counts right."""
    per_line: dict[int, list] = {}
    for call in cell.tail_calls:
        per_line.setdefault(call.line, []).append(call)
    out = {}
    for line, calls in per_line.items():
        call = calls[0]
        if len(calls) != 1 or call.kind != "call" or call.array not in sizes:
            continue
        index = constant_key(call.key, cell.source, lambda name, array=call.array: slot_index(array, name))
        if index is not None and 0 <= index < sizes[call.array]:
            out[line] = (call.array, index)
    return out


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
_CORE_BASE = r"""#if defined(BPF_KPROBE) && !defined(BPF_UPROBE)
/* libbpf before 1.2 (Debian 12 has 1.1): bpf_tracing.h lacks the uprobe spellings libbpf-tools
 * use; they are its kprobe macros (a uprobe's context is the same struct pt_regs) */
#define BPF_UPROBE(name, args...) BPF_KPROBE(name, ##args)
#define BPF_URETPROBE(name, args...) BPF_KRETPROBE(name, ##args)
#endif
#ifndef BPF_PROG_ARRAY
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
# The call site's own counter (__LINE__ is the cell's line of the call: the #line markers keep it).
_CORE_SITES = r"""#undef __BM_SITE_COUNT
#define __BM_SITE_COUNT(_x) __BM_SITE_BUMP(__BM_SITE_BASE + __LINE__ + (_x) * __BM_SITES)
"""
# bpf_tail_call keeps its value: libbpf declares it `long`, old kernel samples and Katran declare
# their own `void (*bpf_tail_call)(...)`, and __typeof__/__builtin_choose_expr take either (the
# call is evaluated once). Each tail call compares its map with every prog array the cell may declare: __BM_COUNT_TRY_<name>
# is empty until that array's declaration has been seen (in whatever #if branch the compiler keeps),
# then bumps its counter. With a constant map argument clang folds the comparisons to the one that matches.
_CORE_COUNTING = r"""#define __BM_SITE_COUNT(_x) ((void)0)
#ifndef __BM_PATH_CALL
#define __BM_PATH_CALL(_c, _k) ((void)0)
#define __BM_PATH_MISS() ((void)0)
#endif
#define __BM_IS_VOID(_e) __builtin_types_compatible_p(__typeof__(_e), void)
#define __BM_TAIL_CALL(_c, _m, _k) (bpf_tail_call)(_c, _m, _k)
#define bpf_tail_call(_c, _m, _k) ({ unsigned int __bm_k = (_k); __BM_COUNT(_m, __bm_k, 0); \
    __BM_PATH_CALL(_c, __bm_k); \
    __typeof__(__builtin_choose_expr(__BM_IS_VOID(__BM_TAIL_CALL(_c, _m, __bm_k)), 0L, __BM_TAIL_CALL(_c, _m, __bm_k))) __bm_r = \
        __builtin_choose_expr(__BM_IS_VOID(__BM_TAIL_CALL(_c, _m, __bm_k)), (__BM_TAIL_CALL(_c, _m, __bm_k), 0L), \
                              __BM_TAIL_CALL(_c, _m, __bm_k)); \
    __BM_COUNT(_m, __bm_k, 1); __BM_PATH_MISS(); __bm_r; })
#define bpf_tail_call_static(_c, _m, _k) ({ __BM_COUNT(_m, _k, 0); __BM_PATH_CALL(_c, _k); \
    (bpf_tail_call_static)(_c, _m, _k); __BM_COUNT(_m, _k, 1); __BM_PATH_MISS(); })
"""
_CORE_LOSS = r"""#define bpf_ringbuf_output(_r, _d, _s, _f) ({ long __bm_rc = (bpf_ringbuf_output)(_r, _d, _s, _f); \
    if (__bm_rc) __BM_LOST(_r); __bm_rc; })
#define bpf_ringbuf_reserve(_r, _s, _f) ({ void *__bm_rp = (bpf_ringbuf_reserve)(_r, _s, _f); \
    if (!__bm_rp) __BM_LOST(_r); __bm_rp; })
#define bpf_perf_event_output(_c, _m, _fl, _d, _s) ({ long __bm_rc = (bpf_perf_event_output)(_c, _m, _fl, _d, _s); \
    if (__bm_rc) __BM_LOST(_m); __bm_rc; })
"""


def _dispatch(macro: str, args: str, names: list[str], extra: tuple[str, ...] = ()) -> str:
    """``#define MACRO(args) ({ MACRO_TRY_a(args); MACRO_TRY_b(args); })`` with every TRY empty for now."""
    tries = " ".join([f"{first};" for first in extra] + [f"{macro}_TRY_{n}({args});" for n in names])
    empties = "\n".join(f"#define {macro}_TRY_{n}({args}) ((void)0)" for n in names)
    return f"#define {macro}({args}) ({{ {tries} }})\n{empties}"


# A call site may sit where NAME is a parameter or a local (`static int hop(void *skb, void *jt)`):
# the map is named inside a function defined at file scope right after its declaration, where
# NAME is the map whatever the call site's scope, and the site's macro calls that function.
# Only when more code follows the declaration on its line (a function there would land inside
# that code) does the macro name the map itself, as the site's scope sees it.
_HELPER = "static __attribute__((always_inline)) inline void"


def _count_try(name: str, table, at_file_scope: bool = True) -> str:
    size, counter = f"__BM_SIZE({name})", counter_name(name)
    if not at_file_scope:
        return (
            f"#undef __BM_COUNT_TRY_{name}\n#define __BM_COUNT_TRY_{name}(_m, _k, _x) "
            f"({{ if ((const void *)(_m) == (const void *)&{name}) {{ if ((unsigned int)(_k) < {size}) "
            f"{bump(table, f'(_k) + (_x) * {size}', counter)} else if (!(_x)) {bump(table, f'2 * {size}', counter)} }} }})"
        )
    return (
        f"{_HELPER} __bm_count_{name}(const void *m, unsigned int k, unsigned int x)\n"
        # past the end there is no slot: the call is counted once, at [2 * size] (it always misses)
        f"{{ if (m != (const void *)&{name}) return; if (k < {size}) {bump(table, f'k + x * {size}', counter)} "
        f"else if (!x) {bump(table, f'2 * {size}', counter)} }}\n"
        f"#undef __BM_COUNT_TRY_{name}\n#define __BM_COUNT_TRY_{name}(_m, _k, _x) __bm_count_{name}(_m, _k, _x)"
    )


def _loss_try(name: str, slot: int, at_file_scope: bool = True) -> str:
    if not at_file_scope:
        return (
            f"#undef __BM_LOST_TRY_{name}\n#define __BM_LOST_TRY_{name}(_r) "
            f"({{ if ((const void *)(_r) == (const void *)&{name}) __bm_bump(&{LOST_COUNTER}, {slot}); }})"
        )
    return (
        f"{_HELPER} __bm_lost_{name}(const void *r)\n"
        f"{{ if (r == (const void *)&{name}) __bm_bump(&{LOST_COUNTER}, {slot}); }}\n"
        f"#undef __BM_LOST_TRY_{name}\n#define __BM_LOST_TRY_{name}(_r) __bm_lost_{name}(_r)"
    )


def counter_section(name: str) -> str:
    """The ELF section of a --core cell's counter global NAME: libbpf makes it a map of its own,
    named after the section cut to the kernel's 15 characters, which the load swaps for the
    session's counter table (bpf_map__reuse_fd). Hence a short hash of NAME, not NAME."""
    import hashlib

    return ".bss.bm" + hashlib.sha1(name.encode()).hexdigest()[:8]


def _counter_global(name: str, table) -> str:
    # As large as the session's table: the verifier checks each bump against the map's value size.
    return f'unsigned long long {name}[{table.rows * table.width}] __attribute__((section("{counter_section(name)}"), used));'


def _percpu_u64_map(name: str, entries: int) -> str:
    # type 6: BPF_MAP_TYPE_PERCPU_ARRAY. A counter that reuses the session's map takes its size from it.
    return (
        f"struct {{ int (*type)[6]; int (*max_entries)[{entries}]; unsigned int *key; "
        f'unsigned long long *value; }} {name} __attribute__((section(".maps"), used));'
    )


def core_text(
    cell: CellSyntax,
    session_arrays: dict[str, tuple],
    slot_index,
    count_calls: bool,
    count_losses: bool = True,
    site_base: int | None = None,
    paths: bool = False,
    cursor: bool = False,
    sites=None,
    path_rows: int = 0,
) -> str:
    """The text clang compiles for a --core cell: the cell's includes first
    (vmlinux.h and libbpf's headers when it has none), then bpfmagic's
    declarations, then the rest of the cell, every line under its own number
    (``#line N "cell.bpf.c"``). ``session_arrays``: name -> (size, counter
    table) of the session's arrays; those the cell uses without declaring are
    declared. ``sites``: the session's call-site counter table (with ``site_base``);
    ``path_rows``: how many CPUs' path records the session's record map holds (paths on)."""
    data = cell.source.encode()
    insert_at = cell.instrument_offset if cell.includes else 0
    paths = paths and site_base is not None
    if paths:  # each program's entry records the run (no line breaks: lines keep their numbers)
        for fn in sorted(cell.functions.values(), key=lambda f: -f.body_start):
            if fn.body_start > insert_at and fn.section and not fn.static and fn.ctx_name:
                call = f" __bm_path_enter({fn.ctx_name}, {site_base + fn.line});".encode()
                data = data[: fn.body_start] + call + data[fn.body_start :]
    head, tail = data[:insert_at], data[insert_at:]
    resume_line = head.count(b"\n") + 1
    if head and not head.endswith(b"\n"):
        tail = tail.split(b"\n", 1)[1] if b"\n" in tail else b""
        head_line_rest = data[insert_at:].split(b"\n", 1)[0]
        head = head + head_line_rest + b"\n"
        resume_line += 1

    block = [_CORE_BASE]
    block += _slot_defines(cell, slot_index)
    declared = {a.name for a in cell.arrays}
    undeclared = [n for n in sorted(session_arrays) if n not in declared and cell.uses(n)]
    for name in undeclared:
        block.append(f"BPF_PROG_ARRAY({name}, {session_arrays[name][0]});")
    paths = paths and sites is not None
    if count_calls or paths:
        block.append(BUMP_HELPER)
    if site_base is not None and sites is not None and (count_calls or paths):
        block.append(_counter_global(SITES_MAP, sites))
        block.append(f"#define __BM_SITE_BASE {site_base}\n#define __BM_SITES {SITES}")
        block.append(f"#define __BM_SITE_BUMP(_i) {bump(sites, '(_i)', SITES_MAP)}")
    if paths:
        from .path_record import C_TYPES, PATH_COUNTS, c_helpers, record_at

        lookup = "((void *(*)(void *, const void *))1)"  # bpf_map_lookup_elem
        update = "((long (*)(void *, const void *, const void *, unsigned long long))2)"  # bpf_map_update_elem
        block += [
            C_TYPES,
            f'struct __bm_path_rec {PATH_RECORDS}[{path_rows}] __attribute__((section("{counter_section(PATH_RECORDS)}"), used));',
            f"struct {{ int (*type)[1]; int (*max_entries)[{PATH_COUNTS}]; struct __bm_path_key *key; "
            'unsigned long long *value; } __bm_pathc __attribute__((section(".maps"), used));',
            "struct { int (*type)[2]; int (*max_entries)[1]; unsigned int *key; unsigned int *value; } "
            '__bm_pathctl __attribute__((section(".maps"), used));',
            c_helpers(
                record_at(PATH_RECORDS, path_rows),
                f"{lookup}(&__bm_pathctl, &__bm_z)",
                f"{lookup}(&__bm_pathc, K)",
                f"{update}(&__bm_pathc, K, V, 0)",
                bump(sites, f"{2 * SITES} + site", SITES_MAP),
            ),
            "#define __BM_PATH_CALL(_c, _k) __bm_path_call(_c, __BM_SITE_BASE + __LINE__, _k)",
            "#define __BM_PATH_MISS() __bm_path_miss(__BM_SITE_BASE + __LINE__)",
        ]
    if count_calls or paths:
        block.append(_CORE_COUNTING)
    if cursor and any(t.kind == "chain" for t in cell.tail_calls):
        block.append(
            "struct { int (*type)[6]; int (*max_entries)[1]; unsigned int *key; unsigned int *value; } "
            f'{CURSOR_MAP} __attribute__((section(".maps"), used));'
        )
        block.append(
            f"#define CHAIN_NEXT(_c, _n) ({{ unsigned int __bm_z = 0; unsigned int *__bm_c = "
            f"((void *(*)(void *, const void *))1)(&{CURSOR_MAP}, &__bm_z); if (__bm_c) {{ "
            f"unsigned int __bm_ck = *__bm_c + 1; *__bm_c = __bm_ck; bpf_tail_call(_c, &_n, __bm_ck); }} }})"
        )
    after: dict[int, list[str]] = {}  # line of the cell -> directives that go after it
    declared_names = sorted(declared)
    if count_calls:
        if site_base is not None and sites is not None:
            block.append(_CORE_SITES)
        # Arrays the session has not made (none, once load.py has made the cell's) go uncounted.
        counted = [n for n in undeclared + declared_names if n in session_arrays]
        block.append(_dispatch("__BM_COUNT", "_m, _k, _x", undeclared + declared_names, extra=("__BM_SITE_COUNT(_x)",)))
        for name in counted:
            block.append(_counter_global(counter_name(name), session_arrays[name][1]))
        block += [_count_try(name, session_arrays[name][1]) for name in undeclared]
        for decl in cell.arrays:
            if decl.name in session_arrays:
                after.setdefault(decl.end_line, []).append(_count_try(decl.name, session_arrays[decl.name][1], not decl.code_after))
    elif paths:
        block.append("#define __BM_COUNT(_m, _k, _x) ((void)0)")
    rings = sorted({r.name for r in cell.rings + cell.perf_arrays})  # the order of backends/libbpf.ring_tables
    if count_losses and rings:
        block.append(_CORE_LOSS)
        block.append(_dispatch("__BM_LOST", "_r", rings))
        block.append(_percpu_u64_map(LOST_COUNTER, len(rings)))
        for ring in cell.rings + cell.perf_arrays:
            after.setdefault(ring.end_line, []).append(_loss_try(ring.name, rings.index(ring.name), not ring.code_after))

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
