"""Real-world C in cells as it is: libbpf-style and uapi-style --core files,
BCC's own table forms, --file includes, --cflags, and errors that point at
the cell. The programs are written here in the shapes those files have."""

from __future__ import annotations

import textwrap

import pytest

from bpfmagic.c import analyse
from bpfmagic.errors import UsageProblem


def test_cflags_forms_in_the_magic():
    from bpfmagic.magics import CELL
    from bpfmagic.magics.words import cflags, option_words

    parser = CELL.parser
    for line in ['m --cflags "-DA=1 -DB=2"', "m --cflags -DA=1 --cflags -DB=2", 'm --cflags="-DA=1 -DB=2"', "m --cflags '-DA=1 -DB=2'"]:
        assert cflags(parser.parse_args(option_words(line)).cflags) == ["-DA=1", "-DB=2"], line
    # Inner quotes are C's and reach clang (BCC's xdp_drop_count passes -DMAPTYPE="percpu_array").
    for line, flags in [
        ("m --cflags '-DMAPTYPE=\"percpu_array\"'", ['-DMAPTYPE="percpu_array"']),
        ("m --cflags='-DMAPTYPE=\"hash\" -DN=4'", ['-DMAPTYPE="hash"', "-DN=4"]),
        ('m --cflags "-DMSG=\\"a b\\" -DX"', ['-DMSG="a b"', "-DX"]),
        ('m --cflags -DA=1 --cflags=\'-DMSG="x y"\' --cflags "-DB=2 -DC=3"', ["-DA=1", '-DMSG="x y"', "-DB=2", "-DC=3"]),
        ("m --cflags '-DQ=\\\"unpaired'", ['-DQ="unpaired']),
    ]:
        assert cflags(parser.parse_args(option_words(line)).cflags) == flags, line


def test_an_unclosed_quote_inside_cflags_is_a_usage_error():
    from bpfmagic.magics.words import cflags

    with pytest.raises(UsageProblem, match="not closed"):
        cflags(['-DMAPTYPE="percpu_array'])


def test_line_magic_options_are_split_like_a_shell():
    from bpfmagic.magics import COMMANDS
    from bpfmagic.magics.words import split

    trace = COMMANDS.parsers()["trace"]
    for line, pattern in [
        ('trace --grep "Hello ping"', "Hello ping"),
        ("trace --grep 'Hello ping'", "Hello ping"),
        ("trace --grep=\"a 'b'\"", "a 'b'"),
    ]:
        assert trace.parse_args(split(line)[1:]).grep == pattern, line


def test_front_end_reads_code_not_comments():
    cell = analyse(
        textwrap.dedent("""
        /* BPF_PROG_ARRAY(fake, 9); jt.call(ctx, 1); */
        // SLOT(jt, fake)
        BPF_PROG_ARRAY(jt, 4);
        int f(struct xdp_md *ctx, void *other) { char *s = "jt.call(ctx, 2)"; jt.call(ctx, 3); return 0; }
    """)
    )
    assert [a.name for a in cell.arrays] == ["jt"] and cell.arrays[0].size == 4
    assert [(t.array, t.key) for t in cell.tail_calls] == [("jt", "3")]
    assert cell.slot_refs == [] and cell.functions["f"].prog_type == "xdp"


def test_front_end_finds_struct_member_reads_through_typed_bases():
    """What the BCC backend checks against the running kernel's BTF (backends/bcc_offsets.py):
    chains, casts, the declaration in scope; not the cell's own structs, contexts or comments."""
    from bpfmagic.c.member_reads import member_accesses

    cell = analyse(
        textwrap.dedent("""
        #include <linux/sched.h>
        struct event { u32 pid; };
        struct task_struct *last;
        // task->comm in a comment
        int on_switch(struct bpf_raw_tracepoint_args *ctx) {
            struct task_struct *task = (struct task_struct *)bpf_get_current_task();
            struct event e = {};
            e.pid = task->real_parent->tgid;
            u64 v = ((struct task_struct *)ctx->args[1])->se.vruntime;
            { int task = 3; e.pid = task; }
            bpf_probe_read_kernel(&e.pid, sizeof(e.pid), &last->tgid);
            u64 lim = task->signal->rlim[7].rlim_cur;
            return task->comm[0];
        }
        int kprobe__x(struct pt_regs *ctx, struct sock *sk) { return ctx->di + sk->__sk_common.skc_family; }
    """)
    )
    got = [(a.line, a.struct, "".join(op + name for op, name in a.steps)) for a in member_accesses(cell)]
    assert got == [
        (9, "task_struct", "->real_parent->tgid"),
        (10, "task_struct", "->se.vruntime"),
        (12, "task_struct", "->tgid"),
        (13, "task_struct", "->signal->rlim[].rlim_cur"),
        (14, "task_struct", "->comm"),
        (16, "sock", "->__sk_common.skc_family"),
    ]


def test_front_end_reads_every_call_of_a_large_source():
    body = "".join(f"int f{i}(struct xdp_md *ctx) {{ jt.call(ctx, {i % 4}); return 0; }}\n" for i in range(5000))
    cell = analyse("BPF_PROG_ARRAY(jt, 4);\n" + body)
    assert len(cell.tail_calls) == 5000 and cell.tail_calls[-1].function == "f4999"


def test_codegen_hazards_are_read_on_the_tree():
    from bpfmagic.c.hazards import codegen_hazards

    assert codegen_hazards("int f(void *c) { u32 *p; u32 k = __sync_fetch_and_add(p, 1); return k; }") == [
        "the result of __sync_fetch_and_add() is used"
    ]
    assert codegen_hazards("int f(void *c) { u64 *p; __sync_fetch_and_add(p, 1); return 0; }") == []
    assert codegen_hazards("int f(void *c) { char buf[600]; return buf[0]; }") == ["600 bytes of locals"]
    assert codegen_hazards("int f(void *c) { u32 v[2][40]; return v[0][0]; }") == ["320 bytes of locals"]
    assert "a double" in codegen_hazards("int f(void *c) { double x = 2; return x; }")
    assert codegen_hazards("/* double 1.5 __sync_fetch_and_add(p) */ int f(void *c) { return 0x1e; }") == []


def test_codegen_hazards_see_big_struct_locals():
    from bpfmagic.c.hazards import codegen_hazards

    src = "struct ev { u64 ts; char comm[16]; u32 args[60]; };\nint f(void *c) { struct ev e = {}; return e.ts; }"
    assert codegen_hazards(src) == ["264 bytes of locals"]
    assert codegen_hazards("struct small { u64 a, b; };\nint f(void *c) { struct small s = {}; return s.a; }") == []
