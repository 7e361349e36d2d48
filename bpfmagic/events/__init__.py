"""Events: record types (records.py), ring and perf readers (readers.py),
streams (stream.py) joining a reading thread (consumer.py) and the rows
they keep (rows.py), the Parquet writer (parquet.py), the session's streams
(manager.py), and the kernel's trace pipe (trace.py)."""

from __future__ import annotations

import contextlib
import warnings


class StreamWarning(UserWarning):
    """An event table that cannot be streamed (its record type is not decodable),
    records of another size than their struct, or a stream whose reader failed."""


def warn_from_thread(message: str) -> None:
    """A StreamWarning from the consumer thread, once per call (each stream
    decides when): no per-line dedup, which would hide it for a re-run cell.
    Never raises (-W error): the thread has no caller to raise to."""
    with contextlib.suppress(Exception):
        warnings.warn_explicit(message, StreamWarning, filename="bpfmagic", lineno=0)
