"""Shared fixtures. tests/unit needs neither root nor a kernel object (any user
runs it); tests/kernel and tests/kernels load BPF objects as root on a real
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

    from bpfmagic.kernel import libbpf

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

    bpfmagic.shell.drop()
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


# --------------------------------------------------------------------------
# Oracles for what this kernel can do, written apart from bpfmagic's own
# checks so that a test compares the code with something it did not compute.
# --------------------------------------------------------------------------


def kernel_config() -> dict[str, str] | None:
    """The running kernel's build config (CONFIG_X -> y/m/n/value), or None."""
    import gzip

    for path, opener in (("/proc/config.gz", gzip.open), (f"/boot/config-{os.uname().release}", open)):
        try:
            with opener(path, "rt") as f:
                text = f.read()
        except OSError:
            continue
        config = {}
        for line in text.splitlines():
            if line.startswith("CONFIG_"):
                key, _, value = line.partition("=")
                config[key] = value
            elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
                config[line.split()[1]] = "n"
        return config
    return None


def kernel_has_kprobes() -> bool:
    """Kprobes that BCC can attach: built in, with kprobe events (the perf
    'kprobe' PMU or tracefs kprobe_events). From the build config where the
    kernel exposes it, else from the PMU the kernel registered."""
    config = kernel_config()
    if config is not None:
        return config.get("CONFIG_KPROBES") == "y" and config.get("CONFIG_KPROBE_EVENTS") == "y"
    return os.path.isdir("/sys/bus/event_source/devices/kprobe")


def kernel_loads_fentry() -> bool:
    """Does BPF_PROG_LOAD of an fentry program (r0 = 0; exit) on
    bpf_fentry_test1 succeed? The BTF id comes from bpftool, the load is a
    bare bpf(2) call: nothing of bpfmagic's probe is reused."""
    import ctypes
    import re
    import shutil
    import struct
    import subprocess

    bpftool = shutil.which("bpftool") or shutil.which("bpftool", path="/usr/sbin:/sbin")
    assert bpftool, "bpftool is missing: `make setup` installs it"
    dump = subprocess.run([bpftool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux"], capture_output=True, text=True, timeout=60, check=True).stdout
    found = re.search(r"^\[(\d+)\] FUNC 'bpf_fentry_test1'", dump, re.M)
    if found is None:
        return False
    nr_bpf = {"x86_64": 321, "aarch64": 280}[os.uname().machine]
    bpf_prog_load, prog_type_tracing, trace_fentry = 5, 26, 24
    insns = struct.pack("<QQ", 0xB7, 0x95)  # mov r0, 0; exit
    insn_buf = ctypes.create_string_buffer(insns, len(insns))
    license_buf = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(144)
    struct.pack_into("<IIQQ", attr, 0, prog_type_tracing, 2, ctypes.addressof(insn_buf), ctypes.addressof(license_buf))
    struct.pack_into("<I", attr, 68, trace_fentry)  # expected_attach_type
    struct.pack_into("<I", attr, 108, int(found[1]))  # attach_btf_id
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(ctypes.c_long(nr_bpf), ctypes.c_long(bpf_prog_load), attr, ctypes.c_uint(len(attr)))
    if fd >= 0:
        os.close(fd)
        return True
    return False


def kernel_loads_freplace() -> bool:
    """Does the kernel load an freplace (BPF_PROG_TYPE_EXT) program aimed at a global
    function of a loaded XDP program? A plain libbpf loader through ctypes on objects clang
    compiles here: nothing of bpfmagic's loading is reused."""
    import ctypes
    import shutil
    import subprocess
    import tempfile

    clang = shutil.which("clang")
    assert clang, "clang is missing: `make setup` installs it"
    target_c = (
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
        # pick reads the context: a constant function would lose its call to clang
        "__attribute__((noinline)) int pick(struct xdp_md *ctx) { return ctx->data_end > ctx->data ? XDP_PASS : XDP_DROP; }\n"
        'SEC("xdp") int root(struct xdp_md *ctx) { return pick(ctx); }\nchar LICENSE[] SEC("license") = "GPL";\n'
    )
    ext_c = (
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
        'SEC("freplace") int other(struct xdp_md *ctx) { return XDP_DROP; }\nchar LICENSE[] SEC("license") = "GPL";\n'
    )
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    vp = ctypes.c_void_p
    lib.bpf_object__open_file.restype, lib.bpf_object__open_file.argtypes = vp, [ctypes.c_char_p, vp]
    lib.bpf_object__load.argtypes = [vp]
    lib.bpf_object__close.argtypes = [vp]
    lib.bpf_object__find_program_by_name.restype, lib.bpf_object__find_program_by_name.argtypes = vp, [vp, ctypes.c_char_p]
    lib.bpf_program__fd.argtypes = [vp]
    lib.bpf_program__set_attach_target.argtypes = [vp, ctypes.c_int, ctypes.c_char_p]
    multiarch = f"-I/usr/include/{os.uname().machine}-linux-gnu"
    with tempfile.TemporaryDirectory() as tmp:
        objs = []
        for name, text in (("target", target_c), ("ext", ext_c)):
            path = os.path.join(tmp, name + ".o")
            subprocess.run([clang, "-g", "-O2", "-target", "bpf", multiarch, "-x", "c", "-c", "-", "-o", path], input=text, text=True, check=True)
            objs.append(path)
        target = lib.bpf_object__open_file(objs[0].encode(), None)
        ext = lib.bpf_object__open_file(objs[1].encode(), None)
        try:
            assert target and ext and lib.bpf_object__load(target) == 0, "the freplace target (a plain XDP program) did not load"
            target_fd = lib.bpf_program__fd(lib.bpf_object__find_program_by_name(target, b"root"))
            assert lib.bpf_program__set_attach_target(lib.bpf_object__find_program_by_name(ext, b"other"), target_fd, b"pick") == 0
            return lib.bpf_object__load(ext) == 0
        finally:
            lib.bpf_object__close(ext)
            lib.bpf_object__close(target)


def syscall_nr(name: str) -> int:
    """This architecture's number of syscall NAME, as the C preprocessor sees
    it through libc's <sys/syscall.h>, confirmed by the kernel for getppid."""
    import ctypes
    import re
    import shutil
    import subprocess

    cc = shutil.which("clang") or shutil.which("cc")
    assert cc, "no C compiler: `make setup` installs clang"
    macros = subprocess.run(
        [cc, "-dM", "-E", "-x", "c", "-"], input="#include <sys/syscall.h>\n", capture_output=True, text=True, timeout=60, check=True
    ).stdout
    nr = int(re.search(rf"^#define __NR_{name} (\d+)$", macros, re.M)[1])
    if name == "getppid":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        assert libc.syscall(ctypes.c_long(nr)) == os.getppid(), f"syscall {nr} is not getppid here"
    return nr


def prog_fdinfo(fd: int) -> dict[str, int]:
    """The kernel's /proc fdinfo of a program fd: run_cnt, run_time_ns,
    prog_id, ... (read apart from bpf_obj_get_info_by_fd, which bpfmagic uses)."""
    out = {}
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            key, _, value = line.partition(":")
            value = value.strip()
            if value.isdigit():
                out[key] = int(value)
    return out


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

    bpfmagic.shell.drop()
    before = kernel_objects() if os.geteuid() == 0 else None
    yield ip
    ip.run_line_magic("bpf", "reset")
    bpfmagic.shell.drop()
    if before is not None:
        assert leftovers(before) == {}
