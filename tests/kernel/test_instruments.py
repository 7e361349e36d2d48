"""Chain instruments: the verifier's cost per program and the chain's stack,
per-call-site counts, the graph of enum-keyed chains, counters read together,
slots across re-runs and unloads."""

from __future__ import annotations

import os
import threading
import time

import pandas as pd
import pytest

from bpfmagic import UsageProblem

from ..conftest import needs_root
from ..programs import PATH_CHAIN

CORE_MIXED = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 4); __type(key, u32); __type(value, u32); } mx SEC(".maps");
static __noinline int sub(struct xdp_md *ctx) {
    volatile char b[40];
    b[3] = 5;
    bpf_tail_call(ctx, &mx, 1);
    return b[3];
}
SEC("xdp") int top(struct xdp_md *ctx) { volatile char a[24]; a[1] = 2; return sub(ctx) + a[1]; }
SEC("xdp") int leaf(struct xdp_md *ctx) { volatile char c[100]; c[7] = 3; return c[7] == 3 ? XDP_DROP : XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
"""


@needs_root
def test_verifier_cost_of_a_bcc_program(session):
    m = session.load(
        "v", "int f(struct xdp_md *ctx) { char b[64]; __builtin_memset(b, 1, 64);\n  return b[ctx->ingress_ifindex & 63] ? XDP_PASS : XDP_DROP; }"
    )
    v = m.programs["f"].verifier
    assert v.insns_processed is not None and v.insns_processed > 0
    assert v.insns_processed == v.verified_insns  # the log's count and the program info's agree
    assert v.insn_limit == 1_000_000 and v.time_usec is not None and v.total_states >= 0
    assert v.stack_depths == [64] and v.subprograms == ["f"]
    assert "insns processed" in v.summary()
    ls = session.ls().set_index("function")
    assert ls.loc["f", "insns_processed"] == v.insns_processed and ls.loc["f", "stack"] == "64"
    assert str(ls["insns_processed"].dtype) == "Int64" and str(ls["prog_id"].dtype) == "Int64"


@needs_root
def test_verifier_cost_of_subprograms_and_the_chain_stack(session):
    m = session.load("cm", CORE_MIXED, core=True)
    top = m.programs["top"].verifier
    assert len(top.stack_depths) == 2 and top.subprograms == ["top", "sub"]
    assert top.insns_processed == top.verified_insns
    assert m.programs["leaf"].verifier.stack_depths == [m.programs["leaf"].verifier.stack]
    session.slot("mx[1]", "cm.leaf")
    # top -> sub -> tail call -> leaf: leaf's XDP_DROP (1) replaces sub's return, top adds its a[1] (2);
    # falling through would give sub's b[3] (5) + 2 = 7
    r = session.test_run("cm.top")
    assert r.retval == 3 and r.tail_calls.set_index("slot").loc["mx[1]", "taken"] == 1
    g = session.graph("mx")
    stack = g.stack
    # top keeps both its frames across the tail call made from sub; leaf adds its own
    assert stack["mixing"] == ["cm.top"]
    assert stack["worst"] == top.stack + m.programs["leaf"].verifier.stack and stack["from"] == "cm.top"
    assert stack["ok"] and stack["limit"] == 8448
    assert "worst-case stack" in repr(g)


@needs_root
def test_a_failing_core_load_still_says_why(session):
    bad = CORE_MIXED.replace("return c[7] == 3", "return *(char *)(long)ctx->data == 3")  # no bounds check
    from bpfmagic import BpfVerifierError

    with pytest.raises(BpfVerifierError, match="invalid access to packet"):
        session.load("bad", bad, core=True)


TEST_CALL1 = r"""
BPF_PROG_ARRAY(jump, 8);
enum states { S_EOP = 1, S_ETHER, S_ARP, S_IP };
int parse_ether(struct xdp_md *ctx) {
    if (ctx->rx_queue_index == 7)
        jump.call(ctx, S_ARP);
    jump.call(ctx, S_IP);
    return XDP_ABORTED;
}
int parse_ip(struct xdp_md *ctx) { jump.call(ctx, S_EOP); return XDP_PASS; }
int parse_arp(struct xdp_md *ctx) { return XDP_TX; }
int eop(struct xdp_md *ctx) { return XDP_DROP; }
"""


@needs_root
def test_graph_of_enum_keys_and_counts_per_call_site(session):
    session.load("t", TEST_CALL1, slots={"jump[2]": "parse_ether", "jump[3]": "parse_arp", "jump[4]": "parse_ip", "jump[1]": "eop"})
    for _ in range(4):
        assert session.test_run("t.parse_ether").retval_name == "XDP_DROP"
    g = session.graph("jump")
    assert g.edge_set("call") == {("t.parse_ether", "jump[3]"), ("t.parse_ether", "jump[4]"), ("t.parse_ip", "jump[1]")}
    calls = g.edges[g.edges["kind"] == "call"].set_index("dst")
    # each edge has its call site's counts: the ARP site never ran
    assert (calls.loc["jump[3]", "line"], calls.loc["jump[3]", "calls"]) == (6, 0)
    assert (calls.loc["jump[4]", "line"], calls.loc["jump[4]", "calls"], calls.loc["jump[4]", "missed"]) == (7, 4, 0)
    assert calls.loc["jump[1]", "calls"] == 4
    m = session.modules["t"]
    assert session.site_counts(m) == {6: (0, 0), 7: (4, 0), 10: (4, 0)}


@needs_root
def test_counts_per_call_site_in_core_cells(session):
    m = session.load(
        "k",
        r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 4); __type(key, u32); __type(value, u32); } kj SEC(".maps");
SEC("xdp") int h(struct xdp_md *ctx) {
    bpf_tail_call(ctx, &kj, 3);
    bpf_tail_call_static(ctx, &kj, 0);
    return XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
""",
        core=True,
    )
    session.test_run("k.h", repeat=5)
    assert session.site_counts(m) == {6: (5, 5), 7: (5, 5)}


