"""The %bpf watch view: its widgets' values follow a real stream, and it
stops with the stream."""

from __future__ import annotations

import re


def test_only_u64_columns_named_as_timestamps_are_shown_as_time():
    import pandas as pd

    from bpfmagic.widgets import as_wall_clock, time_columns

    frame = pd.DataFrame(
        {
            "ts": pd.array([1_000_000_000], dtype="uint64"),
            "timestamp": pd.array([2_000_000_000], dtype="uint64"),
            "time_ns": pd.array([3], dtype="uint32"),  # a u32 cannot hold ns since boot
            "ts_count": pd.array([4], dtype="uint64"),
        }
    )
    assert time_columns(frame) == ["ts", "timestamp"]
    shown = as_wall_clock(frame)
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{6}", shown["ts"][0]) and shown["time_ns"][0] == 3 and shown["ts_count"][0] == 4
    assert frame["ts"][0] == 1_000_000_000  # the caller's frame is left as it was
