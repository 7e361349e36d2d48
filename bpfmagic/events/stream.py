"""Streams: the events of one BPF_RINGBUF_OUTPUT / BPF_PERF_OUTPUT table
(or a --core BPF_MAP_TYPE_RINGBUF map) consumed by a background thread from
load to unload. A Stream is what the user holds: it joins the kernel side
(consumer.py: the reading thread, what the kernel lost) and the rows it
keeps (rows.py: raw batches up to ``max_rows``, turned into DataFrame
columns only when asked for, and the Parquet file that follows them).

Record types are records.py, readers readers.py, the Parquet writer
parquet.py, the session's set of streams manager.py."""

from __future__ import annotations

import contextlib
import time
import weakref

try:
    import numpy as np
except ImportError:  # bpfmagic itself must import without numpy (the doctor runs on a bare python3)
    np = None

from ..errors import UsageProblem
from . import warn_from_thread as _warn
from .consumer import Consumer
from .parquet import DEFAULT_PARQUET_QUEUE_BYTES, ParquetSink
from .readers import DEFAULT_PERF_PAGES
from .records import RecordType
from .rows import Rows


class Stream:
    """The events of one table, consumed in the background from load to unload.

    ``df()``: DataFrame of the rows kept so far (columns = the record's fields);
    ``count``: records received; ``dropped``: oldest rows discarded to stay
    within ``max_rows``; ``lost``: records the program could not output.
    ``stop()`` ends consuming (rows stay); ``clear()`` starts counting afresh.
    """

    def __init__(self, manager, module, table: str, rtype: RecordType, max_rows: int | None = None, perf_pages: int = DEFAULT_PERF_PAGES):
        self.manager = manager
        self.module_name = module.name
        self.table = table
        self.name = f"{module.name}.{table}"
        self.rtype = rtype
        self._module = module
        self._owner = weakref.ref(module)  # still known after stop() drops _module
        self._rows = Rows(self.name, rtype, max_rows, lambda: manager.max_rows)
        self.stopped = self._rows.ended
        self.error: BaseException | None = None
        self.started_at = time.time()
        self._listeners: list = []  # callables run (with the stream) after it stopped
        self.live_view = None  # its live view (widgets.Watch): one at a time
        self._closed = False
        self._consumer = Consumer(module.object, table, rtype, self.name, self._rows.add, self._failed, perf_pages)
        self.kind = self._consumer.kind

    # -------------------------------------------------- consuming
    def _failed(self, e: BaseException) -> None:
        """The consumer thread's reader failed (on that thread)."""
        self.error = e
        _warn(f"stream {self.name} stopped: its reader failed with {e!r}; the rows so far stay readable (stream.error has the exception)")
        self._finish()

    @property
    def running(self) -> bool:
        return self._consumer.alive and not self.stopped.is_set()

    def stop(self) -> None:
        """Stop consuming: the thread drains what is in the buffer, exits and is
        joined; the mmaps / perf readers are released. Rows stay readable."""
        if self._closed:
            return
        self._closed = True
        self._consumer.stop()
        self._module = None
        try:
            self._rows.close_parquet()
        except Exception as e:  # the stream still stops; the error is kept
            self.error = e
        self._finish()

    def _finish(self) -> None:
        """Mark the stream stopped, wake wait() and run the stop listeners (once)."""
        if not self._rows.end():
            return
        for listener in list(self._listeners):
            with contextlib.suppress(Exception):
                listener(self)

    def wait(self, count: int, timeout: float | None = None) -> bool:
        """Block until COUNT records have arrived (since the last clear()), the
        stream stopped or TIMEOUT seconds passed; True when COUNT was reached.
        Cheaper than polling ``count``: the consumer thread wakes the caller."""
        return self._rows.wait(count, timeout)

    def clear(self) -> None:
        """Forget the rows and start counting (count, dropped, lost) from zero."""
        self._rows.clear()
        self._consumer.reset_lost()
        self.started_at = time.time()

    # -------------------------------------------------- counters
    @property
    def count(self) -> int:
        """Records received since the last clear()."""
        return self._rows.count

    @property
    def dropped(self) -> int:
        """The oldest rows discarded to stay within ``max_rows``, since the last clear()."""
        return self._rows.dropped

    @property
    def loss_counted(self) -> bool:
        """Whether losses are counted: by the rewritten output calls, or (a perf buffer) by the
        kernel's own lost records. A ring buffer whose output calls could not be rewritten
        (its table declared in an #included file, say) loses records without a trace: its
        ``lost`` is None, never 0."""
        return self._consumer.loss_counted

    @property
    def lost(self) -> int | None:
        """Records the program could not write (ring full; perf buffer full or
        not open yet), counted in the kernel by the rewritten output calls;
        None where they cannot be counted (``loss_counted``)."""
        return self._consumer.lost

    @property
    def kernel_lost(self) -> int:
        """Perf buffers only: the records the kernel reported as lost (LOST
        records); included in ``lost`` when the output calls are counted."""
        return self._consumer.stat("kernel_lost")

    @property
    def variable(self) -> int:
        """Records whose length differed from the struct (zero-padded or cut)."""
        return self._consumer.stat("variable")

    @property
    def discarded(self) -> int:
        """Ring buffer records the program reserved and then discarded."""
        return self._consumer.stat("discarded")

    @property
    def owner(self):
        """The module whose event table this is (None once that module is gone)."""
        return self._owner()

    @property
    def follows_default(self) -> bool:
        """No max_rows of its own: it keeps as many rows as its manager's default."""
        return self._rows.follows_default

    @property
    def max_rows(self) -> int:
        return self._rows.max_rows

    @max_rows.setter
    def max_rows(self, value: int | None) -> None:
        """Rows kept (the oldest are dropped); None: the manager's default."""
        self._rows.max_rows = value

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def nbytes(self) -> int:
        """Bytes of memory the rows kept hold (raw records: at most about
        ``max_rows`` times the record's size)."""
        return self._rows.nbytes

    @property
    def columns(self) -> list[str]:
        return self.rtype.columns

    # -------------------------------------------------- reading
    def records(self) -> np.ndarray:
        """The rows kept so far as one numpy structured array (raw fields)."""
        return self._rows.records()

    def df(self):
        """DataFrame of the rows kept so far, oldest first."""
        return self._rows.frame()

    def tail(self, n: int = 10):
        """DataFrame of the last N rows (decodes only those)."""
        return self._rows.tail(n)

    def counts(self, column: str):
        """Rows per value of COLUMN, most frequent first (str values decoded
        once per distinct value, not per row)."""
        return self._rows.counts(column)

    def snapshot(self, rows: int = 10, by: str | None = None) -> dict:
        """count, dropped, rows (held), the last ROWS rows (``tail``) and, with
        BY, the rows per value of BY (``counts``), all taken under one lock:
        figures shown together agree (sum of counts == rows; count == rows +
        dropped since the last clear)."""
        return self._rows.snapshot(rows, by)

    # -------------------------------------------------- Parquet
    def to_parquet(self, path: str, follow: bool = False, queue_bytes: int = DEFAULT_PARQUET_QUEUE_BYTES) -> str:
        """Write the rows kept so far to a Parquet file. With ``follow=True``
        the file stays open and every batch that arrives afterwards is
        appended too (beyond ``max_rows``: for runs too big for memory) until
        the stream stops or :meth:`close_parquet` is called.

        Memory stays bounded while following: at most ``queue_bytes`` of
        records (default 64 MiB) wait for the writer thread. When the writer
        falls that far behind, the stream's reader waits for it: the kernel's
        ring fills meanwhile and what it refuses is counted in ``lost``, so
        every record the stream delivers (``count``) reaches the file.
        ``parquet_written`` counts the rows in the file; ``parquet_dropped``
        the rows that still missed it (the writer failed, or they arrived
        while the file was being closed; warned of). Snapshot rows + count
        since the call == parquet_written + parquet_dropped once the file is
        closed."""
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageProblem("to_parquet needs pyarrow: pip install pyarrow") from None
        if follow and not self.running:
            raise UsageProblem(f"{self.name} is stopped: nothing more will arrive to follow")
        return self._rows.to_parquet(path, follow, queue_bytes)

    @property
    def parquet_sink(self) -> ParquetSink | None:
        """The writer of the file ``to_parquet(..., follow=True)`` opened, while it
        follows (its queue and how often the reader waited for it); None otherwise."""
        return self._rows.sink

    @property
    def parquet_dropped(self) -> int:
        """Records left out of the followed Parquet file (the latest one):
        its writer failed, or they arrived while it was being closed."""
        sink = self._rows.last_sink
        return sink.dropped if sink is not None else 0

    @property
    def parquet_written(self) -> int:
        """Rows written into the followed Parquet file (the latest one) so far."""
        sink = self._rows.last_sink
        return sink.written if sink is not None else 0

    @property
    def parquet_queued(self) -> int:
        """Rows waiting for the followed Parquet file's writer now."""
        sink = self._rows.sink
        return sink.queued_rows if sink is not None else 0

    def close_parquet(self) -> None:
        """Stop appending to the file that ``to_parquet(..., follow=True)`` opened."""
        self._rows.close_parquet()

    # -------------------------------------------------- listeners and summaries
    def on_stop(self, listener) -> None:
        """Run LISTENER(stream) once the stream has stopped (now if it has)."""
        self._listeners.append(listener)
        if self.stopped.is_set():
            listener(self)

    def remove_on_stop(self, listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def summary(self) -> dict:
        return {
            "stream": self.name,
            "kind": self.kind,
            "running": self.running,
            "count": self.count,
            "rows": len(self),
            "dropped": self.dropped,
            "lost": self.lost if self.loss_counted else "not counted",
            "max_rows": self.max_rows,
            "columns": ", ".join(self.columns),
            "error": repr(self.error) if self.error else "",
        }

    def __repr__(self) -> str:
        state = "running" if self.running else "failed" if self.error else "stopped"
        err = f", error: {self.error!r}" if self.error else ""
        sink = self._rows.last_sink
        parquet = f", Parquet {sink.written} written, {sink.dropped} left out" if sink is not None else ""
        return (
            f"<bpfmagic Stream {self.name} ({self.kind}, {state}): {self.count} events, {len(self)} rows, "
            f"{self.dropped} dropped, {self.lost if self.loss_counted else 'losses not counted'} lost{parquet}{err}>"
        )