CONST_AND_VARIABLE_SITES = r"""BPF_PROG_ARRAY(cv, 4);
#define NEXT 2
int by_const(struct xdp_md *ctx) { cv.call(ctx, NEXT); return XDP_PASS; }
int by_packet(struct xdp_md *ctx) {
    u8 *key = (u8 *)(long)ctx->data;
    if ((void *)(key + 1) > (void *)(long)ctx->data_end) return XDP_ABORTED;
    cv.call(ctx, *key);
    return XDP_PASS;
}
int target(struct xdp_md *ctx) { return XDP_TX; }
"""


def _map_loads_before_the_tail_call(program) -> int:
    """How many map addresses the program loads before its tail call (the prog array's included)."""
    code = [line for line in program.dump("xlated").splitlines() if not line.startswith(";")]
    before = code[: next(i for i, line in enumerate(code) if "call bpf_tail_call" in line)]
    return sum("= map[id:" in line for line in before)


@needs_root
def test_a_constant_slot_site_counts_once_per_hop_and_every_reading_agrees(session):
    m = session.load("cv", CONST_AND_VARIABLE_SITES, slots={"cv[2]": "target"})
    # the constant site bumps one counter that names the site and the slot; the packet-keyed one
    # the slot's and the site's (and the prog array's address is loaded by both)
    assert _map_loads_before_the_tail_call(session.program("cv.by_const")) == 2
    assert _map_loads_before_the_tail_call(session.program("cv.by_packet")) == 3
    for _ in range(3):
        assert session.test_run("cv.by_const").retval_name == "XDP_TX"
    for key, outcome in ((2, "XDP_TX"), (2, "XDP_TX"), (3, "XDP_PASS")):
        assert session.test_run("cv.by_packet", data=bytes([key]) + bytes(63)).retval_name == outcome
    slots = session.slots("cv", all_keys=True).set_index("index")
    assert slots.loc[2, ["calls", "taken", "missed"]].tolist() == [5, 5, 0]
    assert slots.loc[3, ["calls", "taken", "missed"]].tolist() == [1, 0, 1]
    assert session.site_counts(m) == {3: (3, 0), 7: (3, 1)}
    misses = session.misses().set_index("line")
    assert misses.loc[3, ["slot", "calls", "taken", "missed"]].tolist() == ["cv[2]", 3, 3, 0]
    assert session.arrays["cv"].counts_at(2) == (5, 0)
    # a program moved out of the slot keeps what it earned there
    session.unslot("cv[2]")
    assert session.test_run("cv.by_const").retval_name == "XDP_PASS"
    slots = session.slots("cv", all_keys=True).set_index("index")
    assert slots.loc[2, ["calls", "taken", "missed"]].tolist() == [6, 5, 1]
    assert session.arrays["cv"].credited(session.program("cv.target")) == {2: (5, 0)}


