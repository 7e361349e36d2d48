"""Programs whose section starts with "?" (SEC("?fentry/...")): libbpf leaves them out of the
object's load, as the kernel's tailcall_poke selftest does with the program it loads only in
its second skeleton. A --core cell loads them when it names them (-a or -s) and leaves them
alone otherwise; the others attach by their sections as usual.

The shape that showed it: the selftest's file, an optional fentry program beside two that
attach by themselves; loading it stopped at the attach step with a bare KeyError."""

from __future__ import annotations

import os

import pytest

from bpfmagic import AttachError, UsageProblem

from ..conftest import kernel_loads_fentry, needs_root

pytestmark = needs_root

RAW_TP = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 always_runs = 0, optional_runs = 0;

SEC("?raw_tp/sys_enter") int BPF_PROG(optional) { optional_runs++; return 0; }
SEC("raw_tp/sys_enter") int BPF_PROG(always) { always_runs++; return 0; }

char LICENSE[] SEC("license") = "GPL";
"""


def test_an_optional_program_loads_only_when_the_cell_names_it(session):
    m = session.load("opt", RAW_TP, core=True)
    assert "optional" not in m.programs and "always" in m.auto_attached
    for _ in range(5):
        os.getppid()
    assert m.globals["always_runs"] > 0 and m.globals["optional_runs"] == 0
    with pytest.raises(UsageProblem, match=r'opt.optional is SEC\("\?raw_tp/sys_enter"\).*-a optional=TARGET'):
        m.program("optional")
    m = session.load("opt", RAW_TP, core=True, attach={"optional": "raw_tracepoint:sys_enter"})
    for _ in range(5):
        os.getppid()
    assert m.globals["optional_runs"] > 0 and m.globals["always_runs"] > 0


POKE = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} hops SEC(".maps");

SEC("?fentry/bpf_fentry_test1") int BPF_PROG(jumper, int a)
{
    bpf_tail_call_static(ctx, &hops, 0);
    return 0;
}

SEC("fentry/bpf_fentry_test1") int BPF_PROG(first, int a) { return 0; }
SEC("fentry/bpf_fentry_test1") int BPF_PROG(second, int a) { return 0; }

char LICENSE[] SEC("license") = "GPL";
"""


def test_optional_fentry_program_beside_attached_ones(session):
    if not kernel_loads_fentry():
        with pytest.raises(AttachError, match=r'SEC\("fentry/bpf_fentry_test1"\) programs are refused by this kernel'):
            session.load("poke", POKE, core=True)
        return
    poke = session.load("poke", POKE, core=True)
    assert sorted(poke.auto_attached) == ["first", "second"] and "jumper" not in poke.programs
    session.slot("hops[0]", "poke.first")
    # The second module shares the session's array `hops`, as the selftest shares it by a pin.
    jumper = session.load("jumper", POKE, core=True, attach={"jumper": "fentry:bpf_fentry_test1"})
    assert jumper.programs["jumper"].type == "tracing"
    session.slot("hops[0]", "poke.second")
    session.unload("jumper")
