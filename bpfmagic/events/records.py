"""Record types of event tables: the struct an event table carries, as a
numpy dtype laid out like clang lays out the C struct, and its conversion
into DataFrame columns (``char[]`` as str).

Where the layout comes from is the backend's (backends/__init__.py): BCC
infers the struct from ``TABLE.ringbuf_output`` / ``perf_submit`` and
reports its fields (``event_fields``); for ``--core`` the cell's
``bpf_ringbuf_output(&TABLE, &VAR, ...)`` / ``bpf_ringbuf_reserve(&TABLE,
...)`` calls name the struct (:func:`bpfmagic.c.records.ring_record_types`)
and the object's BTF (``btf()``) gives its exact offsets and size."""

from __future__ import annotations

import re
from dataclasses import dataclass

try:
    import numpy as np
except ImportError:  # bpfmagic itself must import without numpy (the doctor runs on a bare python3)
    np = None

from ..c.records import ring_record_types, struct_layout
from ..c.records import typedefs as _resolve_typedefs
from ..kernel.structs import struct_members

# ------------------------------------------------------------ record types

_SCALARS = {
    "int8": ["char", "signed char", "s8", "__s8", "int8_t"],
    "uint8": ["unsigned char", "u8", "__u8", "uint8_t"],
    "bool": ["_Bool", "bool"],
    "int16": ["short", "short int", "signed short", "s16", "__s16", "int16_t"],
    "uint16": ["unsigned short", "unsigned short int", "u16", "__u16", "uint16_t", "__be16", "__le16", "__sum16"],
    "int32": ["int", "signed int", "signed", "s32", "__s32", "int32_t", "pid_t", "enum"],
    "uint32": ["unsigned int", "unsigned", "u32", "__u32", "uint32_t", "__be32", "__le32", "__wsum", "gfp_t", "uid_t", "gid_t", "dev_t"],
    "int64": ["long", "long int", "long long", "long long int", "signed long", "s64", "__s64", "int64_t", "ssize_t", "loff_t", "time64_t", "ktime_t"],
    "uint64": [
        "unsigned long",
        "unsigned long int",
        "unsigned long long",
        "unsigned long long int",
        "u64",
        "__u64",
        "uint64_t",
        "size_t",
        "__be64",
        "__le64",
        "uintptr_t",
        "sector_t",
    ],
    "float32": ["float"],
    "float64": ["double"],
    "int128": ["__int128", "__int128_t", "__s128", "s128"],
    "uint128": ["unsigned __int128", "__uint128_t", "__u128", "u128"],
}
_C_TO_NUMPY = {c: np_name for np_name, cs in _SCALARS.items() for c in cs}
_ARRAY_TYPE_RE = re.compile(r"^(.*?)\s*((?:\[\d+\])+)$")


@dataclass
class Field:
    name: str
    ctype: str  # as BCC reports it, e.g. "char[16]"
    kind: str  # "int", "float", "bool", "str", "array", "int128"
    base: np.dtype
    shape: tuple = ()


