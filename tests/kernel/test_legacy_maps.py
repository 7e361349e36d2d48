"""Legacy map definitions (``struct bpf_map_def SEC("maps")``, the shape of
the kernel's samples before 5.x, pchaigno's tail-call-bench kern.c and older
xdp-tutorial) load in --core cells: the front end rewrites them into
BTF-defined maps, lines kept, and the cell says so (issue 18 item 4)."""

from __future__ import annotations

import pytest

from bpfmagic import BpfCompileError, SlotError, UsageProblem

from ..conftest import needs_root
from ..programs import LEGACY_CHAIN

XDP_ABORTED, XDP_DROP, XDP_PASS = 0, 1, 2


@needs_root
def test_a_legacy_prog_array_chain_runs_through_the_magic():
    from IPython.testing.globalipapp import get_ipython

    import bpfmagic

    ip = get_ipython()
    ip.run_line_magic("load_ext", "bpfmagic")
    bpfmagic.shell.drop()
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
        bpfmagic.shell.drop()


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
