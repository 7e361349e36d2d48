"""A followed Parquet file: record batches of a stream appended by a writer
thread of its own, with a bounded queue. When the writer falls that far
behind, the stream's reader waits for it (backpressure): the kernel's ring
then fills and the records it refuses are counted in the stream's ``lost``,
so the file never silently misses a record the stream delivered."""

from __future__ import annotations

import os
import threading
from collections import deque

try:
    import numpy as np
except ImportError:  # bpfmagic itself must import without numpy (the doctor runs on a bare python3)
    np = None

from ..errors import UsageProblem
from . import warn_from_thread as _warn
from .records import ColumnBatch, RecordType

DEFAULT_PARQUET_QUEUE_BYTES = 64 << 20  # records waiting for a followed Parquet file, at most


def column_options(rtype: RecordType) -> dict:
    """ParquetWriter options per column. Integer columns are delta-encoded
    without a dictionary: event columns are mostly distinct, rising values
    (sequence numbers, timestamps), where dictionary encoding hashed every
    value (over half the writer's time under a flood, by profile) only to
    fall back to plain pages once its dictionary outgrew a page; deltas
    also make the file several times smaller. str columns (comm, names:
    few distinct values) keep their dictionary; the rest is plain."""
    return {
        "use_dictionary": [f.name for f in rtype.fields if f.kind == "str"],
        "column_encoding": {f.name: "DELTA_BINARY_PACKED" for f in rtype.fields if f.kind == "int"},
    }


class ParquetSink:
    """Record batches appended to one Parquet file by a writer thread of its
    own (encoding and disk writes run beside the stream's reader; Arrow
    releases the GIL while it encodes), in row groups of ``group_rows``.

    Memory is bounded: at most ``max_queued_rows`` rows wait to be written
    (queued or in the row group being encoded). ``write`` waits for room
    when they are reached, so nothing the stream delivered is left out for
    speed: the stream's reader pauses and the kernel counts what its full
    ring refuses (``Stream.lost``). Rows that still miss the file (the
    writer failed, or they arrived after ``close`` began) are counted in
    ``dropped`` and warned of. ``written`` counts the rows in the file."""

    group_rows = 1 << 18  # 8 MiB of 32-byte records: encodes as fast as 1 Mi rows here, with half the RSS growth

    def __init__(self, path: str, rtype: RecordType, max_queued_bytes: int = DEFAULT_PARQUET_QUEUE_BYTES):
        import pyarrow.parquet as pq

        self.path = path
        self.rtype = rtype
        if not isinstance(max_queued_bytes, int) or max_queued_bytes < 1:
            raise UsageProblem(f"queue_bytes must be a positive integer (bytes), not {max_queued_bytes!r}")
        self.max_queued_rows = max(1, max_queued_bytes // max(rtype.itemsize, 1))
        # A row group is written once this many rows wait: below the bound, or the queue could never drain.
        self._flush_rows = max(1, min(self.group_rows, self.max_queued_rows // 2))
        self._schema = rtype.arrow_schema()
        self._writer = pq.ParquetWriter(path, self._schema, **column_options(rtype))
        self._room = threading.Condition()
        self._queue: deque = deque()
        self._closing = False
        self._writers = 0  # write() calls waiting for room: the writer thread serves them before it ends
        self.queued_rows = 0  # rows accepted and not yet in the file
        self.peak_queued_rows = 0
        self.waits = 0  # times write() had to wait for the writer (the reader was held back)
        self.written = 0
        self.dropped = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"bpfmagic-parquet-{os.path.basename(path)}", daemon=True)
        self._thread.start()

    def reserve(self) -> None:
        """Announce a write() to come: a close() from now on waits for it (and its
        ``release()``). The stream reserves while it counts the rows, under its lock,
        so rows it has counted cannot reach a sink that closed in between."""
        with self._room:
            self._writers += 1

    def release(self) -> None:
        with self._room:
            self._writers -= 1
            self._room.notify_all()

    def write(self, batch: ColumnBatch, reserved: bool = False) -> int:
        """Queue BATCH for the file, waiting while ``max_queued_rows`` rows
        already wait; returns the rows accepted. Rows refused (the writer
        failed, or the sink is closing and the write was not reserved) are
        counted in ``dropped``."""
        with self._room:
            if self._closing and not reserved:
                self._drop(len(batch), "they arrived after the file was being closed")
                return 0
            self._writers += 1
            accepted = 0
            try:
                while accepted < len(batch) and self.error is None:
                    room = self.max_queued_rows - self.queued_rows
                    if room <= 0:
                        self.waits += 1
                        self._room.wait()
                        continue
                    part = batch[accepted : accepted + room]
                    # a copy of a part: a view would keep the whole batch in memory beyond the bound
                    self._put(part.copy() if len(part) < len(batch) else part)
                    accepted += len(part)
                if accepted < len(batch):
                    self._drop(len(batch) - accepted, f"writing the file failed: {self.error!r}")
            finally:
                self._writers -= 1
                self._room.notify_all()
            return accepted

    @property
    def queued_bytes(self) -> int:
        """Bytes of the batches in the queue, not yet taken for a row group (a part
        of a batch is queued as a copy: no view keeps a whole batch alive)."""
        with self._room:
            return sum(b.nbytes for b in self._queue)

    def _drop(self, rows: int, why: str) -> None:
        if rows and not self.dropped:
            _warn(f"{self.path}: {rows:,} rows left out of the Parquet file ({why}); they are counted in parquet_dropped")
        self.dropped += rows

    def _put(self, batch: ColumnBatch) -> None:
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
                # One row group at a time: encoding copies it (numpy columns, Arrow pages),
                # so a backlog is never converted whole.
                while self._queue and n < self._flush_rows:
                    batch = self._queue.popleft()
                    pending.append(batch)
                    n += len(batch)
                closing = self._closing
                if closing and not pending:
                    if self._writers == 0:
                        return
                    self._room.wait()  # a write() still in flight: serve it first
                    continue
            if closing or n >= self._flush_rows:
                try:
                    self._flush(pending)
                    failed = 0
                except BaseException as e:  # reported by close(); the rows count as dropped
                    self.error, failed = e, n
                with self._room:
                    self.written += n - failed
                    if failed:
                        self._drop(failed, f"writing the file failed: {self.error!r}")
                    self.queued_rows -= n
                    self._room.notify_all()
                pending, n = [], 0

    def _flush(self, batches: list[ColumnBatch]) -> None:
        # Straight from the records' numpy columns to Arrow: no DataFrame in between.
        table = self.rtype.arrow_table(batches, self._schema)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))  # one row group per flush

    def close(self) -> None:
        """Write what is queued (and what a write() in flight brings) and close the file."""
        with self._room:
            self._closing = True
            self._room.notify_all()
        self._thread.join()
        self._writer.close()
        if self.error is not None:
            raise self.error