class RecordType:
    """The record struct of an event table as a numpy dtype laid out like
    clang lays out the C struct (natural alignment), and the conversion of
    raw records into DataFrame columns."""

    def __init__(self, fields: list[Field], packed: bool = False, layout: tuple[list[int], int] | None = None):
        """LAYOUT: (offsets, size) known exactly (from BTF): used as given."""
        self.fields = fields
        if layout is not None:
            offsets, size = layout
            self.dtype = np.dtype(
                {
                    "names": [f.name for f in fields],
                    "formats": [(f.base, f.shape) if f.shape else f.base for f in fields],
                    "offsets": list(offsets),
                    "itemsize": max(size, 1),
                }
            )
            return
        names, formats, offsets, offset, align = [], [], [], 0, 1
        for f in fields:
            fmt = (f.base, f.shape) if f.shape else f.base
            size = np.dtype(fmt).itemsize
            a = 1 if packed else _alignment(f)
            offset = (offset + a - 1) // a * a
            names.append(f.name)
            formats.append(fmt)
            offsets.append(offset)
            offset += size
            align = max(align, a)
        itemsize = (offset + align - 1) // align * align
        self.dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": max(itemsize, 1)})

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    def empty(self, n: int = 0) -> np.ndarray:
        return np.zeros(n, self.dtype)

    def empty_batch(self, n: int) -> ColumnBatch:
        """N uninitialised rows, one array per field (the decoder fills them)."""
        return ColumnBatch(column_arrays(n, {name: self.dtype.fields[name][0] for name in self.dtype.names}), n)

    def batch_of(self, records: np.ndarray) -> ColumnBatch:
        """A structured array of records as a ColumnBatch (each field copied once)."""
        return ColumnBatch({name: np.ascontiguousarray(records[name]) for name in self.dtype.names}, len(records))

    def records_of(self, batches) -> np.ndarray:
        """BATCHES (ColumnBatch or structured arrays) as one structured array of the C layout."""
        out = self.empty(sum(len(b) for b in batches))
        at = 0
        for b in batches:
            for name in self.dtype.names:
                out[name][at : at + len(b)] = b[name]
            at += len(b)
        return out

    def from_bytes(self, payloads: list[bytes]) -> np.ndarray:
        """Records of any length: shorter ones are zero-padded, longer ones cut."""
        size = self.itemsize
        raw = b"".join(p if len(p) == size else p[:size].ljust(size, b"\0") for p in payloads)
        return np.frombuffer(raw, self.dtype).copy()

    def frame(self, records):
        """DataFrame of RECORDS (a ColumnBatch or structured array, or a list
        of them): each column is copied once, straight from the batches."""
        import pandas as pd

        chunks = [records] if isinstance(records, (np.ndarray, ColumnBatch)) else list(records)
        n = sum(len(c) for c in chunks)
        # The scalar columns share one fresh buffer (column_arrays: fewer page faults); str and
        # array columns are converted from a temporary copy, which must not pin that buffer.
        scalars = column_arrays(n, {f.name: self.dtype.fields[f.name][0] for f in self.fields if f.kind in SCALAR_KINDS})
        columns = {f.name: self.column(chunks, f, scalars.get(f.name)) for f in self.fields}
        # copy=False: every column is a fresh array already (never the stream's own rows)
        return pd.DataFrame(columns, columns=self.columns, index=pd.RangeIndex(n), copy=False)

    def column(self, chunks: list[np.ndarray], f: Field, out: np.ndarray | None = None):
        """Field F of CHUNKS as one column, copied (into OUT when given: an array of the total length)."""
        import pandas as pd

        if not chunks:
            values = self.empty()[f.name]
        elif out is not None:
            values = out
            if len(chunks) == 1:
                np.copyto(out, chunks[0][f.name])
            else:
                np.concatenate([c[f.name] for c in chunks], out=out)
        elif len(chunks) == 1:
            values = chunks[0][f.name].copy()  # a copy even when contiguous: the frame must not share the stream's rows
        else:
            values = np.concatenate([c[f.name] for c in chunks])
        if f.kind == "str":
            return decode_cstrings(values)
        if f.kind in ("array", "int128"):
            return pd.Series(list(values), dtype=object)
        return values

    def arrow_schema(self):
        """The Arrow schema of the DataFrame ``frame`` makes (pandas metadata
        included, so a Parquet file reads back with the same dtypes)."""
        import pyarrow as pa

        # From one zeroed record, not from an empty frame: an empty str column has no
        # values to type it (Arrow says null) and every real batch would then fail to cast.
        return pa.Schema.from_pandas(self.frame(self.empty(1)), preserve_index=False)

    def arrow_table(self, records, schema):
        """RECORDS (a ColumnBatch or structured array, or a list of them) as
        an Arrow table of SCHEMA (``arrow_schema``), without pandas. A scalar
        column is one Arrow chunk per batch, made by Arrow from the batch's
        column (no numpy concatenate in between); str and array columns take
        the DataFrame's conversion."""
        import pyarrow as pa

        chunks = [records] if isinstance(records, (np.ndarray, ColumnBatch)) else [c for c in records if len(c)]
        columns = []
        for f, target in zip(self.fields, schema):
            if f.kind in SCALAR_KINDS and chunks:
                columns.append(pa.chunked_array([pa.array(c[f.name], type=target.type) for c in chunks], type=target.type))
            else:
                columns.append(pa.array(self.column(chunks, f), type=target.type, from_pandas=True))
        return pa.Table.from_arrays(columns, schema=schema)

    def __repr__(self) -> str:
        return f"<RecordType {self.itemsize} bytes: " + ", ".join(f"{f.name} {f.ctype}" for f in self.fields) + ">"


