"""Streams: the events of one BPF_RINGBUF_OUTPUT / BPF_PERF_OUTPUT table
(or a --core BPF_MAP_TYPE_RINGBUF map) consumed by a background thread from
load to unload. Rows are kept raw (a ColumnBatch, one numpy array per field, per batch) up
to ``max_rows``; they are turned into DataFrame columns only when asked for.

Loss: the front end's instrumentation (bpfmagic.c.instrument) makes every
``TABLE.ringbuf_output`` / ``ringbuf_reserve`` / ``perf_submit`` call (and
``--core``'s ``bpf_ringbuf_*`` calls) bump a per-CPU counter when it fails
(ring full, perf buffer full or not open yet), so ``lost`` is exact for both
kinds of table; the backend says where the counter is (``loss_counter``).

Record types are records.py, readers readers.py, the Parquet sink
parquet.py, the session's set of streams manager.py."""

from __future__ import annotations

import contextlib
import numbers
import os
import select
import threading
import time
import weakref
from collections import deque

try:
    import numpy as np
except ImportError:  # bpfmagic itself must import without numpy (the doctor runs on a bare python3)
    np = None

from ..errors import UsageProblem
from ..kernel import libbpf
from ..kernel.maptypes import MapType
from . import warn_from_thread as _warn
from .parquet import FollowedParquet
from .readers import DEFAULT_PERF_PAGES, PerfReader, RingReader
from .records import ColumnBatch, Field, RecordType, concatenate, decode_cstrings


