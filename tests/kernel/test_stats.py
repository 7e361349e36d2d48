"""Run stats (kernel run_cnt/run_time_ns) and per-slot tail-call counters
(calls, taken, missed) against runs done with BPF_PROG_TEST_RUN."""

from __future__ import annotations

import pytest

from ..conftest import needs_root, prog_fdinfo

CHAIN = r"""
BPF_PROG_ARRAY(jt, 8);
/* Tries empty slot 3 first (falls through), then slot 1. */
int entry(struct xdp_md *ctx) { jt.call(ctx, 3); jt.call(ctx, 1); return XDP_PASS; }
int middle(struct xdp_md *ctx) { jt.call(ctx, 2); return XDP_DROP; }
int last(struct xdp_md *ctx) { return XDP_TX; }
/* Calls its own slot until the kernel's limit stops it. */
int loop(struct xdp_md *ctx) { jt.call(ctx, 6); return XDP_TX; }
int loop_entry(struct xdp_md *ctx) { jt.call(ctx, 6); return XDP_ABORTED; }
"""


def rows_by(df, column):
    return {row[column]: row for _, row in df.iterrows()}


@needs_root
def test_run_counts_equal_the_runs_done(session):
    session.load("m", "int prog(struct xdp_md *ctx) { return XDP_PASS; }")
    session.test_run("m.prog", repeat=123)
    for _ in range(5):
        session.test_run("m.prog")
    row = rows_by(session.stats(), "program")["m.prog"]
    kernel = prog_fdinfo(session.program("m.prog").fd)  # the kernel's own figures, read another way
    assert row["run_cnt"] == kernel["run_cnt"] == 128
    assert row["run_time_ns"] == kernel["run_time_ns"] > 0
    assert row["avg_ns"] == pytest.approx(kernel["run_time_ns"] / kernel["run_cnt"], abs=0.05)
    assert (row["module"], row["function"], row["type"]) == ("m", "prog", "xdp")
    assert row["prog_id"] == session.program("m.prog").prog_id

    before = session.stats()
    session.test_run("m.prog", repeat=50)
    assert rows_by(session.stats(since=before), "program")["m.prog"]["run_cnt"] == 50


@needs_root
def test_missed_counts_equal_calls_into_empty_slots(session):
    session.load("c", CHAIN, slots={"jt[1]": "middle"})
    runs = 25
    for _ in range(runs):
        assert session.test_run("c.entry").retval_name == "XDP_DROP"

    slots = {row["index"]: row for _, row in session.slots("jt").iterrows()}
    assert (slots[1]["calls"], slots[1]["taken"], slots[1]["missed"]) == (runs, runs, 0)
    assert (slots[2]["calls"], slots[2]["taken"], slots[2]["missed"]) == (runs, 0, runs)
    assert (slots[3]["calls"], slots[3]["taken"], slots[3]["missed"]) == (runs, 0, runs)

    stats = session.stats()
    programs = rows_by(stats[stats["program"] != "(empty)"], "program")
    empty = rows_by(stats[stats["program"] == "(empty)"], "slots")
    assert set(empty) == {"jt[2]", "jt[3]"}
    assert empty["jt[2]"]["missed"] == runs and empty["jt[3]"]["missed"] == runs
    # The kernel counts only the entry point; the program reached by a tail call shows up in tail_calls_in.
    assert programs["c.entry"]["run_cnt"] == runs and programs["c.entry"]["tail_calls_in"] == 0
    assert programs["c.middle"]["run_cnt"] == 0 and programs["c.middle"]["tail_calls_in"] == runs
    assert programs["c.middle"]["slots"] == "jt[1]"

    # Filling slot 2 turns its misses into taken calls from then on.
    before = session.stats()
    session.slot("jt[2]", "c.last")
    for _ in range(10):
        assert session.test_run("c.entry").retval_name == "XDP_TX"
    delta = session.stats(since=before)
    assert rows_by(delta, "program")["c.last"]["tail_calls_in"] == 10
    assert rows_by(delta, "program")["c.last"]["missed"] == 0
    assert rows_by(delta[delta["program"] == "(empty)"], "slots")["jt[3]"]["missed"] == 10


