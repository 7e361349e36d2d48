"""Shared fixtures. Every test that loads BPF objects runs as root on a real
kernel; the whole run must leave no program, map or link behind."""
from __future__ import annotations

import gc
import os
import threading
import time

import pytest


def kernel_objects() -> dict[str, set[int]]:
    """ids of every BPF program, map and link the kernel has now. Walks the id
    space with BPF_*_GET_NEXT_ID, which opens nothing: listing with bpftool
    takes a reference on each object and can race with the kernel's deferred
    frees."""
    import ctypes as ct

    from bpfmagic import libbpf
    lib = libbpf.lib()
    out = {}
    for kind in ("prog", "map", "link"):
        get_next = getattr(lib, f"bpf_{kind}_get_next_id")
        get_next.argtypes = [ct.c_uint32, ct.POINTER(ct.c_uint32)]
        ids, current, nxt = set(), 0, ct.c_uint32()
        while get_next(current, ct.byref(nxt)) == 0:
            current = nxt.value
            ids.add(current)
        out[kind] = ids
    return out


def _held_by_other_processes() -> dict[str, set[int]]:
    """ids of programs, maps and links that another live process holds an fd
    of (a concurrent bpftool, BCC script or test run is not our leak)."""
    held: dict[str, set[int]] = {"prog": set(), "map": set(), "link": set()}
    me = os.getpid()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fdinfo")
        except OSError:
            continue
        for fd in fds:
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    text = f.read()
            except OSError:
                continue
            for kind in held:
                key = f"{kind}_id:"
                for line in text.splitlines():
                    if line.startswith(key) and not (kind == "prog" and "link_id:" in text):
                        held[kind].add(int(line.split()[1]))
    return held


def leftovers(before: dict[str, set[int]], wait: float = 5.0) -> dict[str, set[int]]:
    """Objects made since ``before`` that are still there. The kernel frees a
    detached program after an RCU grace period (about a second for raw
    tracepoints here), so this polls for up to ``wait`` seconds."""
    gc.collect()
    deadline = time.monotonic() + wait
    while True:
        now = kernel_objects()
        new = {kind: ids - before[kind] for kind, ids in now.items() if ids - before[kind]}
        if new:
            others = _held_by_other_processes()
            new = {kind: ids - others[kind] for kind, ids in new.items() if ids - others[kind]}
        if not new or time.monotonic() > deadline:
            return new
        time.sleep(0.1)


def wait_for(predicate, timeout: float = 10.0) -> bool:
    """Poll PREDICATE until it holds or TIMEOUT seconds pass: for what arrives
    a little later (stream consumers, loopback packets handled in softirq)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def stream_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("bpfmagic-stream-")]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")


@pytest.fixture(scope="session", autouse=True)
def nothing_left_loaded():
    """The suite as a whole leaves no BPF program, map or link behind."""
    if os.geteuid() != 0:
        yield
        return
    before = kernel_objects()
    yield
    import bpfmagic
    bpfmagic._drop_session()
    left = leftovers(before)
    assert not left, f"BPF objects left loaded after the test run: {left}"


@pytest.fixture
def session():
    """A fresh Session, closed afterwards; the test fails if closing it leaves
    any of the kernel objects it made."""
    from bpfmagic import Session
    before = kernel_objects()
    s = Session()
    yield s
    s.close()
    left = leftovers(before)
    assert not left, f"Session.close() left BPF objects: {left}"


@pytest.fixture(scope="module")
def ip():
    from IPython.testing.globalipapp import get_ipython
    shell = get_ipython()
    shell.run_line_magic("load_ext", "bpfmagic")
    yield shell
    shell.run_line_magic("unload_ext", "bpfmagic")


@pytest.fixture
def fresh(ip):
    """The shell with an empty bpfmagic session; everything is freed afterwards."""
    import bpfmagic
    bpfmagic._drop_session()
    before = kernel_objects() if os.geteuid() == 0 else None
    yield ip
    ip.run_line_magic("bpf", "reset")
    bpfmagic._drop_session()
    if before is not None:
        assert leftovers(before) == {}
