"""What depends on the kernel's features, asserted for the branch the running kernel takes:
kprobes (BCC kprobe__ functions, -a kprobe:/kretprobe:, --core SEC("kprobe/...") with
BPF_KPROBE) and the tracex5 sample as written (a kprobe on __seccomp_filter tail-calling
per syscall number). Where the kernel lacks kprobes (CONFIG_KPROBES off) each test asserts
the cell's refusal and its alternative; where it has them, the counts.

`make test-kernels` runs this file inside virtual machines booting other kernels (Debian's
6.1 has kprobes), so both branches run for real: tests/kernels/matrix.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from bpfmagic import AttachError

from ..conftest import kernel_has_kprobes, needs_root
from ..paths import REPO

pytestmark = needs_root
REFUSED = "kprobes are not available on this kernel"

BCC_KPROBE = r"""
BPF_ARRAY(calls, u64, 1);
int kprobe____x64_sys_getppid(struct pt_regs *ctx) {
    if ((u32)bpf_get_current_pid_tgid() != TARGET_TID)
        return 0;
    int k = 0;
    calls.atomic_increment(k);
    return 0;
}
"""

BCC_KRETPROBE = r"""
#include <asm/ptrace.h>
struct event { u32 tid; u32 pad; s64 ret; };
BPF_RINGBUF_OUTPUT(returns, 8);
int on_return(struct pt_regs *ctx) {
    u32 tid = bpf_get_current_pid_tgid();
    if (tid != TARGET_TID)
        return 0;
    struct event e = {.tid = tid, .ret = PT_REGS_RC(ctx)};
    returns.ringbuf_output(&e, sizeof(e), 0);
    return 0;
}
"""

CORE_KPROBE = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
const volatile __u32 target_tid = 0;
__u64 calls = 0;
SEC("kprobe/__x64_sys_getppid")
int BPF_KPROBE(on_getppid)
{
    if ((__u32)bpf_get_current_pid_tgid() == target_tid)
        __sync_fetch_and_add(&calls, 1);
    return 0;
}
char LICENSE[] SEC("license") = "GPL";
"""


def _tid_flag() -> str:
    return f"-DTARGET_TID={threading.get_native_id()}"


def test_bcc_kprobe_function_counts_calls(session):
    if not kernel_has_kprobes():
        with pytest.raises(AttachError, match=REFUSED):
            session.load("kp", BCC_KPROBE, cflags=_tid_flag())
        assert "kp" not in session.modules
        return
    m = session.load("kp", BCC_KPROBE, cflags=_tid_flag())
    for _ in range(5):
        os.getppid()
    assert m["calls"][0].value == 5


def test_kretprobe_events_into_a_dataframe(session):
    attach = {"on_return": "kretprobe:__x64_sys_getppid"}
    if not kernel_has_kprobes():
        with pytest.raises(AttachError, match=REFUSED):
            session.load("kr", BCC_KRETPROBE, cflags=_tid_flag(), attach=attach)
        return
    session.load("kr", BCC_KRETPROBE, cflags=_tid_flag(), attach=attach)
    stream = session.stream("returns")
    for _ in range(7):
        os.getppid()
    assert stream.wait(7, timeout=30), stream
    df = stream.df()
    assert len(df) == 7 and (df["ret"] == os.getppid()).all() and (df["tid"] == threading.get_native_id()).all()


def test_core_kprobe_section_attaches_by_itself(session):
    if not kernel_has_kprobes():
        with pytest.raises(AttachError, match=REFUSED):
            session.load("ck", CORE_KPROBE, core=True, globals={"target_tid": threading.get_native_id()})
        return
    m = session.load("ck", CORE_KPROBE, core=True, globals={"target_tid": threading.get_native_id()})
    assert "on_getppid" in m.auto_attached
    for _ in range(6):
        os.getppid()
    assert m.globals["calls"] == 6


# A child under an allow-all seccomp filter: every syscall it makes goes through
# __seccomp_filter. It waits for a line on stdin, then makes the syscalls the sample matches.
SECCOMP_CHILD = textwrap.dedent(
    r"""
    import ctypes, os, struct, sys
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    allow = struct.pack("<HBBI", 0x06, 0, 0, 0x7FFF0000)          # BPF_RET|BPF_K, SECCOMP_RET_ALLOW
    insns = ctypes.create_string_buffer(allow, len(allow))
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    prog = Prog(1, ctypes.addressof(insns))
    assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    assert libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) == 0, ctypes.get_errno()
    print("ready", flush=True)
    sys.stdin.readline()
    out = os.open("/dev/null", os.O_WRONLY)
    src = os.open("/dev/zero", os.O_RDONLY)
    for _ in range(WRITES):
        os.write(out, b"x" * 512)
    for _ in range(READS):
        os.read(src, 200)
    for _ in range(GETUIDS):
        os.getuid()
    print("done", flush=True)
    """
)
WRITES, READS, GETUIDS = 50, 30, 20


def test_tracex5_sample_as_written(session):
    """The sample's BPF side from a file: the kprobe on __seccomp_filter, the prog array the
    loader fills from its .values, handlers reached only through it; driven by a process
    under a seccomp filter; exact counts in its map and its trace lines in a DataFrame."""
    path = os.path.join(REPO, "bpf", "tracex5_seccomp.bpf.c")
    if not kernel_has_kprobes():
        with pytest.raises(AttachError, match=REFUSED):
            session.load("tracex5", file=path, core=True)
        return
    m = session.load("tracex5", file=path, core=True)
    slots = session.slots("progs").set_index("index")
    nr = {"write": 1, "read": 0, "getuid": 102}  # x86-64
    assert slots.loc[nr["write"], "program"] == "tracex5.bpf_func_SYS__NR_write"
    assert slots.loc[nr["read"], "program"] == "tracex5.bpf_func_SYS__NR_read"
    code = SECCOMP_CHILD.replace("WRITES", str(WRITES)).replace("READS", str(READS)).replace("GETUIDS", str(GETUIDS))
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        m.globals["target_tgid"] = child.pid
        started = time.monotonic()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
        child.wait()
    counts = {name: m["counts"][n].value for name, n in nr.items()}
    assert counts == {"write": WRITES, "read": READS, "getuid": GETUIDS}
    lines = session.trace(seconds=max(1.0, 3.0 - (time.monotonic() - started)), grep=r"^(write|read)\(fd=|^syscall=")
    mine = lines[lines["pid"] == child.pid]
    assert (mine["msg"].str.startswith("write(fd=") & mine["msg"].str.endswith("size=512)")).sum() == WRITES
    assert (mine["msg"].str.startswith("read(fd=") & mine["msg"].str.endswith("size=200)")).sum() == READS
    assert (mine["msg"] == f"syscall={nr['getuid']} (one of get/set uid/pid/gid)").sum() == GETUIDS