SCALAR_KINDS = ("int", "float", "bool")
HUGE_PAGE = 2 << 20
HUGE_PAGE_BUFFER = 4 * HUGE_PAGE  # from this size on, columns start on a huge page boundary


def column_arrays(n: int, dtypes: dict) -> dict:
    """Uninitialised arrays of N rows, one per name of DTYPES, carved out of
    one buffer (each column 64-byte aligned). Writing fresh memory costs a
    page fault per 4 KiB page; numpy asks for transparent huge pages on large
    arrays, but only the 2 MiB-aligned middle of a malloc'ed array gets them.
    So a large buffer is aligned to 2 MiB (its unused head is never touched,
    never backed). Measured here: 32 MB of columns written in 13.6 ms as five
    numpy arrays (3,700 faults), in 4.5 ms as one aligned buffer (150)."""
    dtypes = {name: np.dtype(dt) for name, dt in dtypes.items()}
    offsets, total = {}, 0
    for name, dt in dtypes.items():
        total = (total + 63) & ~63
        offsets[name] = total
        total += n * dt.itemsize
    pad = HUGE_PAGE if total >= HUGE_PAGE_BUFFER else 0
    raw = np.empty(total + pad, np.uint8)
    start = -raw.ctypes.data % HUGE_PAGE if pad else 0
    return {
        name: raw[start + offsets[name] : start + offsets[name] + n * dt.itemsize].view(dt.base).reshape((n, *dt.shape))
        for name, dt in dtypes.items()
    }


class ColumnBatch:
    """A batch of records stored column by column: one contiguous numpy array
    per field (a ``char[16]`` field as ``S16``, an array field as an (n, ...)
    array). What the readers produce and a stream keeps: the decoder writes
    each field straight from the ring into its column (one copy), so
    DataFrame columns and Arrow arrays are contiguous copies, never gathers
    out of interleaved records. Indexed like a structured array: by field
    name (a column), by slice (a batch of views)."""

    __slots__ = ("arrays", "n")

    def __init__(self, arrays: dict, n: int):
        self.arrays = arrays
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.arrays[key]
        if not isinstance(key, slice):
            raise TypeError(f"a ColumnBatch is indexed by a field name or a slice, not {key!r}")
        start, stop, step = key.indices(self.n)
        return ColumnBatch({name: a[key] for name, a in self.arrays.items()}, len(range(start, stop, step)))

    def copy(self) -> ColumnBatch:
        return ColumnBatch({name: a.copy() for name, a in self.arrays.items()}, self.n)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def __repr__(self) -> str:
        return f"<ColumnBatch {self.n} rows: {', '.join(self.arrays)}>"


def concatenate(batches: list) -> ColumnBatch:
    """One ColumnBatch of BATCHES (ColumnBatch or structured arrays of one record type), in order."""
    names = batches[0].dtype.names if isinstance(batches[0], np.ndarray) else list(batches[0].arrays)
    return ColumnBatch({name: np.concatenate([b[name] for b in batches]) for name in names}, sum(len(b) for b in batches))


def _alignment(f: Field) -> int:
    if f.kind == "str":
        return 1
    return min(f.base.itemsize, 16) if f.kind != "int128" else 16


