"""Any BPF map of a loaded module as a pandas DataFrame, and written from Python.

``module["t"]``, ``module.map("t")`` and ``Session.map(name)`` give the one
view of a map: a :class:`MapView` of the class its map type calls for
(kinds.py: hash, LRU, per-CPU, LPM trie, array, global-variable section,
queue/stack, prog array, event table), chosen by factory.py. A view is a
MutableMapping of decoded keys to decoded values, with ``.df()``,
``.from_df(df)``, ``.clear()``, ``.hist()``. Key and value layouts
(layout.py) come from BCC's ctypes Key/Leaf types or, for ``--core``
modules, from the object's BTF (raw ints or bytes when there is none).

Reads are bulk (bulk.py): ``BPF_MAP_LOOKUP_BATCH`` into one buffer, decoded
by a numpy structured dtype in one pass (frames.py makes the columns). Map
types without a batch op (LPM trie, and the generic walk of other types)
fall back to get_next_key + lookup, one syscall pair per entry.

Consistency: no read of a map is an atomic snapshot while programs update
it. A hash batch lookup locks one bucket at a time, so entries of different
buckets are read at different instants; arrays copy each element without a
lock; per-CPU values are copied CPU by CPU. What one ``df()`` returns is one
pass over the map, and every number a watch view shows comes from that one
pass."""

from __future__ import annotations

from ..kernel.maptypes import MapType, type_name
from .bulk import ReadStats
from .factory import find, open_view, view_of
from .kinds import (
    ArrayView,
    EventTableView,
    GlobalSectionView,
    HashView,
    LpmTrieView,
    LruHashView,
    LruPerCpuHashView,
    PerCpuArrayView,
    PerCpuHashView,
    ProgArrayView,
    QueueView,
    SessionArrayView,
)
from .layout import Layout, Number, Real, Record
from .view import MapView, global_sections, view_class

SlotsView = SessionArrayView  # its name before the views were one class per map kind

__all__ = [
    "ArrayView",
    "EventTableView",
    "GlobalSectionView",
    "HashView",
    "Layout",
    "LpmTrieView",
    "LruHashView",
    "LruPerCpuHashView",
    "MapType",
    "MapView",
    "Number",
    "PerCpuArrayView",
    "PerCpuHashView",
    "ProgArrayView",
    "QueueView",
    "ReadStats",
    "Real",
    "Record",
    "SessionArrayView",
    "SlotsView",
    "find",
    "global_sections",
    "open_view",
    "type_name",
    "view_class",
    "view_of",
]