@needs_root
def test_a_wide_chain_fits_a_notebook(session):
    n = 9
    src = "BPF_PROG_ARRAY(wide, 16);\n" + "\n".join(f"int h{i}(struct xdp_md *ctx) {{ wide.call(ctx, {i + 1}); return XDP_PASS; }}" for i in range(n))
    session.load("w", src, slots={f"wide[{i}]": f"h{i}" for i in range(1, n)})
    session.program("w.h0")
    g = session.graph("wide")
    dot = g.dot().source
    assert "rankdir=TB" in dot and 'size="9.5,40"' in dot
    import re
    import shutil

    if shutil.which("dot"):
        width = float(re.search(r'<svg width="([\d.]+)pt"', g.svg())[1])
        assert width * 96 / 72 <= 953  # pt -> px: inside a notebook's output area


@needs_root
def test_counters_read_while_traffic_runs_agree(session):
    session.load("ag", "BPF_PROG_ARRAY(agj, 4);\nint go(struct xdp_md *ctx) { agj.call(ctx, 2); return XDP_PASS; }")  # slot 2 stays empty
    prog = session.program("ag.go")
    from bpfmagic.kernel import libbpf

    done = threading.Event()

    def traffic():
        while not done.is_set():
            libbpf.test_run(prog.fd, data=bytes(64), repeat=200_000)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        readings = []
        for _ in range(300):
            row = session.slots("agj", all_keys=True).set_index("index").loc[2]
            readings.append((row["calls"], row["missed"]))
    finally:
        done.set()
        t.join()
    assert any(c for c, _ in readings)
    assert all(m <= c for c, m in readings), [r for r in readings if r[1] > r[0]][:3]
    final = session.slots("agj").set_index("index").loc[2]
    assert final["calls"] == final["missed"]


@needs_root
def test_slots_are_filled_before_the_entry_is_attached(session):
    src = (
        "BPF_PROG_ARRAY(att, 4);\n"
        "int entry(struct bpf_raw_tracepoint_args *ctx) { att.call(ctx, 1); return 0; }\n"
        "int next(struct bpf_raw_tracepoint_args *ctx) { return 0; }"
    )
    session.load("at", src, attach={"entry": "raw_tracepoint:sys_enter"}, slots={"att[1]": "next"})
    import os

    os.getpid(), os.stat("/")  # syscalls: the entry runs
    row = session.slots("att").set_index("index").loc[1]
    assert row["calls"] > 0 and row["missed"] == 0  # attached before the slot was filled, the first runs missed


@needs_root
def test_a_rerun_refills_the_slots_its_old_version_held(session):
    v1 = "BPF_PROG_ARRAY(rr, 4);\nint e(struct xdp_md *ctx) { rr.call(ctx, 2); return XDP_PASS; }\nint g(struct xdp_md *ctx) { return XDP_DROP; }"
    session.load("r", v1)
    session.slot("rr[2]", "r.g")
    m2 = session.load("r", v1.replace("XDP_DROP", "XDP_TX"))
    assert session.arrays["rr"].entries[2] is m2.programs["g"]
    assert m2.slot_notes == ["rr[2] now holds the new r.g (was the old one)"]
    assert session.test_run("r.e").retval_name == "XDP_TX"
    m3 = session.load("r", "BPF_PROG_ARRAY(rr, 4);\nint e(struct xdp_md *ctx) { rr.call(ctx, 2); return XDP_PASS; }")
    assert m3.slot_notes == ["rr[2] emptied: the new version of r has no g"]
    assert 2 not in session.arrays["rr"].entries
    assert session.test_run("r.e").retval_name == "XDP_PASS"
    session.load("u", "int g(struct xdp_md *ctx) { return XDP_DROP; }")
    session.slot("rr[1]", "u.g")
    assert session.unload("u") == ["rr[1] (was u.g)"]


