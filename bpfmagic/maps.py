"""Any BPF map of a loaded module as a pandas DataFrame, and written from Python.

``Session.map(name)`` / ``Module.map(table)`` give a :class:`MapView`:
``.df()``, ``view[key]``, ``view[key] = value``, ``del view[key]``,
``.clear()``, ``.from_df(df)``, ``.hist()``. Key and value layouts come from
BCC's ctypes Key/Leaf types or, for ``--core`` modules, from the object's BTF
(raw ints or bytes when there is none).

Reads are bulk: ``BPF_MAP_LOOKUP_BATCH`` into one buffer, decoded by a numpy
structured dtype in one pass. Map types without a batch op (LPM trie, and
the generic walk of other types) fall back to get_next_key + lookup, one
syscall pair per entry.

Consistency: no read of a map is an atomic snapshot while programs update
it. A hash batch lookup locks one bucket at a time, so entries of different
buckets are read at different instants; arrays copy each element without a
lock; per-CPU values are copied CPU by CPU. What one ``df()`` returns is one
pass over the map, and every number a watch view shows comes from that one
pass.

Long because: the numpy layout of keys and values, batch reads and writes, and the view
are one concern; kernel/btf.py holds the type walking."""

from __future__ import annotations

import ctypes as ct
import errno as _errno
import functools
import time

import numpy as np

from .errors import NotFound, UsageProblem
from .kernel import libbpf
from .kernel.btf import Field, ctypes_fields, raw_fields

# enum bpf_map_type (uapi)
HASH, ARRAY, PROG_ARRAY, PERF_EVENT_ARRAY, PERCPU_HASH, PERCPU_ARRAY, STACK_TRACE = 1, 2, 3, 4, 5, 6, 7
LRU_HASH, LRU_PERCPU_HASH, LPM_TRIE, QUEUE, STACK, RINGBUF = 9, 10, 11, 22, 23, 27
TYPE_NAMES = {
    HASH: "hash",
    ARRAY: "array",
    PROG_ARRAY: "prog_array",
    PERF_EVENT_ARRAY: "perf_event_array",
    PERCPU_HASH: "percpu_hash",
    PERCPU_ARRAY: "percpu_array",
    STACK_TRACE: "stack_trace",
    LRU_HASH: "lru_hash",
    LRU_PERCPU_HASH: "lru_percpu_hash",
    LPM_TRIE: "lpm_trie",
    QUEUE: "queue",
    STACK: "stack",
    RINGBUF: "ringbuf",
    12: "array_of_maps",
    13: "hash_of_maps",
}
PERCPU_TYPES = {PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH}
ARRAY_TYPES = {ARRAY, PERCPU_ARRAY}
BATCH_TYPES = {HASH, ARRAY, PERCPU_HASH, PERCPU_ARRAY, LRU_HASH, LRU_PERCPU_HASH}
_ENOTSUPP = 524  # the kernel-internal "operation not supported" that leaks to user space
_NO_OP = (_errno.EINVAL, _errno.EOPNOTSUPP, _ENOTSUPP, _errno.ENOTSUP)
READ_BUFFER_BYTES = 256 << 20  # one batch buffer at most; bigger maps take several calls


class BatchOpts(ct.Structure):
    _fields_ = [("sz", ct.c_size_t), ("elem_flags", ct.c_uint64), ("flags", ct.c_uint64)]


_declared = False


def _lib() -> ct.CDLL:
    """libbpf with the object/BTF API (libbpf.object_api) and the map calls used here."""
    global _declared
    lib = libbpf.object_api()
    if not _declared:
        vp, u32p = ct.c_void_p, ct.POINTER(ct.c_uint32)
        for fname, res, args in [
            ("bpf_map_lookup_batch", ct.c_int, [ct.c_int, vp, vp, vp, vp, u32p, vp]),
            ("bpf_map_update_batch", ct.c_int, [ct.c_int, vp, vp, u32p, vp]),
            ("bpf_map_delete_batch", ct.c_int, [ct.c_int, vp, u32p, vp]),
            ("bpf_map_get_next_key", ct.c_int, [ct.c_int, vp, vp]),
            ("bpf_map_lookup_elem", ct.c_int, [ct.c_int, vp, vp]),
            ("bpf_map_update_elem", ct.c_int, [ct.c_int, vp, vp, ct.c_uint64]),
            ("bpf_map_delete_elem", ct.c_int, [ct.c_int, vp]),
            ("bpf_map_lookup_and_delete_elem", ct.c_int, [ct.c_int, vp, vp]),
            ("bpf_map__btf_key_type_id", ct.c_uint32, [vp]),
        ]:
            f = getattr(lib, fname)
            f.restype, f.argtypes = res, args
        _declared = True
    return lib


def _err(ret: int) -> int:
    """The errno of a failed libbpf call (libbpf 1.x returns -errno), 0 on success."""
    if ret >= 0:
        return 0
    return -ret if ret < -1 else (ct.get_errno() or _errno.EINVAL)


def _ptr(buf: np.ndarray | None):
    return None if buf is None else buf.ctypes.data


# ------------------------------------------------------------------ layouts


