"""Streams: events of BPF_RINGBUF_OUTPUT / BPF_PERF_OUTPUT tables into pandas.

Every event table whose record type BCC inferred is consumed by a background
thread from load to unload. Ring buffers are read in bulk: the ring is
mmap'ed and runs of fixed-size records are copied out with numpy (no Python
call per event); variable-size records take a slower exact path. Perf
buffers go through BCC's reader (one Python callback per event). Rows are
kept raw (one numpy structured array per batch) up to ``max_rows``; they are
turned into DataFrame columns only when asked for.

Loss: the front end's instrumentation (bpfmagic.c.instrument) makes every
``TABLE.ringbuf_output`` / ``ringbuf_reserve`` / ``perf_submit`` call bump a
per-CPU counter when it fails (ring full, perf buffer full or not open yet),
so ``lost`` is exact for both kinds of table.

``--core`` modules: their BPF_MAP_TYPE_RINGBUF maps are streamed with the
same reader. The record struct is the one the cell's
``bpf_ringbuf_output(&TABLE, &VAR, ...)`` / ``bpf_ringbuf_reserve(&TABLE, ...)``
calls write (:func:`bpfmagic.c.records.ring_record_types`), its layout read from the
object's BTF (:func:`core_record_type`); the front end's instrumentation
does the loss-counting rewrite for them. Their perf event arrays are not
streamed.

Long because: record types, two readers, the row buffer, the stream and the Parquet
sink; the next step is an events/ package (see ARCHITECTURE.md)."""
from __future__ import annotations

import contextlib
import ctypes as ct
import mmap
import numbers
import os
import re
import select
import threading
import time
import warnings
import weakref
from collections import deque
from dataclasses import dataclass

try:
    import numpy as np
except ImportError:  # bpfmagic itself must import without numpy (the doctor runs on a bare python3)
    np = None

from ..c.records import event_tables, struct_layout
from ..c.records import typedefs as _resolve_typedefs
from ..errors import UsageProblem
from ..kernel import libbpf

DEFAULT_MAX_ROWS = 1_000_000
DEFAULT_PARQUET_QUEUE_BYTES = 64 << 20  # records waiting for a followed Parquet file, at most
DEFAULT_PERF_PAGES = 64  # per CPU; BCC's default of 8 overflows at a few thousand events per wakeup

# struct bpf_ringbuf_hdr: u32 len (bit 31 busy, bit 30 discarded), u32 pg_off; records 8-byte aligned
RINGBUF_BUSY = 1 << 31
RINGBUF_DISCARD = 1 << 30
RINGBUF_LEN_MASK = RINGBUF_DISCARD - 1
RINGBUF_HDR = 8
BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4
BPF_MAP_TYPE_RINGBUF = 27

LOST_COUNTER = "__bm_lost"  # '__bm_' names are hidden from Module.tables


class StreamWarning(UserWarning):
    """An event table that cannot be streamed (its record type is not decodable),
    records of another size than their struct, or a stream whose reader failed."""