@needs_root
def test_socket_filter_runs_say_the_packet_starts_at_l3(session):
    session.load("sf", "BPF_PROG_ARRAY(sfa, 2);\nint keep(struct __sk_buff *skb) { return skb->len; }")
    r = session.test_run("sf.keep", type="socket_filter")
    assert "from L3 on" in r.summary() and "AF_PACKET" in r.summary()
    assert r.retval == 42 - 14  # the default UDP frame's length without its Ethernet header


@needs_root
def test_prog_ids_are_integers_and_empty_slots_blank(session):
    session.load(
        "pi",
        "BPF_PROG_ARRAY(pia, 4);\nint e(struct xdp_md *ctx) { pia.call(ctx, 3); return XDP_PASS; }\nint g(struct xdp_md *ctx) { return XDP_DROP; }",
        slots={"pia[1]": "g"},
    )
    session.test_run("pi.e")
    slots = session.slots("pia").set_index("index")
    assert str(slots["prog_id"].dtype) == "Int64"
    assert slots.loc[1, "prog_id"] == session.program("pi.g").prog_id and pd.isna(slots.loc[3, "prog_id"])
    assert "1394.0" not in slots.to_string() and ".0 " not in slots[["prog_id"]].to_string()


DUMPED = r"""
BPF_PROG_ARRAY(dj, 4);
int f(struct xdp_md *ctx) {
  dj.call(ctx, 1);
  u32 k = ctx->rx_queue_index;
  dj.call(ctx, k);
  return XDP_PASS; }
int g(struct xdp_md *ctx) { return XDP_DROP; }
"""


@needs_root
def test_dump_marks_the_patched_jump_and_the_indirect_one(session):
    session.load("d", DUMPED, slots={"dj[1]": "g"})
    p = session.program("d.f")
    jited = p.dump("jited")
    marks = [line for line in jited.splitlines() if "◀ tail call" in line]
    assert any("direct jump" in m and "into d.g" in m for m in marks), jited
    assert any("variable index" in m for m in marks), jited
    assert "; dj.call(ctx, 1);  @ d:4" in jited and "; dj.call(ctx, k);  @ d:6" in jited
    session.unslot("dj[1]")  # empty: the kernel patches the direct jump out again
    emptied = p.dump("jited")
    assert not any("into d.g" in line for line in emptied.splitlines())
    # the two 5-byte places of the site swapped: a jmp over the patch site, which is a nop now
    assert "the slot is empty: jumps over the patch site below" in emptied, emptied
    assert "patch site (a nop while the slot is empty" in emptied
    xlated = p.dump("xlated")
    assert sum("call bpf_tail_call#12  ◀ tail call" in line for line in xlated.splitlines()) == 2
    assert "; u32 k = ctx->rx_queue_index;  @ d:5" in xlated
    assert "@ d:" not in p.dump("xlated", source=False)


@needs_root
def test_dump_of_a_core_program_keeps_the_cells_lines(session):
    m = session.load("cm2", CORE_MIXED, core=True)
    session.slot("mx[1]", "cm2.leaf")
    jited = m.programs["top"].dump("jited")
    assert "<top>:" in jited and "<sub>:" in jited
    assert "; bpf_tail_call(ctx, &mx, 1);  @ cm2:8" in jited
    assert any("direct jump" in line and "cm2.leaf" in line for line in jited.splitlines())


@needs_root
def test_dump_through_the_magic(capsys):
    from IPython.testing.globalipapp import get_ipython

    import bpfmagic

    ip = get_ipython()
    ip.run_line_magic("load_ext", "bpfmagic")
    bpfmagic.shell.drop()
    try:
        ip.run_cell("%%bpf dm -s dj[1]=g\n" + DUMPED)
        ip.run_line_magic("bpf", "dump dm.f --jited")
        assert "direct jump" in capsys.readouterr().out
    finally:
        ip.run_line_magic("bpf", "reset")
        bpfmagic.shell.drop()