class Layout:
    """How the bytes of a key or a value become columns: a numpy structured
    dtype over the flat fields (bit-fields share their storage unit)."""

    def __init__(self, fields: list[Field], size: int, role: str, itemsize: int | None = None):
        self.fields, self.size, self.role = fields, size, role
        self.scalar = len(fields) == 1 and fields[0].name == ""
        names = [self.column(f) for f in fields]
        formats = [(f.base, f.shape) if f.shape else f.base for f in fields]
        self.dtype = np.dtype({"names": names, "formats": formats, "offsets": [f.offset for f in fields], "itemsize": itemsize or size})

    def column(self, f: Field) -> str:
        return f.name or self.role

    @property
    def columns(self) -> list[str]:
        return [self.column(f) for f in self.fields]

    # -- decoding
    def decode(self, records: np.ndarray, suffix: str = "") -> dict:
        """Columns of RECORDS (a structured array of self.dtype): numpy arrays
        for numbers, str for char[], one numpy array per row for arrays."""
        out = {}
        for f in self.fields:
            name = self.column(f)
            out[name + suffix] = decode_field(f, records[name])
        return out

    def decode_one(self, record: np.ndarray):
        """One key or value: int/float for a scalar, a dict of fields for a struct."""
        cols = self.decode(record.reshape(1))
        values = {k: _python(v[0]) for k, v in cols.items()}
        return values[self.role] if self.scalar else values

    # -- encoding
    def pack(self, value, what: str, base: np.ndarray | None = None) -> np.ndarray:
        """VALUE (int, tuple, dict of fields, or bytes) as one record; errors name
        the field. Fields a dict leaves out are BASE's (a record), else zero."""
        rec = np.zeros(1, self.dtype) if base is None else base.reshape(1).copy()
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            if len(raw) != self.size:
                raise ValueError(f"{what}: {len(raw)} bytes given, the {self.role} has {self.size}")
            rec.view(np.uint8)[: self.size] = np.frombuffer(raw, np.uint8)
            return rec
        if self.scalar:
            if isinstance(value, (tuple, list, dict)) and self.fields[0].kind != "bytes" and not self.fields[0].shape:
                raise TypeError(f"{what}: the {self.role} is a single {_describe(self.fields[0])}, not a {type(value).__name__}")
            _set_field(rec, self.fields[0], self.role, value, what)
            return rec
        if isinstance(value, dict):
            flat = _flatten_dict(value)
            unknown = [k for k in flat if k not in self.columns]
            if unknown:
                raise KeyError(f"{what}: no field {unknown[0]!r} in the {self.role} (fields: {', '.join(self.columns)})")
            items = flat.items()
        elif isinstance(value, (tuple, list)):
            if len(value) != len(self.fields):
                raise ValueError(f"{what}: {len(value)} values given, the {self.role} has {len(self.fields)} fields ({', '.join(self.columns)})")
            items = zip(self.columns, value)
        else:
            raise TypeError(
                f"{what}: the {self.role} is a struct ({', '.join(self.columns)}): give a dict, a tuple or bytes, not {type(value).__name__}"
            )
        by_name = {self.column(f): f for f in self.fields}
        for name, v in items:
            _set_field(rec, by_name[name], name, v, what)
        return rec

    def pack_columns(self, columns: dict, n: int, what: str, out: np.ndarray | None = None) -> np.ndarray:
        """Records from whole columns (numpy/pandas), checked per column."""
        recs = np.zeros(n, self.dtype) if out is None else out
        for f in self.fields:
            name = self.column(f)
            _set_column(recs, f, name, columns[name], what)
        return recs


def decode_field(f: Field, values: np.ndarray):
    if f.bits:
        raw = values.astype(np.uint64) >> np.uint64(f.bit_offset)
        raw &= np.uint64((1 << f.bits) - 1)
        if f.kind == "int":
            sign = np.uint64(1 << (f.bits - 1))
            return ((raw ^ sign).astype(np.int64) - np.int64(1 << (f.bits - 1))).astype(f.base)
        return raw.astype(f.base)
    if f.kind == "str":
        from .events.records import decode_cstrings

        if not f.shape:
            return decode_cstrings(values)
        flat = np.asarray(decode_cstrings(values.reshape(-1)), dtype=object).reshape(values.shape)
        return list(flat)
    if f.kind == "bytes":
        width = f.size
        raw = np.ascontiguousarray(values).tobytes()
        return np.array([raw[i : i + width] for i in range(0, len(raw), width)], dtype=object)
    if f.shape:
        copy = np.array(values)  # compact, and independent of the read buffer
        col = np.empty(len(copy), dtype=object)
        col[:] = list(copy)
        return col
    return values


def _python(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


def _describe(f: Field) -> str:
    if f.kind == "str":
        return f"char[{f.size}]"
    bits = f"{f.bits}-bit " if f.bits else ""
    text = {
        "int": f"{bits}signed {f.size * 8}-bit int",
        "uint": f"{bits}unsigned {f.size * 8}-bit int",
        "float": f"{f.size * 8}-bit float",
        "bool": "bool",
    }.get(f.kind, f"{f.size} bytes")
    return text + "".join(f"[{d}]" for d in f.shape)


def _int_range(f: Field) -> tuple[int, int]:
    bits = f.bits or f.size * 8
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if f.kind == "int" else (0, (1 << bits) - 1)


def _flatten_dict(value: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in value.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten_dict(v, name))
        else:
            out[name] = v
    return out


def _set_field(rec: np.ndarray, f: Field, name: str, v, what: str) -> None:
    where = f"{what}: field {name!r} ({_describe(f)})" if f.name else f"{what}: {name} ({_describe(f)})"
    col = name
    if f.kind == "str":
        strings = np.asarray(v, dtype=object) if f.shape else np.array([v], dtype=object)
        if f.shape and strings.shape != f.shape:
            raise ValueError(f"{where}: needs {f.shape} strings, got {v!r}")
        encoded = []
        for text in strings.reshape(-1):
            raw = text.encode() if isinstance(text, str) else text
            if not isinstance(raw, (bytes, bytearray)):
                raise TypeError(f"{where}: expects str or bytes, got {type(text).__name__}")
            if len(raw) > f.size:
                raise ValueError(f"{where}: {len(raw)} bytes do not fit in {f.size}")
            encoded.append(bytes(raw))
        rec[col][0] = np.array(encoded, dtype=f"S{f.size}").reshape(f.shape) if f.shape else encoded[0]
        return
    if f.kind == "bytes":
        if not isinstance(v, (bytes, bytearray)) or len(v) != f.nbytes:
            raise TypeError(f"{where}: expects {f.nbytes} bytes, got {v!r}")
        rec[col][0] = np.frombuffer(bytes(v), f"V{f.nbytes}")[0] if not f.shape else v
        return
    if f.shape:
        arr = np.asarray(v)
        if arr.shape != f.shape:
            raise ValueError(f"{where}: expects shape {f.shape}, got {arr.shape}")
        _check_numbers(arr, f, where)
        rec[col][0] = arr
        return
    if isinstance(v, (bool, np.bool_)) and f.kind != "bool":
        v = int(v)
    if f.kind == "float":
        if not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{where}: expects a number, got {type(v).__name__} {v!r}")
    elif not isinstance(v, (int, np.integer, bool, np.bool_)):
        raise TypeError(f"{where}: expects an int, got {type(v).__name__} {v!r}")
    else:
        lo, hi = _int_range(f) if f.kind != "bool" else (0, 1)
        if not lo <= int(v) <= hi:
            raise ValueError(f"{where}: {v} is out of range {lo}..{hi}")
    if f.bits:
        mask = (1 << f.bits) - 1
        unit = int(rec[col][0]) & ~(mask << f.bit_offset)
        rec[col][0] = unit | ((int(v) & mask) << f.bit_offset)
    else:
        rec[col][0] = v


def _check_numbers(arr: np.ndarray, f: Field, where: str) -> None:
    if f.kind == "float":
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"{where}: expects numbers, got {arr.dtype}")
        return
    if arr.dtype == bool:
        return
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return _check_numbers(arr.astype(np.int64), f, where)
        raise TypeError(f"{where}: expects integers, got values of type {arr.dtype}")
    if arr.size:
        lo, hi = _int_range(f)
        small, big = int(arr.min()), int(arr.max())
        if small < lo or big > hi:
            raise ValueError(f"{where}: values {small}..{big} are out of range {lo}..{hi}")