def decode_cstrings(values: np.ndarray):
    """char[N] values to str: each ends at its first NUL (bytes after it may be
    garbage left by bpf_probe_read_str), decoded as UTF-8 (invalid bytes
    replaced). Built as one Arrow string array when pyarrow is there: no
    Python object per row."""
    n, width = len(values), values.dtype.itemsize
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(n, width)
    if n == 0 or width == 0:
        return np.array([""] * n, dtype=object)
    nul = raw == 0
    first = np.argmax(nul, axis=1)
    lengths = np.where(nul.any(axis=1), first, width)
    try:
        import pandas as pd
        import pyarrow as pa
    except ImportError:
        pa = None
    if pa is not None:
        data = raw[np.arange(width) < lengths[:, None]]
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        arr = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
        try:
            arr.validate(full=True)  # UTF-8 check
            return pd.array(arr, dtype="str")
        except pa.ArrowInvalid:
            pass
    as_bytes = [row[:k].tobytes() for row, k in zip(raw, lengths.tolist())]
    return np.array([b.decode("utf-8", "replace") for b in as_bytes], dtype=object)


def parse_field(name: str, ctype: str, typedefs: dict[str, str]) -> Field:
    """One field as BCC reports it ("comm#char[16]" -> name, type) to a numpy type."""
    base_c, dims = ctype.strip(), ()
    m = _ARRAY_TYPE_RE.match(base_c)
    if m:
        base_c, dims = m[1].strip(), tuple(int(d) for d in re.findall(r"\d+", m[2]))
    for _ in range(8):  # typedef chains: myu64 -> __u64 -> unsigned long long
        base_c = re.sub(r"\b(const|volatile)\b\s*", "", base_c).strip()
        if base_c.startswith("enum "):
            base_c = "enum"
        if base_c in _C_TO_NUMPY or base_c.endswith("*"):
            break
        inner = typedefs.get(base_c)
        if inner is None:
            break
        am = _ARRAY_TYPE_RE.match(inner)
        if am:  # typedef char name_t[16];
            base_c = am[1].strip()
            dims = tuple(int(d) for d in re.findall(r"\d+", am[2])) + dims
        else:
            base_c = inner
    if base_c.endswith("*"):
        np_name = "uint64"
    else:
        np_name = _C_TO_NUMPY.get(base_c)
    if np_name is None:
        raise TypeError(
            f"field {name}: type {ctype!r} is not a scalar or array of scalars bpfmagic can decode "
            f"(nested structs and unions are not supported: flatten the record)"
        )
    if np_name in ("int128", "uint128"):
        return Field(name, ctype, "int128", np.dtype("<u8"), dims + (2,))
    if base_c in ("char", "signed char") and dims:
        # char[N] -> str; char[M][N] -> array of str would need more care: keep bytes arrays
        if len(dims) == 1:
            return Field(name, ctype, "str", np.dtype(f"S{dims[0]}"))
        return Field(name, ctype, "array", np.dtype(f"S{dims[-1]}"), dims[:-1])
    base = np.dtype(np_name).newbyteorder("<") if np_name != "bool" else np.dtype(np.bool_)
    if dims:
        return Field(name, ctype, "array", base, dims)
    kind = "bool" if np_name == "bool" else "float" if np_name.startswith("float") else "int"
    return Field(name, ctype, kind, base)


class Undeterminable(Exception):
    """The record struct of a --core ring cannot be told from the cell."""


def record_type(module, table: str) -> RecordType | None:
    """The record type of event table TABLE of MODULE: the fields its backend
    inferred (BCC; None when it inferred none), else the struct the cell's
    ring calls write, laid out by the object's BTF (``--core``: Undeterminable
    when the struct cannot be told). TypeError when it cannot be decoded."""
    inferred = module.object.event_fields(table)
    if inferred is None:
        return btf_record_type(module, table)
    return inferred_record_type(module.source, inferred)