# ------------------------------------------------------------------ paths


@needs_root
def test_a_run_through_a_chain_shows_its_path(session):
    session.enable_paths()
    session.load("pc", PATH_CHAIN, slots={"pj[1]": "parse_eth", "pj[2]": "parse_ip"})
    r = session.test_run("pc.entry", data=bytes(64), path=True)
    assert r.retval_name == "XDP_TX"
    assert r.path_text == "pc.entry → parse_eth → parse_ip ✗ pj[5] empty"
    assert list(r.path["outcome"]) == ["taken", "taken", "empty slot"]
    assert list(r.path["line"]) == [7, 9, 10] and list(r.path["key"]) == [1, 2, 5]
    assert "path: pc.entry → parse_eth" in r.summary()
    r2 = session.test_run("pc.entry", data=b"\xaa" + bytes(63), path=True)  # slot 3 is empty: falls through to 1
    assert r2.path_text == "pc.entry ✗ pj[3] empty → parse_eth → parse_ip ✗ pj[5] empty"
    misses = session.misses().set_index("line")
    assert (misses.loc[10, "missed"], misses.loc[10, "slot_empty"], misses.loc[10, "limit_reached"]) == (2, 2, 0)
    assert misses.loc[6, "slot_empty"] == 1 and misses.loc[6, "slot"] == "pj[3]"


@needs_root
def test_paths_off_runs_uninstrumented_code(session):
    session.load("po", PATH_CHAIN, slots={"pj[1]": "parse_eth"})
    with pytest.raises(Exception, match="loaded without paths"):
        session.test_run("po.entry", path=True)
    size_off = session.program("po.entry").verifier.xlated_insns
    session.enable_paths()
    session.load("po", PATH_CHAIN, slots={"pj[1]": "parse_eth"})
    assert session.program("po.entry").verifier.xlated_insns > size_off


@needs_root
def test_the_limit_is_told_from_an_empty_slot(session):
    session.enable_paths()
    session.load("lim", "BPF_PROG_ARRAY(lj, 2);\nint loop(struct xdp_md *ctx) { lj.call(ctx, 0); return XDP_DROP; }", slots={"lj[0]": "loop"})
    r = session.test_run("lim.loop", path=True)
    assert len(r.path) == 34
    assert list(r.path["outcome"][:33]) == ["taken"] * 33 and r.path["outcome"].iloc[33] == "limit reached"
    assert r.path_text.endswith("✗ lj[0] limit")
    m = session.misses().set_index("line").loc[2]
    assert (m["calls"], m["missed"], m["limit_reached"], m["slot_empty"]) == (34, 1, 1, 0)


@needs_root
def test_paths_in_a_core_chain(session):
    session.enable_paths()
    session.load(
        "cp",
        r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 4); __type(key, u32); __type(value, u32); } cj SEC(".maps");