def _set_column(recs: np.ndarray, f: Field, name: str, column, what: str) -> None:
    where = f"{what}: column {name!r} ({_describe(f)})"
    target = recs[name]
    values = column.to_numpy() if hasattr(column, "to_numpy") else np.asarray(column)
    if f.kind == "str":
        encoded = [v.encode() if isinstance(v, str) else bytes(v) for v in values]  # str -> bytes needs Python
        longest = max(map(len, encoded), default=0)
        if longest > f.size:
            raise ValueError(f"{where}: a value of {longest} bytes does not fit in {f.size}")
        target[...] = np.array(encoded, dtype=f"S{f.size}") if encoded else target
        return
    if f.kind == "bytes":
        raw = b"".join(bytes(v) for v in values)
        if len(raw) != f.nbytes * len(values):
            raise ValueError(f"{where}: each value must be {f.nbytes} bytes")
        target[...] = np.frombuffer(raw, f"V{f.nbytes}").reshape(target.shape)
        return
    if f.shape:
        values = np.stack(list(values)) if len(values) else np.zeros((0, *f.shape))
        if values.shape[1:] != f.shape:
            raise ValueError(f"{where}: each value needs shape {f.shape}, got {values.shape[1:]}")
    if values.dtype == object:
        try:
            values = values.astype(np.float64 if f.kind == "float" else np.int64)
        except (TypeError, ValueError, OverflowError):
            raise TypeError(f"{where}: expects {'numbers' if f.kind == 'float' else 'integers'}") from None
    _check_numbers(values, f, where)
    if f.bits:
        mask = np.uint64((1 << f.bits) - 1)
        unit = target.astype(np.uint64) & ~(mask << np.uint64(f.bit_offset))
        target[...] = unit | ((values.astype(np.int64).astype(np.uint64) & mask) << np.uint64(f.bit_offset))
    else:
        target[...] = values


# ------------------------------------------------------------------ raw kernel reads


class ReadStats:
    """How the last read went: method (batch / get_next_key / lookup / peek), syscalls, entries, seconds."""

    def __init__(self, method: str = ""):
        self.method, self.syscalls, self.entries, self.seconds = method, 0, 0, 0.0

    def as_dict(self) -> dict:
        return {"method": self.method, "syscalls": self.syscalls, "entries": self.entries, "seconds": self.seconds}

    def __repr__(self) -> str:
        return f"<read {self.entries} entries by {self.method}: {self.syscalls} syscalls, {self.seconds * 1e3:.1f} ms>"


class _NoBatch(Exception):
    pass