def check_max_rows(value) -> int:
    """VALUE as a row bound, or UsageProblem: an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise UsageProblem(f"max_rows must be an integer >= 1 (rows a stream keeps), not {value!r}")
    return int(value)


# ------------------------------------------------------------ rows


class _Rows:
    """Raw record batches (ColumnBatch: a column per field), oldest first, at most max_rows in all."""

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
        out, have = [], 0
        for chunk in reversed(self.chunks):
            if have >= n:
                break
            take = chunk[-(n - have) :]
            out.append(take)
            have += len(take)
        return out[::-1]

    def clear(self) -> None:
        self.chunks.clear()
        self.n = 0


# ------------------------------------------------------------ the stream


class Stream(FollowedParquet):
    """The events of one table, consumed in the background from load to unload.

    ``df()``: DataFrame of the rows kept so far (columns = the record's fields);
    ``count``: records received; ``dropped``: oldest rows discarded to stay
    within ``max_rows``; ``lost``: records the program could not output.
    ``stop()`` ends consuming (rows stay); ``clear()`` starts counting afresh.
    """

    poll_timeout = 0.5  # seconds; a safety net only: the eventfd wakes the thread on stop

    def __init__(self, manager, module, table: str, rtype: RecordType, max_rows: int | None = None, perf_pages: int = DEFAULT_PERF_PAGES):
        self.manager = manager
        self.module_name = module.name
        self.table = table
        self.name = f"{module.name}.{table}"
        self.rtype = rtype
        self._module = module
        self._owner = weakref.ref(module)  # still known after stop() drops _module
        self._max_rows = None if max_rows is None else check_max_rows(max_rows)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified after every batch and on stop
        self._rows = _Rows()
        self.count = 0
        self.dropped = 0
        self.error: BaseException | None = None
        self.started_at = time.time()
        self.stopped = threading.Event()
        self._stopping = False
        self._finished = False
        self._size_warned = False
        self._listeners: list = []  # callables run (with the stream) after it stopped
        self.live_view = None  # its live view (widgets.Watch): one at a time
        self._parquet = None
        self._parquet_last = None  # the latest followed sink, kept for its counts after it closed
        self._lost_base = 0
        self._lost_final: int | None = None
        self._lost_slot = None
        self._lost_fd = None
        self._lost_size = 0
        self._closed = False
        self._reader_stats = {"kernel_lost": 0, "variable": 0, "discarded": 0}
        obj = module.object
        counter = obj.loss_counter(table)  # (fd, slot, slots) of the front end's per-CPU loss counter
        if counter is not None:
            self._lost_fd, self._lost_slot, self._lost_size = counter
        map_fd = obj.map_handle(table).fd
        if int(libbpf.fdinfo(map_fd)["map_type"]) == MapType.RINGBUF:
            self.kind = "ringbuf"
            self._reader = RingReader(map_fd, rtype)
            self._fds = [map_fd]
        else:
            self.kind = "perf"
            self._reader = PerfReader(obj, table, rtype, perf_pages)
            self._fds = self._reader.fds()
        self._loss_counted = self._lost_fd is not None or self.kind == "perf"
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name=f"bpfmagic-stream-{self.name}", daemon=True)
        self._thread.start()

    # -------------------------------------------------- consuming
    def _run(self) -> None:
        ep = select.epoll()
        try:
            ep.register(self._wake, select.EPOLLIN)
            for fd in self._fds:
                ep.register(fd, select.EPOLLIN)
            while not self._stopping:
                ep.poll(self.poll_timeout)
                drained = self._drain()
                pause = self._reader.pause(drained) if drained else 0.0
                if pause > 0:
                    time.sleep(pause)
            self._drain()  # what arrived up to the stop
        except BaseException as e:  # a stream must not die silently, nor leave wait() hanging
            self.error = e
            _warn(f"stream {self.name} stopped: its reader failed with {e!r}; the rows so far stay readable (stream.error has the exception)")
            self._finish()
        finally:
            ep.close()

    def _drain(self) -> int:
        batches = self._reader.read()
        if self._reader.variable and not self._size_warned:
            self._size_warned = True
            _warn(
                f"{self.name}: records of {self._reader.variable_length} bytes arrived where its struct has "
                f"{self.rtype.itemsize} ({self.rtype}); they are zero-padded or cut. If the struct has "
                f"bit-fields or packed/aligned fields, its columns are wrong"
            )
        if not batches:
            return 0
        with self._lock:
            for batch in batches:
                self.count += len(batch)
                self.dropped += self._rows.append(batch, self.max_rows)
            sink = self._parquet  # read with the rows: a snapshot taken by to_parquet has these batches or the sink gets them
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
        return sum(len(b) for b in batches)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self.stopped.is_set()

    def stop(self) -> None:
        """Stop consuming: the thread drains what is in the buffer, exits and is
        joined; the mmaps / perf readers are released. Rows stay readable."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        with contextlib.suppress(OSError):
            os.eventfd_write(self._wake, 1)
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._lost_final = self._read_lost() if self._lost_fd is not None else None
        if self._reader is not None:
            self._reader_stats = self._live_reader_stats()
            self._reader.close()
            self._reader = None
        with contextlib.suppress(OSError):
            os.close(self._wake)
        self._lost_fd = None
        self._module = None
        with self._lock:
            sink, self._parquet = self._parquet, None
        if sink is not None:
            try:
                sink.close()
            except Exception as e:  # the stream still stops; the error is kept
                self.error = e
        self._finish()

    def _finish(self) -> None:
        """Mark the stream stopped, wake wait() and run the stop listeners (once)."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self.stopped.set()
            self._arrived.notify_all()
        for listener in list(self._listeners):
            with contextlib.suppress(Exception):
                listener(self)

    def wait(self, count: int, timeout: float | None = None) -> bool:
        """Block until COUNT records have arrived (since the last clear()), the
        stream stopped or TIMEOUT seconds passed; True when COUNT was reached.
        Cheaper than polling ``count``: the consumer thread wakes the caller."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._arrived:
            while self.count < count and not self.stopped.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._arrived.wait(left)
            return self.count >= count

    def clear(self) -> None:
        """Forget the rows and start counting (count, dropped, lost) from zero."""
        with self._lock:
            self._rows.clear()
            self.count = 0
            self.dropped = 0
            self._lost_base = self._read_lost_raw() if self._lost_final is None else self._lost_final
            self.started_at = time.time()

    # -------------------------------------------------- counters
    def _read_lost_raw(self) -> int:
        if self._lost_fd is None:
            return 0
        return libbpf.percpu_u64_sums(self._lost_fd, self._lost_size)[self._lost_slot]

    def _read_lost(self) -> int:
        return self._read_lost_raw() - self._lost_base

    @property
    def loss_counted(self) -> bool:
        """Whether losses are counted: by the rewritten output calls, or (a perf buffer) by the
        kernel's own lost records. A ring buffer whose output calls could not be rewritten
        (its table declared in an #included file, say) loses records without a trace: its
        ``lost`` is None, never 0."""
        return self._loss_counted

    @property
    def lost(self) -> int | None:
        """Records the program could not write (ring full; perf buffer full or
        not open yet), counted in the kernel by the rewritten output calls;
        None where they cannot be counted (``loss_counted``)."""
        if not self._loss_counted:
            return None
        if self._lost_final is not None:
            return self._lost_final
        if self._lost_fd is None:
            return self.kernel_lost
        return self._read_lost()

    def _live_reader_stats(self) -> dict:
        r = self._reader
        return {"kernel_lost": getattr(r, "kernel_lost", 0), "variable": r.variable, "discarded": r.discarded}

    def _stat(self, key: str) -> int:
        reader = self._reader
        return self._reader_stats[key] if reader is None else self._live_reader_stats()[key]

    @property
    def kernel_lost(self) -> int:
        """Perf buffers only: the records the kernel reported as lost (LOST
        records); included in ``lost`` when the output calls are counted."""
        return self._stat("kernel_lost")

    @property
    def variable(self) -> int:
        """Records whose length differed from the struct (zero-padded or cut)."""
        return self._stat("variable")

    @property
    def discarded(self) -> int:
        """Ring buffer records the program reserved and then discarded."""
        return self._stat("discarded")

    @property
    def owner(self):
        """The module whose event table this is (None once that module is gone)."""
        return self._owner()

    @property
    def follows_default(self) -> bool:
        """No max_rows of its own: it keeps as many rows as its manager's default."""
        return self._max_rows is None

    @property
    def max_rows(self) -> int:
        return self._max_rows if self._max_rows is not None else self.manager.max_rows

    @max_rows.setter
    def max_rows(self, value: int | None) -> None:
        """Rows kept (the oldest are dropped); None: the manager's default."""
        if value is not None:
            value = check_max_rows(value)
        with self._lock:
            self._max_rows = value
            self.dropped += self._rows.trim(self.max_rows)

    def __len__(self) -> int:
        return self._rows.n

    @property
    def columns(self) -> list[str]:
        return self.rtype.columns

    # -------------------------------------------------- reading
    def records(self) -> np.ndarray:
        """The rows kept so far as one numpy structured array (raw fields)."""
        with self._lock:
            chunks = self._rows.snapshot()
        return self.rtype.records_of(chunks)

    def df(self):
        """DataFrame of the rows kept so far, oldest first."""
        with self._lock:
            chunks = self._rows.snapshot()
        return self.rtype.frame(chunks)

    def tail(self, n: int = 10):
        """DataFrame of the last N rows (decodes only those)."""
        with self._lock:
            chunks = self._rows.tail(n)
            held = self._rows.n
        frame = self.rtype.frame(chunks)
        frame.index = frame.index + (held - len(frame))
        return frame

    def counts(self, column: str):
        """Rows per value of COLUMN, most frequent first (str values decoded
        once per distinct value, not per row)."""
        self._count_field(column)
        with self._lock:
            chunks = self._rows.snapshot()
        return self._counts(chunks, column)

    def _count_field(self, column: str) -> Field:
        field = next((f for f in self.rtype.fields if f.name == column), None)
        if field is None:
            raise UsageProblem(f"{self.name} has no column {column!r} (columns: {', '.join(self.columns)})")
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
        """count, dropped, rows (held), the last ROWS rows (``tail``) and, with
        BY, the rows per value of BY (``counts``), all taken under one lock:
        figures shown together agree (sum of counts == rows; count == rows +
        dropped since the last clear)."""
        if by is not None:
            self._count_field(by)
        with self._lock:
            chunks = self._rows.snapshot()
            count, dropped, held = self.count, self.dropped, self._rows.n
        tail_chunks, have = [], 0
        for chunk in reversed(chunks):
            if have >= rows:
                break
            take = chunk[-(rows - have) :]
            tail_chunks.append(take)
            have += len(take)
        tail = self.rtype.frame(tail_chunks[::-1])
        tail.index = tail.index + (held - len(tail))
        return {"count": count, "dropped": dropped, "rows": held, "tail": tail, "counts": self._counts(chunks, by) if by is not None else None}

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
        sink = self._parquet_last
        parquet = f", Parquet {sink.written} written, {sink.dropped} left out" if sink is not None else ""
        return (
            f"<bpfmagic Stream {self.name} ({self.kind}, {state}): {self.count} events, {len(self)} rows, "
            f"{self.dropped} dropped, {self.lost if self.loss_counted else 'losses not counted'} lost{parquet}{err}>"
        )
