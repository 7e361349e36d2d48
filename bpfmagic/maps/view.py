"""MapView: one map of one loaded module, bound by name, as a MutableMapping of
decoded keys to decoded values with ``df()``, ``from_df()`` and ``clear()``.
What differs between map kinds is in the subclasses of kinds.py, chosen by
map type (``view_class``); this class holds what every kind shares, and is
itself the view of map types no subclass names (a get_next_key walk)."""

from __future__ import annotations

import errno as _errno
import functools
import time
from collections.abc import MutableMapping

import numpy as np

from ..errors import NotFound, UsageProblem
from ..kernel import libbpf
from ..kernel.fields import Field
from ..kernel.libbpf import errno_of
from ..kernel.maptypes import type_name
from . import bulk, frames
from .bulk import ReadStats, ptr
from .layout import Layout, fields_of

# map type -> the view class of that kind (kinds.py fills it)
VIEW_CLASSES: dict[int, type] = {}


def view_class(map_type: int, globals: bool = False) -> type:
    """The view class of a map of MAP_TYPE (a --core global-variable section: GLOBALS)."""
    return VIEW_CLASSES["globals" if globals else map_type] if globals or map_type in VIEW_CLASSES else MapView


def global_sections(module) -> dict[str, str]:
    """A module's global-variable maps (--core): section name without the dot
    ("bss", "data", "rodata", "data.custom") -> the backend's map name."""
    return module.object.global_sections() if module.object is not None else {}


