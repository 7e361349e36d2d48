"""The chain graph against chains built here, and the three-cell experiment
through the magics: build a chain, run it on a packet, see slots, misses,
cost and the picture."""

from __future__ import annotations

import os
import shutil
import textwrap

import pandas as pd
import pytest

import bpfmagic

from ..conftest import kernel_objects, leftovers, needs_root

CHAIN = r"""
#include <linux/pkt_cls.h>
BPF_PROG_ARRAY(jt, 8);
#define PARSE_L4 2
int entry(struct xdp_md *ctx) { jt.call(ctx, SLOT(jt, parse_ip)); return XDP_PASS; }
int parse_ip(struct xdp_md *ctx) { jt.call(ctx, PARSE_L4); return XDP_DROP; }
int parse_l4(struct xdp_md *ctx) {
    // jt.call(ctx, 7) in a comment is no call site
    jt.call(ctx, 5);  /* empty: every call here is missed */
    return XDP_TX;
}
int dispatch(struct xdp_md *ctx) {
    u32 key = ctx->rx_queue_index;
    jt.call(ctx, key);
    return XDP_PASS;
}
"""


@needs_root
def test_edges_match_the_chain(session):
    session.load("c", CHAIN, slots={"jt[parse_ip]": "parse_ip", "jt[2]": "parse_l4"})
    session.program("c.dispatch")
    for _ in range(3):
        assert session.test_run("c.entry").retval_name == "XDP_TX"
    g = session.graph()
    assert g.edge_set("call") == {
        ("c.entry", "jt[parse_ip]"),
        ("c.parse_ip", "jt[2]"),
        ("c.parse_l4", "jt[5]"),
        # a variable key can reach every slot in use
        ("c.dispatch", "jt[parse_ip]"),
        ("c.dispatch", "jt[2]"),
        ("c.dispatch", "jt[5]"),
    }
    assert g.edge_set("slot") == {("jt[parse_ip]", "c.parse_ip"), ("jt[2]", "c.parse_l4")}
    calls = g.edges[g.edges["kind"] == "call"]
    assert set(calls[calls["src"] == "c.dispatch"]["key"]) == {"(var)"}

    nodes = g.nodes.set_index("node")
    assert (nodes.loc["jt[parse_ip]", "calls"], nodes.loc["jt[parse_ip]", "taken"]) == (3, 3)
    assert (nodes.loc["jt[5]", "calls"], nodes.loc["jt[5]", "missed"]) == (3, 3)
    assert pd.isna(nodes.loc["jt[5]", "program"])
    assert nodes.loc["c.entry", "run_cnt"] == 3 and nodes.loc["c.parse_l4", "taken"] == 3
    assert "c.parse_ip" in repr(g)

    assert shutil.which("dot"), "Graphviz's dot is missing: `make setup` installs it"
    svg = g.svg()
    assert svg.lstrip().startswith("<?xml") and "jt[parse_ip]" in svg and "3 missed" in svg
    assert "image/svg+xml" in g._repr_mimebundle_()
    assert session.graph("jt").edge_set() == g.edge_set()


@needs_root
def test_graph_of_two_modules_sharing_an_array(session):
    session.load("a", "BPF_PROG_ARRAY(p, 4);\nint go(struct xdp_md *ctx) { p.call(ctx, 1); return XDP_PASS; }")
    session.load("b", "BPF_PROG_ARRAY(p, 4);\nint next(struct xdp_md *ctx) { p.call(ctx, 3); return XDP_DROP; }", slots={"p[1]": "next"})
    session.program("a.go")
    g = session.graph()
    assert g.edge_set() == {("a.go", "p[1]"), ("p[1]", "b.next"), ("b.next", "p[3]")}


@needs_root
def test_a_swapped_in_program_is_credited_only_its_own_calls(session):
    session.load(
        "c",
        "BPF_PROG_ARRAY(sw, 4);\n"
        "int entry(struct xdp_md *ctx) { sw.call(ctx, 1); return XDP_PASS; }\n"
        "int a1(struct xdp_md *ctx) { return XDP_DROP; }\n"
        "int b1(struct xdp_md *ctx) { return XDP_TX; }",
        slots={"sw[1]": "a1"},
    )
    session.test_run("c.entry", repeat=100)
    session.slot("sw[1]", "c.b1")
    session.test_run("c.entry")
    g = session.graph()
    nodes = g.nodes.set_index("node")
    assert (nodes.loc["sw[1]", "calls"], nodes.loc["sw[1]", "taken"]) == (101, 101)  # the slot: cumulative
    assert nodes.loc["c.b1", "taken"] == 1
    slot_edge = g.edges[g.edges["kind"] == "slot"].set_index("dst").loc["c.b1"]
    assert (slot_edge["calls"], slot_edge["taken"], slot_edge["missed"]) == (1, 1, 0)
    assert shutil.which("dot"), "Graphviz's dot is missing: `make setup` installs it"
    assert "1 taken" in g.svg() and "101 taken" not in g.svg()


# ------------------------------------------------------------------ magics


