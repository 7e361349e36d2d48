"""The tail-call counters bumped at a fixed address (kernel/counters.py): exact
when every CPU runs the chain at once, read through the mapping as the kernel
holds them, and exact too when CPUs share rows (the atomic path a kernel that
refuses the full table size gets)."""

from __future__ import annotations

import ctypes as ct
import errno
import os
import threading

import pytest

from bpfmagic.c.instrument import BUMP_HELPER, bump
from bpfmagic.kernel import counters, libbpf
from bpfmagic.kernel.counters import CounterTable

from ..conftest import needs_root

CPUS = sorted(os.sched_getaffinity(0))

BCC_CHAIN = r"""
BPF_PROG_ARRAY(jt, 4);
int entry(struct xdp_md *ctx) { jt.call(ctx, 1); return XDP_PASS; }
int hop(struct xdp_md *ctx) { u32 k = ctx->data_end - ctx->data; jt.call(ctx, k & 3); return XDP_DROP; }
"""

CORE_CHAIN = r"""#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 4); __type(key, __u32); __type(value, __u32); } jt SEC(".maps");
SEC("xdp") int entry(struct xdp_md *ctx) { bpf_tail_call(ctx, &jt, 1); return XDP_PASS; }
SEC("xdp") int hop(struct xdp_md *ctx) { __u32 k = ctx->data_end - ctx->data; bpf_tail_call(ctx, &jt, k & 3); return XDP_DROP; }
char LICENSE[] SEC("license") = "GPL";
"""


def run_on_every_cpu(fd: int, packet: bytes, repeat: int, times: int) -> int:
    """Test runs of program FD from one thread pinned to each CPU, all at once (ctypes lets go
    of the GIL in the syscall); returns how many runs were made in all."""
    errors = []

    def worker(cpu):
        try:
            os.sched_setaffinity(0, {cpu})  # this thread only
            for _ in range(times):
                libbpf.test_run(fd, data=packet, repeat=repeat)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(cpu,)) for cpu in CPUS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return len(CPUS) * repeat * times


@needs_root
@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs to run the chain on at once")
@pytest.mark.parametrize("core", [False, True], ids=["bcc", "core"])
def test_counts_made_on_every_cpu_at_once_are_exact(session, core):
    m = session.load("m", CORE_CHAIN if core else BCC_CHAIN, core=core, slots={"jt[1]": "hop"})
    # A 14-byte packet: hop's variable-key site calls slot 14 & 3 = 2, which is empty.
    runs = run_on_every_cpu(session.program("m.entry").fd, bytes(14), repeat=50_000, times=4)
    slots = session.slots().set_index("index")
    assert (slots.loc[1, "calls"], slots.loc[1, "taken"], slots.loc[1, "missed"]) == (runs, runs, 0)
    sites = session.sites.counts(m)
    entry_line, hop_line = (t.line for t in m.syntax.tail_calls)
    assert sites[entry_line] == (runs, 0)
    assert sites[hop_line] == (runs, runs)  # every call of the variable-key site missed: slot 2 is empty
    array = session.arrays["jt"]
    assert array.counters.sums(4, start=4)[2] == runs  # and was counted as slot 2's miss


@needs_root
def test_a_table_reads_what_the_kernel_holds(session):
    session.load("m", BCC_CHAIN, slots={"jt[1]": "hop"})
    session.test_run("m.entry", data=bytes(15), repeat=1000)  # hop calls slot 15 & 3 = 3: empty
    table = session.arrays["jt"].counters
    size = table.rows * table.width
    value, key = (ct.c_uint64 * size)(), ct.c_uint32(0)
    libbpf.check(libbpf.lib().bpf_map_lookup_elem(table.fd, ct.byref(key), value), "read the counter table")
    by_syscall = [sum(value[row * table.width + i] for row in range(table.rows)) for i in range(table.width)]
    assert table.sums(table.width) == by_syscall
    # hop's variable-key site counts here (entry's constant one in the sites table): slot 3 called, and missed
    assert by_syscall[3] == 1000 and by_syscall[4 + 3] == 1000
    with pytest.raises(IndexError):
        table.sums(2, start=table.width - 1)


@needs_root
@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs sharing a row")
def test_cpus_sharing_a_row_count_exactly_with_an_atomic_add(session):
    table = CounterTable("bm_test_shared", 8, rows=1)
    try:
        assert (table.rows, table.shared) == (1, True)
        source = BUMP_HELPER + f"int prog(struct xdp_md *ctx) {{ {bump(table, '5')} return XDP_PASS; }}\n"
        session.load("m", source, count_tail_calls=False)
        program = session.program("m.prog")
        assert "lock" in program.dump("xlated", source=False)  # one row for every CPU: an atomic add
        runs = run_on_every_cpu(program.fd, bytes(64), repeat=100_000, times=4)
        assert table.sum(5) == runs
        assert table.sums(8) == [0] * 5 + [runs] + [0] * 2
    finally:
        session.unload("m")
        table.close()


@needs_root
@pytest.mark.skipif(len(CPUS) < 2, reason="one CPU has one row whatever the size")
def test_a_kernel_refusing_the_full_size_gets_shared_rows(monkeypatch):
    # This kernel takes any size; older ones refuse an array value over KMALLOC_MAX_SIZE (E2BIG).
    create = libbpf.map_create

    def refuse_large(map_type, name, key_size, value_size, entries, flags=0):
        if value_size > 8000:
            raise OSError(errno.E2BIG, os.strerror(errno.E2BIG))
        return create(map_type, name, key_size, value_size, entries, flags)

    monkeypatch.setattr(counters, "KMALLOC_MAX_SIZE", 8000)
    monkeypatch.setattr(libbpf, "map_create", refuse_large)
    table = CounterTable("bm_test_big", 999)  # a row per CPU is over the limit, one row is not
    try:
        assert (table.rows, table.shared) == (1, True)
    finally:
        table.close()
    with pytest.raises(OSError) as refused:
        CounterTable("bm_test_big", 1001)  # not even one row fits
    assert refused.value.errno == errno.E2BIG
