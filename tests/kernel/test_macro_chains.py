"""Chains a cell's own macros write (a PROG(X) line per stage, as kernel samples
and tail-call benchmarks build them), and counts that cannot be known: a stage
loaded with --no-count into an array others count, an empty slot of a busy
dispatcher."""

from __future__ import annotations

import textwrap

import pandas as pd

from bpfmagic.experiments import packets

from ..conftest import needs_root
from ..programs import PROG_MACRO_CHAIN


@needs_root
def test_a_macro_built_chain_shows_its_tail_calls_in_a_run(session):
    slots = {f"stages[{n}]": f"stage_{n}" for n in range(3)}
    session.load("mc", PROG_MACRO_CHAIN, core=True, slots=slots)
    result = session.test_run("mc.stage_0", data=packets.udp_packet(), repeat=5)
    assert result.retval_name == "XDP_PASS"
    moved = result.tail_calls.set_index("index")
    assert moved.loc[1, "taken"] == 5 and moved.loc[2, "taken"] == 5
    assert moved.loc[3, "missed"] == 5 and pd.isna(moved.loc[3, "program"])  # stage_2 calls an empty slot
    assert result.counters_in == ["mc"] and "counters are in this chain's timed path" in result.summary()


@needs_root
def test_an_uncounted_stage_makes_its_arrays_counts_unknown_not_stale(session):
    slots = {f"stages[{n}]": f"stage_{n}" for n in range(3)}
    session.load("counted", PROG_MACRO_CHAIN, core=True, slots=slots)
    session.test_run("counted.stage_0", data=packets.udp_packet())
    before = session.slots("stages").set_index("index")
    assert before.loc[1, "taken"] == 1 and "not_counted" not in session.slots("stages").attrs

    session.load("bare", PROG_MACRO_CHAIN, core=True, slots=slots, count_tail_calls=False)
    result = session.test_run("bare.stage_0", data=packets.udp_packet(), repeat=50)
    assert result.not_counted == {"stages": ["bare"]} and "tail calls not counted in stages (by bare)" in result.summary()
    assert not (result.tail_calls["array"] == "stages").any()

    df = session.slots("stages")
    assert df[["calls", "taken", "missed"]].isna().all().all()  # 50 calls happened that no counter saw
    assert "stages (by bare)" in df.attrs["not_counted"]
    stats = session.stats().set_index("program")
    assert pd.isna(stats.loc["bare.stage_1", "tail_calls_in"])
    assert stats.loc["counted.stage_1", "tail_calls_in"] == 1  # what it earned while it sat there stays known

    session.unload("bare")
    df = session.slots("stages")
    assert "not_counted" not in df.attrs and df["calls"].notna().all()


@needs_root
def test_an_empty_slot_shows_nothing_taken_since_it_was_emptied(session):
    slots = {f"stages[{n}]": f"stage_{n}" for n in range(3)}
    session.load("e", PROG_MACRO_CHAIN, core=True, slots=slots)
    session.test_run("e.stage_0", data=packets.udp_packet(), repeat=3)
    session.unslot("stages[2]")
    session.test_run("e.stage_0", data=packets.udp_packet(), repeat=4)
    row = session.slots("stages").set_index("index").loc[2]
    assert (row["calls"], row["taken"], row["missed"]) == (7, 3, 4)
    df = session.slots("stages")
    assert (df["calls"] == df["taken"] + df["missed"]).all()


# tail-call-bench's shape: libbpf 0.x sections with a suffix, which libbpf 1.x types as nothing.
ACTION_STAGES = textwrap.dedent(r"""
    #include <linux/bpf.h>
    #include <bpf/bpf_helpers.h>
    struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 3); __type(key, __u32); __type(value, __u32); } acts SEC(".maps");
    #define ACT(X) SEC("action/prog" #X) int act_##X(void *ctx) { bpf_tail_call(ctx, &acts, X + 1); return 0; }
    ACT(0)
    ACT(1)
    ACT(2)
    char _license[] SEC("license") = "GPL";
    """)


@needs_root
def test_stages_of_an_untyped_section_take_the_type_of_their_attached_peer(session):
    m = session.load("tcb", ACTION_STAGES, core=True, attach={"act_0": "tc:lo"}, slots={"acts[0]": "act_0", "acts[1]": "act_1", "acts[2]": "act_2"})
    assert {p.type for p in m.programs.values()} == {"sched_cls"}
    assert session.arrays["acts"].owner_type == "sched_cls"
    assert any("2 functions, act_1" in n and "the other programs slotted into acts" in n for n in m.notes)
    result = session.test_run("tcb.act_0", data=packets.udp_packet())
    assert result.tail_calls.set_index("index").loc[2, "taken"] == 1


@needs_root
def test_a_tail_call_past_the_end_of_the_array_is_counted_as_missed(session):
    """tail-call-bench's last stage calls progs[34] of a 34-slot array: no slot, the kernel
    falls through. Those calls are counted (once each, all missed), not lost from every view."""
    session.load("tcb", ACTION_STAGES, core=True, attach={"act_0": "tc:lo"}, slots={f"acts[{n}]": f"act_{n}" for n in range(3)})
    result = session.test_run("tcb.act_0", data=packets.udp_packet(), repeat=7)
    past = result.tail_calls.set_index("index").loc[3]  # act_2 calls acts[3]; acts has 3 slots
    assert (past["calls"], past["taken"], past["missed"]) == (7, 0, 7) and past["key"] == "past the end (>= 3)"
    row = session.slots("acts").set_index("index").loc[3]
    assert (row["calls"], row["missed"]) == (7, 7) and pd.isna(row["program"])
    stats = session.stats().set_index("slots")
    assert stats.loc["acts[past the end (>= 3)]", "missed"] == 7
    # BCC's ARRAY.call the same
    session.load("bcc_past", "BPF_PROG_ARRAY(small, 2);\nint entry(struct xdp_md *ctx) { small.call(ctx, 9); return XDP_PASS; }")
    result = session.test_run("bcc_past.entry", data=packets.udp_packet(), repeat=4)
    assert result.tail_calls.set_index("index").loc[2, "missed"] == 4