@pytest.fixture
def shell():
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "bpfmagic")
    bpfmagic.shell.drop()
    before = kernel_objects() if os.geteuid() == 0 else None
    names = set(ip.user_ns)
    yield ip
    ip.run_line_magic("bpf", "reset")
    for name in set(ip.user_ns) - names:  # the shell is shared: a test's variables must not reach the next
        del ip.user_ns[name]
    bpfmagic.shell.drop()
    if before is not None:
        assert leftovers(before) == {}


@needs_root
def test_three_cells_chain_run_stats_cost_and_picture(shell, capsys):
    # Cell 1: the chain.
    result = shell.run_cell(
        textwrap.dedent("""\
        %%bpf c -s jt[parse_ip]=parse_ip -s jt[2]=parse_l4
        """)
        + CHAIN
    )
    assert result.success, result.error_in_exec
    # Cell 2: run it on a packet, then see the slots and the misses.
    frame = bpfmagic.experiments.packets.udp_packet(dport=53, payload=b"query")
    shell.user_ns["frame"] = frame
    result = shell.run_cell("r = %bpf run c.entry --repeat 5 --data {frame.hex()}")  # IPython expands {...}
    assert result.success, result.error_in_exec
    r = shell.user_ns["r"]
    assert (r.retval_name, r.repeat, r.data_in) == ("XDP_TX", 5, frame)
    stats = shell.run_line_magic("bpf", "stats")
    assert stats.set_index("program").loc["(empty)", "missed"] == 5
    assert stats.set_index("program").loc["c.entry", "run_cnt"] == 5
    slots = shell.run_line_magic("bpf", "slots jt")
    assert slots.set_index("index").loc[5, "missed"] == 5
    # Cell 3: what a tail call costs, and the chain as a picture.
    df = shell.run_line_magic("bpf", "bench tailcalls --depth 3 --repeat 1000 --rounds 1")
    assert list(df["tail_calls"]) == [0, 1, 2, 3]
    assert "ns per tail call" in capsys.readouterr().out
    g = shell.run_line_magic("bpf", "graph jt")
    assert ("c.parse_ip", "jt[2]") in g.edge_set("call")
    assert shell.run_line_magic("bpf", "stats --off").shape[0] >= 3
    assert not bpfmagic.session().stats_enabled
    shell.run_line_magic("bpf", "stats --on")
    assert bpfmagic.session().stats_enabled


@needs_root
def test_run_errors_are_usage_problems_in_the_cell(shell):
    shell.run_cell("%%bpf r\nint raw(struct bpf_raw_tracepoint_args *ctx) { return 1; }")
    with pytest.raises(bpfmagic.UsageProblem, match="repeat"):
        shell.run_line_magic("bpf", "run r.raw --repeat 10")
    assert shell.run_line_magic("bpf", "run r.raw --ctx 0000000000000000").retval == 1


@needs_root
def test_run_refuses_a_repeat_beyond_a_c_int(shell):
    shell.run_cell("%%bpf x\nint pass(struct xdp_md *ctx) { return XDP_PASS; }")
    with pytest.raises(bpfmagic.UsageProblem, match="2,147,483,647"):
        shell.run_line_magic("bpf", "run x.pass --repeat 4294967297")
    with pytest.raises(bpfmagic.UsageProblem, match="2,147,483,647"):
        shell.run_line_magic("bpf", "bench tailcalls --depth 1 --repeat 4294967297")
    assert bpfmagic.session().program("x.pass").run_cnt == 0


# A dispatcher whose key is the packet's first byte: which slots it misses is up to the test.
BY_FIRST_BYTE = r"""
BPF_PROG_ARRAY(jt, 8);
int entry(struct xdp_md *ctx) {
    unsigned char *p = (void *)(long)ctx->data;
    if ((void *)(p + 1) > (void *)(long)ctx->data_end)
        return XDP_PASS;
    u32 key = p[0];
    jt.call(ctx, key);
    return XDP_PASS;
}
int handler(struct xdp_md *ctx) { return XDP_DROP; }
"""


def frame(first: int) -> bytes:
    return bytes([first]) + bytes(63)


def drawn_nodes(dot_source: str) -> dict[str, str]:
    """Node name -> its label, as the dot source declares them."""
    import re

    return {m[1]: m[2] for m in re.finditer(r'^\t"([^"]+)" \[label="([^"]*)"', dot_source, re.M)}


@needs_root
def test_empty_slots_only_missed_through_a_variable_key_are_one_node(session):
    session.load("d", BY_FIRST_BYTE, slots={"jt[1]": "handler"})
    for key, runs in ((1, 4), (3, 5), (5, 2), (6, 1)):
        session.test_run("d.entry", data=frame(key), repeat=runs)
    g = session.graph("jt")
    # the data keeps every slot; the picture draws the three missed ones as one node
    assert {"jt[3]", "jt[5]", "jt[6]", "jt[1]"} <= set(g.nodes["node"])
    nodes = drawn_nodes(g.dot().source)
    assert "jt[3]" not in nodes and "jt[5]" not in nodes and "jt[6]" not in nodes
    assert nodes["jt[empty]"] == "jt: 3 empty slots\n3, 5, 6\n8 calls, all missed"  # most called first
    assert nodes["jt[1]"] == "jt[1]\n4 calls"
    dot = g.dot().source
    assert '"d.entry" -> "jt[empty]"' in dot and dot.count('-> "jt[empty]"') == 1
    assert "rankdir=LR" in dot  # four nodes side by side fit a notebook


