"""A map's entries in bulk, as rows of bytes: BPF_MAP_LOOKUP_BATCH into one
buffer, the get_next_key walk for map types without a batch op, a lookup of
every index (prog arrays), a peek (queues and stacks); batch updates and
deletes with a fallback of one entry at a time. The libbpf calls are declared
in kernel/libbpf.py; the layouts (layout.py) decode the rows."""

from __future__ import annotations

import ctypes as ct
import errno as _errno

import numpy as np

from ..kernel import libbpf
from ..kernel.libbpf import ENOTSUPP, BatchOpts, errno_of

# What a map type without a batch op (or without that op) answers to one.
NO_OP_ERRNOS = (_errno.EINVAL, _errno.EOPNOTSUPP, ENOTSUPP, _errno.ENOTSUP)
READ_BUFFER_BYTES = 256 << 20  # one batch buffer at most; bigger maps take several calls


def ptr(buf: np.ndarray | None):
    """BUF's address for a libbpf call. A bare number: the caller keeps BUF referenced
    until the call returns (``ptr(make_array())`` would hand over freed memory)."""
    return None if buf is None else buf.ctypes.data


class ReadStats:
    """How the last read went: method (batch / get_next_key / lookup / peek), syscalls, entries, seconds."""

    def __init__(self, method: str = ""):
        self.method, self.syscalls, self.entries, self.seconds = method, 0, 0, 0.0

    def as_dict(self) -> dict:
        return {"method": self.method, "syscalls": self.syscalls, "entries": self.entries, "seconds": self.seconds}

    def __repr__(self) -> str:
        return f"<read {self.entries} entries by {self.method}: {self.syscalls} syscalls, {self.seconds * 1e3:.1f} ms>"


class NoBatch(Exception):
    """The map type has no BPF_MAP_LOOKUP_BATCH."""


def batch_read(fd: int, key_size: int, value_bytes: int, max_entries: int, stats: ReadStats):
    """Every entry by BPF_MAP_LOOKUP_BATCH: (keys, values) as uint8 arrays of
    shape (n, key_size) and (n, value_bytes). Raises NoBatch when the map
    type has no batch op."""
    lib = libbpf.lib()
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
            fd, None if first else ptr(cursor_in), ptr(cursor_out), ptr(keys), ptr(values), ct.byref(count), ct.byref(opts)
        )
        stats.syscalls += 1
        err, n = errno_of(ret), count.value
        if err and err != _errno.ENOENT and n == 0:
            if first and err in NO_OP_ERRNOS:
                raise NoBatch(err)
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
    lib = libbpf.lib()
    keys, values = [], []
    prev, key = None, np.zeros(key_size, np.uint8)
    value = np.empty(value_bytes, np.uint8)
    while True:
        ret = lib.bpf_map_get_next_key(fd, ptr(prev), ptr(key))
        stats.syscalls += 1
        err = errno_of(ret)
        if err == _errno.ENOENT:
            break
        if err:
            raise OSError(err, f"get_next_key: {_errno.errorcode.get(err, err)}")
        ret = lib.bpf_map_lookup_elem(fd, ptr(key), ptr(value))
        stats.syscalls += 1
        if errno_of(ret) == 0:  # deleted between the two calls: skip it
            keys.append(key.copy())
            values.append(value.copy())
        prev = key.copy()
    if not keys:
        return np.empty((0, key_size), np.uint8), np.empty((0, value_bytes), np.uint8)
    return np.stack(keys), np.stack(values)


# ------------------------------------------------------------------ the view


def lookup_each(fd: int, max_entries: int, stats: ReadStats):
    """The indexes 0..max_entries-1 that hold a value, one lookup each (a prog array: the
    kernel gives user space the id of the program in a slot; an empty slot is ENOENT)."""
    lib = libbpf.lib()
    keys, values = [], []
    k, v = np.zeros(1, np.uint32), np.zeros(1, np.uint32)
    for index in range(max_entries):
        k[0] = index
        ret = lib.bpf_map_lookup_elem(fd, ptr(k), ptr(v))
        stats.syscalls += 1
        if errno_of(ret) == 0:
            keys.append(index)
            values.append(int(v[0]))
    return (np.array(keys, np.uint32).view(np.uint8).reshape(-1, 4), np.array(values, np.uint32).view(np.uint8).reshape(-1, 4))


def peek(fd: int, value_bytes: int, stats: ReadStats) -> np.ndarray:
    """A queue's or stack's next value, left in place: one row, or none when it is empty."""
    values = np.empty((1, value_bytes), np.uint8)
    err = errno_of(libbpf.lib().bpf_map_lookup_elem(fd, None, ptr(values)))
    stats.syscalls += 1
    if err == _errno.ENOENT:
        return values[:0]
    if err:
        raise OSError(err, f"peek: {_errno.errorcode.get(err, err)}")
    return values


def pop_all(fd: int, value_size: int) -> int:
    """Pop every value of a queue or stack; how many there were."""
    lib, buf, n = libbpf.lib(), np.zeros(value_size, np.uint8), 0
    while errno_of(lib.bpf_map_lookup_and_delete_elem(fd, None, ptr(buf))) == 0:
        n += 1
    return n


def update_batch(fd: int, raw_keys: np.ndarray, values: np.ndarray, per_key: int, batch: bool) -> tuple[int, int]:
    """Write rows of keys (uint8, shape (n, key_size)) and their values (PER_KEY records
    each) with one BPF_MAP_UPDATE_BATCH when BATCH, else (or when the kernel has no such
    op) one update per entry. Returns (errno, index of the first row not written): (0, n) when all were."""
    lib = libbpf.lib()
    n = len(raw_keys)
    if n == 0:
        return 0, 0
    count = ct.c_uint32(n)
    opts = BatchOpts(sz=ct.sizeof(BatchOpts))
    err = errno_of(lib.bpf_map_update_batch(fd, ptr(raw_keys), ptr(values), ct.byref(count), ct.byref(opts))) if batch else _errno.EINVAL
    if err in NO_OP_ERRNOS and count.value in (0, n):  # no batch op here: one entry at a time
        for i in range(n):
            e = errno_of(lib.bpf_map_update_elem(fd, ptr(raw_keys[i]), ptr(values[i * per_key : (i + 1) * per_key]), libbpf.BPF_ANY))
            if e:
                return e, i
        return 0, n
    return err, count.value if err else n


def delete_batch(fd: int, raw_keys: np.ndarray) -> int:
    """Delete the keys (uint8 rows) with one BPF_MAP_DELETE_BATCH, or one at a time where
    the map type has none (LPM tries). Returns the errno (0, or ENOENT for a key gone meanwhile)."""
    if len(raw_keys) == 0:
        return 0
    lib = libbpf.lib()
    count = ct.c_uint32(len(raw_keys))
    opts = BatchOpts(sz=ct.sizeof(BatchOpts))
    err = errno_of(lib.bpf_map_delete_batch(fd, ptr(raw_keys), ct.byref(count), ct.byref(opts)))
    if err in NO_OP_ERRNOS:
        for i in range(len(raw_keys)):
            lib.bpf_map_delete_elem(fd, ptr(raw_keys[i]))
        return 0
    return err


def records(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rows of bytes (a uint8 array of shape (n, width)) as structured records
    (ncpu records per row for per-CPU values), without copying."""
    if raw.size == 0:
        return np.zeros(0, dtype)
    return np.ascontiguousarray(raw).reshape(-1).view(dtype)