SEC("xdp") int first(struct xdp_md *ctx) { bpf_tail_call_static(ctx, &cj, 1); return XDP_PASS; }
SEC("xdp") int second(struct xdp_md *ctx) { bpf_tail_call(ctx, &cj, 3); return XDP_DROP; }
char LICENSE[] SEC("license") = "GPL";
""",
        core=True,
        slots={"cj[1]": "second"},
    )
    r = session.test_run("cp.first", path=True)
    assert r.retval_name == "XDP_DROP" and r.path_text == "cp.first → second ✗ cj[3] empty"


@needs_root
def test_live_paths_are_counted(session):
    session.enable_paths()
    session.load("lv", PATH_CHAIN, slots={"pj[1]": "parse_eth", "pj[2]": "parse_ip"})
    prog = session.program("lv.entry")
    from bpfmagic.kernel import libbpf

    def traffic():
        for _ in range(3):
            libbpf.test_run(prog.fd, data=bytes(64), repeat=100)
        libbpf.test_run(prog.fd, data=b"\xaa" + bytes(63), repeat=7)

    df = session.paths("pj", during=traffic)
    got = dict(zip(df["path"], df["runs"]))
    assert got == {
        "lv.entry → parse_eth → parse_ip ✗ pj[5] empty": 300,  # every run, counted once
        "lv.entry ✗ pj[3] empty → parse_eth → parse_ip ✗ pj[5] empty": 7,
    }
    assert abs(df["share"].sum() - 1) < 1e-9
    from bpfmagic.experiments.paths import picture

    g = picture(session, df, "pj")
    assert g.widths[("lv.entry", "pj[1]")] == 307 and g.widths[("lv.entry", "pj[3]")] == 7
    assert g.widths[("pj[2]", "lv.parse_ip")] == 307
    dot = g.dot().source
    assert "penwidth=6.0" in dot and "307 runs" in dot
    # a second window: the runs left in the records by the first are not counted again
    df2 = session.paths("pj", during=lambda: libbpf.test_run(prog.fd, data=b"\xaa" + bytes(63), repeat=5))
    assert dict(zip(df2["path"], df2["runs"])) == {"lv.entry ✗ pj[3] empty → parse_eth → parse_ip ✗ pj[5] empty": 5}


# ------------------------------------------------------------------ chains as data

STAGES = r"""
static __always_inline int mark(struct xdp_md *ctx, u8 letter) {
    u8 *p = (u8 *)(long)ctx->data;
    if ((void *)(p + 8) > (void *)(long)ctx->data_end) return XDP_ABORTED;
    u8 n = p[0];
    if (n == 0) p[1] = letter; else if (n == 1) p[2] = letter; else if (n == 2) p[3] = letter;
    else if (n == 3) p[4] = letter; else p[5] = letter;
    p[0] = n + 1;
    return XDP_PASS;
}
int a(struct xdp_md *ctx) { mark(ctx, 'A'); CHAIN_NEXT(ctx, fw); return XDP_PASS; }
int b(struct xdp_md *ctx) { mark(ctx, 'B'); CHAIN_NEXT(ctx, fw); return XDP_TX; }
int c(struct xdp_md *ctx) { mark(ctx, 'C'); CHAIN_NEXT(ctx, fw); return XDP_DROP; }
"""


def _order(session) -> bytes:
    out = session.test_run("fw_entry.entry", data=bytes(64)).data_out
    return out[1 : 1 + out[0]]


@needs_root
def test_a_chain_as_data_runs_its_stages_in_order(session):
    session.load("st", STAGES)
    ch = session.chain("fw", ["st.a", "st.b", "st.c"])
    assert _order(session) == b"ABC"
    assert session.test_run("fw_entry.entry", data=bytes(64)).retval_name == "XDP_DROP"  # the last stage's verdict
    ch.reorder(["st.c", "st.a"])
    assert _order(session) == b"CA" and ch.base == 16
    ch.insert(1, "st.b")
    assert _order(session) == b"CBA" and ch.base == 0
    ch.remove("st.c")
    assert _order(session) == b"BA"
    df = ch.df()
    assert list(df["stage"]) == ["st.b", "st.a"] and list(df["runs"]) == [1, 1]
    assert list(df["runs_in_chain"]) == [4, 5]  # b: ABC twice, CBA, BA; a: ABC twice, CA, CBA, BA
    assert list(df["slot"]) == ["fw[16]", "fw[17]"]
    with pytest.raises(Exception, match="does not call CHAIN_NEXT"):
        session.load("plain", "int p(struct xdp_md *ctx) { return XDP_PASS; }")
        ch.reorder(["plain.p"])
    assert _order(session) == b"BA"  # a refused change leaves the chain as it was


@needs_root
def test_a_full_bank_and_an_emptied_chain_never_run_into_the_other_bank(session):
    """A full bank 0 would run on into bank 1's first slot (the old order's stage); an
    emptied chain's next order must not be written into the bank traffic still reads."""
    session.load("st", STAGES)
    ch = session.chain("fw", ["st.a", "st.b"])
    ch.reorder(["st.c"])  # bank 1: c
    with pytest.raises(UsageProblem, match="takes at most 15"):
        ch.reorder(["st.a"] * 16)
    assert _order(session) == b"C"
    ch.reorder(["st.a"] * 15)  # bank 0, full but for the slot after it
    assert session.test_run("fw_entry.entry", data=bytes(64)).retval_name == "XDP_PASS"  # a's verdict, not c's
    ch.remove("st.a")
    assert _order(session) == b"" and ch.base == 16
    live = ch.base
    writes = []
    real_slot = session.slot

    def slot_and_look(spec, program):  # what a packet arriving between two slot writes sees
        real_slot(spec, program)
        writes.append(_order(session))

    session.slot = slot_and_look
    try:
        ch.reorder(["st.c", "st.b", "st.a"])
    finally:
        del session.slot
    assert writes == [b"", b"", b""] and ch.base != live  # the live (empty) bank was left alone
    assert _order(session) == b"CBA"


