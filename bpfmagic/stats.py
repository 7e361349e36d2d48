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
_COUNTS = ["run_cnt", "run_time_ns", "tail_calls_in", "missed"]


def stats(session, since=None):
    """DataFrame, one row per loaded program:

    run_cnt, run_time_ns, avg_ns: kernel stats (entry-point runs only);
    tail_calls_in: tail calls that entered it through its slots;
    missed: tail calls into its slots that fell through (the 33-call limit).
    Tail calls into *empty* slots have no program to blame: each such slot
    gets a row of its own (program "(empty)", slots ARRAY[KEY]) with its
    missed count, which is what a "missed tail call" hunt looks for.

    since: an earlier stats() DataFrame; counts become the difference.
    """
    import pandas as pd

    rows = []
    with session._lock:
        per_slot = {}
        for array in session.arrays.values():
            calls, missed = array.call_counts()
            per_slot[array.name] = (array, calls, missed)
        for module in session.modules.values():
            for program in module.programs.values():
                info = program.info()
                taken = fell = 0
                slots = []
                for array, calls, missed in per_slot.values():
                    for index, occupant in array.entries.items():
                        if occupant is program:
                            taken += calls[index] - missed[index]
                            fell += missed[index]
                            slots.append(_slot_label(array, index))
                run_cnt, run_time = int(info.get("run_cnt", 0)), int(info.get("run_time_ns", 0))
                rows.append({
                    "program": program.qualname, "module": module.name, "function": program.name,
                    "type": program.type, "prog_id": int(info["prog_id"]),
                    "attached": ", ".join(session._attached_to(program)), "slots": ", ".join(slots),
                    "run_cnt": run_cnt, "run_time_ns": run_time, "avg_ns": None,
                    "tail_calls_in": taken, "missed": fell,
                })
        for array, calls, missed in per_slot.values():
            for index in range(array.size):
                if missed[index] and index not in array.entries:
                    rows.append({
                        "program": "(empty)", "module": None, "function": None, "type": None, "prog_id": None,
                        "attached": "", "slots": _slot_label(array, index), "run_cnt": 0, "run_time_ns": 0,
                        "avg_ns": None, "tail_calls_in": 0, "missed": missed[index],
                    })
    df = pd.DataFrame(rows, columns=STATS_COLUMNS)
    if since is not None:
        df = _minus(df, since)
    df["avg_ns"] = [round(t / n, 1) if n else None for t, n in zip(df["run_time_ns"], df["run_cnt"])]
    df["prog_id"] = df["prog_id"].astype("Int64")
    df.attrs["stats_enabled"] = session.stats_enabled
    return df


def _slot_label(array, index: int) -> str:
    key = array.key_name(index)
    return f"{array.name}[{key}]" if key else f"{array.name}[{index}]"


def _minus(now, before):
    """Counts of NOW minus those of BEFORE, matched by program id (by slot for
    the empty-slot rows); rows new since then keep their counts."""
    def key(row):
        return ("prog", row["prog_id"]) if row["program"] != "(empty)" else ("slot", row["slots"])

    earlier = {key(row): row for _, row in before.iterrows()}
    out = now.copy()
    for i, row in now.iterrows():
        old = earlier.get(key(row))
        if old is not None:
            for column in _COUNTS:
                out.at[i, column] = row[column] - old[column]
    return out
