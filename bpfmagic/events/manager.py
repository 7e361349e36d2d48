"""The session's streams: one per event table of each loaded module whose
record type is known, started and stopped with the module through the
Session's on_load / on_unload hooks; why a table has none is kept and said."""

from __future__ import annotations

import warnings

try:
    import numpy as np
except ImportError:  # bpfmagic itself must import without numpy (the doctor runs on a bare python3)
    np = None

from ..errors import NotFound, UsageProblem
from ..kernel.maptypes import EVENT_TYPES, MapType
from . import StreamWarning
from .readers import DEFAULT_PERF_PAGES
from .records import Undeterminable, record_type
from .rows import check_max_rows
from .stream import Stream

DEFAULT_MAX_ROWS = 1_000_000


# ------------------------------------------------------------ manager


class StreamManager:
    """The session's streams, started and stopped with their modules through
    the Session's on_load / on_unload hooks."""

    def __init__(self, session, max_rows: int = DEFAULT_MAX_ROWS):
        self.session = session
        self._max_rows = check_max_rows(max_rows)
        self.perf_pages = DEFAULT_PERF_PAGES
        self._streams: dict[str, Stream] = {}
        self._unstreamed: dict[str, str] = {}  # "module.table" -> why it has no stream
        session.on_load.append(self._on_load)
        session.on_unload.append(self._on_unload)

    @property
    def max_rows(self) -> int:
        """Rows kept by every stream that has no max_rows of its own."""
        return self._max_rows

    @max_rows.setter
    def max_rows(self, value: int) -> None:
        value = check_max_rows(value)
        self._max_rows = value
        for stream in self:  # streams without a bound of their own follow the default at once
            if stream.follows_default:
                stream.max_rows = None

    def _on_load(self, module) -> None:
        """A stream for each event table of MODULE whose record type is known (records.py);
        why another event table has none is kept for get()."""
        obj = module.object
        for table in module.tables:
            qualname = f"{module.name}.{table}"
            try:
                kind = obj.map_handle(table).map_type
            except Exception:
                continue
            if kind not in EVENT_TYPES:
                continue
            refusal = obj.perf_refusal(table) if kind == MapType.PERF_EVENT_ARRAY else None
            if refusal is not None:
                self._unstreamed[qualname] = refusal
                continue
            if np is None:
                self._unstreamed[qualname] = "streams need numpy: pip install numpy pandas"
                continue
            try:
                rtype = record_type(module, table)
            except Undeterminable as e:
                self._unstreamed[qualname] = str(e)
                continue
            except Exception as e:  # an unknown field type; the module stays loaded either way
                self._unstreamed[qualname] = f"its record type cannot be decoded: {e}"
                warnings.warn(f"{qualname} is not streamed: {e}", StreamWarning, stacklevel=2)
                continue
            if rtype is None:
                call = (
                    "ringbuf_output(&rec, sizeof(rec), 0) or ringbuf_submit(rec, 0)"
                    if kind == MapType.RINGBUF
                    else "perf_submit(ctx, &rec, sizeof(rec))"
                )
                self._unstreamed[qualname] = f"BCC inferred no record type for it: write {table}.{call} with a struct, or read it yourself with BCC"
                continue
            previous = self._streams.pop(qualname, None)
            if previous is not None:  # a stream of an earlier version of the module left behind
                previous.stop()
            try:
                self._streams[qualname] = Stream(self, module, table, rtype, perf_pages=self.perf_pages)
            except Exception as e:  # the module stays loaded; say why its table is not streamed
                self._unstreamed[qualname] = f"opening it failed: {e}"
                warnings.warn(f"{qualname} is not streamed: {e}", StreamWarning, stacklevel=2)
        # the cell says it too: a table listed with the module but never streamed looked like one
        # whose events simply had not come yet
        for qualname, why in self._unstreamed.items():
            if qualname.startswith(module.name + ".") and why not in "".join(module.notes):
                module.notes.append(f"{qualname.split('.', 1)[1]} is not streamed: {why}")

    def _on_unload(self, module) -> None:
        prefix = module.name + "."
        # by name: a stream the user stopped no longer holds its module
        for name in [n for n, s in self._streams.items() if s.module_name == module.name]:
            self._streams.pop(name).stop()
        for name in [n for n in self._unstreamed if n.startswith(prefix)]:
            del self._unstreamed[name]

    def __iter__(self):
        return iter(list(self._streams.values()))

    def __len__(self) -> int:
        return len(self._streams)

    def names(self) -> list[str]:
        return list(self._streams)

    def of(self, module) -> dict[str, Stream]:
        """The streams of MODULE by table name."""
        return {s.table: s for s in self._streams.values() if s.owner is module}

    def get(self, name: str) -> Stream:
        """The stream of TABLE (when only one module has such a table) or of MODULE.TABLE."""
        if name in self._streams:
            return self._streams[name]
        if name in self._unstreamed:
            raise UsageProblem(f"{name} is not streamed: {self._unstreamed[name]}")
        matches = [s for s in self._streams.values() if s.table == name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageProblem(f"several modules have a table {name!r}: name one of {', '.join(s.name for s in matches)}")
        unstreamed = [(q, why) for q, why in self._unstreamed.items() if q.split(".", 1)[1] == name]
        if len(unstreamed) == 1:
            raise UsageProblem(f"{unstreamed[0][0]} is not streamed: {unstreamed[0][1]}")
        known = ", ".join(self._streams) or "none (streams come from BPF_RINGBUF_OUTPUT / BPF_PERF_OUTPUT tables)"
        raise NotFound(f"no stream {name!r}; streams: {known}", "stream", name, tuple(self._streams))

    def summary(self):
        import pandas as pd

        rows = [s.summary() for s in self._streams.values()]
        return pd.DataFrame(rows, columns=["stream", "kind", "running", "count", "rows", "dropped", "lost", "max_rows", "columns", "error"])

    def stop_all(self) -> None:
        """Stop and forget every stream (the session is reset or closed)."""
        for name in list(self._streams):
            self._streams.pop(name).stop()
        self._unstreamed.clear()
