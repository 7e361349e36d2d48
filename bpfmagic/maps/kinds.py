"""One view class per kind of map, registered by map type (view.VIEW_CLASSES):
hashes (LRU, per-CPU, LPM trie), arrays (per-CPU, global-variable sections),
queues and stacks, prog arrays (a module's, or a session's no module declares)
and event tables. Each says only how its kind differs from MapView."""

from __future__ import annotations

import errno as _errno

import numpy as np

from ..errors import NotFound, UsageProblem
from ..kernel import libbpf
from ..kernel.fields import Field
from ..kernel.maptypes import EVENT_TYPES, MapType
from . import bulk, frames
from .view import VIEW_CLASSES, MapView, holding_the_map


def kind(*keys):
    """Register the class as the view of maps of these types."""

    def register(cls):
        for key in keys:
            VIEW_CLASSES[key] = cls
        return cls

    return register


class PerCpuValues:
    """Per-CPU maps: ``df()`` has one column per CPU (``value.cpu0``, ...; a struct's
    ``n.cpu0``, ...), ``df(sum=True)`` sums the numeric fields over CPUs (arrays
    element-wise; strings and bytes are CPU 0's); ``view[key]`` is a list with one value
    per CPU; ``view[key] = v`` writes V on every CPU, a list of one value per CPU sets each."""

    percpu = True

    @property
    def columns(self) -> list[str]:
        return self.key.columns + [f"{c}.cpu{i}" for c in self.value.columns for i in range(self.ncpu)]

    def _value_columns(self, values: np.ndarray, sum: bool) -> dict:
        return frames.per_cpu_columns(self.value, values, self.ncpu, sum)

    def _decoded(self, record: np.ndarray):
        return [self.value.decode_one(r) for r in record.reshape(-1)]

    def _pack_value(self, value) -> np.ndarray:
        what = f"{self.name} value"
        if isinstance(value, list) and len(value) == self.ncpu:
            out = np.zeros(self.ncpu, self.value.dtype)  # (np.concatenate would drop the 8-byte stride)
            for i, v in enumerate(value):
                out[i] = self.value.pack(v, f"{what} (CPU {i})")[0]
            return out
        return np.repeat(self.value.pack(value, what), self.ncpu)


# ------------------------------------------------------------------ hashes


@kind(MapType.HASH)
class HashView(MapView):
    """A hash: read with BPF_MAP_LOOKUP_BATCH, cleared with BPF_MAP_DELETE_BATCH."""

    batch_ops = True
    method = "batch"


@kind(MapType.LRU_HASH)
class LruHashView(HashView):
    """An LRU hash: the kernel evicts the least recently used entry when it is full."""


@kind(MapType.PERCPU_HASH)
class PerCpuHashView(PerCpuValues, HashView):
    """A per-CPU hash."""


@kind(MapType.LRU_PERCPU_HASH)
class LruPerCpuHashView(PerCpuHashView):
    """A per-CPU LRU hash."""


@kind(MapType.LPM_TRIE)
class LpmTrieView(MapView):
    """A longest-prefix-match trie: no batch ops, so read by the get_next_key walk and
    cleared one key at a time."""


# ------------------------------------------------------------------ arrays


@kind(MapType.ARRAY)
class ArrayView(MapView):
    """An array: every index from 0 to max_entries - 1 exists; its elements are set, never deleted."""

    batch_ops = True
    index_keys = True
    method = "batch"

    def _extent(self) -> str:
        return f"an array of {self.max_entries} elements (keys 0 to {self.max_entries - 1}): its size is fixed at load"

    def _update_error(self, err: int, key) -> Exception:
        if err == _errno.E2BIG:  # an array is never full: the kernel's E2BIG is an index past its end
            return UsageProblem(f"{self.name}[{key!r}]: past the end of {self.name}, {self._extent()}")
        return super()._update_error(err, key)

    @holding_the_map
    def __delitem__(self, key) -> None:
        self._writable()
        raise UsageProblem(f"{self.name} is an array: its elements cannot be deleted, only set (to 0 with view[{key!r}] = 0; all with .clear())")

    @holding_the_map
    def clear(self) -> int:
        """Set every element to zero. Returns the number of elements."""
        self._writable()
        keys = np.arange(self.max_entries, dtype=np.uint32)
        self._write_rows(keys.view(np.uint8).reshape(-1, 4), np.zeros(self.max_entries * self.ncpu, self.value.dtype))
        return self.max_entries

    def _check_rows(self, raw_keys: np.ndarray, values: np.ndarray) -> None:
        if self.key_size != 4:
            return
        index = np.ascontiguousarray(raw_keys).view(np.uint32).reshape(-1)
        past = np.flatnonzero(index >= self.max_entries)
        if past.size:
            raise UsageProblem(
                f"{self.name}.from_df: row {past[0]} has key {index[past[0]]}, past the end of {self.name}, "
                f"{self._extent()}; nothing was written ({past.size} of {len(index)} rows are past the end)"
            )


@kind(MapType.PERCPU_ARRAY)
class PerCpuArrayView(PerCpuValues, ArrayView):
    """A per-CPU array."""


