"""Per-program run statistics: the kernel's run_cnt / run_time_ns (kept on by
the Session's bpf_enable_stats fd) next to bpfmagic's own tail-call counters.

Two sources, because neither alone tells the story: the kernel counts a
program only when it runs as an entry point (attached, or test-run), never
when a tail call reaches it; the rewritten ``ARRAY.call`` counts every tail
call per slot, taken or fallen through (missed). The slot counters are split
by occupant when a slot is filled or emptied (ProgArray.credited), so a
program is credited only with the calls made while it sat in the slot.
"""

from __future__ import annotations

from .. import views
from ..progarray import not_counted_note, slot_counts, uncounted_callers

MAX_EMPTY_ROWS = 8  # empty slots listed one by one in stats(); the rest are summed
STATS_COLUMNS = [
    "program",
    "module",
    "function",
    "type",
    "prog_id",
    "attached",
    "slots",
    "run_cnt",
    "run_time_ns",
    "avg_ns",
    "tail_calls_in",
    "missed",
]


def stats(session, since=None):
    """DataFrame, one row per loaded program:

    run_cnt, run_time_ns, avg_ns: kernel stats (entry-point runs only);
    tail_calls_in: tail calls that entered it through its slots while it sat
    in them (it keeps them after being swapped out, while its module is loaded);
    missed: tail calls into its slots that fell through while it sat there
    (the 33-call limit).
    Tail calls into *empty* slots have no program to blame: each such slot
    gets a row of its own (program "(empty)", slots ARRAY[KEY]) with what it
    missed since it was last emptied, which is what a "missed tail call" hunt
    looks for.

    since: an earlier stats() DataFrame; every count becomes the difference
    (per program id for the programs, per slot for the empty slots).
    """
    import pandas as pd

    rows = []
    with session.lock:
        arrays = list(session.arrays.values())
        counts = slot_counts(arrays)
        earlier = since.attrs if since is not None else {}
        earlier_slots = earlier.get("slot_counts", {})
        earlier_runs = earlier.get("runs_abs", {})
        earlier_tail = earlier.get("tail_abs", {})
        runs_abs, tail_abs = {}, {}
        blind = uncounted_callers(session.modules.values())
        unknown_rows = []  # rows whose tail counts miss calls no counter saw

        for module in session.modules.values():
            for program in module.programs.values():
                info = program.info()
                prog_id = int(info["prog_id"])
                calls = missed = 0
                for array in arrays:
                    for c, m in array.credited(program, counts).values():
                        calls, missed = calls + c, missed + m
                tail_abs[prog_id] = (calls - missed, missed)
                unknown_rows.append(any(array.name in blind and program in array.entries.values() for array in arrays))
                runs_abs[prog_id] = (int(info.get("run_cnt", 0)), int(info.get("run_time_ns", 0)))
                run_cnt0, run_time0 = earlier_runs.get(prog_id, (0, 0))
                taken0, missed0 = earlier_tail.get(prog_id, (0, 0))
                rows.append(
                    {
                        "program": program.qualname,
                        "module": module.name,
                        "function": program.name,
                        "type": program.type,
                        "prog_id": prog_id,
                        "attached": ", ".join(views.attached_to(program)),
                        "slots": ", ".join(views.slots_of(session.arrays, program)),
                        "run_cnt": runs_abs[prog_id][0] - run_cnt0,
                        "run_time_ns": runs_abs[prog_id][1] - run_time0,
                        "avg_ns": None,
                        "tail_calls_in": tail_abs[prog_id][0] - taken0,
                        "missed": missed - missed0,
                    }
                )
        for array in arrays:
            empty = []
            for index in range(array.size + 1):  # array.size: the calls past the end (no slot: all missed)
                if index in array.entries:
                    continue
                missed = counts.get((array.name, index), (0, 0))[1]
                # Counted from when the slot was emptied, or from `since` if that came later.
                start = max(array.baselines.get(index, (0, 0))[1], earlier_slots.get((array.name, index), (0, 0))[1])
                if missed > start:
                    empty.append((missed - start, array.label(index)))
            # The most missed empty slots get a row each; a syscall dispatcher misses in
            # dozens of them, so the rest share one row.
            empty.sort(key=lambda e: -e[0])
            shown, rest = empty[:MAX_EMPTY_ROWS], empty[MAX_EMPTY_ROWS:]
            if rest:
                shown.append((sum(m for m, _ in rest), f"{len(rest)} more slots of {array.name}"))
            for missed, label in shown:
                unknown_rows.append(array.name in blind)
                rows.append(
                    {
                        "program": "(empty)",
                        "module": None,
                        "function": None,
                        "type": None,
                        "prog_id": None,
                        "attached": "",
                        "slots": label,
                        "run_cnt": 0,
                        "run_time_ns": 0,
                        "avg_ns": None,
                        "tail_calls_in": 0,
                        "missed": missed,
                    }
                )
    df = pd.DataFrame(rows, columns=STATS_COLUMNS)
    df["avg_ns"] = [round(t / n, 1) if n else None for t, n in zip(df["run_time_ns"], df["run_cnt"])]
    df["prog_id"] = df["prog_id"].astype("Int64")
    if any(unknown_rows):
        for column in ("tail_calls_in", "missed"):
            df[column] = df[column].astype("Int64")
            df.loc[unknown_rows, column] = pd.NA
        df.attrs["not_counted"] = not_counted_note(blind)
    # Absolute counters, so that a later stats(since=this) works even when this one is a difference.
    df.attrs["runs_abs"] = runs_abs
    df.attrs["tail_abs"] = tail_abs
    df.attrs["slot_counts"] = counts
    df.attrs["stats_enabled"] = session.stats_enabled
    return df