@needs_root
def test_chain_files_that_are_not_chains_are_refused(session, tmp_path):
    from bpfmagic.experiments.chain import load_file

    session.load("st", STAGES)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    cases = {
        str(fifo): "not a regular file",
        "latin1.yaml": "not UTF-8",
        "zero.yaml": "capacity must be 1..1024",
        "float.yaml": "capacity must be a whole number",
        "bool.yaml": "capacity must be a whole number",
        "type.yaml": "type must be a program type",
    }
    (tmp_path / "latin1.yaml").write_bytes(b"stages: [st.a] # caf\xe9\n")
    (tmp_path / "zero.yaml").write_text("capacity: 0\nstages: [st.a]\n")
    (tmp_path / "float.yaml").write_text("capacity: 2.7\nstages: [st.a]\n")
    (tmp_path / "bool.yaml").write_text("capacity: true\nstages: [st.a]\n")
    (tmp_path / "type.yaml").write_text("type: [1]\nstages: [st.a]\n")
    for name, said in cases.items():
        with pytest.raises(UsageProblem, match=said):
            load_file(session, "fw", str(tmp_path / name))
    assert "fw" not in session.chains


@needs_root
def test_reordering_under_traffic_shows_only_whole_orders(session):
    session.enable_paths()
    session.load("st", STAGES)
    ch = session.chain("fw", ["st.a", "st.b", "st.c"])
    prog = ch.program
    from bpfmagic.kernel import libbpf

    stop = threading.Event()
    runs = []

    def traffic():
        while not stop.is_set():
            libbpf.test_run(prog.fd, data=bytes(64), repeat=20_000)
            runs.append(1)

    t = threading.Thread(target=traffic)
    t.start()

    def flips():
        for i in range(40):
            ch.reorder(["st.c", "st.b", "st.a"] if i % 2 == 0 else ["st.a", "st.b", "st.c"])
            time.sleep(0.01)  # each order lives long enough for the traffic thread to run through it

    try:
        df = session.paths("fw", during=flips)
    finally:
        stop.set()
        t.join()
    got = dict(zip(df["path"], df["runs"]))
    whole = {"fw_entry.entry → a → b → c ✗ fw[3] empty", "fw_entry.entry → c → b → a ✗ fw[19] empty"}
    assert set(got) <= whole, got  # never a mix of the two orders
    assert set(got) == whole and sum(got.values()) > 1000  # both orders ran, many times


@needs_root
def test_chain_from_a_yaml_file_through_the_magic(tmp_path, capsys):
    from IPython.testing.globalipapp import get_ipython

    import bpfmagic

    ip = get_ipython()
    ip.run_line_magic("load_ext", "bpfmagic")
    bpfmagic.shell.drop()
    try:
        ip.run_cell("%%bpf st\n" + STAGES)
        f = tmp_path / "chain.yaml"
        f.write_text("chain: fw\ntype: xdp\nstages:\n  - st.b\n  - st.c\n")
        df = ip.run_line_magic("bpf", f"chain fw --file {f}")
        assert list(df["stage"]) == ["st.b", "st.c"]
        assert _order(bpfmagic.session()) == b"BC"
        f.write_text("stages: [st.c, st.a, st.b]\n")
        ip.run_line_magic("bpf", f"chain fw --file {f}")
        assert _order(bpfmagic.session()) == b"CAB"
        df = ip.run_line_magic("bpf", "chain fw")
        assert list(df["runs"]) == [1, 1, 1]
        assert "fw_entry.entry → c → a → b" in capsys.readouterr().out
        from bpfmagic.experiments.chain import load_file

        # A later file that contradicts the chain is refused, and the chain keeps its order.
        f.write_text("capacity: 8\nstages: [st.a]\n")
        with pytest.raises(bpfmagic.UsageProblem, match="has capacity 16, the file says 8"):
            load_file(bpfmagic.session(), "fw", str(f))
        f.write_text("type: sched_cls\nstages: [st.a]\n")
        with pytest.raises(bpfmagic.UsageProblem, match="runs xdp stages, the file says sched_cls"):
            load_file(bpfmagic.session(), "fw", str(f))
        assert _order(bpfmagic.session()) == b"CAB"
    finally:
        ip.run_line_magic("bpf", "reset")
        bpfmagic.shell.drop()


