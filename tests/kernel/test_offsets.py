"""BCC cells that read kernel struct members, on the real kernel: where the
headers BCC compiles against (another kernel's, here) put a member elsewhere
than the running kernel, the cell warns before any data, naming the member
and both offsets; where they agree, or the cell reads only uapi contexts
and helpers, it says nothing. The cells have the shapes of BCC's exitsnoop
and runqlat tools.

The offsets the warnings must name are measured here apart from bpfmagic:
the headers' side by BCC itself (a function returning offsetof, its
compiled instruction read back), the kernel's side by bpftool's dump of
/sys/kernel/btf/vmlinux."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import warnings

import pytest

from bpfmagic.backends import bcc_offsets
from bpfmagic.c import analyse
from bpfmagic.kernel import btf, env

from ..conftest import needs_root

pytestmark = [
    needs_root,
    pytest.mark.skipif(
        os.path.isdir(f"/lib/modules/{os.uname().release}/build") or env.find_debian_headers() is None,
        reason="BCC compiles against the running kernel's own headers here: nothing can differ",
    ),
    pytest.mark.skipif(btf.vmlinux() is None or shutil.which("bpftool") is None, reason="needs vmlinux BTF and bpftool"),
]

# exitsnoop's shape: the exiting task's pid, parent's pid and exit code, with its flags.
EXITSNOOP = r"""
#include <linux/sched.h>

struct exit_event { u32 pid; u32 ppid; int exit_code; u32 flags; char comm[16]; };
BPF_RINGBUF_OUTPUT(exits, 16);

RAW_TRACEPOINT_PROBE(sched_process_exit) {
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct exit_event e = {};
    e.pid = task->tgid;
    e.ppid = task->real_parent->tgid;
    e.exit_code = task->exit_code >> 8;
    e.flags = task->flags;
    bpf_get_current_comm(&e.comm, sizeof(e.comm));
    exits.ringbuf_output(&e, sizeof(e), 0);
    return 0;
}
"""

# runqlat's shape: wakeup time by pid, the run-queue latency of the task switched in as a histogram.
RUNQLAT = r"""
#include <linux/sched.h>

BPF_HASH(start, u32, u64);
BPF_HISTOGRAM(dist);

RAW_TRACEPOINT_PROBE(sched_wakeup) {
    struct task_struct *p = (struct task_struct *)ctx->args[0];
    u32 pid = p->pid;
    u64 ts = bpf_ktime_get_ns();
    start.update(&pid, &ts);
    return 0;
}

RAW_TRACEPOINT_PROBE(sched_switch) {
    struct task_struct *prev = (struct task_struct *)ctx->args[1];
    struct task_struct *next = (struct task_struct *)ctx->args[2];
    u32 pid;
    if (prev->__state == TASK_RUNNING) {
        pid = prev->pid;
        u64 ts = bpf_ktime_get_ns();
        start.update(&pid, &ts);
    }
    bpf_probe_read_kernel(&pid, sizeof(pid), &next->pid);
    u64 *tsp = start.lookup(&pid);
    if (tsp == 0)
        return 0;
    u64 delta = (bpf_ktime_get_ns() - *tsp) / 1000;
    dist.increment(bpf_log2l(delta));
    start.delete(&pid);
    return 0;
}
"""

# Members whose offsets the 6.1 headers and this kernel share (checked by headers_vs_kernel).
AGREEING = r"""
#include <linux/sched.h>

BPF_HASH(states, u32, u32);

RAW_TRACEPOINT_PROBE(sched_switch) {
    struct task_struct *prev = (struct task_struct *)ctx->args[1];
    u32 flags = prev->flags, state = prev->__state;
    states.update(&flags, &state);
    return 0;
}
"""

# uapi contexts and helpers only: an XDP parser, a socket filter, a raw tracepoint's args.
UAPI_ONLY = r"""
#include <uapi/linux/if_ether.h>

BPF_ARRAY(counts, u64, 4);

int parse(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    int key = eth->h_proto == htons(ETH_P_IP) ? 0 : 1;
    counts.increment(key);
    return XDP_PASS;
}

int sock(struct __sk_buff *skb) {
    int key = skb->len > 100 ? 2 : 3;
    counts.increment(key);
    return 0;
}

RAW_TRACEPOINT_PROBE(sys_enter) {
    u64 id = ctx->args[1];
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (id == 39 && tgid)
        counts.increment(0);
    return 0;
}
"""


@pytest.fixture(scope="module")
def kernel_offsets() -> dict[str, int]:
    """task_struct's members and their byte offsets in the running kernel, from bpftool."""
    dump = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"], capture_output=True, text=True, check=True)
    block = dump.stdout.split("STRUCT 'task_struct' size=", 1)[1].split("\n[", 1)[0]
    return {name: int(bits) // 8 for name, bits in re.findall(r"'(\w+)' type_id=\d+ bits_offset=(\d+)", block)}


@pytest.fixture(scope="module")
def header_offsets() -> dict[str, int]:
    """The same members' offsets as BCC compiles them: each a function returning
    offsetof, its first instruction (r0 = IMM) read back from BCC's bytecode."""
    from bpfmagic import Session

    members = ("tgid", "pid", "real_parent", "exit_code", "flags", "__state")
    source = "#include <linux/sched.h>\n" + "".join(
        f"int off_{m}(void *ctx) {{ return __builtin_offsetof(struct task_struct, {m}); }}\n" for m in members
    )
    with Session() as s:
        m = s.load("offsets_oracle", source)
        out = {}
        for name in members:
            opcode, _regs, _off, imm = struct.unpack_from("<BBhi", m.bpf.dump_func(f"off_{name}".encode()), 0)
            assert opcode == 0xB7, f"off_{name} does not start with r0 = IMM"  # BPF_ALU64 | BPF_MOV | BPF_K
            out[name] = imm
    return out


def test_headers_and_kernel_disagree_where_these_tests_say(header_offsets, kernel_offsets):
    """The premise, measured: exitsnoop's and runqlat's pid members moved between
    the headers and this kernel; flags and __state did not."""
    for member in ("tgid", "pid", "real_parent", "exit_code"):
        assert header_offsets[member] != kernel_offsets[member], member
    for member in ("flags", "__state"):
        assert header_offsets[member] == kernel_offsets[member], member


def _offset_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, env.KernelOffsetsWarning)]


