"""A map's records as DataFrame columns, and a DataFrame's rows as records:
the key and value columns ``df()`` shows (per-CPU values one column per CPU,
or summed) and what ``from_df`` takes back."""

from __future__ import annotations

import numpy as np

from ..errors import UsageProblem
from .layout import Layout, decode_field, set_column


def per_cpu_columns(value: Layout, values: np.ndarray, ncpu: int, sum: bool) -> dict:
    """Columns of VALUES, records of shape (n, ncpu): ``F.cpuN`` for each CPU, or with SUM
    the numeric fields summed over CPUs (arrays element-wise; strings and bytes CPU 0's)."""
    columns = {}
    for f in value.fields:
        name = value.column(f)
        per_cpu = values[name]
        if sum and f.numeric:
            columns[name] = decode_field(f, per_cpu).sum(axis=1)
        elif sum and f.kind in ("int", "uint", "float") and not f.bits:  # arrays: element-wise
            columns[name] = decode_field(f, per_cpu.sum(axis=1))
        elif sum:  # strings, bytes: CPU 0's
            columns[name] = decode_field(f, per_cpu[:, 0])
        else:
            for cpu in range(ncpu):
                columns[f"{name}.cpu{cpu}"] = decode_field(f, per_cpu[:, cpu])
    return columns


def order(frame, sort: str | None, top: int | None, name: str, default: str | None = None):
    """FRAME sorted by SORT (largest first), cut to TOP rows (sorted by DEFAULT when only TOP is given)."""
    if sort is not None and sort not in frame.columns:
        raise UsageProblem(f"{name} has no column {sort!r} (columns: {', '.join(map(str, frame.columns))})")
    by = sort or (default if top is not None else None)
    if by is not None:
        frame = frame.sort_values(by, ascending=False, kind="stable", ignore_index=True)
    if top is not None:
        if top < 0:
            raise UsageProblem(f"--top must be 0 or more (got {top})")
        frame = frame.head(top)
    return frame


def first_numeric(frame, key_columns: list[str]) -> str | None:
    """The first value column of numbers (what ``top`` sorts by when no column is named)."""
    keys = set(key_columns)
    for col in frame.columns:
        if col not in keys and frame[col].dtype.kind in "iuf":
            return col
    return None


def check_frame(name: str, frame, key: Layout, value: Layout) -> None:
    """Refuse what is not a DataFrame with columns, naming the columns df() shows."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        columns = ", ".join(key.columns + value.columns)
        raise UsageProblem(
            f"{name}.from_df takes a pandas DataFrame with the columns df() shows ({columns}), not a {type(frame).__name__}: "
            f"pd.DataFrame(rows, columns=[...]) makes one; single entries are written with {name}[key] = value"
        )
    if frame.columns.empty:
        raise UsageProblem(
            f"{name}.from_df: the frame has no columns (and {len(frame)} rows); it needs {', '.join(key.columns + value.columns)}, as df() shows them"
        )


def frame_records(name: str, frame, key: Layout, value: Layout, key_size: int, ncpu: int, percpu: bool):
    """FRAME's rows as (raw keys: uint8 rows of KEY_SIZE bytes, values: NCPU records a row),
    or None when it has no rows. Every column is checked before anything is written."""
    n = len(frame)
    missing = [c for c in key.columns if c not in frame.columns]
    if missing:
        raise UsageProblem(f"{name}.from_df: no column {missing[0]!r} for the key (key columns: {', '.join(key.columns)})")
    sources = {}  # (field's position, cpu) -> the frame's column
    for i, f in enumerate(value.fields):
        column_name = value.column(f)
        for cpu in range(ncpu):
            column = f"{column_name}.cpu{cpu}" if percpu and f"{column_name}.cpu{cpu}" in frame.columns else column_name
            if column not in frame.columns:
                raise UsageProblem(f"{name}.from_df: no column {column!r} for the value (value columns: {', '.join(value.columns)})")
            sources[i, cpu] = column
    if n == 0:
        return None  # the columns are right and there is nothing to write
    keys = key.pack_columns({c: frame[c] for c in key.columns}, n, f"{name}.from_df")
    values = np.zeros((n, ncpu), value.dtype)
    for i, f in enumerate(value.fields):
        for cpu in range(ncpu):
            set_column(values[:, cpu], f, value.column(f), frame[sources[i, cpu]], f"{name}.from_df")
    raw_keys = np.ascontiguousarray(np.ascontiguousarray(keys).view(np.uint8).reshape(n, -1)[:, :key_size])
    return raw_keys, values.reshape(-1)