@kind("globals")
class GlobalSectionView(ArrayView):
    """A --core global-variable section (.bss, .data, .rodata): one value whose variables
    are the columns; ``view["counter"]`` reads one, ``view["counter"] = 5`` writes it."""

    globals = True

    def _key_columns(self, keys: np.ndarray) -> dict:
        return {}  # one value: its variables are the columns

    @holding_the_map
    def __getitem__(self, key):
        if not isinstance(key, str):
            return super().__getitem__(key)
        values = super().__getitem__(0)
        if key not in values:
            raise NotFound(f"{self.name} has no variable {key!r} (variables: {', '.join(values)})", "variable", key, tuple(values))
        return values[key]

    def __setitem__(self, key, value) -> None:
        if isinstance(key, str):
            key, value = 0, {key: value}
        super().__setitem__(key, value)

    def _update_error(self, err: int, key) -> Exception:
        if err == _errno.EPERM:
            return UsageProblem(f"{self.name} is frozen at load (.rodata: const volatile): set it before loading, with --set VAR=VALUE")
        return super()._update_error(err, key)


# ------------------------------------------------------------------ no keys


@kind(MapType.QUEUE, MapType.STACK)
class QueueView(MapView):
    """A queue or a stack: no keys; ``push(value)``, ``peek()``; a read shows the head only."""

    method = "peek"

    def _read_rows(self, stats):
        return None, bulk.peek(self.fd, self.stride, stats)

    def _pack_key(self, key) -> np.ndarray:
        raise UsageProblem(f"{self.name} is a {self.type_name}: it has no keys (use .push(value), .peek())")

    def items(self) -> list[tuple]:
        return self._pack_key(None)  # refuses: there are no keys

    @holding_the_map
    def push(self, value) -> None:
        """Add VALUE."""
        self._writable()
        v = self.value.pack(value, f"{self.name} value")
        err = libbpf.errno_of(libbpf.lib().bpf_map_update_elem(self.fd, None, bulk.ptr(v), libbpf.BPF_ANY))
        if err:
            raise OSError(err, f"{self.name}.push: {_errno.errorcode.get(err, err)}")

    @holding_the_map
    def peek(self):
        """The next value (None when empty), left in place."""
        _, values = self.read()
        return self.value.decode_one(values[0]) if len(values) else None

    @holding_the_map
    def clear(self) -> int:
        """Pop every value. Returns how many there were."""
        self._writable()
        return bulk.pop_all(self.fd, self.value_size)

    @holding_the_map
    def from_df(self, frame) -> int:
        """Push every row of FRAME (a ``value`` column, or the value's fields), in order."""
        self._writable()
        frames.check_frame(self.name, frame, self.key, self.value)
        for _, row in frame.iterrows():
            self.push(row.to_dict() if not self.value.scalar else row[self.value.role])
        return len(frame)


@kind(*EVENT_TYPES)
class EventTableView(MapView):
    """A ring buffer or perf event array: records a program writes as a stream
    (``s.stream(table)``, ``%bpf df``), not entries to read or write."""

    def _read_rows(self, stats):
        raise UsageProblem(f"{self.name} is an event table ({self.type_name}): its records are a stream, see %bpf df {self.table}")

    def _writable(self) -> None:
        self._live()
        raise UsageProblem(f"{self.name} is an event table ({self.type_name}): it cannot be written")


# ------------------------------------------------------------------ prog arrays


@kind(MapType.PROG_ARRAY)
class ProgArrayView(MapView):
    """A prog array: each slot holds a program (the kernel shows user space its id). Read
    as the session's slot view when it is a session array; filled with %bpf slot /
    Session.slot, never written here."""

    index_keys = True
    method = "lookup"

    def _read_rows(self, stats):
        return bulk.lookup_each(self.fd, self.max_entries, stats)

    def _writable(self) -> None:
        self._live()
        raise UsageProblem(f"{self.name} is a prog array: fill slots with %bpf slot / Session.slot")

    def _session_array(self):
        for array in self.session.arrays.values():
            try:
                if int(libbpf.fdinfo(array.fd)["map_id"]) == self.map_id:
                    return array
            except (OSError, KeyError):
                continue
        return None

    @holding_the_map
    def df(self, sum: bool = False, sort: str | None = None, top: int | None = None):
        array = self._session_array()
        if array is not None:  # the session's own array: named slots, programs, counts
            return frames.order(self.session.slots(array.name), sort, top, self.name)
        return super().df(sum=sum, sort=sort, top=top)

    def _value_columns(self, values: np.ndarray, sum: bool) -> dict:
        programs = {}
        for m in self.session.modules.values():
            for p in m.programs.values():
                try:
                    programs[p.prog_id] = p.qualname
                except (OSError, KeyError):
                    continue
        ids = self.value.decode(values)["value"]
        return {"program": np.array([programs.get(int(i)) for i in ids], dtype=object), "prog_id": ids}


class SessionArrayView(ProgArrayView):
    """A session prog array no loaded module declares (made by ``%bpf progarray`` or
    left by an unloaded cell): its slot view."""

    def __init__(self, session, name: str):
        self.session, self.name, self.table, self.map_name = session, name, name, name
        self.module_name = None
        self.last_read = bulk.ReadStats()
        self._module = self._array = None
        self._bind_array(session.arrays[name])

    def _bind_array(self, array) -> None:
        self._array = array
        self._set_shape(array.fd)
        self._set_layouts([Field("", 0, "uint", 4)], [Field("", 0, "uint", 4)])

    def _live(self):
        array = self.session.arrays.get(self.name)
        if array is None:
            raise UsageProblem(f"the prog array {self.name} is gone (the session was reset); make it again with %bpf progarray {self.name} N")
        if array is not self._array:
            self._bind_array(array)
        return None

    def __getattr__(self, name: str):
        raise AttributeError(name)  # no backend table behind a session array

    @holding_the_map
    def df(self, sum: bool = False, sort: str | None = None, top: int | None = None):
        return frames.order(self.session.slots(self.name), sort, top, self.name)

    def __repr__(self) -> str:
        return f"<bpfmagic prog array {self.name} (session slots)>"