@needs_root
def test_the_tail_call_limit_shows_as_one_miss_per_run(session):
    session.load("c", CHAIN, slots={"jt[6]": "loop"})
    runs = 4
    for _ in range(runs):
        # 33 tail calls are taken, the 34th falls through and `loop` returns XDP_TX.
        assert session.test_run("c.loop_entry").retval_name == "XDP_TX"
    slot = rows_by(session.slots("jt"), "index")[6]
    assert (slot["calls"], slot["taken"], slot["missed"]) == (34 * runs, 33 * runs, runs)
    row = rows_by(session.stats(), "program")["c.loop"]
    assert (row["tail_calls_in"], row["missed"]) == (33 * runs, runs)


@needs_root
def test_counting_off_leaves_the_counters_alone(session):
    session.load("c", CHAIN, slots={"jt[1]": "middle"}, count_tail_calls=False)
    session.test_run("c.entry", repeat=10)
    slots = session.slots("jt")
    assert slots["calls"].sum() == 0 and slots["missed"].sum() == 0
    assert rows_by(session.stats(), "program")["c.entry"]["run_cnt"] == 10


SWAP = r"""
BPF_PROG_ARRAY(sw, 4);
int entry(struct xdp_md *ctx) { sw.call(ctx, 1); return XDP_PASS; }
int a1(struct xdp_md *ctx) { return XDP_DROP; }
int b1(struct xdp_md *ctx) { return XDP_TX; }
"""


def tail_calls_in(session, since=None):
    df = session.stats(since=since)
    df = df[df["program"] != "(empty)"]
    return {row.program: (row.tail_calls_in, row.missed) for row in df.itertuples()}


@needs_root
def test_a_swap_credits_each_program_only_the_calls_made_while_it_sat_in_the_slot(session):
    session.load("c", SWAP, slots={"sw[1]": "a1"})
    session.test_run("c.entry", repeat=100)
    session.slot("sw[1]", "c.b1")
    assert session.test_run("c.entry").retval_name == "XDP_TX"
    got = tail_calls_in(session)
    assert (got["c.a1"], got["c.b1"]) == ((100, 0), (1, 0))
    slot = rows_by(session.slots("sw"), "index")[1]
    assert (slot["program"], slot["calls"], slot["taken"]) == ("c.b1", 101, 101)  # per slot: cumulative

    # Emptied: the misses belong to the empty slot, and both programs keep what they earned.
    session.unslot("sw[1]")
    session.test_run("c.entry", repeat=2)
    stats = session.stats()
    empty = rows_by(stats[stats["program"] == "(empty)"], "slots")
    assert set(empty) == {"sw[1]"} and empty["sw[1]"]["missed"] == 2
    got = tail_calls_in(session)
    assert (got["c.a1"], got["c.b1"]) == ((100, 0), (1, 0))

    # Back in: a1 adds to what it had; the empty slot's misses stop showing once it is filled.
    session.slot("sw[1]", "c.a1")
    session.test_run("c.entry", repeat=3)
    stats = session.stats()
    assert "(empty)" not in set(stats["program"])
    got = tail_calls_in(session)
    assert (got["c.a1"], got["c.b1"]) == ((103, 0), (1, 0))

    # since=: differences per program across a swap.
    before = session.stats()
    session.slot("sw[1]", "c.b1")
    session.test_run("c.entry", repeat=5)
    got = tail_calls_in(session, since=before)
    assert (got["c.a1"], got["c.b1"]) == ((0, 0), (5, 0))
    session.unslot("sw[1]")
    session.test_run("c.entry", repeat=4)
    delta = session.stats(since=before)
    assert rows_by(delta[delta["program"] == "(empty)"], "slots")["sw[1]"]["missed"] == 4

    # A reloaded module is a new version: its programs start from zero.
    session.load("c", SWAP, slots={"sw[1]": "a1"})
    session.test_run("c.entry", repeat=6)
    got = tail_calls_in(session)
    assert (got["c.a1"], got["c.b1"]) == ((6, 0), (0, 0))


