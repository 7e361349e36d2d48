"""Log2 histograms (BCC's BPF_HISTOGRAM, bpf_log2l and .increment) read from a
map view: a DataFrame of buckets as print_log2_hist prints them, and its bar chart."""

from __future__ import annotations

import numpy as np

from ..errors import UsageProblem


def log2_hist(view):
    """DataFrame of bucket, low, high, count, every bucket from the lowest to the highest
    non-empty one. A struct key with a ``slot`` field gives one histogram per value of the
    other key fields (sections), over the same bucket range."""
    import pandas as pd

    frame = view.df(sum=True)
    if not view.value.scalar or view.value.fields[0].kind not in ("int", "uint"):
        raise UsageProblem(f"{view.name}: a histogram needs integer counts as values")
    slot = "slot" if "slot" in frame.columns else (view.key.columns[0] if view.key.scalar else None)
    if slot is None:
        raise UsageProblem(f"{view.name}: a histogram needs an integer key or a key field named slot")
    sections = [c for c in view.key.columns if c != slot]
    frame = frame.rename(columns={slot: "bucket", "value": "count"})
    frame = frame.groupby(sections + ["bucket"], as_index=False)["count"].sum()
    nonzero = frame[frame["count"] > 0]
    lo_b, hi_b = (int(nonzero["bucket"].min()), int(nonzero["bucket"].max())) if len(nonzero) else (0, -1)
    # every bucket of the range in every section, empty ones as 0 (a hash holds only the hit ones)
    buckets = pd.DataFrame({"bucket": np.arange(lo_b, hi_b + 1, dtype=frame["bucket"].dtype)})
    grid = nonzero[sections].drop_duplicates().merge(buckets, how="cross") if sections else buckets
    frame = grid.merge(frame, on=sections + ["bucket"], how="left")
    frame["count"] = frame["count"].fillna(0).astype(np.uint64)
    bucket = frame["bucket"].to_numpy().astype(np.int64)
    # bucket i holds the values v with bpf_log2l(v) == i: 2^(i-1) .. 2^i - 1, except that
    # bpf_log2l(0) is 1 too, so bucket 1 is 0..1 (print_log2_hist's "0 -> 1")
    one = np.uint64(1)
    low = np.where(bucket <= 1, 0, one << np.maximum(bucket - 1, 0).astype(np.uint64)).astype(np.uint64)
    high = np.where(bucket == 0, 0, (one << bucket.astype(np.uint64)) - one).astype(np.uint64)
    out = pd.DataFrame({**{c: frame[c].to_numpy() for c in sections}, "bucket": bucket, "low": low, "high": high, "count": frame["count"].to_numpy()})
    out = out.sort_values(sections + ["bucket"], ignore_index=True)
    out.attrs["map"] = view.name
    return out


def plot_log2_hist(title: str, hist, ax=None):
    """HIST (what log2_hist gives) as a matplotlib bar chart, one series per section; returns the Figure."""
    from matplotlib.figure import (
        Figure,  # no pyplot: no GUI backend, no global figure state
    )

    if ax is None:
        fig = Figure(figsize=(8, 3.5), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    labels = [f"{lo}-{hi}" for lo, hi in zip(hist["low"], hist["high"])]
    sections = [c for c in hist.columns if c not in ("bucket", "low", "high", "count")]
    if sections:
        for name, part in hist.groupby(sections):
            ax.bar([f"{lo}-{hi}" for lo, hi in zip(part["low"], part["high"])], part["count"], alpha=0.6, label=str(name))
        ax.legend()
    else:
        ax.bar(labels, hist["count"])
    ax.set_xlabel("value range (log2 buckets)")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=60)
    return fig