def holding_the_map(method):
    """Run a view method under the session's lock on a live map: another
    thread's re-run, unload or reset closes the map's fd under that lock, and
    a closed fd number may already name another map."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self.session.lock:
            self._live()
            return method(self, *args, **kwargs)

    return locked


class MapView(MutableMapping):
    """One map of one loaded module: ``view[key]``, ``view[key] = value``, ``del view[key]``,
    ``len``, iteration and ``.items()`` (one read), ``.df()``, ``.from_df(df)``, ``.clear()``,
    ``.hist()``. Names a view does not have are looked up on the backend's own table
    (BCC's ``open_ring_buffer``, ``items_lookup_batch``, ``Leaf``, ...)."""

    # A view is its map's handle, not a snapshot of its entries: equal only to itself, and
    # hashable (Mapping would compare entries, reading both maps, and drop the hash).
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    percpu = False  # values one per possible CPU (PerCpuValues)
    batch_ops = False  # BPF_MAP_*_BATCH exist for the type
    index_keys = False  # keys are u32 indexes (BCC types them as int)
    globals = False  # a --core global-variable section
    method = "get_next_key"  # how read() reads it

    def __init__(self, session, module, table: str):
        self.session = session
        self.module_name = module.name
        self.table = table
        self.name = f"{module.name}.{table}"
        self.last_read = ReadStats()
        self._module = None
        self._bind(module)

    # -------------------------------------------------- binding
    def _bind(self, module) -> None:
        sections = global_sections(module)
        is_globals = self.table not in module.tables and self.table in sections
        self.map_name = sections[self.table] if is_globals else self.table
        if not is_globals and self.table not in module.tables:
            raise NotFound(
                f"{module.name} has no table {self.table!r} (tables: {', '.join(module.tables) or 'none'})", "table", self.table, tuple(module.tables)
            )
        handle = module.object.map_handle(self.map_name)
        kind = view_class(handle.map_type, is_globals)
        if type(self) is not kind:  # a re-run cell declared the map again with another type: the view follows the name
            self.__class__ = kind
        self._module = module
        self._set_shape(handle.fd)
        self._set_layouts(*fields_of(handle, module.object.btf(), self.index_keys))

    def _set_shape(self, fd: int) -> None:
        self.fd = fd
        info = libbpf.fdinfo(fd)
        self.map_type = int(info["map_type"])
        self.key_size, self.value_size = int(info["key_size"]), int(info["value_size"])
        self.max_entries = int(info["max_entries"])
        self.map_id = int(info.get("map_id", 0))
        self.ncpu = libbpf.num_possible_cpus() if self.percpu else 1
        self.stride = (self.value_size + 7) // 8 * 8 if self.percpu else self.value_size

    def _set_layouts(self, key_fields: list[Field], value_fields: list[Field]) -> None:
        self.key = Layout(key_fields, self.key_size, "key")
        self.value = Layout(value_fields, self.value_size, "value", itemsize=self.stride)
        clash = set(self.key.columns) & set(self.value.columns)
        if clash and not self.value.scalar:  # a field named like a key field: keep both apart
            for f in self.value.fields:
                f.name = f"value.{f.name}"
            self.value = Layout(value_fields, self.value_size, "value", itemsize=self.stride)

    def _live(self):
        """The module behind the view, refusing clearly when its map was freed
        (a re-run cell of the same name is followed: the view binds to its map).
        Called with the session's lock held, which keeps the map's fd open
        until the caller is done with it."""
        module = self.session.modules.get(self.module_name)
        if module is None or module.closed:
            raise UsageProblem(
                f"the map {self.table} of module {self.module_name} was freed: module {self.module_name} was unloaded; "
                f"load the cell again, then call s.map({self.table!r})"
            )
        if module is not self._module:
            if self.table not in module.tables and self.table not in global_sections(module):
                raise UsageProblem(
                    f"the map {self.table} of module {self.module_name} was freed when the cell was re-run, "
                    f"and the new version has no table {self.table}; call s.map() with one of its maps"
                )
            self._bind(module)
        return module

    @property
    def type_name(self) -> str:
        return type_name(self.map_type)

    @property
    def columns(self) -> list[str]:
        return self.key.columns + self.value.columns

    def __repr__(self) -> str:
        return (
            f"<bpfmagic map {self.name} ({self.type_name}, {self.max_entries} entries max, "
            f"key {', '.join(self.key.columns)}; value {', '.join(self.value.columns)})>"
        )

    def __getattr__(self, name: str):
        # Only reached for names the view lacks: the backend's own table has them (BCC's methods).
        if name.startswith("_") or "_module" not in self.__dict__:
            raise AttributeError(name)
        with self.session.lock:
            module = self._live()
            return getattr(module.object.table(self.map_name), name)

    # -------------------------------------------------- reading
    @holding_the_map
    def read(self) -> tuple[np.ndarray | None, np.ndarray]:
        """One pass over the map: (keys, values) as structured arrays of the
        key and value dtypes; values have shape (n, ncpu) for per-CPU maps.
        ``last_read`` says how (method, syscalls)."""
        stats = ReadStats(self.method)
        start = time.perf_counter()
        keys, values = self._read_rows(stats)
        stats.entries = len(values)
        stats.seconds = time.perf_counter() - start
        self.last_read = stats
        value_records = bulk.records(values, self.value.dtype)
        if self.percpu:
            value_records = value_records.reshape(len(values), self.ncpu)
        return (None if keys is None else bulk.records(keys, self.key.dtype)), value_records

    def _read_rows(self, stats: ReadStats):
        """(keys, values) as rows of bytes; keys None for a map without keys."""
        value_bytes = self.stride * self.ncpu
        if self.batch_ops:
            try:
                return bulk.batch_read(self.fd, self.key_size, value_bytes, self.max_entries, stats)
            except bulk.NoBatch:
                stats.method = "get_next_key"
        return bulk.walk_read(self.fd, self.key_size, value_bytes, stats)

    @holding_the_map
    def df(self, sum: bool = False, sort: str | None = None, top: int | None = None):
        """DataFrame of every entry: key columns, then value columns (per CPU
        or, with ``sum``, summed). ``sort``: by that column, largest first;
        ``top``: only the first N rows after sorting (by the first numeric
        value column when ``sort`` is not given). ``df.attrs["read"]``: how it was read."""
        import pandas as pd

        keys, values = self.read()
        columns = {} if keys is None else self._key_columns(keys)
        columns.update(self._value_columns(values, sum))
        frame = pd.DataFrame(columns)
        frame = frames.order(frame, sort, top, self.name, default=frames.first_numeric(frame, self.key.columns))
        frame.attrs["read"] = self.last_read.as_dict()
        frame.attrs["map"] = self.name
        return frame

    def _key_columns(self, keys: np.ndarray) -> dict:
        return self.key.decode(keys)

    def _value_columns(self, values: np.ndarray, sum: bool) -> dict:
        return self.value.decode(values)

    @holding_the_map
    def __len__(self) -> int:
        return len(self.read()[1])  # values: queues and stacks have no keys

    @holding_the_map
    def items(self) -> list[tuple]:
        """Every (key, value), from one read."""
        keys, values = self.read()
        return [(self.key.decode_one(k), self._decoded(v)) for k, v in zip(keys, values)]

    def keys(self) -> list:
        return [k for k, _ in self.items()]

    def values(self) -> list:
        return [v for _, v in self.items()]

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, key) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    @holding_the_map
    def __getitem__(self, key):
        buf = np.zeros(self.ncpu, self.value.dtype)
        packed = self._pack_key(key)  # held by a name: ptr() is a bare address, the array must outlive the call
        err = errno_of(libbpf.lib().bpf_map_lookup_elem(self.fd, ptr(packed), ptr(buf)))
        if err == _errno.ENOENT:
            raise KeyError(key)
        if err:
            raise OSError(err, f"{self.name}[{key!r}]: lookup failed")
        return self._decoded(buf)

    def _decoded(self, record: np.ndarray):
        """One value (NCPU records) as Python values."""
        return self.value.decode_one(record.reshape(-1)[0])

    # -------------------------------------------------- writing
    def _pack_key(self, key) -> np.ndarray:
        return self.key.pack(key, f"{self.name} key")

    def _pack_value(self, value) -> np.ndarray:
        return self.value.pack(value, f"{self.name} value")

    def _writable(self) -> None:
        self._live()

    @holding_the_map
    def __setitem__(self, key, value) -> None:
        """Write VALUE at KEY. A dict that names some fields of a struct value
        keeps the others as they are (read, then written: not atomic against
        the program)."""
        self._writable()
        k = self._pack_key(key)
        base = None
        if isinstance(value, dict) and not self.value.scalar and not self.percpu:
            current = np.zeros(1, self.value.dtype)
            if errno_of(libbpf.lib().bpf_map_lookup_elem(self.fd, ptr(k), ptr(current))) == 0:
                base = current
        v = self.value.pack(value, f"{self.name} value", base) if base is not None else self._pack_value(value)
        err = errno_of(libbpf.lib().bpf_map_update_elem(self.fd, ptr(k), ptr(v), libbpf.BPF_ANY))
        if err:
            raise self._update_error(err, key)

    def _update_error(self, err: int, key) -> Exception:
        if err == _errno.E2BIG:
            return UsageProblem(f"{self.name} is full ({self.max_entries} entries): {key!r} cannot be added")
        return OSError(err, f"{self.name}[{key!r}] = ...: {_errno.errorcode.get(err, err)}")

    @holding_the_map
    def __delitem__(self, key) -> None:
        self._writable()
        packed = self._pack_key(key)  # held by a name: see __getitem__
        err = errno_of(libbpf.lib().bpf_map_delete_elem(self.fd, ptr(packed)))
        if err == _errno.ENOENT:
            raise KeyError(key)
        if err:
            raise OSError(err, f"del {self.name}[{key!r}]: {_errno.errorcode.get(err, err)}")

    @holding_the_map
    def clear(self) -> int:
        """Delete every entry. Returns how many entries there were."""
        self._writable()
        keys, _ = self.read()
        raw = keys.view(np.uint8).reshape(len(keys), -1)[:, : self.key_size] if len(keys) else keys
        err = bulk.delete_batch(self.fd, np.ascontiguousarray(raw))
        if err and err != _errno.ENOENT:
            raise OSError(err, f"{self.name}.clear: {_errno.errorcode.get(err, err)}")
        return len(keys)

    @holding_the_map
    def from_df(self, frame) -> int:
        """Write every row of FRAME (columns named as ``df()`` names them: key
        fields, then value fields; per-CPU maps take ``F.cpuN`` columns or one
        ``F`` column for every CPU). One BPF_MAP_UPDATE_BATCH where the map type
        has it. Returns the number of rows written."""
        self._writable()
        frames.check_frame(self.name, frame, self.key, self.value)
        rows = frames.frame_records(self.name, frame, self.key, self.value, self.key_size, self.ncpu, self.percpu)
        if rows is not None:
            self._check_rows(*rows)
            self._write_rows(*rows)
        return len(frame)

    def _check_rows(self, raw_keys: np.ndarray, values: np.ndarray) -> None:
        """Refuse rows the map cannot hold before any is written (arrays: keys past the end)."""

    def _write_rows(self, raw_keys: np.ndarray, values: np.ndarray) -> None:
        err, index = bulk.update_batch(self.fd, raw_keys, values, self.ncpu, self.batch_ops)
        if err == _errno.E2BIG:
            raise UsageProblem(f"{self.name} is full ({self.max_entries} entries): row {index} and later were not written")
        if err:
            raise OSError(err, f"{self.name}: writing row {index} failed: {_errno.errorcode.get(err, err)}")

    # -------------------------------------------------- histograms
    @holding_the_map
    def hist(self):
        """A log2 histogram (BCC's BPF_HISTOGRAM): DataFrame of bucket, low, high, count (histogram.log2_hist)."""
        from .histogram import log2_hist

        return log2_hist(self)

    def plot_hist(self, ax=None, hist=None):
        """The log2 histogram as a matplotlib bar chart (one per section); returns the Figure."""
        from .histogram import plot_log2_hist

        return plot_log2_hist(self.name, self.hist() if hist is None else hist, ax)
