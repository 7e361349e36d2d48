"""The Session's tables as DataFrames, read from its registry and changing nothing:
``ls`` (one row per module function), ``slots`` (one row per filled or named slot),
and where a program runs (``placement``). The caller holds the registry's lock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .kernel.progtypes import auto_attach_type

if TYPE_CHECKING:
    import pandas as pd

    from .module import Program

# calls/taken/missed: tail calls made into each slot (counted by the rewritten
# ARRAY.call); run_cnt/run_time_ns: the kernel's stats, which count a program
# only when it runs as an entry point (attached or test-run), never when it
# is reached by a tail call.
SLOT_COLUMNS = ["array", "index", "key", "program", "type", "prog_id", "calls", "taken", "missed", "run_cnt", "run_time_ns"]
LS_COLUMNS = ["module", "function", "type", "prog_id", "attached", "slots", "tables", "insns_processed", "states", "verify_us", "stack"]


def attached_to(p: Program) -> list[str]:
    """The targets PROGRAM is attached to (BCC's by-name attachments marked (auto))."""
    out = [str(a.target) for a in p.module.attachments if a.program is p]
    if p.module.object is not None and p.name in p.module.object.convention_attached():  # BCC's names
        t = auto_attach_type(p.name)
        event = p.name.split("__", 1)[1].replace("__", ":")
        out.append(f"{t}:{event} (auto)")
    return out


def slots_of(arrays, p: Program) -> list[str]:
    """ARRAY[KEY] of every slot of ARRAYS that holds PROGRAM."""
    return [label for array in arrays.values() for label in array.slots_of(p)]


def placement(arrays, p: Program) -> list[str]:
    """Where a program runs: its attach targets and the slots that hold it."""
    return attached_to(p) + slots_of(arrays, p)


def ls(modules, arrays) -> pd.DataFrame:
    """One row per module function (loaded or not): type, id, attachments, slots, tables, the verifier's cost."""
    import pandas as pd

    rows = []
    for m in modules.values():
        tables = ", ".join(m.tables)  # one listing per module, not per function
        for func in m.functions:
            p = m.programs.get(func)
            v = p.verifier if p else None
            rows.append(
                {
                    "module": m.name,
                    "function": func,
                    "type": p.type if p else None,
                    "prog_id": p.prog_id if p else None,
                    "attached": ", ".join(attached_to(p)) if p else "",
                    "slots": ", ".join(slots_of(arrays, p)) if p else "",
                    "tables": tables,
                    # The verifier's cost (log level 4 statistics of the load; the program's info).
                    "insns_processed": v.insns_processed if v else None,
                    "states": v.total_states if v else None,
                    "verify_us": v.time_usec if v else None,
                    "stack": "+".join(map(str, v.stack_depths)) if v and v.stack_depths else None,
                }
            )
    df = pd.DataFrame(rows, columns=LS_COLUMNS)
    for col in ("prog_id", "insns_processed", "states", "verify_us"):
        df[col] = df[col].astype("Int64")  # integers, blanks where not loaded (not NaN / 1394.0)
    return df


def slots(arrays, all_keys: bool = False, modules=()) -> pd.DataFrame:
    """One row per filled or named slot of ARRAYS (every index with ``all_keys``): the
    program, its type and id, the tail calls into the slot (calls, taken, missed) and
    the program's kernel run stats. An array some of MODULES tail-call into without
    counting (--no-count) has its counts unknown (<NA>; ``attrs["not_counted"]`` says why)."""
    import pandas as pd

    from .progarray import not_counted_note, uncounted_callers

    rows = []
    for a in arrays:
        calls, missed = a.call_counts()
        named = set(a.names.values())
        used = {i for i in range(a.size + 1) if calls[i]}  # a.size: the calls past the end, when there were any
        indices = sorted(set(range(a.size)) | (used & {a.size})) if all_keys else sorted(set(a.entries) | named | used)
        for index in indices:
            p = a.entries.get(index)
            info = p.info() if p else {}
            taken = max(calls[index] - missed[index], 0)
            if p is None:
                # Empty now: what it took, it took before it was emptied. A call counted between
                # the two reads (a busy dispatcher) and not yet missed must not show as taken.
                c0, m0 = a.baselines.get(index, (0, 0))
                taken = min(taken, max(c0 - m0, 0))
            rows.append(
                {
                    "array": a.name,
                    "index": index,
                    "key": a.key_name(index),
                    "program": p.qualname if p else None,
                    "type": p.type if p else None,
                    "prog_id": int(info["prog_id"]) if p else None,
                    "calls": taken + missed[index],
                    "taken": taken,
                    "missed": missed[index],
                    "run_cnt": int(info.get("run_cnt", 0)) if p else 0,
                    "run_time_ns": int(info.get("run_time_ns", 0)) if p else 0,
                }
            )
    names = {a.name for a in arrays}
    blind = {name: mods for name, mods in uncounted_callers(modules).items() if name in names}
    df = pd.DataFrame(rows, columns=SLOT_COLUMNS)
    df["prog_id"] = df["prog_id"].astype("Int64")  # integers, empty slots blank (not NaN / 1394.0)
    if blind:  # a count that misses calls is no count: unknown, and the note says why
        for column in ("calls", "taken", "missed"):
            df[column] = df[column].astype("Int64")
            df.loc[df["array"].isin(list(blind)), column] = pd.NA
        df.attrs["not_counted"] = not_counted_note(blind)
    return df