@needs_root
def test_a_single_missed_slot_stays_a_node_of_its_own(session):
    session.load("d1", BY_FIRST_BYTE, slots={"jt[1]": "handler"})
    session.test_run("d1.entry", data=frame(4), repeat=2)
    nodes = drawn_nodes(session.graph("jt").dot().source)
    assert "jt[empty]" not in nodes and nodes["jt[4]"] == "jt[4]\n2 calls, 2 missed\n(empty)"


@needs_root
def test_variable_keys_of_several_stages_go_through_one_lookup_node(session):
    """Notebook 11's picture: every stage calls the next by a variable key; drawn stage ->
    lookup -> slot (N + M edges), not an edge from every stage to every slot."""
    stages = 5
    src = "BPF_PROG_ARRAY(fwc, 8);\n" + "\n".join(
        f"int st{i}(struct xdp_md *ctx) {{ u32 k = ctx->rx_queue_index + {i + 1}; fwc.call(ctx, k); return XDP_PASS; }}" for i in range(stages)
    )
    session.load("fw", src, slots={f"fwc[{i}]": f"st{i}" for i in range(1, stages)})
    session.test_run("fw.st0", repeat=3)
    g = session.graph("fwc")
    variable = g.edges[g.edges["key"] == "(var)"]
    assert len(variable) == stages * stages  # the data: every stage to each slot it may reach (4 filled, 1 missed)
    dot = g.dot().source
    assert drawn_nodes(dot)["fwc[var]"] == "fwc[key]\nvariable key"
    assert all(f'"fw.st{i}" -> "fwc[var]"' in dot for i in range(stages))
    assert dot.count('"fwc[var]" ->') == stages  # the four filled slots and the one that missed
    assert dot.count(" -> ") == stages + stages + (stages - 1)  # into the lookup, out of it, slot -> program
    assert "rankdir=TB" in dot  # ten nodes would not fit side by side


@needs_root
def test_the_quickstart_dispatcher_picture_fits_a_notebook(session):
    """Seen before this layout: a 675 x 3840 px strip of one node per syscall missed."""
    import re

    session.progarray("progs", 512, keys="syscalls")
    session.load(
        "disp",
        "BPF_PROG_ARRAY(progs, 512);\n"
        "int dispatch(struct bpf_raw_tracepoint_args *ctx) { progs.call(ctx, ctx->args[1]); return 0; }\n"
        "int on_write(struct bpf_raw_tracepoint_args *ctx) { return 0; }\n",
        attach={"dispatch": "raw_tracepoint:sys_enter"},
        slots={"progs[write]": "on_write"},
    )
    for _ in range(20):
        os.stat("/")  # newfstatat
        os.close(os.open("/", os.O_RDONLY))  # openat, close
        os.write(2, b"")  # write: the one slot with a program
    g = session.graph("progs")
    missed = g.nodes[(g.nodes["kind"] == "slot") & g.nodes["program"].isna()]
    assert len(missed) >= 3
    nodes = drawn_nodes(g.dot().source)
    assert set(nodes) == {"disp.dispatch", "disp.on_write", "progs[write]", "progs[empty]"}
    assert nodes["progs[empty]"].startswith(f"progs: {len(missed)} empty slots\n")
    if shutil.which("dot"):
        svg = g.svg()
        width, height = (float(v) * 96 / 72 for v in re.search(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"', svg).groups())
        assert width <= 953 and height <= 400  # drawn at full size: its 10 pt text is readable
        assert re.search(r'transform="scale\(([\d.]+) ', svg)[1] == "1"  # not scaled down to fit


@needs_root
def test_a_long_chain_goes_top_to_bottom_to_fit_a_notebook(session):
    """Notebook 02's shape: entry -> slot -> stage -> slot -> stage is five nodes deep; side by
    side it was a 912-px strip with 7-px text, so it is drawn top to bottom."""
    session.load("lc3", "int last(struct xdp_md *ctx) { return XDP_DROP; }")
    session.load("lc2", "BPF_PROG_ARRAY(lc, 4);\nint mid(struct xdp_md *ctx) { lc.call(ctx, 2); return XDP_PASS; }")
    session.load("lc1", "BPF_PROG_ARRAY(lc, 4);\nint first(struct xdp_md *ctx) { lc.call(ctx, 1); return XDP_PASS; }")
    session.slot("lc[1]", "lc2.mid")
    session.slot("lc[2]", "lc3.last")
    assert session.test_run("lc1.first").retval_name == "XDP_DROP"
    g = session.graph("lc")
    assert len(g.nodes) == 5
    assert "rankdir=TB" in g.dot().source