def inferred_record_type(source: str, inferred: list[str]) -> RecordType | None:
    """The record type of libbcc's "name#ctype" fields (None when there are none)."""
    if not inferred:
        return None
    typedefs = _resolve_typedefs(source)
    fields = []
    for desc in inferred:
        fname, _, ctype = desc.partition("#")
        fields.append(parse_field(fname, ctype, typedefs))
    packed, problem = struct_layout(source, [f.name for f in fields])
    if problem:
        # BCC reports each field's type only (no bit width, no alignment): a natural layout would be wrong
        raise TypeError(
            f"{problem}; BCC reports its fields without bit widths or alignment, so their "
            f"offsets are unknown: use plain, naturally aligned fields (shift and mask in C)"
        )
    return RecordType(fields, packed=packed)


def btf_record_type(module, table: str) -> RecordType:
    """The record type of ring TABLE of a --core module: the struct the cell's
    ``bpf_ringbuf_output`` / ``bpf_ringbuf_reserve`` calls on it write, laid
    out as the object's BTF says (exact offsets and size). Undeterminable
    when the struct cannot be told; TypeError when it cannot be decoded."""
    hint = (
        f"use bpf_ringbuf_output(&{table}, &rec, sizeof(rec), 0) with a struct variable, or "
        f"struct NAME *e = bpf_ringbuf_reserve(&{table}, sizeof(*e), 0)"
    )
    kinds = ring_record_types(module.source, table)
    known = [k for k in kinds if k != "?"]
    if not known:
        raise Undeterminable(f"cannot tell which struct goes into {table}: {hint}")
    if len(known) > 1:
        raise Undeterminable(f"several types go into {table} ({', '.join(known)}): a stream decodes one record struct per ring")
    btf = module.object.btf()
    try:
        if btf is None:
            raise LookupError(f"{module.name} has no BTF")
        struct_name, members, size = struct_members(btf, known[0])
    except LookupError as e:
        raise Undeterminable(f"cannot tell which struct goes into {table} ({e}): {hint}") from None
    what = f"struct {struct_name}"
    bits = [f"{m['name']}:{m['bits']}" for m in members if m["bits"]]
    if bits:
        raise TypeError(f"{what} has bit-fields ({', '.join(bits)}): use plain fields (shift and mask in C)")
    fields, offsets = [], []
    for m in members:
        fields.append(_btf_field(m))
        offsets.append(m["offset"])
    if not fields:
        raise TypeError(f"{what} has no fields")
    return RecordType(fields, layout=(offsets, size))


def _btf_field(m: dict) -> Field:
    """One BTF struct member (kernel.structs.struct_members) as a Field."""
    name, ctype, base, dims = m["name"], m["ctype"], m["base"], m["dims"]
    if not name:
        raise TypeError(f"an anonymous member ({ctype}) cannot be a column: name it or flatten the record")
    kind = base[0]
    if kind == "other":
        raise TypeError(
            f"field {name}: type {ctype!r} is not a scalar or array of scalars bpfmagic can decode "
            f"(nested structs and unions are not supported: flatten the record)"
        )
    if kind == "int" and base[1] == 16:
        return Field(name, ctype, "int128", np.dtype("<u8"), dims + (2,))
    if kind == "int" and base[3] and dims:  # char[N] -> str
        if len(dims) == 1:
            return Field(name, ctype, "str", np.dtype(f"S{dims[0]}"))
        return Field(name, ctype, "array", np.dtype(f"S{dims[-1]}"), dims[:-1])
    if kind == "bool":
        dt = np.dtype(np.bool_)
    elif kind == "float":
        if base[1] not in (4, 8):
            raise TypeError(f"field {name}: a {base[1]}-byte float ({ctype}) is not supported")
        dt = np.dtype(f"<f{base[1]}")
    elif kind == "ptr":
        dt = np.dtype("<u8")
    else:
        if base[1] not in (1, 2, 4, 8):
            raise TypeError(f"field {name}: a {base[1]}-byte integer ({ctype}) is not supported")
        dt = np.dtype(f"<{'i' if base[2] else 'u'}{base[1]}")
    if dims:
        return Field(name, ctype, "array", dt, dims)
    return Field(name, ctype, "bool" if kind == "bool" else "float" if kind == "float" else "int", dt)