def _member_line(text: str, member: str) -> str:
    lines = [ln for ln in text.splitlines() if f"task_struct.{member} " in ln]
    assert len(lines) == 1, text
    return lines[0]


def test_exitsnoop_shape_warns_with_both_offsets_and_still_loads(session, header_offsets, kernel_offsets):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = session.load("exitsnoop", EXITSNOOP)
    [text] = _offset_warnings(caught)
    for member, line in (("tgid", 10), ("real_parent", 11), ("exit_code", 12)):
        said = _member_line(text, member)
        assert said.strip().startswith(f"exitsnoop:{line}: ")
        assert f"offset {header_offsets[member]} in those headers, at {kernel_offsets[member]} in the running kernel" in said
    assert "task_struct.flags" not in text  # it agrees
    assert env.headers_name(os.environ["BCC_KERNEL_SOURCE"]) in text and os.uname().release in text
    assert "--core" in text
    # the reads may be intended: the cell loads, attached, its events streamed
    assert "raw_tracepoint__sched_process_exit" in m.programs and "exitsnoop.exits" in session.streams.names()


def test_the_warning_comes_before_any_stream_starts(session):
    """Warnings as errors refuse the cell: nothing of it stays loaded, no stream started."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", env.KernelOffsetsWarning)
        with pytest.raises(env.KernelOffsetsWarning, match="task_struct.tgid"):
            session.load("exitsnoop", EXITSNOOP)
    assert "exitsnoop" not in session.modules and session.streams.names() == []


def test_runqlat_shape_names_each_member_once(session, header_offsets, kernel_offsets):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session.load("runqlat", RUNQLAT)
    [text] = _offset_warnings(caught)
    said = _member_line(text, "pid")  # read three times; named at its first read
    assert said.strip().startswith("runqlat:9: p->pid: ")
    assert f"offset {header_offsets['pid']} in those headers, at {kernel_offsets['pid']} in the running kernel" in said
    assert "__state" not in text


def test_members_that_agree_give_no_note(session, header_offsets, kernel_offsets):
    check = bcc_offsets.start(analyse(AGREEING), "agree", [], [])
    assert [r.designator for r in check.reads] == ["flags", "__state"]  # the check has something to compare
    assert check.warnings() == []
    assert check.in_headers() == (
        {
            ("struct task_struct", "flags"): (header_offsets["flags"], 4),
            ("struct task_struct", "__state"): (header_offsets["__state"], 4),
        },
        None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", env.HeadersMismatchWarning)
        session.load("agree", AGREEING)


def test_uapi_contexts_and_helpers_give_no_note(session):
    # The contexts' members are not kernel struct reads; the Ethernet header's (uapi) agree.
    check = bcc_offsets.start(analyse(UAPI_ONLY), "uapi", [], [])
    assert [(r.record, r.designator) for r in check.reads] == [("struct ethhdr", "h_proto")]
    assert check.warnings() == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", env.HeadersMismatchWarning)
        session.load("uapi", UAPI_ONLY)
        session.load("kprobe_shape", "#include <uapi/linux/ptrace.h>\nint on_open(struct pt_regs *ctx) { u64 flags = ctx->si; return flags == 0; }")


def test_layouts_are_asked_of_clang_once_and_cached(tmp_path, monkeypatch, header_offsets):
    """A new session (an empty memory cache) reads what an earlier one asked, from the trusted cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(bcc_offsets, "_cache", {})
    first = bcc_offsets.start(analyse(EXITSNOOP), "exitsnoop", [], [])
    assert first.proc is not None  # clang asked
    said = first.warnings()
    assert [p.name for p in (tmp_path / "bpfmagic" / "offsets").iterdir()] and f"offset {header_offsets['tgid']} " in said[0]
    monkeypatch.setattr(bcc_offsets, "_cache", {})
    again = bcc_offsets.start(analyse(EXITSNOOP), "exitsnoop", [], [])
    assert again.proc is None and again.warnings() == said


def test_the_cell_magic_shows_the_warning(fresh, capsys):
    with pytest.warns(env.KernelOffsetsWarning, match=r"cell:10: task->tgid: task_struct\.tgid is at offset \d+ in those headers"):
        fresh.run_cell_magic("bpf", "exitsnoop", EXITSNOOP)
    assert capsys.readouterr().out.startswith("exitsnoop: raw_tracepoint__sched_process_exit")  # loaded all the same
