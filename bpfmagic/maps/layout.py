"""How the bytes of a map's keys and values become columns and Python values,
and back: a numpy structured dtype over the flat fields of the key or value
type (BTF for --core, BCC's ctypes Key/Leaf, raw bytes when there is none).

Values read one at a time (``view[key]``) are plain Python values that also
answer the spellings of BCC's ctypes values: an int has ``.value``, a struct
is a dict whose fields are attributes too; ctypes values are accepted on
writes. Code written against BCC's tables (``m["hits"][0].value``) keeps
working on the views."""

from __future__ import annotations

import ctypes as ct

import numpy as np

from ..kernel.fields import Field, btf_fields, ctypes_fields, raw_fields


class Number(int):
    """An integer read from a map; ``.value`` is the same int, as on BCC's ctypes values."""

    __slots__ = ()

    @property
    def value(self) -> int:
        return int(self)


class Real(float):
    """A floating-point number read from a map; ``.value`` is the same float."""

    __slots__ = ()

    @property
    def value(self) -> float:
        return float(self)


class Record(dict):
    """A struct read from a map: a dict of its fields (``"ip.ttl"`` for nested ones),
    each also an attribute (``v.packets``), as on BCC's ctypes structs."""

    __slots__ = ()

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no field {name!r} (fields: {', '.join(self)})") from None


def _readable(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return Number(v)
    if isinstance(v, (float, np.floating)):
        return Real(v)
    return v


def _from_ctypes(value):
    """A ctypes value (BCC's Key/Leaf types) as what Layout.pack takes: its number, or its bytes."""
    if isinstance(value, ct._SimpleCData):
        return value.value
    if isinstance(value, (ct.Structure, ct.Union, ct.Array)):
        return bytes(value)
    return value


def fields_of(handle, btf, index_keys: bool) -> tuple[list[Field], list[Field]]:
    """The key and value fields of the map HANDLE (backends.MapHandle): from BTF (libbpf's
    object BTF), else BCC's ctypes Key/Leaf, else raw bytes. INDEX_KEYS: u32 keys are indexes."""
    key_size, value_size = handle.key_size, handle.value_size
    key_fields = value_fields = None
    kid, vid = handle.btf_key_type_id, handle.btf_value_type_id
    if btf is not None and kid and btf.size_of(kid) == key_size:
        key_fields = btf_fields(btf, kid)
    if btf is not None and vid and btf.size_of(vid) == value_size:
        value_fields = btf_fields(btf, vid)
    if key_fields is None and handle.key_ctype is not None and ct.sizeof(handle.key_ctype) == key_size:
        key_fields = ctypes_fields(handle.key_ctype)
    if value_fields is None and handle.leaf_ctype is not None and ct.sizeof(handle.leaf_ctype) == value_size:
        value_fields = ctypes_fields(handle.leaf_ctype)
    if index_keys and key_size == 4:
        key_fields = [Field("", 0, "uint", 4)]  # BCC types array indices as int
    if key_size == 0:  # queues and stacks have no key
        key_fields = []
    return (raw_fields(key_size) if key_fields is None else key_fields, value_fields or raw_fields(value_size))


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
        return _readable(values[self.role]) if self.scalar else Record(values)

    # -- encoding
    def pack(self, value, what: str, base: np.ndarray | None = None) -> np.ndarray:
        """VALUE (int, tuple, dict of fields, or bytes) as one record; errors name
        the field. Fields a dict leaves out are BASE's (a record), else zero."""
        rec = np.zeros(1, self.dtype) if base is None else base.reshape(1).copy()
        value = _from_ctypes(value)
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
            set_column(recs, f, name, columns[name], what)
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
        from ..events.records import decode_cstrings

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


def set_column(recs: np.ndarray, f: Field, name: str, column, what: str) -> None:
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