def batch_read(fd: int, key_size: int, value_bytes: int, max_entries: int, stats: ReadStats):
    """Every entry by BPF_MAP_LOOKUP_BATCH: (keys, values) as uint8 arrays of
    shape (n, key_size) and (n, value_bytes). Raises _NoBatch when the map
    type has no batch op."""
    lib = _lib()
    per_entry = key_size + value_bytes
    cap = max(1, min(max_entries, READ_BUFFER_BYTES // max(per_entry, 1)))
    token = max(key_size, 8)  # the batch cursor: a u32 bucket for hashes, a key for arrays
    cursor_in, cursor_out = np.zeros(token, np.uint8), np.zeros(token, np.uint8)
    opts = BatchOpts(sz=ct.sizeof(BatchOpts))
    key_chunks, value_chunks = [], []
    first, total = True, 0
    count = ct.c_uint32()
    while True:
        keys = np.empty((cap, key_size), np.uint8)
        values = np.empty((cap, value_bytes), np.uint8)
        count.value = cap
        ret = lib.bpf_map_lookup_batch(
            fd, None if first else _ptr(cursor_in), _ptr(cursor_out), _ptr(keys), _ptr(values), ct.byref(count), ct.byref(opts)
        )
        stats.syscalls += 1
        err, n = _err(ret), count.value
        if err and err != _errno.ENOENT and n == 0:
            if first and err in _NO_OP:
                raise _NoBatch(err)
            if err == _errno.ENOSPC:  # one hash bucket holds more than the buffer: grow it
                cap *= 2
                continue
            raise OSError(err, f"BPF_MAP_LOOKUP_BATCH: {_errno.errorcode.get(err, err)}")
        if n:
            key_chunks.append(keys[:n])
            value_chunks.append(values[:n])
            total += n
        if err == _errno.ENOENT or (n == 0 and not err):
            break
        if err:  # a failure after some entries (the kernel's ENOSPC comes only with none)
            raise OSError(err, f"BPF_MAP_LOOKUP_BATCH: {_errno.errorcode.get(err, err)}")
        first = False  # more to come: resume from the cursor
        cursor_in[:] = cursor_out
        if total >= max_entries:  # a full array: the next call would only say ENOENT
            break
    if len(key_chunks) == 1:
        return key_chunks[0], value_chunks[0]
    if not key_chunks:
        return np.empty((0, key_size), np.uint8), np.empty((0, value_bytes), np.uint8)
    return np.concatenate(key_chunks), np.concatenate(value_chunks)


def walk_read(fd: int, key_size: int, value_bytes: int, stats: ReadStats):
    """Every entry by get_next_key + lookup (map types without a batch op)."""
    lib = _lib()
    keys, values = [], []
    prev, key = None, np.zeros(key_size, np.uint8)
    value = np.empty(value_bytes, np.uint8)
    while True:
        ret = lib.bpf_map_get_next_key(fd, _ptr(prev), _ptr(key))
        stats.syscalls += 1
        err = _err(ret)
        if err == _errno.ENOENT:
            break
        if err:
            raise OSError(err, f"get_next_key: {_errno.errorcode.get(err, err)}")
        ret = lib.bpf_map_lookup_elem(fd, _ptr(key), _ptr(value))
        stats.syscalls += 1
        if _err(ret) == 0:  # deleted between the two calls: skip it
            keys.append(key.copy())
            values.append(value.copy())
        prev = key.copy()
    if not keys:
        return np.empty((0, key_size), np.uint8), np.empty((0, value_bytes), np.uint8)
    return np.stack(keys), np.stack(values)


# ------------------------------------------------------------------ the view


def _holding_the_map(method):
    """Run a MapView method under the session's lock on a live map: another
    thread's re-run, unload or reset closes the map's fd under that lock, and
    a closed fd number may already name another map."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self.session.lock:
            self._live()
            return method(self, *args, **kwargs)

    return locked


class MapView:
    """One map of one loaded module (see the module docstring).

    Per-CPU maps: ``df()`` has one column per CPU (``value.cpu0``, ...; a
    struct's ``n.cpu0``, ...), ``df(sum=True)`` sums the numeric fields over
    CPUs (arrays element-wise; strings and bytes are CPU 0's); ``view[key]`` is a list with one value per CPU; ``view[key] = v``
    writes V on every CPU, a list of one value per CPU sets each.
    """

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
        self.globals = self.table not in module.tables and self.table in global_sections(module)
        self.map_name = global_sections(module)[self.table] if self.globals else self.table
        if not self.globals and self.table not in module.tables:
            raise NotFound(
                f"{module.name} has no table {self.table!r} (tables: {', '.join(module.tables) or 'none'})", "table", self.table, tuple(module.tables)
            )
        handle = module.object.map_handle(self.map_name)
        self._module = module
        self.fd = handle.fd
        info = libbpf.fdinfo(self.fd)
        self.map_type = int(info["map_type"])
        self.key_size, self.value_size = int(info["key_size"]), int(info["value_size"])
        self.max_entries = int(info["max_entries"])
        self.map_id = int(info.get("map_id", 0))
        self.percpu = self.map_type in PERCPU_TYPES
        self.ncpu = libbpf.num_possible_cpus() if self.percpu else 1
        self.stride = (self.value_size + 7) // 8 * 8 if self.percpu else self.value_size
        key_fields, value_fields = self._types(module, handle)
        self.key = Layout(key_fields, self.key_size, "key")
        self.value = Layout(value_fields, self.value_size, "value", itemsize=self.stride)
        clash = set(self.key.columns) & set(self.value.columns)
        if clash and not self.value.scalar:  # a field named like a key field: keep both apart
            for f in self.value.fields:
                f.name = f"value.{f.name}"
            self.value = Layout(value_fields, self.value_size, "value", itemsize=self.stride)

    def _types(self, module, handle) -> tuple[list[Field], list[Field]]:
        key_fields = value_fields = None
        btf = module.object.btf()  # libbpf: the object's BTF; BCC: the ctypes Key/Leaf of the handle
        kid, vid = handle.btf_key_type_id, handle.btf_value_type_id
        if btf is not None and kid and btf.size_of(kid) == self.key_size:
            key_fields = btf.fields(kid)
        if btf is not None and vid and btf.size_of(vid) == self.value_size:
            value_fields = btf.fields(vid)
        if key_fields is None and handle.key_ctype is not None and ct.sizeof(handle.key_ctype) == self.key_size:
            key_fields = ctypes_fields(handle.key_ctype)
        if value_fields is None and handle.leaf_ctype is not None and ct.sizeof(handle.leaf_ctype) == self.value_size:
            value_fields = ctypes_fields(handle.leaf_ctype)
        if self.map_type in ARRAY_TYPES | {PROG_ARRAY} and self.key_size == 4:
            key_fields = [Field("", 0, "uint", 4)]  # BCC types array indices as int
        if self.key_size == 0:  # queues and stacks have no key
            key_fields = []
        return (raw_fields(self.key_size) if key_fields is None else key_fields, value_fields or raw_fields(self.value_size))

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
        return TYPE_NAMES.get(self.map_type, f"type {self.map_type}")

    @property
    def columns(self) -> list[str]:
        if self.percpu:
            return self.key.columns + [f"{c}.cpu{i}" for c in self.value.columns for i in range(self.ncpu)]
        return self.key.columns + self.value.columns

    def __repr__(self) -> str:
        return (
            f"<bpfmagic map {self.name} ({self.type_name}, {self.max_entries} entries max, "
            f"key {', '.join(self.key.columns)}; value {', '.join(self.value.columns)})>"
        )

    # -------------------------------------------------- reading
    def _session_array(self):
        for array in self.session.arrays.values():
            with _suppress_os():
                if int(libbpf.fdinfo(array.fd)["map_id"]) == self.map_id:
                    return array
        return None

    @_holding_the_map
    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """One pass over the map: (keys, values) as structured arrays of the
        key and value dtypes; values have shape (n, ncpu) for per-CPU maps.
        ``last_read`` says how (method, syscalls)."""
        self._live()
        if self.map_type in (RINGBUF, PERF_EVENT_ARRAY):
            raise UsageProblem(f"{self.name} is an event table ({self.type_name}): its records are a stream, see %bpf df {self.table}")
        stats = ReadStats()
        start = time.perf_counter()
        value_bytes = self.stride * self.ncpu
        if self.map_type in (QUEUE, STACK):
            stats.method = "peek"
            keys, values = None, np.empty((1, value_bytes), np.uint8)  # no keys: the head only
            ret = _lib().bpf_map_lookup_elem(self.fd, None, _ptr(values))
            stats.syscalls += 1
            if _err(ret) == _errno.ENOENT:
                values = values[:0]
            elif _err(ret):
                raise OSError(_err(ret), f"{self.name}: peek failed")
        elif self.map_type == PROG_ARRAY:
            stats.method = "lookup"
            keys, values = self._read_prog_array(stats)
        else:
            try:
                if self.map_type not in BATCH_TYPES:
                    raise _NoBatch()
                stats.method = "batch"
                keys, values = batch_read(self.fd, self.key_size, value_bytes, self.max_entries, stats)
            except _NoBatch:
                stats.method = "get_next_key"
                keys, values = walk_read(self.fd, self.key_size, value_bytes, stats)
        stats.entries = len(values)
        stats.seconds = time.perf_counter() - start
        self.last_read = stats
        value_records = _records(values, self.value.dtype)
        if self.percpu:
            value_records = value_records.reshape(len(values), self.ncpu)
        if keys is None:
            return None, value_records
        return _records(keys, self.key.dtype), value_records

    def _read_prog_array(self, stats: ReadStats):
        # a prog array holds prog ids (as the kernel reports them to user space); empty slots are ENOENT
        lib = _lib()
        keys, values = [], []
        k, v = np.zeros(1, np.uint32), np.zeros(1, np.uint32)
        for index in range(self.max_entries):
            k[0] = index
            ret = lib.bpf_map_lookup_elem(self.fd, _ptr(k), _ptr(v))
            stats.syscalls += 1
            if _err(ret) == 0:
                keys.append(index)
                values.append(int(v[0]))
        return (np.array(keys, np.uint32).view(np.uint8).reshape(-1, 4), np.array(values, np.uint32).view(np.uint8).reshape(-1, 4))

    @_holding_the_map
    def df(self, sum: bool = False, sort: str | None = None, top: int | None = None):
        """DataFrame of every entry: key columns, then value columns (per CPU
        or, with ``sum``, summed). ``sort``: by that column, largest first;
        ``top``: only the first N rows after sorting (by the first numeric
        value column when ``sort`` is not given). ``df.attrs["read"]``: how it was read."""
        import pandas as pd

        if self.map_type == PROG_ARRAY:
            array = self._session_array()
            if array is not None:  # the session's own array: named slots, programs, counts
                frame = self.session.slots(array.name)
                return _order(frame, sort, top, self.name)
        keys, values = self.read()
        # a global-variable section is one value: its variables are the columns
        columns = {} if keys is None or self.globals else self.key.decode(keys)
        if self.percpu:
            for f in self.value.fields:
                name = self.value.column(f)
                per_cpu = values[name]
                if sum and f.numeric:
                    columns[name] = decode_field(f, per_cpu).sum(axis=1)
                elif sum and f.kind in ("int", "uint", "float") and not f.bits:  # arrays: element-wise
                    columns[name] = decode_field(f, per_cpu.sum(axis=1))
                elif sum:  # strings, bytes: CPU 0's
                    columns[name] = decode_field(f, per_cpu[:, 0])
                else:
                    for cpu in range(self.ncpu):
                        columns[f"{name}.cpu{cpu}"] = decode_field(f, per_cpu[:, cpu])
        else:
            columns.update(self.value.decode(values))
        if self.map_type == PROG_ARRAY:
            programs = {}
            for m in self.session.modules.values():
                for p in m.programs.values():
                    with _suppress_os():
                        programs[p.prog_id] = p.qualname
            columns["program"] = np.array([programs.get(int(i)) for i in columns["value"]], dtype=object)
            columns["prog_id"] = columns.pop("value")
        frame = pd.DataFrame(columns)
        frame = _order(frame, sort, top, self.name, default=self._first_numeric(frame))
        frame.attrs["read"] = self.last_read.as_dict()
        frame.attrs["map"] = self.name
        return frame

    def _first_numeric(self, frame) -> str | None:
        keys = set(self.key.columns)
        for col in frame.columns:
            if col not in keys and frame[col].dtype.kind in "iuf":
                return col
        return None

    @_holding_the_map
    def __len__(self) -> int:
        return len(self.read()[1])  # values: queues and stacks have no keys

    def __contains__(self, key) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    @_holding_the_map
    def __getitem__(self, key):
        if self.globals and isinstance(key, str):  # view["counter"]: one global variable
            values = self[0]
            if key not in values:
                raise NotFound(f"{self.name} has no variable {key!r} (variables: {', '.join(values)})", "variable", key, tuple(values))
            return values[key]
        k = self._pack_key(key)
        buf = np.zeros(self.ncpu, self.value.dtype)
        ret = _lib().bpf_map_lookup_elem(self.fd, _ptr(k), _ptr(buf))
        err = _err(ret)
        if err == _errno.ENOENT:
            raise KeyError(key)
        if err:
            raise OSError(err, f"{self.name}[{key!r}]: lookup failed")
        decoded = [self.value.decode_one(buf[i]) for i in range(self.ncpu)]
        return decoded if self.percpu else decoded[0]

    # -------------------------------------------------- writing
    def _pack_key(self, key) -> np.ndarray:
        if self.map_type in (QUEUE, STACK):
            raise UsageProblem(f"{self.name} is a {self.type_name}: it has no keys (use .push(value), .peek())")
        return self.key.pack(key, f"{self.name} key")

    def _pack_value(self, value) -> np.ndarray:
        what = f"{self.name} value"
        if not self.percpu:
            return self.value.pack(value, what)
        if isinstance(value, list) and len(value) == self.ncpu:
            out = np.zeros(self.ncpu, self.value.dtype)  # (np.concatenate would drop the 8-byte stride)
            for i, v in enumerate(value):
                out[i] = self.value.pack(v, f"{what} (CPU {i})")[0]
            return out
        one = self.value.pack(value, what)
        return np.repeat(one, self.ncpu)

    def _writable(self) -> None:
        self._live()
        if self.map_type == PROG_ARRAY:
            raise UsageProblem(f"{self.name} is a prog array: fill slots with %bpf slot / Session.slot")
        if self.map_type in (RINGBUF, PERF_EVENT_ARRAY):
            raise UsageProblem(f"{self.name} is an event table ({self.type_name}): it cannot be written")

    @_holding_the_map
    def __setitem__(self, key, value) -> None:
        """Write VALUE at KEY. A dict that names some fields of a struct value
        keeps the others as they are (read, then written: not atomic against
        the program). Global variables: ``view["counter"] = 5``."""
        self._writable()
        if self.globals and isinstance(key, str):
            key, value = 0, {key: value}
        k = self._pack_key(key)
        base = None
        if isinstance(value, dict) and not self.value.scalar and not self.percpu:
            current = np.zeros(1, self.value.dtype)
            if _err(_lib().bpf_map_lookup_elem(self.fd, _ptr(k), _ptr(current))) == 0:
                base = current
        v = self.value.pack(value, f"{self.name} value", base) if base is not None else self._pack_value(value)
        err = _err(_lib().bpf_map_update_elem(self.fd, _ptr(k), _ptr(v), libbpf.BPF_ANY))
        if err == _errno.EPERM and self.globals:
            raise UsageProblem(f"{self.name} is frozen at load (.rodata: const volatile): set it before loading, with --set VAR=VALUE")
        if err == _errno.E2BIG and self.map_type in ARRAY_TYPES:  # an array is never full: the kernel's E2BIG is an index past its end
            raise UsageProblem(f"{self.name}[{key!r}]: past the end of {self.name}, {self._array_extent()}")
        if err == _errno.E2BIG:
            raise UsageProblem(f"{self.name} is full ({self.max_entries} entries): {key!r} cannot be added")
        if err:
            raise OSError(err, f"{self.name}[{key!r}] = ...: {_errno.errorcode.get(err, err)}")

    def _array_extent(self) -> str:
        return f"an array of {self.max_entries} elements (keys 0 to {self.max_entries - 1}): its size is fixed at load"

    @_holding_the_map
    def push(self, value) -> None:
        """Queue/stack: add VALUE."""
        self._writable()
        v = self.value.pack(value, f"{self.name} value")
        err = _err(_lib().bpf_map_update_elem(self.fd, None, _ptr(v), libbpf.BPF_ANY))
        if err:
            raise OSError(err, f"{self.name}.push: {_errno.errorcode.get(err, err)}")

    @_holding_the_map
    def peek(self):
        """Queue/stack: the next value (None when empty), left in place."""
        _, values = self.read()
        return self.value.decode_one(values[0]) if len(values) else None

    @_holding_the_map
    def __delitem__(self, key) -> None:
        self._writable()
        if self.map_type in ARRAY_TYPES:
            raise UsageProblem(f"{self.name} is an array: its elements cannot be deleted, only set (to 0 with view[{key!r}] = 0; all with .clear())")
        err = _err(_lib().bpf_map_delete_elem(self.fd, _ptr(self._pack_key(key))))
        if err == _errno.ENOENT:
            raise KeyError(key)
        if err:
            raise OSError(err, f"del {self.name}[{key!r}]: {_errno.errorcode.get(err, err)}")

    @_holding_the_map
    def clear(self) -> int:
        """Delete every entry (arrays: set every element to zero; queues and
        stacks: pop them all). Returns how many entries there were."""
        self._writable()
        lib = _lib()
        if self.map_type in (QUEUE, STACK):
            buf, n = np.zeros(self.value_size, np.uint8), 0
            while _err(lib.bpf_map_lookup_and_delete_elem(self.fd, None, _ptr(buf))) == 0:
                n += 1
            return n
        if self.map_type in ARRAY_TYPES:
            keys = np.arange(self.max_entries, dtype=np.uint32)
            values = np.zeros(self.max_entries * self.ncpu, self.value.dtype)
            self._update_batch(keys.view(np.uint8).reshape(-1, 4), values)
            return self.max_entries
        keys, _ = self.read()
        raw = keys.view(np.uint8).reshape(len(keys), -1)[:, : self.key_size] if len(keys) else keys
        raw = np.ascontiguousarray(raw)
        count = ct.c_uint32(len(keys))
        opts = BatchOpts(sz=ct.sizeof(BatchOpts))
        err = _err(lib.bpf_map_delete_batch(self.fd, _ptr(raw), ct.byref(count), ct.byref(opts))) if len(keys) else 0
        if err in _NO_OP:  # LPM tries: one key at a time
            for i in range(len(raw)):
                lib.bpf_map_delete_elem(self.fd, _ptr(raw[i]))
        elif err and err != _errno.ENOENT:
            raise OSError(err, f"{self.name}.clear: {_errno.errorcode.get(err, err)}")
        return len(keys)

    @_holding_the_map
    def from_df(self, frame) -> int:
        """Write every row of FRAME (columns named as ``df()`` names them: key
        fields, then value fields; per-CPU maps take ``F.cpuN`` columns or one
        ``F`` column for every CPU). One BPF_MAP_UPDATE_BATCH where the map type
        has it. Returns the number of rows written."""
        self._writable()
        import pandas as pd

        if not isinstance(frame, pd.DataFrame):
            columns = ", ".join(self.key.columns + self.value.columns)
            raise UsageProblem(
                f"{self.name}.from_df takes a pandas DataFrame with the columns df() shows ({columns}), not a {type(frame).__name__}: "
                f"pd.DataFrame(rows, columns=[...]) makes one; single entries are written with {self.name}[key] = value"
            )
        if frame.columns.empty:
            raise UsageProblem(
                f"{self.name}.from_df: the frame has no columns (and {len(frame)} rows); it needs "
                f"{', '.join(self.key.columns + self.value.columns)}, as df() shows them"
            )
        if self.map_type in (QUEUE, STACK):
            for _, row in frame.iterrows():
                self.push(row.to_dict() if not self.value.scalar else row[self.value.role])
            return len(frame)
        n = len(frame)
        missing = [c for c in self.key.columns if c not in frame.columns]
        if missing:
            raise UsageProblem(f"{self.name}.from_df: no column {missing[0]!r} for the key (key columns: {', '.join(self.key.columns)})")
        sources = {}  # (field's position, cpu) -> the frame's column
        for i, f in enumerate(self.value.fields):
            name = self.value.column(f)
            for cpu in range(self.ncpu):
                column = f"{name}.cpu{cpu}" if self.percpu and f"{name}.cpu{cpu}" in frame.columns else name
                if column not in frame.columns:
                    raise UsageProblem(f"{self.name}.from_df: no column {column!r} for the value (value columns: {', '.join(self.value.columns)})")
                sources[i, cpu] = column
        if n == 0:
            return 0  # the columns are right and there is nothing to write
        keys = self.key.pack_columns({c: frame[c] for c in self.key.columns}, n, f"{self.name}.from_df")
        values = np.zeros((n, self.ncpu), self.value.dtype)
        for i, f in enumerate(self.value.fields):
            for cpu in range(self.ncpu):
                _set_column(values[:, cpu], f, self.value.column(f), frame[sources[i, cpu]], f"{self.name}.from_df")
        raw_keys = np.ascontiguousarray(keys).view(np.uint8).reshape(n, -1)[:, : self.key_size]
        if self.map_type in ARRAY_TYPES and self.key_size == 4:  # refused before anything is written
            index = np.ascontiguousarray(raw_keys).view(np.uint32).reshape(-1)
            past = np.flatnonzero(index >= self.max_entries)
            if past.size:
                raise UsageProblem(
                    f"{self.name}.from_df: row {past[0]} has key {index[past[0]]}, past the end of {self.name}, "
                    f"{self._array_extent()}; nothing was written ({past.size} of {n} rows are past the end)"
                )
        self._update_batch(np.ascontiguousarray(raw_keys), values.reshape(-1))
        return n

    def _update_batch(self, raw_keys: np.ndarray, values: np.ndarray) -> None:
        lib = _lib()
        n = len(raw_keys)
        if n == 0:
            return
        count = ct.c_uint32(n)
        opts = BatchOpts(sz=ct.sizeof(BatchOpts))
        err = (
            _err(lib.bpf_map_update_batch(self.fd, _ptr(raw_keys), _ptr(values), ct.byref(count), ct.byref(opts)))
            if self.map_type in BATCH_TYPES
            else _errno.EINVAL
        )
        if err in _NO_OP and count.value in (0, n):  # no batch op here: one entry at a time
            per = self.ncpu
            for i in range(n):
                e = _err(lib.bpf_map_update_elem(self.fd, _ptr(raw_keys[i]), _ptr(values[i * per : (i + 1) * per]), libbpf.BPF_ANY))
                if e:
                    raise _write_error(self, e, i)
        elif err:
            raise _write_error(self, err, count.value)

    # -------------------------------------------------- histograms
    @_holding_the_map
    def hist(self):
        """A log2 histogram (BCC's BPF_HISTOGRAM with bpf_log2l / .increment):
        DataFrame of bucket, low, high, count, as print_log2_hist prints it,
        every bucket from the lowest to the highest non-empty one. A struct key
        with a ``slot`` field gives one histogram per value of the other key
        fields (sections), over the same bucket range."""
        import pandas as pd

        frame = self.df(sum=True)
        if not self.value.scalar or self.value.fields[0].kind not in ("int", "uint"):
            raise UsageProblem(f"{self.name}: a histogram needs integer counts as values")
        slot = "slot" if "slot" in frame.columns else (self.key.columns[0] if self.key.scalar else None)
        if slot is None:
            raise UsageProblem(f"{self.name}: a histogram needs an integer key or a key field named slot")
        sections = [c for c in self.key.columns if c != slot]
        frame = frame.rename(columns={slot: "bucket", "value": "count"})
        frame = frame.groupby(sections + ["bucket"], as_index=False)["count"].sum()
        nonzero = frame[frame["count"] > 0]
        lo_b, hi_b = (int(nonzero["bucket"].min()), int(nonzero["bucket"].max())) if len(nonzero) else (0, -1)
        # every bucket of the range in every section, empty ones as 0 (a hash holds only the hit ones)
        buckets = pd.DataFrame({"bucket": np.arange(lo_b, hi_b + 1, dtype=frame["bucket"].dtype)})
        grid = nonzero[sections].drop_duplicates().merge(buckets, how="cross") if sections else buckets
        frame = grid.merge(frame, on=sections + ["bucket"], how="left")
        frame["count"] = frame["count"].fillna(0).astype(np.uint64)
        bucket = frame["bucket"].to_numpy().astype(np.int64)
        # bucket i holds the values v with bpf_log2l(v) == i: 2^(i-1) .. 2^i - 1, except that
        # bpf_log2l(0) is 1 too, so bucket 1 is 0..1 (print_log2_hist's "0 -> 1")
        one = np.uint64(1)
        low = np.where(bucket <= 1, 0, one << np.maximum(bucket - 1, 0).astype(np.uint64)).astype(np.uint64)
        high = np.where(bucket == 0, 0, (one << bucket.astype(np.uint64)) - one).astype(np.uint64)
        out = pd.DataFrame(
            {**{c: frame[c].to_numpy() for c in sections}, "bucket": bucket, "low": low, "high": high, "count": frame["count"].to_numpy()}
        )
        out = out.sort_values(sections + ["bucket"], ignore_index=True)
        out.attrs["map"] = self.name
        return out

    def plot_hist(self, ax=None, hist=None):
        """The log2 histogram as a matplotlib bar chart (one per section); returns the Figure."""
        from matplotlib.figure import (
            Figure,  # no pyplot: no GUI backend, no global figure state
        )

        if ax is None:
            fig = Figure(figsize=(8, 3.5), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        df = self.hist() if hist is None else hist
        labels = [f"{lo}-{hi}" for lo, hi in zip(df["low"], df["high"])]
        sections = [c for c in df.columns if c not in ("bucket", "low", "high", "count")]
        if sections:
            for name, part in df.groupby(sections):
                ax.bar([f"{lo}-{hi}" for lo, hi in zip(part["low"], part["high"])], part["count"], alpha=0.6, label=str(name))
            ax.legend()
        else:
            ax.bar(labels, df["count"])
        ax.set_xlabel("value range (log2 buckets)")
        ax.set_ylabel("count")
        ax.set_title(self.name)
        ax.tick_params(axis="x", rotation=60)
        return fig


def _write_error(view: MapView, err: int, index: int) -> Exception:
    if err == _errno.E2BIG:
        return UsageProblem(f"{view.name} is full ({view.max_entries} entries): row {index} and later were not written")
    return OSError(err, f"{view.name}: writing row {index} failed: {_errno.errorcode.get(err, err)}")


def _records(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rows of bytes (a uint8 array of shape (n, width)) as structured records
    (ncpu records per row for per-CPU values), without copying."""
    if raw.size == 0:
        return np.zeros(0, dtype)
    return np.ascontiguousarray(raw).reshape(-1).view(dtype)


def _order(frame, sort: str | None, top: int | None, name: str, default: str | None = None):
    if sort is not None and sort not in frame.columns:
        raise UsageProblem(f"{name} has no column {sort!r} (columns: {', '.join(map(str, frame.columns))})")
    by = sort or (default if top is not None else None)
    if by is not None:
        frame = frame.sort_values(by, ascending=False, kind="stable", ignore_index=True)
    if top is not None:
        if top < 0:
            raise UsageProblem(f"--top must be 0 or more (got {top})")
        frame = frame.head(top)
    return frame


class _suppress_os:
    def __enter__(self):
        return self

    def __exit__(self, etype, value, tb):
        return etype is not None and issubclass(etype, (OSError, KeyError))


# ------------------------------------------------------------------ names


def global_sections(module) -> dict[str, str]:
    """A module's global-variable maps (--core): section name without the dot
    ("bss", "data", "rodata", "data.custom") -> the backend's map name."""
    return module.object.global_sections() if module.object is not None else {}


def find(session, name: str) -> MapView:
    """The map NAME: TABLE when only one module has it, else MODULE.TABLE."""
    mod_name, dot, table = name.partition(".")
    if dot:
        module = session.modules.get(mod_name)
        if module is None:
            raise NotFound(
                f"no module {mod_name!r} (modules: {', '.join(session.modules) or 'none'}); a map of an unloaded module is gone with it",
                "module",
                mod_name,
                tuple(session.modules),
            )
        return view_of(session, module, table)
    owners = [m for m in session.modules.values() if name in m.tables]
    if name in session.arrays:  # a session prog array, whichever cells declare it
        holder = owners[0] if owners else None
        if holder is not None:
            return MapView(session, holder, name)
        return SlotsView(session, name)
    if len(owners) == 1:
        return MapView(session, owners[0], name)
    if len(owners) > 1:
        raise UsageProblem(f"several modules have a table {name!r}: name one of {', '.join(f'{m.name}.{name}' for m in owners)}")
    known = [f"{m.name}.{t}" for m in session.modules.values() for t in m.tables]
    raise NotFound(f"no map {name!r}; maps: {', '.join(known) or 'none (no module is loaded)'}", "map", name, tuple(known))


def view_of(session, module, table: str) -> MapView:
    """The map TABLE of MODULE: a table, or (--core) a global-variable section (bss, data, rodata)."""
    table = table.lstrip(".")  # ".bss" and "bss" alike
    sections = global_sections(module)
    if table not in module.tables and table not in sections:
        names = module.tables + [f".{g}" for g in sections]
        raise NotFound(f"{module.name} has no table {table!r} (tables: {', '.join(names) or 'none'})", "table", table, tuple(names))
    return MapView(session, module, table)


class SlotsView:
    """A session prog array no loaded module declares: its slot view."""

    def __init__(self, session, name: str):
        self.session, self.name, self.table = session, name, name
        self.map_type = PROG_ARRAY

    def df(self, sum: bool = False, sort: str | None = None, top: int | None = None):
        return _order(self.session.slots(self.name), sort, top, self.name)

    def __repr__(self) -> str:
        return f"<bpfmagic prog array {self.name} (session slots)>"