def check_max_rows(value) -> int:
    """VALUE as a row bound, or UsageProblem: an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise UsageProblem(f"max_rows must be an integer >= 1 (rows a stream keeps), not {value!r}")
    return int(value)


# ------------------------------------------------------------ record types

_SCALARS = {
    "int8": ["char", "signed char", "s8", "__s8", "int8_t"],
    "uint8": ["unsigned char", "u8", "__u8", "uint8_t"],
    "bool": ["_Bool", "bool"],
    "int16": ["short", "short int", "signed short", "s16", "__s16", "int16_t"],
    "uint16": ["unsigned short", "unsigned short int", "u16", "__u16", "uint16_t", "__be16", "__le16",
               "__sum16"],
    "int32": ["int", "signed int", "signed", "s32", "__s32", "int32_t", "pid_t", "enum"],
    "uint32": ["unsigned int", "unsigned", "u32", "__u32", "uint32_t", "__be32", "__le32", "__wsum",
               "gfp_t", "uid_t", "gid_t", "dev_t"],
    "int64": ["long", "long int", "long long", "long long int", "signed long", "s64", "__s64", "int64_t",
              "ssize_t", "loff_t", "time64_t", "ktime_t"],
    "uint64": ["unsigned long", "unsigned long int", "unsigned long long", "unsigned long long int", "u64",
               "__u64", "uint64_t", "size_t", "__be64", "__le64", "uintptr_t", "sector_t"],
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
    ctype: str        # as BCC reports it, e.g. "char[16]"
    kind: str         # "int", "float", "bool", "str", "array", "int128"
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
            self.dtype = np.dtype({"names": [f.name for f in fields],
                                   "formats": [(f.base, f.shape) if f.shape else f.base for f in fields],
                                   "offsets": list(offsets), "itemsize": max(size, 1)})
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
        self.dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                               "itemsize": max(itemsize, 1)})

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    def empty(self, n: int = 0) -> np.ndarray:
        return np.zeros(n, self.dtype)

    def from_bytes(self, payloads: list[bytes]) -> np.ndarray:
        """Records of any length: shorter ones are zero-padded, longer ones cut."""
        size = self.itemsize
        raw = b"".join(p if len(p) == size else p[:size].ljust(size, b"\0") for p in payloads)
        return np.frombuffer(raw, self.dtype).copy()

    def frame(self, records):
        """DataFrame of RECORDS (a structured array or a list of them): each
        column is copied once, straight from the raw records."""
        import pandas as pd
        chunks = [records] if isinstance(records, np.ndarray) else list(records)
        n = sum(len(c) for c in chunks)
        columns = {f.name: self.column(chunks, f) for f in self.fields}
        # copy=False: every column is a fresh array already
        return pd.DataFrame(columns, columns=self.columns, index=pd.RangeIndex(n), copy=False)

    def column(self, chunks: list[np.ndarray], f: Field):
        import pandas as pd
        if not chunks:
            values = self.empty()[f.name]
        elif len(chunks) == 1:
            values = np.ascontiguousarray(chunks[0][f.name])
        else:
            values = np.concatenate([c[f.name] for c in chunks])
        if f.kind == "str":
            return decode_cstrings(values)
        if f.kind in ("array", "int128"):
            return pd.Series(list(values), dtype=object)
        return values

    def __repr__(self) -> str:
        return f"<RecordType {self.itemsize} bytes: " + ", ".join(f"{f.name} {f.ctype}" for f in self.fields) + ">"


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
        raise TypeError(f"field {name}: type {ctype!r} is not a scalar or array of scalars bpfmagic can decode "
                        f"(nested structs and unions are not supported: flatten the record)")
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


def record_type(module, table: str) -> RecordType | None:
    """The record type BCC inferred for TABLE (None when it inferred none)."""
    from bcc.libbcc import lib
    name = table.encode()
    n = lib.bpf_perf_event_fields(module.bpf.module, name)
    if not n:
        return None
    typedefs = _resolve_typedefs(module.source)
    fields = []
    for i in range(n):
        desc = lib.bpf_perf_event_field(module.bpf.module, name, i).decode()
        fname, _, ctype = desc.partition("#")
        fields.append(parse_field(fname, ctype, typedefs))
    packed, problem = struct_layout(module.source, [f.name for f in fields])
    if problem:
        # BCC reports each field's type only (no bit width, no alignment): a natural layout would be wrong
        raise TypeError(f"{problem}; BCC reports its fields without bit widths or alignment, so their "
                        f"offsets are unknown: use plain, naturally aligned fields (shift and mask in C)")
    return RecordType(fields, packed=packed)


class Undeterminable(Exception):
    """The record struct of a --core ring cannot be told from the cell."""


def core_record_type(module, table: str) -> RecordType:
    """The record type of ring TABLE of a --core module: the struct the cell's
    ``bpf_ringbuf_output`` / ``bpf_ringbuf_reserve`` calls on it write, laid
    out as the object's BTF says (exact offsets and size). Undeterminable
    when the struct cannot be told; TypeError when it cannot be decoded."""
    from ..backends.libbpf import btf_struct
    from ..c.records import ring_record_types
    hint = (f"use bpf_ringbuf_output(&{table}, &rec, sizeof(rec), 0) with a struct variable, or "
            f"struct NAME *e = bpf_ringbuf_reserve(&{table}, sizeof(*e), 0)")
    kinds = ring_record_types(module.source, table)
    known = [k for k in kinds if k != "?"]
    if not known:
        raise Undeterminable(f"cannot tell which struct goes into {table}: {hint}")
    if len(known) > 1:
        raise Undeterminable(f"several types go into {table} ({', '.join(known)}): a stream decodes one "
                             f"record struct per ring")
    try:
        struct_name, members, size = btf_struct(module.core, known[0])
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
    """One BTF struct member (core.btf_struct) as a Field."""
    name, ctype, base, dims = m["name"], m["ctype"], m["base"], m["dims"]
    if not name:
        raise TypeError(f"an anonymous member ({ctype}) cannot be a column: name it or flatten the record")
    kind = base[0]
    if kind == "other":
        raise TypeError(f"field {name}: type {ctype!r} is not a scalar or array of scalars bpfmagic can decode "
                        f"(nested structs and unions are not supported: flatten the record)")
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


# ------------------------------------------------------------ ring buffer reader

class RingReader:
    """Consumer side of a BPF ring buffer, mmap'ed: consumer page read-write
    at offset 0; producer page plus the data area mapped twice (so a record
    that wraps around is contiguous) read-only at offset pagesize."""

    kind = "ringbuf"
    max_batch = 1 << 20  # records copied per numpy step: bounds one batch to a few tens of MB

    def __init__(self, map_fd: int, rtype: RecordType):
        info = libbpf.fdinfo(map_fd)
        if int(info["map_type"]) != BPF_MAP_TYPE_RINGBUF:
            raise ValueError(f"map fd {map_fd} is not a ring buffer")
        self.rtype = rtype
        self.size = int(info["max_entries"])
        self.mask = self.size - 1
        page = mmap.PAGESIZE
        self._consumer_map = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer_map = mmap.mmap(map_fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._consumer_pos = np.frombuffer(self._consumer_map, np.uint64, 1)
        self._producer_pos = np.frombuffer(self._producer_map, np.uint64, 1)
        self._data = np.frombuffer(self._producer_map, np.uint8, 2 * self.size, offset=page)
        self._window = 4096  # adapts: grows over runs of fixed-size records, shrinks after a mismatch
        self.variable = 0    # records of another length than the struct (padded or cut)
        self.variable_length = 0  # the length of the last of them
        self.discarded = 0

    def fds(self) -> list[int]:
        return []  # set by the stream: the map fd itself is what epoll waits on

    max_pause = 0.002  # seconds of added latency at most

    def pause(self, drained: int) -> float:
        """How long the consumer may wait before the next drain while records
        flow: reading right behind the producer costs it cache-line transfers
        and a wakeup per catch-up. At the rate just seen, the ring must not
        get more than a quarter full meanwhile (small rings: no pause)."""
        now = time.monotonic()
        last, self._last_read = getattr(self, "_last_read", None), now
        if last is None or now <= last:
            return 0.0
        bytes_per_s = drained * (self.rtype.itemsize + RINGBUF_HDR) / (now - last)
        return min(self.max_pause, 0.25 * self.size / bytes_per_s)

    def read(self) -> list[np.ndarray]:
        """Every committed record from the consumer position on, in ring order."""
        cons = int(self._consumer_pos[0])
        prod = int(self._producer_pos[0])  # x86: this load is ordered before the header loads below
        if cons >= prod:
            return []
        out, cons = self.decode(cons, prod)
        self._consumer_pos[0] = cons  # frees the space for the producers
        return out

    def decode(self, cons: int, prod: int) -> tuple[list[np.ndarray], int]:
        return decode_ring(self._data, cons, prod, self.mask, self.rtype, self)

    def close(self) -> None:
        # The numpy views export the mmaps' buffers: drop them before closing, or close raises.
        # An mmap left open would keep the ring buffer map alive after the module is freed.
        self._consumer_pos = self._producer_pos = self._data = None
        for m in (self._consumer_map, self._producer_map):
            try:
                m.close()
            except BufferError:
                import gc
                gc.collect()  # a view held by a dead frame (e.g. a traceback)
                try:
                    m.close()
                except BufferError:
                    warnings.warn("a view into the ring buffer is still alive: the map stays mapped "
                                  "until it is garbage-collected", StreamWarning, stacklevel=2)


def decode_ring(data: np.ndarray, cons: int, prod: int, mask: int, rtype: RecordType,
                state=None) -> tuple[list[np.ndarray], int]:
    """Decode the records of ring positions [cons, prod) from DATA (the data
    area mapped twice, as uint8). Stops at the first busy (reserved, not yet
    committed) record; skips discarded ones. Returns (arrays, new cons).

    Runs of records of the struct's size are checked and copied with numpy
    (headers compared as one vector, payloads copied as one 2-D slice);
    a record of another size is read alone and zero-padded or cut.
    ``state`` carries the adaptive window and counters between calls."""
    itemsize = rtype.itemsize
    stride = (itemsize + RINGBUF_HDR + 7) & ~7
    out: list[np.ndarray] = []
    window = getattr(state, "_window", 4096)
    max_batch = getattr(state, "max_batch", 1 << 20)
    while cons < prod:
        off = cons & mask
        n = min((prod - cons) // stride, window)
        k = 0
        if n:
            block = data[off:off + n * stride]
            words = block.view("<u4").reshape(n, stride // 4)
            headers = words[:, 0]
            fixed = (headers & ~np.uint32(RINGBUF_DISCARD)) == itemsize  # false for busy or other sizes
            k = n if fixed.all() else int(np.argmin(fixed))
            if k:
                payload = block.reshape(n, stride)[:k, RINGBUF_HDR:RINGBUF_HDR + itemsize]
                kept = headers[:k] == itemsize
                if kept.all():
                    records = payload.copy()  # never a view: the producers reuse the ring
                else:
                    records = payload[kept]
                    if state is not None:
                        state.discarded += int(k - kept.sum())
                if len(records):
                    out.append(records.view(rtype.dtype).reshape(-1))
                cons += k * stride
            window = min(window * 2, max_batch) if k == n else max(16, k)
            if k == n:
                continue
        # The record at cons is busy, discarded alone, or of another size.
        off = cons & mask
        header = int(data[off:off + 4].view("<u4")[0])
        if header & RINGBUF_BUSY:
            break
        length = header & RINGBUF_LEN_MASK
        if header & RINGBUF_DISCARD:
            if state is not None:
                state.discarded += 1
        else:
            payload = data[off + RINGBUF_HDR:off + RINGBUF_HDR + length]
            out.append(rtype.from_bytes([payload.tobytes()]))
            if state is not None and length != itemsize:
                state.variable += 1
                state.variable_length = length
        cons += (length + RINGBUF_HDR + 7) & ~7
    if state is not None:
        state._window = window
    return out, cons


# ------------------------------------------------------------ perf buffer reader

class PerfReader:
    """BCC's per-CPU perf readers for one table; one Python callback per event
    (the kernel side costs microseconds per event anyway). Events of
    different CPUs interleave in the order the buffers are read."""

    kind = "perf"

    def __init__(self, table, rtype: RecordType, page_cnt: int = DEFAULT_PERF_PAGES):
        from bcc.libbcc import lib
        self._lib = lib
        self.table = table
        self.rtype = rtype
        self.kernel_lost = 0  # what the perf buffers reported as overwritten/lost
        self.variable = 0
        self.variable_length = 0
        self.discarded = 0
        self._pending: list[bytes] = []
        size = rtype.itemsize
        padded = (size + 4 + 7) // 8 * 8 - 4  # perf pads a raw sample so that its u32 size + data is 8-aligned

        def on_event(cpu, data, length):
            self._pending.append(ct.string_at(data, min(length, size)))
            if length < size or length > padded:
                self.variable += 1
                self.variable_length = length

        def on_lost(count):
            self.kernel_lost += count

        self._on_event, self._on_lost = on_event, on_lost
        table.open_perf_buffer(on_event, page_cnt=page_cnt, lost_cb=on_lost)
        self._readers = [r for (tid, _cpu), r in table.bpf.perf_buffers.items() if tid == id(table)]
        self._reader_array = (ct.c_void_p * len(self._readers))(*self._readers)

    def fds(self) -> list[int]:
        return [self._lib.perf_reader_fd(r) for r in self._readers]

    def pause(self, drained: int) -> float:
        return 0.0  # the kernel side of perf buffers is the bottleneck; read as soon as woken

    def read(self) -> list[np.ndarray]:
        self._lib.perf_reader_consume(len(self._readers), self._reader_array)
        if not self._pending:
            return []
        pending, self._pending = self._pending, []
        return [self.rtype.from_bytes(pending)]

    def close(self) -> None:
        for cpu in list(self.table._open_key_fds):
            with contextlib.suppress(Exception):
                del self.table[cpu]  # frees BCC's reader for that CPU
        self._readers, self._reader_array = [], None


# ------------------------------------------------------------ rows

class _Rows:
    """Raw record batches, oldest first, at most max_rows in all."""

    def __init__(self):
        self.chunks: deque[np.ndarray] = deque()
        self.n = 0

    def append(self, batch: np.ndarray, max_rows: int) -> int:
        """Add BATCH; returns how many of the oldest rows were dropped."""
        if len(batch) == 0:
            return 0
        self.chunks.append(batch)
        self.n += len(batch)
        dropped = self.trim(max_rows)
        if len(self.chunks) > 256:
            self._compact()
        return dropped

    def trim(self, max_rows: int) -> int:
        dropped = 0
        while self.n > max_rows:
            first = self.chunks[0]
            excess = self.n - max_rows
            if len(first) <= excess:
                self.chunks.popleft()
                self.n -= len(first)
                dropped += len(first)
            else:
                rest = first[excess:]
                # a small tail of a big batch is copied so the big one can be freed
                self.chunks[0] = rest.copy() if len(rest) * 2 < len(first) else rest
                self.n -= excess
                dropped += excess
        return dropped

    def _compact(self) -> None:
        # many small batches (one event per wakeup) make df() slow: merge the newest ones
        small = []
        while self.chunks and len(self.chunks[-1]) < 65536 and len(small) < 256:
            small.append(self.chunks.pop())
        if small:
            self.chunks.append(np.concatenate(small[::-1]))

    def snapshot(self) -> list[np.ndarray]:
        return list(self.chunks)

    def tail(self, n: int) -> list[np.ndarray]:
        out, have = [], 0
        for chunk in reversed(self.chunks):
            if have >= n:
                break
            take = chunk[-(n - have):]
            out.append(take)
            have += len(take)
        return out[::-1]

    def clear(self) -> None:
        self.chunks.clear()
        self.n = 0


# ------------------------------------------------------------ the stream

class Stream:
    """The events of one table, consumed in the background from load to unload.

    ``df()``: DataFrame of the rows kept so far (columns = the record's fields);
    ``count``: records received; ``dropped``: oldest rows discarded to stay
    within ``max_rows``; ``lost``: records the program could not output.
    ``stop()`` ends consuming (rows stay); ``clear()`` starts counting afresh.
    """

    poll_timeout = 0.5  # seconds; a safety net only: the eventfd wakes the thread on stop

    def __init__(self, manager: "StreamManager", module, table: str, rtype: RecordType,
                 max_rows: int | None = None, perf_pages: int = DEFAULT_PERF_PAGES):
        self.manager = manager
        self.module_name = module.name
        self.table = table
        self.name = f"{module.name}.{table}"
        self.rtype = rtype
        self._module = module
        self._owner = weakref.ref(module)  # still known after stop() drops _module
        self._max_rows = None if max_rows is None else check_max_rows(max_rows)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified after every batch and on stop
        self._rows = _Rows()
        self.count = 0
        self.dropped = 0
        self.error: BaseException | None = None
        self.started_at = time.time()
        self.stopped = threading.Event()
        self._stopping = False
        self._finished = False
        self._size_warned = False
        self._listeners: list = []  # callables run (with the stream) after it stopped
        self._watch = None  # its live view (widgets.Watch): one at a time
        self._parquet = None
        self._parquet_last = None  # the latest followed sink, kept for its counts after it closed
        self._lost_base = 0
        self._lost_final: int | None = None
        self._lost_slot = None
        self._lost_fd = None
        self._lost_size = 0
        self._closed = False
        self._reader_stats = {"kernel_lost": 0, "variable": 0, "discarded": 0}
        if module.core is not None:  # a libbpf ring: counted by the front end's bpf_ringbuf_* macros
            from ..backends.libbpf import ring_tables
            tables = ring_tables(module.source)
            if table in tables and LOST_COUNTER in module.core.maps():
                self._lost_fd = module.core.table(LOST_COUNTER).fd
                self._lost_slot = tables.index(table)
                self._lost_size = len(tables)
            bcc_table, map_fd = None, module.core.table(table).fd
        else:
            tables = event_tables(module.source)
            if table in tables:
                try:
                    self._lost_fd = module.bpf[LOST_COUNTER.encode()].map_fd
                    self._lost_slot = tables.index(table)
                    self._lost_size = len(tables)
                except KeyError:  # compiled without the rewrite
                    pass
            bcc_table = module.bpf[table.encode()]
            map_fd = bcc_table.map_fd
        if int(libbpf.fdinfo(map_fd)["map_type"]) == BPF_MAP_TYPE_RINGBUF:
            self.kind = "ringbuf"
            self._reader = RingReader(map_fd, rtype)
            self._fds = [map_fd]
        elif bcc_table is None:
            raise ValueError(f"{self.name} is not a ring buffer: only rings of --core modules are streamed")
        else:
            self.kind = "perf"
            self._reader = PerfReader(bcc_table, rtype, perf_pages)
            self._fds = self._reader.fds()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name=f"bpfmagic-stream-{self.name}", daemon=True)
        self._thread.start()

    # -------------------------------------------------- consuming
    def _run(self) -> None:
        ep = select.epoll()
        try:
            ep.register(self._wake, select.EPOLLIN)
            for fd in self._fds:
                ep.register(fd, select.EPOLLIN)
            while not self._stopping:
                ep.poll(self.poll_timeout)
                drained = self._drain()
                pause = self._reader.pause(drained) if drained else 0.0
                if pause > 0:
                    time.sleep(pause)
            self._drain()  # what arrived up to the stop
        except BaseException as e:  # a stream must not die silently, nor leave wait() hanging
            self.error = e
            _warn(f"stream {self.name} stopped: its reader failed with {e!r}; the rows so far stay readable "
                  f"(stream.error has the exception)")
            self._finish()
        finally:
            ep.close()

    def _drain(self) -> int:
        batches = self._reader.read()
        if self._reader.variable and not self._size_warned:
            self._size_warned = True
            _warn(f"{self.name}: records of {self._reader.variable_length} bytes arrived where its struct has "
                  f"{self.rtype.itemsize} ({self.rtype}); they are zero-padded or cut. If the struct has "
                  f"bit-fields or packed/aligned fields, its columns are wrong")
        if not batches:
            return 0
        with self._lock:
            for batch in batches:
                self.count += len(batch)
                self.dropped += self._rows.append(batch, self.max_rows)
                if self._parquet is not None:
                    self._parquet.write(batch)
            self._arrived.notify_all()
        return sum(len(b) for b in batches)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self.stopped.is_set()

    def stop(self) -> None:
        """Stop consuming: the thread drains what is in the buffer, exits and is
        joined; the mmaps / perf readers are released. Rows stay readable."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        with contextlib.suppress(OSError):
            os.eventfd_write(self._wake, 1)
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._lost_final = self._read_lost()
        if self._reader is not None:
            self._reader_stats = self._live_reader_stats()
            self._reader.close()
            self._reader = None
        with contextlib.suppress(OSError):
            os.close(self._wake)
        self._lost_fd = None
        self._module = None
        with self._lock:
            sink, self._parquet = self._parquet, None
        if sink is not None:
            try:
                sink.close()
            except Exception as e:  # the stream still stops; the error is kept
                self.error = e
        self._finish()

    def _finish(self) -> None:
        """Mark the stream stopped, wake wait() and run the stop listeners (once)."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self.stopped.set()
            self._arrived.notify_all()
        for listener in list(self._listeners):
            with contextlib.suppress(Exception):
                listener(self)

    def wait(self, count: int, timeout: float | None = None) -> bool:
        """Block until COUNT records have arrived (since the last clear()), the
        stream stopped or TIMEOUT seconds passed; True when COUNT was reached.
        Cheaper than polling ``count``: the consumer thread wakes the caller."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._arrived:
            while self.count < count and not self.stopped.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._arrived.wait(left)
            return self.count >= count

    def clear(self) -> None:
        """Forget the rows and start counting (count, dropped, lost) from zero."""
        with self._lock:
            self._rows.clear()
            self.count = 0
            self.dropped = 0
            self._lost_base = self._read_lost_raw() if self._lost_final is None else self._lost_final
            self.started_at = time.time()

    # -------------------------------------------------- counters
    def _read_lost_raw(self) -> int:
        if self._lost_fd is None:
            return 0
        return libbpf.percpu_u64_sums(self._lost_fd, self._lost_size)[self._lost_slot]

    def _read_lost(self) -> int:
        return self._read_lost_raw() - self._lost_base

    @property
    def lost(self) -> int:
        """Records the program could not write (ring full; perf buffer full or
        not open yet), counted in the kernel by the rewritten output calls."""
        if self._lost_final is not None:
            return self._lost_final
        if self._lost_fd is None:
            return self.kernel_lost
        return self._read_lost()

    def _live_reader_stats(self) -> dict:
        r = self._reader
        return {"kernel_lost": getattr(r, "kernel_lost", 0), "variable": r.variable, "discarded": r.discarded}

    def _stat(self, key: str) -> int:
        reader = self._reader
        return self._reader_stats[key] if reader is None else self._live_reader_stats()[key]

    @property
    def kernel_lost(self) -> int:
        """Perf buffers only: the records the kernel reported as lost (LOST
        records); included in ``lost`` when the output calls are counted."""
        return self._stat("kernel_lost")

    @property
    def variable(self) -> int:
        """Records whose length differed from the struct (zero-padded or cut)."""
        return self._stat("variable")

    @property
    def discarded(self) -> int:
        """Ring buffer records the program reserved and then discarded."""
        return self._stat("discarded")

    @property
    def loss_counted(self) -> bool:
        """False when the table's output calls could not be instrumented (e.g.
        the table is declared in an #included file): ``lost`` then only has
        what perf buffers report, and nothing for ring buffers."""
        return self._lost_slot is not None

    @property
    def max_rows(self) -> int:
        return self._max_rows if self._max_rows is not None else self.manager.max_rows

    @max_rows.setter
    def max_rows(self, value: int | None) -> None:
        """Rows kept (the oldest are dropped); None: the manager's default."""
        if value is not None:
            value = check_max_rows(value)
        with self._lock:
            self._max_rows = value
            self.dropped += self._rows.trim(self.max_rows)

    def __len__(self) -> int:
        return self._rows.n

    @property
    def columns(self) -> list[str]:
        return self.rtype.columns

    # -------------------------------------------------- reading
    def records(self) -> np.ndarray:
        """The rows kept so far as one numpy structured array (raw fields)."""
        with self._lock:
            chunks = self._rows.snapshot()
        return np.concatenate(chunks) if chunks else self.rtype.empty()

    def df(self):
        """DataFrame of the rows kept so far, oldest first."""
        with self._lock:
            chunks = self._rows.snapshot()
        return self.rtype.frame(chunks)

    def tail(self, n: int = 10):
        """DataFrame of the last N rows (decodes only those)."""
        with self._lock:
            chunks = self._rows.tail(n)
            held = self._rows.n
        frame = self.rtype.frame(chunks)
        frame.index = frame.index + (held - len(frame))
        return frame

    def counts(self, column: str):
        """Rows per value of COLUMN, most frequent first (str values decoded
        once per distinct value, not per row)."""
        self._count_field(column)
        with self._lock:
            chunks = self._rows.snapshot()
        return self._counts(chunks, column)

    def _count_field(self, column: str) -> Field:
        field = next((f for f in self.rtype.fields if f.name == column), None)
        if field is None:
            raise UsageProblem(f"{self.name} has no column {column!r} (columns: {', '.join(self.columns)})")
        if field.kind in ("array", "int128"):
            raise UsageProblem(f"{self.name}.{column} is an array ({field.ctype}); count by a scalar column")
        return field

    def _counts(self, chunks: list[np.ndarray], column: str):
        import pandas as pd
        field = self._count_field(column)
        values = np.concatenate([c[column] for c in chunks]) if chunks else self.rtype.empty()[column]
        if field.kind != "str":
            counts = pd.Series(values, name=column).value_counts()
            counts.name = "count"
            return counts
        keys, counts = np.unique(values, return_counts=True)
        # bytes after the NUL differ between rows of the same string: sum after decoding
        by_value = pd.Series(counts, index=pd.Index(decode_cstrings(keys), name=column), name="count")
        return by_value.groupby(level=0, sort=False).sum().sort_values(ascending=False, kind="stable")

    def snapshot(self, rows: int = 10, by: str | None = None) -> dict:
        """count, dropped, rows (held), the last ROWS rows (``tail``) and, with
        BY, the rows per value of BY (``counts``), all taken under one lock:
        figures shown together agree (sum of counts == rows; count == rows +
        dropped since the last clear)."""
        if by is not None:
            self._count_field(by)
        with self._lock:
            chunks = self._rows.snapshot()
            count, dropped, held = self.count, self.dropped, self._rows.n
        tail_chunks, have = [], 0
        for chunk in reversed(chunks):
            if have >= rows:
                break
            take = chunk[-(rows - have):]
            tail_chunks.append(take)
            have += len(take)
        tail = self.rtype.frame(tail_chunks[::-1])
        tail.index = tail.index + (held - len(tail))
        return {"count": count, "dropped": dropped, "rows": held, "tail": tail,
                "counts": self._counts(chunks, by) if by is not None else None}

    # -------------------------------------------------- export
    def to_parquet(self, path: str, follow: bool = False,
                   queue_bytes: int = DEFAULT_PARQUET_QUEUE_BYTES) -> str:
        """Write the rows kept so far to a Parquet file. With ``follow=True``
        the file stays open and every batch that arrives afterwards is
        appended too (beyond ``max_rows``: for runs too big for memory) until
        the stream stops or :meth:`close_parquet` is called.

        Memory stays bounded while following: at most ``queue_bytes`` of
        records (default 64 MiB) wait for the writer thread. When the disk
        falls that far behind, the reader does not wait (that would overflow
        the kernel's ring); the records that do not fit are left out of the
        file and counted in ``parquet_dropped``. ``parquet_written`` counts
        the rows in the file, so snapshot rows + count since the call ==
        parquet_written + parquet_dropped once the file is closed."""
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageProblem("to_parquet needs pyarrow: pip install pyarrow") from None
        if follow and not self.running:
            raise UsageProblem(f"{self.name} is stopped: nothing more will arrive to follow")
        with self._lock:
            if follow and self._parquet is not None:  # a snapshot beside a followed file is fine
                raise UsageProblem(f"{self.name} already follows into {self._parquet.path}; "
                                   "close_parquet() first")
            chunks = self._rows.snapshot()
            sink = _ParquetSink(path, self.rtype, queue_bytes)
            for chunk in chunks:
                sink.write(chunk, wait=True)  # rows asked for: waited for, never dropped
            if follow:
                self._parquet = self._parquet_last = sink
        if not follow:
            sink.close()
        return path

    @property
    def parquet_dropped(self) -> int:
        """Records left out of the followed Parquet file (the latest one)
        because its writer was ``queue_bytes`` behind."""
        sink = self._parquet_last
        return sink.dropped if sink is not None else 0

    @property
    def parquet_written(self) -> int:
        """Rows written into the followed Parquet file (the latest one) so far."""
        sink = self._parquet_last
        return sink.written if sink is not None else 0

    @property
    def parquet_queued(self) -> int:
        """Rows waiting for the followed Parquet file's writer now."""
        sink = self._parquet
        return sink.queued_rows if sink is not None else 0

    def close_parquet(self) -> None:
        """Stop appending to the file that ``to_parquet(..., follow=True)`` opened."""
        with self._lock:
            sink, self._parquet = self._parquet, None
        if sink is not None:
            sink.close()

    def on_stop(self, listener) -> None:
        """Run LISTENER(stream) once the stream has stopped (now if it has)."""
        self._listeners.append(listener)
        if self.stopped.is_set():
            listener(self)

    def remove_on_stop(self, listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def summary(self) -> dict:
        return {"stream": self.name, "kind": self.kind, "running": self.running, "count": self.count,
                "rows": len(self), "dropped": self.dropped, "lost": self.lost, "max_rows": self.max_rows,
                "columns": ", ".join(self.columns), "error": repr(self.error) if self.error else ""}

    def __repr__(self) -> str:
        state = "running" if self.running else "failed" if self.error else "stopped"
        err = f", error: {self.error!r}" if self.error else ""
        return (f"<bpfmagic Stream {self.name} ({self.kind}, {state}): {self.count} events, {len(self)} rows, "
                f"{self.dropped} dropped, {self.lost} lost{err}>")



def _warn(message: str) -> None:
    """A StreamWarning from the consumer thread, once per call (each stream
    decides when): no per-line dedup, which would hide it for a re-run cell.
    Never raises (-W error): the thread has no caller to raise to."""
    with contextlib.suppress(Exception):
        warnings.warn_explicit(message, StreamWarning, filename="bpfmagic", lineno=0)


class _ParquetSink:
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
        self._thread = threading.Thread(target=self._run, name=f"bpfmagic-parquet-{os.path.basename(path)}",
                                        daemon=True)
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
                        part = batch[accepted:accepted + room]
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
            if stream._max_rows is None:
                stream.max_rows = None

    def _on_load(self, module) -> None:
        if module.core is not None:
            self._on_load_core(module)
            return
        if np is None:
            for table in module.tables:
                self._unstreamed[f"{module.name}.{table}"] = "streams need numpy: pip install numpy pandas"
            return
        for table in module.tables:
            qualname = f"{module.name}.{table}"
            try:
                bcc_table = module.bpf[table.encode()]
                kind = int(libbpf.fdinfo(bcc_table.map_fd)["map_type"])
            except Exception:
                continue
            if kind not in (BPF_MAP_TYPE_RINGBUF, BPF_MAP_TYPE_PERF_EVENT_ARRAY):
                continue
            try:
                rtype = record_type(module, table)
            except Exception as e:  # an unknown field type; the module stays loaded either way
                self._unstreamed[qualname] = f"its record type cannot be decoded: {e}"
                warnings.warn(f"{qualname} is not streamed: {e}", StreamWarning, stacklevel=2)
                continue
            if rtype is None:
                call = "ringbuf_output(&rec, sizeof(rec), 0) or ringbuf_submit(rec, 0)" \
                    if kind == BPF_MAP_TYPE_RINGBUF else "perf_submit(ctx, &rec, sizeof(rec))"
                self._unstreamed[qualname] = (f"BCC inferred no record type for it: write {table}.{call} with "
                                              f"a struct, or read it yourself with BCC")
                continue
            previous = self._streams.pop(qualname, None)
            if previous is not None:  # a stream of an earlier version of the module left behind
                previous.stop()
            try:
                self._streams[qualname] = Stream(self, module, table, rtype, perf_pages=self.perf_pages)
            except Exception as e:  # the module stays loaded; say why its table is not streamed
                self._unstreamed[qualname] = f"opening it failed: {e}"
                warnings.warn(f"{qualname} is not streamed: {e}", StreamWarning, stacklevel=2)

    def _on_load_core(self, module) -> None:
        """Ring buffers of a --core module: the record struct comes from the
        cell's ringbuf calls and its layout from the object's BTF. Perf event
        arrays of --core modules are not streamed."""
        for table in module.tables:
            qualname = f"{module.name}.{table}"
            try:
                kind = module.core.table(table).map_type
            except Exception:
                continue
            if kind == BPF_MAP_TYPE_PERF_EVENT_ARRAY:
                self._unstreamed[qualname] = (
                    f"perf event arrays of --core modules are not streamed: declare it as a "
                    f"BPF_MAP_TYPE_RINGBUF map and write it with bpf_ringbuf_output, or read it with "
                    f"{module.name}[{table!r}]")
                continue
            if kind != BPF_MAP_TYPE_RINGBUF:
                continue
            if np is None:
                self._unstreamed[qualname] = "streams need numpy: pip install numpy pandas"
                continue
            try:
                rtype = core_record_type(module, table)
            except Undeterminable as e:
                self._unstreamed[qualname] = str(e)
                continue
            except Exception as e:
                self._unstreamed[qualname] = f"its record type cannot be decoded: {e}"
                warnings.warn(f"{qualname} is not streamed: {e}", StreamWarning, stacklevel=3)
                continue
            previous = self._streams.pop(qualname, None)
            if previous is not None:
                previous.stop()
            try:
                self._streams[qualname] = Stream(self, module, table, rtype)
            except Exception as e:
                self._unstreamed[qualname] = f"opening it failed: {e}"
                warnings.warn(f"{qualname} is not streamed: {e}", StreamWarning, stacklevel=3)

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
        return {s.table: s for s in self._streams.values() if s._owner() is module}

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
            raise UsageProblem(f"several modules have a table {name!r}: name one of "
                               f"{', '.join(s.name for s in matches)}")
        unstreamed = [(q, why) for q, why in self._unstreamed.items() if q.split(".", 1)[1] == name]
        if len(unstreamed) == 1:
            raise UsageProblem(f"{unstreamed[0][0]} is not streamed: {unstreamed[0][1]}")
        known = ", ".join(self._streams) or "none (streams come from BPF_RINGBUF_OUTPUT / BPF_PERF_OUTPUT tables)"
        raise UsageProblem(f"no stream {name!r}; streams: {known}")

    def summary(self):
        import pandas as pd
        rows = [s.summary() for s in self._streams.values()]
        return pd.DataFrame(rows, columns=["stream", "kind", "running", "count", "rows", "dropped", "lost",
                                           "max_rows", "columns", "error"])

    def stop_all(self) -> None:
        """Stop and forget every stream (the session is reset or closed)."""
        for name in list(self._streams):
            self._streams.pop(name).stop()
        self._unstreamed.clear()
