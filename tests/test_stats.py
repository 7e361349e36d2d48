"""Run stats (kernel run_cnt/run_time_ns) and per-slot tail-call counters
(calls, taken, missed) against runs done with BPF_PROG_TEST_RUN."""
from __future__ import annotations

import pytest

from .conftest import needs_root

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
    assert row["run_cnt"] == 128
    assert row["run_time_ns"] > 0
    assert row["avg_ns"] == pytest.approx(row["run_time_ns"] / 128, abs=0.05)
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
