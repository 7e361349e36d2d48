"""A followed Parquet file: record batches of a stream appended by a writer
thread of its own, with a bounded queue (a slow disk never stalls the
stream's consumer)."""

from __future__ import annotations

import os
import threading
from collections import deque

try:
    import numpy as np
except ImportError:  # bpfmagic itself must import without numpy (the doctor runs on a bare python3)
    np = None

from ..errors import UsageProblem
from .records import RecordType

DEFAULT_PARQUET_QUEUE_BYTES = 64 << 20  # records waiting for a followed Parquet file, at most


class ParquetSink:
    """Record batches appended to one Parquet file by a writer thread of its
    own (encoding and disk writes must not stall the consumer and let the
    ring overflow), in row groups of at least ``group_rows``.

    Memory is bounded: at most ``max_queued_rows`` rows wait to be written
    (queued or in the row group being built). A batch that arrives when the
    queue is full is not waited for: the rows that do not fit are left out
    of the file and counted in ``dropped``, so a slow disk never stalls the
    consumer (the stream's own rows, ``count`` and the kernel's ``lost`` stay
    exact). ``written`` counts the rows in the file."""

    group_rows = 65536

    def __init__(self, path: str, rtype: RecordType, max_queued_bytes: int = DEFAULT_PARQUET_QUEUE_BYTES):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = path
        self.rtype = rtype
        if not isinstance(max_queued_bytes, int) or max_queued_bytes < 1:
            raise UsageProblem(f"queue_bytes must be a positive integer (bytes), not {max_queued_bytes!r}")
        self.max_queued_rows = max(1, max_queued_bytes // max(rtype.itemsize, 1))
        # A row group is written once this many rows wait: below the bound, or the queue could never drain.
        self._flush_rows = max(1, min(self.group_rows, self.max_queued_rows // 2))
        # From one zeroed record, not from an empty frame: an empty str column has no
        # values to type it (Arrow says null) and every real batch would then fail to cast.
        self._schema = pa.Schema.from_pandas(rtype.frame(rtype.empty(1)), preserve_index=False)
        self._writer = pq.ParquetWriter(path, self._schema)
        self._room = threading.Condition()
        self._queue: deque = deque()
        self._closing = False
        self.queued_rows = 0  # rows accepted and not yet in the file
        self.peak_queued_rows = 0
        self.written = 0
        self.dropped = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"bpfmagic-parquet-{os.path.basename(path)}", daemon=True)
        self._thread.start()

    def write(self, batch: np.ndarray, wait: bool = False) -> int:
        """Queue BATCH; returns the rows accepted. With ``wait`` (the snapshot
        of rows already kept, which the caller asked to write) wait for room
        instead of dropping."""
        with self._room:
            if wait:
                accepted = 0
                while accepted < len(batch) and not self._closing:
                    room = self.max_queued_rows - self.queued_rows
                    if room > 0:
                        part = batch[accepted : accepted + room]
                        self._put(part.copy() if len(part) < len(batch) else part)
                        accepted += len(part)
                    else:
                        self._room.wait()
                return accepted
            room = max(self.max_queued_rows - self.queued_rows, 0)
            if room < len(batch):
                self.dropped += len(batch) - room
                batch = batch[:room].copy()  # a copy: a view would keep the whole batch in memory
            if len(batch):
                self._put(batch)
            return len(batch)

    def _put(self, batch: np.ndarray) -> None:
        self._queue.append(batch)
        self.queued_rows += len(batch)
        self.peak_queued_rows = max(self.peak_queued_rows, self.queued_rows)
        self._room.notify_all()

    def _run(self) -> None:
        pending, n = [], 0
        while True:
            with self._room:
                while not self._queue and not self._closing:
                    self._room.wait()
                # One row group at a time: encoding copies it (pandas, Arrow), so a
                # backlog is never converted whole.
                while self._queue and n < self._flush_rows:
                    batch = self._queue.popleft()
                    pending.append(batch)
                    n += len(batch)
                closing = self._closing
            if pending and (closing or n >= self._flush_rows):
                try:
                    self._flush(pending)
                    failed = 0
                except BaseException as e:  # reported by close(); the rows count as dropped
                    self.error, failed = e, n
                with self._room:
                    self.written += n - failed
                    self.dropped += failed
                    self.queued_rows -= n
                    self._room.notify_all()
                pending, n = [], 0
            if closing and not pending:
                with self._room:
                    if not self._queue:
                        return

    def _flush(self, batches: list[np.ndarray]) -> None:
        import pyarrow as pa

        frame = self.rtype.frame(batches)
        self._writer.write_table(pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False))

    def close(self) -> None:
        """Write what is queued and close the file."""
        with self._room:
            self._closing = True
            self._room.notify_all()
        self._thread.join()
        self._writer.close()
        if self.error is not None:
            raise self.error