SLOW_STAGE = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
static long spin(u32 i, void *c) { return 0; }
SEC("xdp") int slow(struct xdp_md *ctx) { bpf_loop(SPINS, spin, 0, 0); CHAIN_NEXT(ctx, fw); return XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
"""


@needs_root
def test_a_run_that_outlasts_any_fixed_grace_still_sees_one_whole_order(session):
    # A run in a stage that takes ~20 ms while the chain switches away and rewrites the bank it
    # runs in: the rewrite waits for it (a 2 ms grace mixed the orders: "AC" in half the runs).
    session.load("st", STAGES)
    session.load("sl", SLOW_STAGE.replace("SPINS", str(1 << 23)), core=True)
    ch = session.chain("fw", ["st.a", "sl.slow", "st.b"])
    from bpfmagic.kernel import libbpf

    seen = []

    def run():  # not Session.test_run: it holds the session's lock, which reorder waits for
        out = libbpf.test_run(ch.program.fd, data=bytes(64))["data_out"]
        seen.append(bytes(out[1 : 1 + out[0]]))

    for _ in range(6):
        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.004)  # the run is in sl.slow now
        ch.reorder(["st.c"])  # the other bank
        ch.reorder(["st.c", "sl.slow", "st.c"])  # the bank the run is in
        t.join()
        ch.reorder(["st.a", "sl.slow", "st.b"])
    assert set(seen) <= {b"AB", b"C", b"CC"}, seen


@needs_root
@pytest.mark.skipif(os.cpu_count() < 2, reason="needs a second CPU for the traffic")
def test_live_paths_never_count_a_run_read_half_way(session):
    # Traffic on CPU 1 spends most of each run in a slow stage; the reader on CPU 0 closes
    # windows while it goes on. A record read then is mostly "entry → a → slow", no end.
    session.enable_paths()
    session.load("st", STAGES)
    session.load("sl", SLOW_STAGE.replace("SPINS", str(1 << 20)), core=True)
    ch = session.chain("fw", ["st.a", "sl.slow", "st.b"])
    from bpfmagic.kernel import libbpf

    cpus = sorted(os.sched_getaffinity(0))
    stop = threading.Event()

    def traffic():
        os.sched_setaffinity(threading.get_native_id(), {cpus[1]})
        while not stop.is_set():
            libbpf.test_run(ch.program.fd, data=bytes(64), repeat=4)

    t = threading.Thread(target=traffic)
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[0]})
    t.start()
    got: dict = {}
    try:
        for _ in range(16):
            df = session.paths("fw", during=lambda: time.sleep(0.02))
            for path, n in zip(df["path"], df["runs"]):
                got[path] = got.get(path, 0) + n
    finally:
        stop.set()
        t.join()
        os.sched_setaffinity(0, mine)
    assert set(got) == {"fw_entry.entry → a → slow → b ✗ fw[3] empty"}, got


@needs_root
def test_live_paths_refuse_a_window_they_cannot_keep_and_an_unknown_array(session):
    from bpfmagic import SlotError

    session.enable_paths()
    for seconds in (-1, float("nan"), float("inf"), 1e300):
        with pytest.raises(UsageProblem, match="--seconds must be"):
            session.paths(seconds=seconds)
    with pytest.raises(SlotError) as err:
        session.paths("nosuch", seconds=0.01)
    assert (err.value.array, err.value.hint) == ("nosuch", "%bpf progarray nosuch N")
    assert session.paths(seconds=0).empty
