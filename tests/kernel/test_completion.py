"""Tab completion of %bpf and %%bpf lines, asked of IPython's own completer the way
JupyterLab, the terminal and VS Code ask it, with a real session behind it."""

from __future__ import annotations

import os
import textwrap

import pytest
from IPython.core.completer import provisionalcompleter

from ..conftest import needs_root
from ..helpers import offered

CELL = textwrap.dedent(
    """\
    %%bpf demo -s jt[parse_ip]=parse_ip
    BPF_PROG_ARRAY(jt, 8);
    struct rec { u64 ts; u32 pid; };
    BPF_RINGBUF_OUTPUT(events, 8);
    BPF_HASH(counts, u32, u64);
    int entry(struct xdp_md *ctx) { jt.call(ctx, SLOT(jt, parse_ip)); return XDP_PASS; }
    int parse_ip(struct xdp_md *ctx) {
        struct rec r = {.ts = bpf_ktime_get_ns()};
        events.ringbuf_output(&r, sizeof(r), 0);
        u32 k = 0;
        counts.increment(k);
        return XDP_DROP;
    }
    """
)


def replaced(ip, text: str) -> set[str]:
    """The text each completion replaces (what the front end overwrites)."""
    with provisionalcompleter():
        return {text[c.start : c.end] for c in ip.Completer.completions(text, len(text))}


@pytest.fixture
def demo(fresh):
    """A session with a BCC cell (an XDP entry, a named slot, a ring buffer, a hash) and a syscall-keyed array."""
    assert fresh.run_cell(CELL).success
    assert fresh.run_cell("%bpf progarray progs 512 --keys syscalls").success
    return fresh


def test_attach_kinds_tracepoints_and_interfaces(ip):
    assert offered(ip, "%%bpf m -a f=tr") == ["tracepoint:"]
    assert offered(ip, "%%bpf m -a f=raw") == ["raw_tracepoint:"]
    assert offered(ip, "%%bpf m -a f=k") == ["kprobe:", "kretprobe:"]
    assert offered(ip, "%%bpf m --attach=f=x") == []  # --attach=VALUE: not read as FUNC=TARGET yet
    assert offered(ip, "%%bpf m -a f=raw_tracepoint:sys_e") == ["raw_tracepoint:sys_enter", "raw_tracepoint:sys_exit"]
    assert offered(ip, "%%bpf m -a f=tracepoint:raw_sys") == ["tracepoint:raw_syscalls:"]
    assert offered(ip, "%%bpf m -a f=tracepoint:raw_syscalls:") == ["tracepoint:raw_syscalls:sys_enter", "tracepoint:raw_syscalls:sys_exit"]
    sched = sorted(e.name for e in os.scandir("/sys/kernel/tracing/events/sched") if e.is_dir())
    assert offered(ip, "%%bpf m -a f=tracepoint:sched:") == [f"tracepoint:sched:{e}" for e in sched]
    # per-syscall events are not raw tracepoints: raw_tracepoint cannot attach to them
    assert offered(ip, "%%bpf m -a f=raw_tracepoint:sys_enter_o") == []
    assert offered(ip, "%%bpf m -a f=xdp:l") == ["xdp:lo"]
    assert offered(ip, "%%bpf m -a f=tc:lo:") == ["tc:lo:egress", "tc:lo:ingress"]
    assert replaced(ip, "%%bpf m -a f=tracepoint:sch") == {"tracepoint:sch"}  # the target, not `f=`


@needs_root
def test_programs_arrays_and_slots_of_the_session(demo):
    ip = demo
    assert offered(ip, "%bpf run de") == ["demo.entry", "demo.parse_ip"]
    assert not any(t.startswith("%") for t in offered(ip, "%bpf run de"))
    assert offered(ip, "%bpf run zz") == []
    assert offered(ip, "%bpf dump demo.e") == ["demo.entry"]
    assert offered(ip, "%bpf slots ") == ["jt", "progs"]
    assert offered(ip, "%bpf graph j") == ["jt"]
    assert offered(ip, "%bpf slot ") == ["jt[", "progs["]
    assert offered(ip, "%bpf slot jt[") == ["jt[parse_ip]="]  # names, and filled slots without one
    assert offered(ip, "%bpf slot jt[parse_ip]=demo.") == ["demo.entry", "demo.parse_ip"]
    assert replaced(ip, "%bpf slot jt[parse_ip]=demo.") == {"demo."}
    assert offered(ip, "%bpf unslot progs[writ") == ["progs[write]", "progs[writev]"]  # syscall names
    assert offered(ip, "%bpf unslot jt[") == ["jt[parse_ip]"]
    assert ip.run_cell("%bpf slot jt[5]=demo.entry").success
    assert offered(ip, "%bpf unslot jt[") == ["jt[5]", "jt[parse_ip]"]  # a filled slot without a name: its index
    assert offered(ip, "%bpf unslot jt[1") == ["jt[1]"]  # a digit: every index it begins
    assert offered(ip, "%bpf unload ") == ["demo", "jt", "progs"]
    assert offered(ip, "%bpf globals ") == ["demo"]
    assert offered(ip, "%%bpf ") == ["demo"]  # re-running a cell
    assert offered(ip, "%%bpf demo2 -a f=fentry:demo.p") == ["fentry:demo.parse_ip"]


@needs_root
def test_streams_and_maps_by_the_names_they_are_read_by(demo):
    ip = demo
    assert offered(ip, "%bpf df ") == ["demo.events", "events"]
    assert offered(ip, "%bpf map c") == ["counts"]
    assert offered(ip, "%bpf map ") == ["counts", "demo.counts", "demo.events", "demo.jt", "events", "jt", "progs"]
    assert offered(ip, "%bpf watch ev") == ["events"]
