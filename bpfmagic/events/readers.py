"""Readers of event tables: a BPF ring buffer read in bulk (mmap'ed, runs of
fixed-size records copied out with numpy straight into per-field columns, no
Python call per event; variable-size records take a slower exact path), and
a perf event array read through the backend's perf buffer (one Python
callback per event). Both give ColumnBatch batches."""

from __future__ import annotations

import ctypes as ct
import mmap
import time
import warnings

try:
    import numpy as np
except ImportError:  # bpfmagic itself must import without numpy (the doctor runs on a bare python3)
    np = None

from ..kernel import libbpf
from ..kernel.maptypes import MapType
from . import StreamWarning
from .records import ColumnBatch, RecordType

DEFAULT_PERF_PAGES = 64  # per CPU; BCC's default of 8 overflows at a few thousand events per wakeup

# struct bpf_ringbuf_hdr: u32 len (bit 31 busy, bit 30 discarded), u32 pg_off; records 8-byte aligned
RINGBUF_BUSY = 1 << 31
RINGBUF_DISCARD = 1 << 30
RINGBUF_LEN_MASK = RINGBUF_DISCARD - 1
RINGBUF_HDR = 8
# Ring bytes checked and copied per numpy step: the block stays in cache from the header
# check to the last field's copy (measured, 1 M 32-byte records: 1 to 4 MiB blocks alike,
# 256 KiB 15% slower, 64 KiB 80% slower: numpy's per-call cost)
RING_BLOCK_BYTES = 1 << 20


# ------------------------------------------------------------ ring buffer reader


class RingReader:
    """Consumer side of a BPF ring buffer, mmap'ed: consumer page read-write
    at offset 0; producer page plus the data area mapped twice (so a record
    that wraps around is contiguous) read-only at offset pagesize."""

    kind = "ringbuf"

    def __init__(self, map_fd: int, rtype: RecordType):
        info = libbpf.fdinfo(map_fd)
        if int(info["map_type"]) != MapType.RINGBUF:
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
        self.window = 4096  # adapts: grows over runs of fixed-size records, shrinks after a mismatch
        self.variable = 0  # records of another length than the struct (padded or cut)
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

    def read(self) -> list[ColumnBatch]:
        """Every committed record from the consumer position on, in ring order."""
        cons = int(self._consumer_pos[0])
        prod = int(self._producer_pos[0])  # x86: this load is ordered before the header loads below
        if cons >= prod:
            return []
        out, cons = self.decode(cons, prod)
        self._consumer_pos[0] = cons  # frees the space for the producers
        return out

    def decode(self, cons: int, prod: int) -> tuple[list[ColumnBatch], int]:
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
                    warnings.warn(
                        "a view into the ring buffer is still alive: the map stays mapped until it is garbage-collected", StreamWarning, stacklevel=2
                    )


def decode_ring(data: np.ndarray, cons: int, prod: int, mask: int, rtype: RecordType, state=None) -> tuple[list[ColumnBatch], int]:
    """Decode the records of ring positions [cons, prod) from DATA (the data
    area mapped twice, as uint8: a range that wraps around is contiguous).
    Stops at the first busy (reserved, not yet committed) record; skips
    discarded ones. Returns (column batches, new cons).

    Records of the struct's size sit at a fixed stride: a block of them is
    checked with one vector compare of its headers and each field is copied
    from the ring straight into its column (one copy per field; the block is
    sized to stay in cache between the two). A record of another size is
    read alone and zero-padded or cut. ``state`` carries the adaptive
    window and counters between calls."""
    itemsize = rtype.itemsize
    stride = (itemsize + RINGBUF_HDR + 7) & ~7
    names = rtype.dtype.names
    window = getattr(state, "window", 4096)
    max_block = getattr(state, "max_block", max(16, RING_BLOCK_BYTES // stride))
    out: list[ColumnBatch] = []
    batch, filled = None, 0

    def full_batch():
        # over-allocated where records were discarded or of another size: trimmed by a copy when
        # much is unused (a view would keep the whole allocation alive in the stream)
        return batch[:filled] if filled * 4 >= len(batch) * 3 else batch[:filled].copy()

    while cons < prod:
        if batch is None or filled == len(batch):
            if batch is not None:
                out.append(batch)
            # as many rows as records of the struct's size fit: exact when all are
            batch, filled = rtype.empty_batch(max(1, (prod - cons) // stride)), 0
        columns = [batch.arrays[name] for name in names]
        off = cons & mask
        n = min((prod - cons) // stride, window, max_block, len(batch) - filled)
        k = 0
        if n:
            block = data[off : off + n * stride]
            headers = block.view("<u4")[:: stride // 4]
            kept = headers == itemsize  # committed, of the struct's size
            # the common case in one compare: the headers' strided gather costs as much as a field's copy
            all_kept = bool(kept.all())
            if all_kept:
                k = n
            else:
                fixed = (headers & ~np.uint32(RINGBUF_DISCARD)) == itemsize  # false for busy or other sizes
                k = n if fixed.all() else int(np.argmin(fixed))
            if k:
                records = block.reshape(n, stride)[:k, RINGBUF_HDR : RINGBUF_HDR + itemsize].view(rtype.dtype)[:, 0]
                if not all_kept and not kept[:k].all():
                    records = records[kept[:k]]  # discarded records in the run: rare, a gather
                    if state is not None:
                        state.discarded += int(k - len(records))
                m = len(records)
                for name, column in zip(names, columns):
                    column[filled : filled + m] = records[name]  # never a view: the producers reuse the ring
                filled += m
                cons += k * stride
            window = min(window * 2, max_block) if k == n else max(16, k)
            if k == n:
                continue
        # The record at cons is busy, discarded alone, or of another size.
        off = cons & mask
        header = int(data[off : off + 4].view("<u4")[0])
        if header & RINGBUF_BUSY:
            break
        length = header & RINGBUF_LEN_MASK
        if header & RINGBUF_DISCARD:
            if state is not None:
                state.discarded += 1
        else:
            record = rtype.from_bytes([data[off + RINGBUF_HDR : off + RINGBUF_HDR + length].tobytes()])
            for name, column in zip(names, columns):
                column[filled] = record[name][0]
            filled += 1
            if state is not None and length != itemsize:
                state.variable += 1
                state.variable_length = length
        cons += (length + RINGBUF_HDR + 7) & ~7
    if filled:
        out.append(full_batch())
    if state is not None:
        state.window = window
    return out, cons


# ------------------------------------------------------------ perf buffer reader


class PerfReader:
    """The per-CPU perf readers of one perf event table, opened through the
    backend (``open_perf_buffer``: BCC's readers); one Python callback per event
    (the kernel side costs microseconds per event anyway). Events of
    different CPUs interleave in the order the buffers are read."""

    kind = "perf"

    def __init__(self, obj, table: str, rtype: RecordType, page_cnt: int = DEFAULT_PERF_PAGES):
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
        self._buffer = obj.open_perf_buffer(table, on_event, on_lost, page_cnt)

    def fds(self) -> list[int]:
        return self._buffer.fds()

    def pause(self, drained: int) -> float:
        return 0.0  # the kernel side of perf buffers is the bottleneck; read as soon as woken

    def read(self) -> list[ColumnBatch]:
        self._buffer.consume()
        if not self._pending:
            return []
        pending, self._pending = self._pending, []
        return [self.rtype.batch_of(self.rtype.from_bytes(pending))]

    def close(self) -> None:
        self._buffer.close()