@needs_root
def test_slot_labels_are_the_same_in_every_view(session):
    session.progarray("lab", 8, slots="first")
    session.load(
        "c",
        "BPF_PROG_ARRAY(lab, 8);\n"
        "int entry(struct xdp_md *ctx) { lab.call(ctx, 5); lab.call(ctx, 0); return XDP_PASS; }\n"
        "int hop(struct xdp_md *ctx) { return XDP_DROP; }",
        slots={"lab[first]": "hop", "lab[3]": "hop"},
    )
    array = session.array("lab")
    assert [array.label(i) for i in (0, 3, 5)] == ["lab[first]", "lab[3]", "lab[5]"]
    session.test_run("c.entry")
    assert session.ls().set_index("function").loc["hop", "slots"] == "lab[first], lab[3]"
    stats = session.stats()
    assert rows_by(stats, "program")["c.hop"]["slots"] == "lab[first], lab[3]"
    assert set(stats[stats["program"] == "(empty)"]["slots"]) == {"lab[5]"}
    assert {"lab[first]", "lab[3]", "lab[5]"} <= set(session.graph().nodes["node"])
    assert set(session.test_run("c.entry").tail_calls["slot"]) == {"lab[first]", "lab[5]"}

    syscalls = session.progarray("sysc", 512, keys="syscalls")
    assert syscalls.label(1) == "sysc[write]" and syscalls.label(511) == "sysc[511]"


def test_module_stats_are_its_own_rows(session):
    from bpfmagic.kernel import libbpf

    a = session.load("a", "int fa(struct xdp_md *ctx) { return XDP_PASS; }")
    session.load("b", "int fb(struct xdp_md *ctx) { return XDP_PASS; }")
    libbpf.test_run(a.programs["fa"].fd, data=bytes(64), repeat=7)
    rows = a.stats()
    assert list(rows["program"]) == ["a.fa"] and int(rows["run_cnt"].iloc[0]) == 7


def test_many_empty_slots_share_a_row(session):
    from bpfmagic.kernel import libbpf

    session.load(
        "fan",
        """BPF_PROG_ARRAY(wide, 32);
int fan(struct xdp_md *ctx) {
    for (int i = 0; i < 12; i++)          /* 12 empty slots, slot i missed i+1 times per run */
        for (int j = 0; j <= i; j++)
            wide.call(ctx, i);
    return XDP_PASS;
}""",
    )
    libbpf.test_run(session.program("fan.fan").fd, data=bytes(64), repeat=1)
    empty = session.stats()
    empty = empty[empty["program"] == "(empty)"]
    assert len(empty) == 9  # 8 one by one, then the rest in one row
    assert list(empty["slots"][:2]) == ["wide[11]", "wide[10]"] and empty["missed"].iloc[0] == 12
    assert empty["slots"].iloc[-1] == "4 more slots of wide" and empty["missed"].iloc[-1] == 1 + 2 + 3 + 4
    assert empty["missed"].sum() == sum(range(1, 13))


OUT_OF_RANGE = {
    "bcc": "BPF_PROG_ARRAY(jt, 4);\nint entry(struct xdp_md *ctx) {\n    jt.call(ctx, 5);\n    jt.call(ctx, 9);\n    return XDP_PASS;\n}\n",
    "core": """#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 4); __type(key, __u32); __type(value, __u32); } jt SEC(".maps");
SEC("xdp") int entry(struct xdp_md *ctx) {
    bpf_tail_call(ctx, &jt, 5);
    bpf_tail_call(ctx, &jt, 9);
    return XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
""",
}


@needs_root
@pytest.mark.parametrize("backend", ["bcc", "core"])
def test_an_index_past_the_array_end_counts_at_its_site_not_in_a_slot(session, backend):
    """An index of size..2*size-1 once landed in the missed counters of slot index-size
    (taken -1, a made-up empty slot in stats); one past that was not counted at all. Now
    no slot is touched, and the calls are the array's "past the end" row (all missed)."""
    session.load("oob", OUT_OF_RANGE[backend], core=backend == "core")
    for run in range(1, 4):
        result = session.test_run("oob.entry")
        assert result.retval_name == "XDP_PASS"
        [row] = result.tail_calls.to_dict("records")  # no slot was called: only the past-the-end row
        assert (row["index"], row["key"], row["calls"], row["taken"], row["missed"]) == (4, "past the end (>= 4)", 2, 0, 2)
    stats = session.stats()
    [empty] = stats[stats["program"] == "(empty)"].to_dict("records")
    assert (empty["slots"], empty["missed"]) == ("jt[past the end (>= 4)]", 6)
    slots = session.slots("jt", all_keys=True).set_index("index")
    assert (slots.loc[0:3, ["calls", "missed"]] == 0).all().all() and slots.loc[4, "missed"] == 6
    misses = session.misses().set_index("key")
    assert [(int(misses.loc[k, "calls"]), int(misses.loc[k, "missed"])) for k in ("5", "9")] == [(3, 3), (3, 3)]
