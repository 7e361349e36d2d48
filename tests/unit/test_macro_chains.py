"""Chains a cell's own macros write (a PROG(X) line per stage, as kernel samples
and tail-call benchmarks build them), and counts that cannot be known: a stage
loaded with --no-count into an array others count, an empty slot of a busy
dispatcher."""

from __future__ import annotations

import textwrap

from bpfmagic.c import analyse
from bpfmagic.c.macro_code import expand_macro_code

from ..programs import PROG_MACRO_CHAIN

# The seed's sample shape: the macro writes only the function's head, the body follows.
HANDLER_MACRO = textwrap.dedent(r"""
    #include "vmlinux.h"
    #include <bpf/bpf_helpers.h>
    #define HANDLER(F) SEC("raw_tp/sys_enter") int on_##F
    struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 8); __type(key, u32); __type(value, u32); } handlers SEC(".maps");
    HANDLER(write)(struct bpf_raw_tracepoint_args *ctx)
    {
        return 0;
    }
    SEC("raw_tp/sys_enter") int entry(struct bpf_raw_tracepoint_args *ctx)
    {
        bpf_tail_call(ctx, &handlers, 1);
        return 0;
    }
    """)


def test_functions_and_tail_calls_a_macro_writes_get_their_names_and_lines():
    cell = analyse(PROG_MACRO_CHAIN)
    assert cell.tail_calls == [] and not any(n.startswith("stage_") for n in cell.functions)  # the tree alone sees macro calls
    assert expand_macro_code(cell)
    lines = PROG_MACRO_CHAIN.split("\n")
    for n in range(3):
        fn = cell.functions[f"stage_{n}"]
        assert lines[fn.line - 1].strip() == f"STAGE({n})"
        assert fn.context == "xdp_md" and fn.prog_type == "xdp"
    calls = {(t.function, t.array, t.line) for t in cell.tail_calls}
    assert calls == {(f"stage_{n}", "stages", cell.functions[f"stage_{n}"].line) for n in range(3)}
    assert all(t.expanded for t in cell.tail_calls)
    assert cell.uses("stages")


def test_a_function_named_by_a_macro_keeps_its_place_under_its_real_name():
    cell = analyse(HANDLER_MACRO)
    assert "(write)" in cell.functions  # what the tree makes of HANDLER(write)(ctx)
    assert expand_macro_code(cell)
    fn = cell.functions["on_write"]
    assert "(write)" not in cell.functions
    assert HANDLER_MACRO[fn.start : fn.end].startswith("HANDLER(write)") and fn.body_start > fn.start
    assert fn.context == "bpf_raw_tracepoint_args"
    # the rest of the cell is as the tree read it
    assert [t.function for t in cell.tail_calls] == ["entry"]


def test_a_cell_without_its_own_macro_calls_runs_no_preprocessor():
    cell = analyse('#include <linux/bpf.h>\n#define N 4\nSEC("xdp") int f(struct xdp_md *ctx) { return N; }\n')
    assert not expand_macro_code(cell)
