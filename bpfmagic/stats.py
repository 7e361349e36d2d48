"""Per-program run statistics: the kernel's run_cnt / run_time_ns (kept on by
the Session's bpf_enable_stats fd) next to bpfmagic's own tail-call counters.

Two sources, because neither alone tells the story: the kernel counts a
program only when it runs as an entry point (attached, or test-run), never
when a tail call reaches it; the rewritten ``ARRAY.call`` counts every tail
call per slot, taken or fallen through (missed).
"""
from __future__ import annotations

STATS_COLUMNS = ["program", "module", "function", "type", "prog_id", "attached", "slots",
                 "run_cnt", "run_time_ns", "avg_ns", "tail_calls_in", "missed"]


def stats(session, since=None):
    """DataFrame, one row per loaded program:

    run_cnt, run_time_ns, avg_ns: kernel stats (entry-point runs only);
    tail_calls_in: tail calls that entered it through its slots;
    missed: tail calls into its slots that fell through (the 33-call limit,
    or, before it was put there, an empty slot).
    Tail calls into *empty* slots have no program to blame: each such slot
    gets a row of its own (program "(empty)", slots ARRAY[KEY]) with its
    missed count, which is what a "missed tail call" hunt looks for.

    since: an earlier stats() DataFrame; every count becomes the difference
    (per program id for the kernel's counts, per slot for the tail calls).
    """
    import pandas as pd

    rows = []
    with session._lock:
        slot_counts = {}
        for array in session.arrays.values():
            calls, missed = array.call_counts()
            for index in range(array.size):
                if calls[index] or missed[index]:
                    slot_counts[(array.name, index)] = (calls[index], missed[index])
        earlier_slots = since.attrs.get("slot_counts", {}) if since is not None else {}
        earlier_runs = since.attrs.get("runs_abs", {}) if since is not None else {}
        runs_abs = {}

        def slot_delta(array, index) -> tuple[int, int]:
            calls, missed = slot_counts.get((array.name, index), (0, 0))
            calls0, missed0 = earlier_slots.get((array.name, index), (0, 0))
            return calls - calls0, missed - missed0

        for module in session.modules.values():
            for program in module.programs.values():
                info = program.info()
                taken = fell = 0
                slots = []
                for array in session.arrays.values():
                    for index, occupant in array.entries.items():
                        if occupant is program:
                            calls, missed = slot_delta(array, index)
                            taken += calls - missed
                            fell += missed
                            slots.append(_slot_label(array, index))
                prog_id = int(info["prog_id"])
                runs_abs[prog_id] = (int(info.get("run_cnt", 0)), int(info.get("run_time_ns", 0)))
                run_cnt0, run_time0 = earlier_runs.get(prog_id, (0, 0))
                rows.append({
                    "program": program.qualname, "module": module.name, "function": program.name,
                    "type": program.type, "prog_id": prog_id,
                    "attached": ", ".join(session._attached_to(program)), "slots": ", ".join(slots),
                    "run_cnt": runs_abs[prog_id][0] - run_cnt0,
                    "run_time_ns": runs_abs[prog_id][1] - run_time0, "avg_ns": None,
                    "tail_calls_in": taken, "missed": fell,
                })
        for array in session.arrays.values():
            for index in range(array.size):
                _, missed = slot_delta(array, index)
                if missed and index not in array.entries:
                    rows.append({
                        "program": "(empty)", "module": None, "function": None, "type": None, "prog_id": None,
                        "attached": "", "slots": _slot_label(array, index), "run_cnt": 0, "run_time_ns": 0,
                        "avg_ns": None, "tail_calls_in": 0, "missed": missed,
                    })
    df = pd.DataFrame(rows, columns=STATS_COLUMNS)
    df["avg_ns"] = [round(t / n, 1) if n else None for t, n in zip(df["run_time_ns"], df["run_cnt"])]
    df["prog_id"] = df["prog_id"].astype("Int64")
    # Absolute counters, so that a later stats(since=this) works even when this one is a difference.
    df.attrs["runs_abs"] = runs_abs
    df.attrs["slot_counts"] = slot_counts
    df.attrs["stats_enabled"] = session.stats_enabled
    return df


def _slot_label(array, index: int) -> str:
    key = array.key_name(index)
    return f"{array.name}[{key}]" if key else f"{array.name}[{index}]"
