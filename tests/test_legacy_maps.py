"""Legacy map definitions (``struct bpf_map_def SEC("maps")``, the shape of
the kernel's samples before 5.x, pchaigno's tail-call-bench kern.c and older
xdp-tutorial) load in --core cells: the front end rewrites them into
BTF-defined maps, lines kept, and the cell says so (issue 18 item 4)."""

from __future__ import annotations

import pytest

from bpfmagic import BpfCompileError, SlotError, UsageProblem
from bpfmagic.c import analyse
from bpfmagic.c.legacy_maps import rewrite_legacy_maps

from .conftest import needs_root

# A chain as tail-call-bench's kern.c writes it: a legacy prog array, programs that tail-call
# each other through it, a size from a #define.
LEGACY_CHAIN = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define NUM_STAGES 8

struct bpf_map_def SEC("maps") jmp_table = {
	.type = BPF_MAP_TYPE_PROG_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = NUM_STAGES,
};

SEC("xdp")
int entry(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jmp_table, 1);
	return XDP_ABORTED;
}

SEC("xdp")
int stage1(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jmp_table, 2);
	return XDP_PASS;
}

SEC("xdp")
int stage2(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
"""

XDP_ABORTED, XDP_DROP, XDP_PASS = 0, 1, 2


def test_the_rewrite_keeps_every_line_and_each_value_on_its_own():
    text, found = rewrite_legacy_maps(LEGACY_CHAIN)
    assert [(m.name, m.line, m.map_type) for m in found] == [("jmp_table", 6, "BPF_MAP_TYPE_PROG_ARRAY")]
    before, after = LEGACY_CHAIN.split("\n"), text.split("\n")
    assert len(after) == len(before)
    assert [a for a, b in zip(after, before, strict=True) if a != b] == [  # only the declaration's lines changed
        '__attribute__((section(".maps"), used)) struct {',
        "int (*type)[BPF_MAP_TYPE_PROG_ARRAY];",
        "int (*key_size)[sizeof(__u32)];",
        "int (*value_size)[sizeof(__u32)];",
        "int (*max_entries)[NUM_STAGES];",
        "} jmp_table;",
    ]
    array = analyse(text).arrays[0]
    assert (array.name, array.size, array.line, array.end_line) == ("jmp_table", 8, 6, 11)


def test_positional_initializers_and_typed_keys_of_hash_maps():
    source = (
        'struct bpf_map_def SEC("maps") flows = { BPF_MAP_TYPE_HASH, sizeof(struct flow_key), sizeof(__u64), 1024, BPF_F_NO_PREALLOC };\n'
        'struct bpf_map_def SEC("maps") ids = {\n  BPF_MAP_TYPE_PERF_EVENT_ARRAY, sizeof(int), sizeof(__u32), 4 /* CPUs */ };\n'
        'int f(void *ctx) { struct bpf_map_def SEC("maps") *p; return 0; }\n'  # a function's own text is not a map
    )
    text, found = rewrite_legacy_maps(source)
    assert [m.name for m in found] == ["flows", "ids"]
    lines = text.split("\n")
    assert lines[0] == (
        '__attribute__((section(".maps"), used)) struct { int (*type)[BPF_MAP_TYPE_HASH]; __typeof__(struct flow_key) *key; '
        "__typeof__(__u64) *value; int (*max_entries)[1024]; int (*map_flags)[BPF_F_NO_PREALLOC]; } flows;"
    )
    # perf event arrays take no BTF key or value: sizes stay sizes
    assert lines[2] == (
        "int (*type)[BPF_MAP_TYPE_PERF_EVENT_ARRAY]; int (*key_size)[sizeof(int)]; int (*value_size)[sizeof(__u32)]; int (*max_entries)[4]; } ids;"
    )
    assert lines[3] == source.split("\n")[3]


def test_a_legacy_map_that_cannot_be_rewritten_says_why_on_its_line():
    with pytest.raises(UsageProblem, match=r"cell:3: legacy map m: struct bpf_map_def has no member 'size'"):
        rewrite_legacy_maps('\nstruct bpf_map_def SEC("maps") m = {\n .size = 4,\n .type = BPF_MAP_TYPE_HASH,\n};\n')
    with pytest.raises(UsageProblem, match=r"cell:1: legacy map m gives no \.max_entries"):
        rewrite_legacy_maps('struct bpf_map_def SEC("maps") m = { .type = BPF_MAP_TYPE_HASH };')


@needs_root
def test_a_legacy_prog_array_chain_runs_through_the_magic():
    from IPython.testing.globalipapp import get_ipython

    import bpfmagic

    ip = get_ipython()
    ip.run_line_magic("load_ext", "bpfmagic")
    bpfmagic._drop_session()
    try:
        res = ip.run_cell(f"%%bpf bench --core -s jmp_table[1]=stage1\n{LEGACY_CHAIN}")
        assert res.success, res.error_in_exec
        note = ip.user_ns["bench"].notes[0]
        assert note.startswith('rewrote 1 legacy map definition (struct bpf_map_def SEC("maps")') and "jmp_table (cell:6)" in note
        assert ip.run_line_magic("bpf", "run bench.entry").retval == XDP_PASS  # entry -> stage1; slot 2 still empty
        ip.run_line_magic("bpf", "slot jmp_table[2]=bench.stage2")
        assert ip.run_line_magic("bpf", "run bench.entry").retval == XDP_DROP  # entry -> stage1 -> stage2
        slots = ip.run_line_magic("bpf", "slots jmp_table")
        assert slots[["array", "index", "program", "calls", "taken", "missed"]].values.tolist() == [
            ["jmp_table", 1, "bench.stage1", 2, 2, 0],
            ["jmp_table", 2, "bench.stage2", 2, 1, 1],  # the first run found slot 2 empty
        ]
        assert bpfmagic.session().arrays["jmp_table"].size == 8  # NUM_STAGES
    finally:
        bpfmagic._drop_session()


@needs_root
def test_a_legacy_hash_map_reads_as_a_dataframe(session):
    m = session.load(
        "sizes",
        """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct pkt_stats {
	__u64 packets;
	__u64 bytes;
};

struct bpf_map_def SEC("maps") by_len = { BPF_MAP_TYPE_HASH, sizeof(__u32), sizeof(struct pkt_stats), 64, 0 };

SEC("xdp")
int count_len(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	struct pkt_stats zero = {}, *s = bpf_map_lookup_elem(&by_len, &len);
	if (!s) {
		bpf_map_update_elem(&by_len, &len, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&by_len, &len);
	}
	if (s) {
		s->packets += 1;
		s->bytes += len;
	}
	return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
""",
        core=True,
    )
    session.test_run("sizes.count_len", data=b"\0" * 64, repeat=3)
    session.test_run("sizes.count_len", data=b"\0" * 100)
    df = m.df("by_len").sort_values("key")
    assert list(df.columns) == ["key", "packets", "bytes"]
    assert df.values.tolist() == [[64, 3, 192], [100, 1, 100]]


@needs_root
def test_errors_after_and_inside_a_legacy_map_point_at_the_cells_lines(session):
    error_after = LEGACY_CHAIN.replace("\treturn XDP_DROP;", "\treturn XDP_DROP")  # line 30
    with pytest.raises(BpfCompileError) as err:
        session.load("bad", error_after, core=True, origin="cell")
    assert "cell:30:" in str(err.value) and str(err.value).endswith("  30 | \treturn XDP_DROP")
    error_inside = LEGACY_CHAIN.replace(".key_size = sizeof(__u32)", ".key_size = sizeof(__u33)")  # line 8
    with pytest.raises(BpfCompileError) as err:
        session.load("bad", error_inside, core=True, origin="cell")
    text = str(err.value)
    assert "cell:8:" in text and "'__u33'" in text and "   8 | \t.key_size = sizeof(__u33)," in text  # the line as written
    assert "int (*" not in text  # never the rewritten text
    with pytest.raises(SlotError, match=r"cell:6: prog array jmp_table: cannot tell its size \(NUM_STAGE\)"):
        session.load("bad", LEGACY_CHAIN.replace("= NUM_STAGES", "= NUM_STAGE"), core=True, origin="cell")
    assert "bad" not in session.modules


@needs_root
def test_a_bcc_cell_with_a_legacy_map_is_told_to_use_core(session):
    with pytest.raises(UsageProblem, match=r"cell:6: jmp_table is a legacy libbpf map definition .* run the cell with --core"):
        session.load("old", LEGACY_CHAIN, origin="cell")
