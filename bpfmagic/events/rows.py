"""The rows a stream keeps: its record batches held raw (a ColumnBatch, one
numpy array per field, per batch) up to ``max_rows``, the counts since the
last clear, and what is made of them when asked for: a structured array,
DataFrames (``char[]`` decoded then), rows per value, and a Parquet file, a
snapshot or one that follows every batch that arrives (parquet.py writes it).

The consumer thread (consumer.py) adds batches; callers read under the same
lock, so figures shown together agree."""

from __future__ import annotations

import numbers
import threading
import time
from collections import deque

try:
    import numpy as np
except ImportError:  # bpfmagic itself must import without numpy (the doctor runs on a bare python3)
    np = None

from ..errors import UsageProblem
from .parquet import DEFAULT_PARQUET_QUEUE_BYTES, ParquetSink
from .records import ColumnBatch, Field, RecordType, concatenate, decode_cstrings


def check_max_rows(value) -> int:
    """VALUE as a row bound, or UsageProblem: an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise UsageProblem(f"max_rows must be an integer >= 1 (rows a stream keeps), not {value!r}")
    return int(value)


class Batches:
    """Raw record batches (ColumnBatch: a column per field), oldest first, trimmed to a
    number of rows; no lock of its own (Rows holds one)."""

    def __init__(self):
        self.chunks: deque[ColumnBatch] = deque()
        self.n = 0

    def append(self, batch: ColumnBatch, max_rows: int) -> int:
        """Add BATCH; returns how many of the oldest rows were dropped."""
        if len(batch) == 0:
            return 0
        self.chunks.append(batch)
        self.n += len(batch)
        dropped = self.trim(max_rows)
        if len(self.chunks) > 256:
            self._compact()
        return dropped

    def trim(self, max_rows: int) -> int:
        """Drop the oldest rows beyond MAX_ROWS; returns how many."""
        dropped = 0
        while self.n > max_rows:
            first = self.chunks[0]
            excess = self.n - max_rows
            if len(first) <= excess:
                self.chunks.popleft()
                self.n -= len(first)
                dropped += len(first)
            else:
                rest = first[excess:]
                # a small tail of a big batch is copied so the big one can be freed
                self.chunks[0] = rest.copy() if len(rest) * 2 < len(first) else rest
                self.n -= excess
                dropped += excess
        return dropped

    def _compact(self) -> None:
        # many small batches (one event per wakeup) make df() slow: merge the newest ones
        small = []
        while self.chunks and len(self.chunks[-1]) < 65536 and len(small) < 256:
            small.append(self.chunks.pop())
        if small:
            self.chunks.append(concatenate(small[::-1]))

    def snapshot(self) -> list[ColumnBatch]:
        return list(self.chunks)

    def tail(self, n: int) -> list[ColumnBatch]:
        """The batches (the first one cut) holding the last N rows."""
        return _tail(self.chunks, n)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.chunks)

    def clear(self) -> None:
        self.chunks.clear()
        self.n = 0


def _tail(chunks, n: int) -> list[ColumnBatch]:
    out, have = [], 0
    for chunk in reversed(chunks):
        if have >= n:
            break
        take = chunk[-(n - have) :]
        out.append(take)
        have += len(take)
    return out[::-1]


class Rows:
    """The rows one stream keeps, under one lock: its batches up to ``max_rows`` (the
    oldest dropped), ``count`` and ``dropped`` since the last clear, callers waiting for
    arrivals, the Parquet file that follows them, and what is read from them. NAME (the
    stream's) is what its errors say; DEFAULT_MAX_ROWS gives the bound when it has none
    of its own (its manager's, which may change)."""

    def __init__(self, name: str, rtype: RecordType, max_rows: int | None, default_max_rows):
        self.name = name
        self.rtype = rtype
        self._own_max_rows = None if max_rows is None else check_max_rows(max_rows)
        self._default_max_rows = default_max_rows
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified after every batch and at the end
        self._batches = Batches()
        self.count = 0
        self.dropped = 0
        self.ended = threading.Event()  # no more batches will come
        self.sink: ParquetSink | None = None  # the followed Parquet file, while it follows
        self.last_sink: ParquetSink | None = None  # the latest followed one, kept for its counts after it closed

    # -------------------------------------------------- arrivals
    def add(self, batches: list[ColumnBatch]) -> None:
        """Keep BATCHES (the consumer thread's), count them, wake wait() and hand them
        to the followed Parquet file (waiting for its writer when it is behind)."""
        with self._lock:
            for batch in batches:
                self.count += len(batch)
                self.dropped += self._batches.append(batch, self.max_rows)
            sink = self.sink  # read with the rows: a snapshot taken by to_parquet has these batches or the sink gets them
            if sink is not None:
                sink.reserve()  # counted rows reach the file even if close_parquet() comes before they do
            self._arrived.notify_all()
        if sink is not None:
            # Outside the lock: this may wait for the writer (backpressure), and df()/wait() must not.
            try:
                for batch in batches:
                    sink.write(batch, reserved=True)
            finally:
                sink.release()

    def end(self) -> bool:
        """No more batches will come: set ``ended`` and wake wait(). False when it was already."""
        with self._lock:
            if self.ended.is_set():
                return False
            self.ended.set()
            self._arrived.notify_all()
            return True

    def wait(self, count: int, timeout: float | None = None) -> bool:
        """Block until COUNT rows have arrived (since the last clear()), the rows ended or
        TIMEOUT seconds passed; True when COUNT was reached."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._arrived:
            while self.count < count and not self.ended.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._arrived.wait(left)
            return self.count >= count

    def clear(self) -> None:
        """Forget the rows; count and dropped start from zero."""
        with self._lock:
            self._batches.clear()
            self.count = 0
            self.dropped = 0

    # -------------------------------------------------- the bound
    @property
    def follows_default(self) -> bool:
        return self._own_max_rows is None

    @property
    def max_rows(self) -> int:
        return self._own_max_rows if self._own_max_rows is not None else self._default_max_rows()

    @max_rows.setter
    def max_rows(self, value: int | None) -> None:
        if value is not None:
            value = check_max_rows(value)
        with self._lock:
            self._own_max_rows = value
            self.dropped += self._batches.trim(self.max_rows)

    def __len__(self) -> int:
        return self._batches.n

    @property
    def nbytes(self) -> int:
        """Bytes the kept rows hold."""
        with self._lock:
            return self._batches.nbytes

    # -------------------------------------------------- reading
    def records(self) -> np.ndarray:
        """The rows kept as one numpy structured array (raw fields)."""
        with self._lock:
            chunks = self._batches.snapshot()
        return self.rtype.records_of(chunks)

    def frame(self):
        """DataFrame of the rows kept, oldest first."""
        with self._lock:
            chunks = self._batches.snapshot()
        return self.rtype.frame(chunks)

    def tail(self, n: int):
        """DataFrame of the last N rows (decodes only those), indexed by their place in the rows kept."""
        with self._lock:
            chunks = self._batches.tail(n)
            held = self._batches.n
        frame = self.rtype.frame(chunks)
        frame.index = frame.index + (held - len(frame))
        return frame

    def counts(self, column: str):
        """Rows per value of COLUMN, most frequent first."""
        self._count_field(column)
        with self._lock:
            chunks = self._batches.snapshot()
        return self._counts(chunks, column)

    def _count_field(self, column: str) -> Field:
        field = next((f for f in self.rtype.fields if f.name == column), None)
        if field is None:
            raise UsageProblem(f"{self.name} has no column {column!r} (columns: {', '.join(self.rtype.columns)})")
        if field.kind in ("array", "int128"):
            raise UsageProblem(f"{self.name}.{column} is an array ({field.ctype}); count by a scalar column")
        return field

    def _counts(self, chunks: list[ColumnBatch], column: str):
        import pandas as pd

        field = self._count_field(column)
        values = np.concatenate([c[column] for c in chunks]) if chunks else self.rtype.empty()[column]
        if field.kind != "str":
            counts = pd.Series(values, name=column).value_counts()
            counts.name = "count"
            return counts
        keys, counts = np.unique(values, return_counts=True)
        # bytes after the NUL differ between rows of the same string: sum after decoding
        by_value = pd.Series(counts, index=pd.Index(decode_cstrings(keys), name=column), name="count")
        return by_value.groupby(level=0, sort=False).sum().sort_values(ascending=False, kind="stable")

    def snapshot(self, rows: int = 10, by: str | None = None) -> dict:
        """count, dropped, rows (held), the last ROWS rows and, with BY, the rows per value
        of BY, all taken under one lock (see Stream.snapshot)."""
        if by is not None:
            self._count_field(by)
        with self._lock:
            chunks = self._batches.snapshot()
            count, dropped, held = self.count, self.dropped, self._batches.n
        tail = self.rtype.frame(_tail(chunks, rows))
        tail.index = tail.index + (held - len(tail))
        return {"count": count, "dropped": dropped, "rows": held, "tail": tail, "counts": self._counts(chunks, by) if by is not None else None}

    # -------------------------------------------------- Parquet
    def to_parquet(self, path: str, follow: bool, queue_bytes: int = DEFAULT_PARQUET_QUEUE_BYTES) -> str:
        """The rows kept into the Parquet file PATH; with FOLLOW, every batch added from
        now on too, until close_parquet() (see Stream.to_parquet)."""
        with self._lock:
            if follow and self.sink is not None:  # a snapshot beside a followed file is fine
                raise UsageProblem(f"{self.name} already follows into {self.sink.path}; close_parquet() first")
            chunks = self._batches.snapshot()
            sink = ParquetSink(path, self.rtype, queue_bytes)
            for chunk in chunks:
                sink.write(chunk)
            if follow:
                self.sink = self.last_sink = sink
        if not follow:
            sink.close()
        return path

    def close_parquet(self) -> None:
        """Stop following: the followed file gets what is queued and is closed (its
        writer's error, if any, is raised)."""
        with self._lock:
            sink, self.sink = self.sink, None
        if sink is not None:
            sink.close()
