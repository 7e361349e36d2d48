"""Counters programs bump at a fixed address: bpfmagic's tail-call counters.

A per-CPU array costs a map lookup per bump (a key spilled to the stack, the
per-CPU pointer table, this CPU's offset): ~3 ns a hop on a host with
retpolines and SRSO, a third of the tail call it counts. Here the counters
are one element of a plain array (BPF_F_MMAPABLE), a row of WIDTH u64 per
possible CPU; a program reaches the element by its address (an ld_imm64 of
BPF_PSEUDO_MAP_VALUE: no lookup, no NULL check) and adds 1 at
[cpu * WIDTH + i], its own CPU's row, without an atomic (a program keeps
its CPU until it returns, as with per-CPU maps). User space reads the rows
through a shared mapping, with no system call.

Older kernels refuse an array value over KMALLOC_MAX_SIZE (4 MiB on x86-64;
this host's 6.18 took 256 MiB): a table that such a kernel refuses gets as many rows as fit and
``shared`` rows, each bumped with an atomic add by the CPUs whose number
modulo ``rows`` it is (exact still, dearer under contention)."""

from __future__ import annotations

import errno as _errno
import mmap
import os

from . import libbpf
from .maptypes import MapType

BPF_F_MMAPABLE = 1 << 10
KMALLOC_MAX_SIZE = 4 << 20  # the array value limit older kernels keep (MAX_ORDER pages of 4 KiB)


class CounterTable:
    """WIDTH u64 counters per CPU in one mmapable array element, read as sums over CPUs."""

    def __init__(self, name: str, width: int, rows: int | None = None):
        """``rows``: fewer rows than possible CPUs, shared (what a kernel that refuses the full
        size gets); by default a row per possible CPU."""
        if width < 1:
            raise ValueError(f"a counter table needs at least one counter (got {width})")
        self.name, self.width = name, width
        cpus = libbpf.num_possible_cpus()
        self.rows = min(rows, cpus) if rows else cpus
        self.shared = self.rows < cpus  # rows bumped atomically by several CPUs (see the module's text)
        try:
            self.fd = libbpf.map_create(MapType.ARRAY, name, 4, self.rows * width * 8, 1, flags=BPF_F_MMAPABLE)
        except OSError as e:
            if e.errno != _errno.E2BIG:
                raise
            self.rows, self.shared = max(1, min(self.rows - 1, KMALLOC_MAX_SIZE // (width * 8))), True
            if self.rows * width * 8 > KMALLOC_MAX_SIZE:
                raise OSError(_errno.E2BIG, f"{width} counters do not fit one array element of this kernel (at most {KMALLOC_MAX_SIZE // 8})") from e
            self.fd = libbpf.map_create(MapType.ARRAY, name, 4, self.rows * width * 8, 1, flags=BPF_F_MMAPABLE)
        size = self.rows * width * 8
        try:
            self._view = mmap.mmap(self.fd, (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        except OSError:
            os.close(self.fd)
            raise

    def _rows(self):
        import numpy as np

        return np.frombuffer(self._view, dtype=np.uint64, count=self.rows * self.width).reshape(self.rows, self.width)

    def sums(self, size: int, start: int = 0) -> list[int]:
        """Counters start..start+size-1, each summed over the CPUs' rows."""
        if start < 0 or size < 0 or start + size > self.width:
            raise IndexError(f"counters {start}..{start + size - 1} of a table of {self.width}")
        return [int(v) for v in self._rows()[:, start : start + size].sum(axis=0)]

    def sum(self, index: int) -> int:
        """One counter summed over the CPUs' rows."""
        return self.sums(1, index)[0]

    def close(self) -> None:
        if self.fd >= 0:
            self._view.close()
            os.close(self.fd)
            self.fd = -1
