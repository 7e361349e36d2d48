"""The CO-RE path (``%%bpf NAME --core``): the cell is libbpf-style C, compiled
by clang against ``vmlinux.h`` of the running kernel and loaded by libbpf.
It serves what BCC cannot: BPF-to-BPF calls, tp_btf programs and kernel
struct reads with correct offsets (BPF_CORE_READ).

Session prog arrays are shared with BCC cells: a prog array map of the
object whose name is a session array reuses the session's map fd, so CO-RE
and BCC programs tail-call each other through the same slots.

Long because: compiling, loading and libbpf's messages are one backend; the
interface it shares with bcc.py is at CoreObject."""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import os
import platform
import re
import shutil
import subprocess
import tempfile

from ..c import CellSyntax, analyse, core_text
from ..c.analysis import SKB_TYPES
from ..c.instrument import CORE_CELL_FILE, PATH_RECORDS, SITES_MAP, counter_name, counter_section
from ..c.records import ring_record_types
from ..errors import AttachError, BpfCompileError, BpfVerifierError, EnvironmentProblem, SlotError, UsageProblem
from ..kernel import libbpf
from ..kernel.attach import Attachment, Target
from ..kernel.btf import Btf
from ..kernel.lock import NATIVE_LOCK
from ..kernel.maptypes import ARRAY_TYPES, PERCPU_TYPES, MapType
from ..kernel.pins import BPFFS
from ..kernel.privileges import privilege_problem
from ..kernel.progtypes import prog_type_name, prog_type_value
from .interface import LoadContext, MapHandle

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
GLOBAL_SECTIONS = ("bss", "data", "rodata")
_ARCH = {"x86_64": "x86", "aarch64": "arm64", "s390x": "s390", "ppc64le": "powerpc", "riscv64": "riscv"}

# SEC prefixes libbpf can attach by itself (the section names the target).
AUTO_ATTACH_SECTIONS = ("tp_btf/", "raw_tp/", "raw_tracepoint/", "tp/", "tracepoint/", "kprobe/", "kretprobe/", "fentry/", "fexit/", "lsm/", "iter/")
# uprobe/PATH:FUNC names its target; libbpf-tools' uprobe/FUNC does not (its loader gives the binary: -a)
UPROBE_SECTIONS = ("uprobe/", "uretprobe/", "uprobe.s/", "uretprobe.s/")


# ------------------------------------------------------------ environment


def _tool(name: str) -> str | None:
    """A binary on PATH or in the sbin directories a non-root PATH leaves out (bpftool)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def tools() -> None:
    """Raise EnvironmentProblem when clang, bpftool, BTF or libbpf headers are missing."""
    missing = []
    if not _tool("clang"):
        missing.append("clang (apt-get install -y clang llvm)")
    if not _tool("bpftool"):
        missing.append("bpftool (apt-get install -y bpftool)")
    if not os.path.exists("/usr/include/bpf/bpf_helpers.h"):
        missing.append("libbpf headers (apt-get install -y libbpf-dev)")
    if not os.path.exists(VMLINUX_BTF):
        missing.append(f"kernel BTF at {VMLINUX_BTF} (a kernel built with CONFIG_DEBUG_INFO_BTF)")
    if missing:
        raise EnvironmentProblem("--core needs " + "; ".join(missing))


def vmlinux_dir() -> str:
    """A directory holding vmlinux.h of the running kernel (dumped once from its BTF;
    cache.py keeps it trusted, intact and made with explicit modes)."""
    from ..kernel import cache

    def dump() -> bytes:
        res = subprocess.run([_tool("bpftool") or "bpftool", "btf", "dump", "file", VMLINUX_BTF, "format", "c"], capture_output=True)
        if res.returncode != 0 or not res.stdout:
            raise EnvironmentProblem(f"bpftool could not dump {VMLINUX_BTF}: {res.stderr.decode(errors='replace').strip()}")
        return res.stdout

    return cache.vmlinux_dir(dump)


def prepare_cache() -> str:
    """vmlinux.h and its precompiled form, made ahead (``make setup``) so the
    first --core cell does not pay for them. Returns what was done."""
    try:
        tools()
    except EnvironmentProblem as e:
        return f"--core not prepared: {e}"
    from . import objcache

    headers = vmlinux_dir()
    pch = objcache.precompiled_vmlinux(_tool("clang") or "clang", headers, CLANG_BASE_FLAGS)
    return f"vmlinux.h in {headers}" + (", precompiled" if pch else ", not precompiled (cache not trusted)")


# ------------------------------------------------------------ source

# ------------------------------------------------------------ ring buffers: loss counting, record struct


def ring_tables(source: str) -> list[str]:
    """Names of the event maps (BPF_MAP_TYPE_RINGBUF, PERF_EVENT_ARRAY) the cell declares
    in libbpf's struct form, in the order of their slots in the loss counter."""
    cell = analyse(source)
    return sorted({r.name for r in cell.rings + cell.perf_arrays})


def keep_ring_types(text: str, source: str) -> str:
    """Append a global pointer to each type the cell writes into a ring or perf
    event array it declares: clang emits BTF only for types reachable from globals, maps
    and function signatures, and a local ``struct event rec`` is none of
    them. The stream reads the record layout from that BTF. (A .bss map
    holds the pointers; it is not one of the module's tables.)"""
    decls = []
    for table in ring_tables(source):
        for kind in ring_record_types(source, table):
            if kind != "?":
                decls.append(f"{kind} *__bm_rec_{table}_{len(decls)} __attribute__((unused));")
    if not decls:
        return text
    return text + ("" if text.endswith("\n") else "\n") + "\n".join(decls) + "\n"


_CLANG_LOC_RE = re.compile(r"^(.*?):(\d+):(\d+): (error|warning|note|fatal error):")
# -mcpu=v3: the BPF ISA this kernel runs (atomics that return the old value, 32-bit jumps); the
# precompiled vmlinux.h is built with the same flags, as clang requires.
CLANG_BASE_FLAGS = ["-g", "-O2", "-target", "bpf", "-mcpu=v3"]
# Code written for clang's older default ISA (v1: 64-bit registers only) can lose the bounds the
# verifier needs when compiled with 32-bit subregisters (v3), and verify only as v1.
BOUNDS_REASONS = ("unbounded memory access", "min value is negative", "max value is outside", "outside of the allowed memory range")
ISA_NOTE = (
    "\n\n[bpfmagic] --core compiles for BPF v3 (-mcpu=v3); code written for clang's older default "
    '(v1) sometimes verifies only as that: try --cflags "-mcpu=v1".'
)
_MULTIARCH = {
    "x86_64": "x86_64-linux-gnu",
    "aarch64": "aarch64-linux-gnu",
    "s390x": "s390x-linux-gnu",
    "ppc64le": "powerpc64le-linux-gnu",
    "riscv64": "riscv64-linux-gnu",
}


def _multiarch_includes() -> list[str]:
    """uapi headers include <asm/types.h>, which Debian keeps in the multiarch
    directory; clang -target bpf does not search it. -idirafter: after
    everything else, so vmlinux.h and the cell's own -I come first."""
    path = os.path.join("/usr/include", _MULTIARCH.get(platform.machine(), ""))
    flags = ["-idirafter", path] if os.path.isdir(path) and path != "/usr/include/" else []
    # uapi headers that reach glibc's <gnu/stubs.h> (linux/if.h) want the 32-bit stubs under -target bpf.
    return flags + ["-idirafter", os.path.join(os.path.dirname(os.path.dirname(__file__)), "c", "include")]


def _relabel(text: str, origin: str) -> str:
    """clang's messages name the cell by its origin (a label: the module name or
    the --file's name), never by the file bpfmagic compiled it from."""
    return text.replace(f"{CORE_CELL_FILE}:", f"{origin}:")


def compile_object(text: str, source: str, origin: str, cflags: list[str], include_dirs=(), vmlinux_first: bool = False) -> tuple[bytes, str]:
    """clang -target bpf: the object file and clang's warnings; errors raise
    BpfCompileError with the offending lines of the cell. ``vmlinux_first``:
    the text starts by including vmlinux.h, so its precompiled form serves.
    An unchanged compile is served from the object cache."""
    from . import objcache

    arch = _ARCH.get(platform.machine(), platform.machine())
    clang = _tool("clang") or "clang"
    headers = vmlinux_dir()
    base = CLANG_BASE_FLAGS
    pch = objcache.precompiled_vmlinux(clang, headers, base) if vmlinux_first else None
    flags = [*base, f"-D__TARGET_ARCH_{arch}", "-I", headers, *(f"-I{os.path.abspath(d)}" for d in include_dirs), *_multiarch_includes(), *cflags]
    vmlinux = os.stat(os.path.join(headers, "vmlinux.h"))
    cache_key = objcache.key(text, [*flags, f"vmlinux {vmlinux.st_size} {vmlinux.st_mtime_ns}"], objcache.clang_version(clang))
    cached = objcache.lookup(cache_key)
    if cached is not None:
        return cached[0], _relabel(cached[1], origin)
    with tempfile.TemporaryDirectory(prefix="bpfmagic-core-") as tmp:
        out, depfile = os.path.join(tmp, "module.bpf.o"), os.path.join(tmp, "module.d")
        # The cell's lines in the file the #line markers name: clang reads them into the
        # BTF line info, which is what the verifier quotes. The name is fixed (origin is
        # only a label), and the directory is private to this compile.
        cell_file = os.path.join(tmp, CORE_CELL_FILE)
        with open(cell_file, "w") as f:
            f.write(source)
        for use_pch in [True, False] if pch else [False]:
            cmd = [clang, *flags, *(["-include-pch", pch] if use_pch else []), "-MD", "-MF", depfile, "-x", "c", "-c", "-", "-o", out]
            res = subprocess.run(cmd, input=text, capture_output=True, text=True, cwd=tmp)
            if res.returncode == 0 or not use_pch or "PCH file" not in res.stderr:
                break  # a PCH clang cannot use (flags like -mcpu differ): compiled again without it
        stderr = _relabel(res.stderr, origin)
        if res.returncode != 0:
            raise _clang_error(stderr, source, origin)
        if not os.path.exists(out):
            raise BpfCompileError(
                f"clang wrote no object file for {origin}: a flag in --cflags ({' '.join(cflags)}) stops it before code generation", stderr
            )
        with open(out, "rb") as f:
            obj = f.read()
        objcache.store(cache_key, obj, res.stderr, depfile, tmp, skip={cell_file, os.path.join(tmp, "-")})
        return obj, stderr


def _clang_error(stderr: str, source: str, origin: str) -> BpfCompileError:
    """The errors, each with the cell's offending line; an error inside a
    header keeps the include stack that leads to it from the cell."""
    lines = source.split("\n")
    shown: list[str] = []
    stack: list[str] = []
    for raw in stderr.splitlines():
        if raw.startswith("In file included from") or (stack and raw.startswith("                 from")):
            stack.append(raw)
            continue
        m = _CLANG_LOC_RE.match(raw)
        if m and m[4] == "note":
            if shown:  # "expanded from macro ...": where the error's text came from
                shown.append(raw)
        elif m and m[1] == origin:
            shown += stack
            shown.append(raw)
            n = int(m[2])
            if "error" in m[4] and 1 <= n <= len(lines):
                shown.append(f"    {n:4d} | {lines[n - 1]}")
        elif m and "error" in m[4]:
            shown += stack
            shown.append(raw)  # an error inside a header: as clang said it, after the includes leading there
        stack = []
    if not shown:
        shown = [stderr.strip() or "clang failed without a message"]
    return BpfCompileError("\n".join(shown), stderr)


# ------------------------------------------------------------ libbpf object

# libbpf's object API (bpf_object__*, bpf_program__*, bpf_map__*, btf__*), declared in libbpf.py.
_lib = libbpf.object_api


_PRINT_FN = ct.CFUNCTYPE(ct.c_int, ct.c_int, ct.c_char_p, ct.c_void_p)
_libc = ct.CDLL(None)
_libc.vsnprintf.argtypes = [ct.c_char_p, ct.c_size_t, ct.c_char_p, ct.c_void_p]
# Bytes of a va_list where it is a struct passed by pointer: copying them is va_copy.
_VA_LIST_SIZE = {"x86_64": 24, "aarch64": 32}.get(platform.machine())


def _format(fmt: bytes, args: int) -> str:
    """One libbpf message, whole: a verifier log can be megabytes and its reason
    is at the end, so the length is asked first (on a copy of the va_list) and
    the message formatted into a buffer that size."""
    if _VA_LIST_SIZE is None:  # no safe va_copy here: a fixed buffer
        buf = ct.create_string_buffer(1 << 20)
        _libc.vsnprintf(buf, len(buf), fmt, args)
        return buf.value.decode(errors="replace")
    saved = ct.string_at(args, _VA_LIST_SIZE)
    needed = _libc.vsnprintf(None, 0, fmt, args)
    ct.memmove(args, saved, _VA_LIST_SIZE)
    buf = ct.create_string_buffer(max(needed, 0) + 1)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    return buf.value.decode(errors="replace")


@contextlib.contextmanager
def libbpf_messages(debug_logs: dict | None = None):
    """Collect libbpf's messages (verifier logs included) for the duration of
    the block. libbpf prints through a process-wide callback that libbcc
    replaces with its own, so capturing fd 2 is not enough: install ours, then
    put back whatever was there."""
    chunks: list[str] = []
    out: list[str] = []

    def collect(level, fmt, args):
        if level <= 1:  # LIBBPF_WARN, LIBBPF_INFO; not DEBUG
            chunks.append(_format(fmt, args))
        elif debug_logs is not None and fmt and b"BEGIN PROG LOAD LOG" in fmt:
            # A program's log after a successful load (libbpf prints it at DEBUG level).
            m = re.search(r"prog '(\w+)': -- BEGIN PROG LOAD LOG --\n(.*)-- END PROG LOAD LOG --", _format(fmt, args), re.S)
            if m:
                debug_logs[m[1]] = m[2]
        return 0

    callback = _PRINT_FN(collect)
    lib = _lib()
    with NATIVE_LOCK:  # the callback is process-wide: one collector at a time
        previous = lib.libbpf_set_print(ct.cast(callback, ct.c_void_p))
        try:
            yield out
        finally:
            lib.libbpf_set_print(previous)
            out.append("".join(chunks))


class CoreMap:
    """A map of a --core module, read like a BCC table: ``m["hits"][0].value``
    (u32/u64 values as ctypes integers, other sizes as bytes; per-CPU maps
    give one value per CPU)."""

    def __init__(self, name: str, fd: int, map_type: int, key_size: int, value_size: int, max_entries: int):
        self.name, self.fd, self.map_type = name, fd, map_type
        self.key_size, self.value_size, self.max_entries = key_size, value_size, max_entries
        self.percpu = map_type in PERCPU_TYPES

    def _value_type(self):
        return {4: ct.c_uint32, 8: ct.c_uint64}.get(self.value_size)

    def __getitem__(self, key):
        k = ct.c_uint32(key) if self.key_size == 4 else (ct.c_uint64(key) if self.key_size == 8 else key)
        ncpu = libbpf.num_possible_cpus() if self.percpu else 1
        stride = (self.value_size + 7) // 8 * 8 if self.percpu else self.value_size
        buf = ct.create_string_buffer(stride * ncpu)
        if libbpf.lib().bpf_map_lookup_elem(self.fd, ct.byref(k) if not isinstance(k, bytes) else k, buf) < 0:
            raise KeyError(key)
        vt = self._value_type()
        values = [
            vt.from_buffer_copy(buf.raw[i * stride : i * stride + self.value_size]) if vt else buf.raw[i * stride : i * stride + self.value_size]
            for i in range(ncpu)
        ]
        return values if self.percpu else values[0]

    def items(self):
        if self.map_type in ARRAY_TYPES:  # arrays: every index exists
            return [(ct.c_uint32(i), self[i]) for i in range(self.max_entries)]
        raise NotImplementedError(
            f"{self.name}: iterating this map type is not supported here; read it whole, "
            f"typed from BTF, with module.df({self.name!r}) or %bpf map {self.name}"
        )

    def __repr__(self) -> str:
        return f"<CoreMap {self.name} type={self.map_type} max_entries={self.max_entries}>"


class CoreLink(Attachment):
    """A libbpf bpf_link (tp_btf, fentry, raw_tp sections): destroyed on detach."""

    def __init__(self, target: Target, program, link_ptr: int):
        super().__init__(target, program, [], "libbpf-link")
        self.link_ptr = link_ptr

    def detach(self) -> None:
        if self.link_ptr:
            _lib().bpf_link__destroy(self.link_ptr)
            self.link_ptr = 0


class CoreObject:
    """One clang-compiled object loaded through libbpf."""

    # line -> (array, index): call sites that count in the sites map for a constant slot (none yet for --core)
    implied_sites: dict[int, tuple[str, int]] = {}

    def __init__(self, name: str, obj_bytes: bytes, pin_root=None):
        """``pin_root``: the directory of maps the cell pins by name (LIBBPF_PIN_BY_NAME), or a
        callable that makes it, called only when the object has such maps; None: libbpf's
        default, /sys/fs/bpf, which every user can write (never passed by the session)."""
        self._buf, self._size = ct.create_string_buffer(obj_bytes, len(obj_bytes)), len(obj_bytes)
        self.name = name
        self.ptr = self._open(None)
        if pin_root is not None and any(_lib().bpf_map__pin_path(m) for m in self._iter(_lib().bpf_object__next_map)):
            # Opened again with the session's root: libbpf builds each pin path at open.
            _lib().bpf_object__close(self.ptr)
            self.ptr = None
            self.ptr = self._open(pin_root() if callable(pin_root) else pin_root)
        lib = _lib()
        # The maps' names as the C names them, taken before bpf_map__reuse_fd renames a map
        # after the kernel's copy, which keeps only 15 characters.
        self._map_names = {m: lib.bpf_map__name(m).decode() for m in self._iter(lib.bpf_object__next_map)}
        self.pinned_by_name = [n for m, n in self._map_names.items() if lib.bpf_map__pin_path(m)]  # LIBBPF_PIN_BY_NAME maps
        self._pins: dict[str, bool] = {}  # pin path -> made by this load (else an existing pin reused)
        self._notes: list[str] = []  # what the cell should say besides its summary
        self.syntax: CellSyntax | None = None  # what the front end read in the cell (its rings' order)
        self.verifier_logs: dict[str, str] = {}  # program -> the verifier's statistics (log level 4)
        self.bound: dict[str, tuple[str, int, str]] = {}  # program -> (kind, target fd or 0, target as written): bind_target

    def _open(self, pin_root: str | None) -> int:
        lib = _lib()
        opts = libbpf.ObjectOpenOpts(sz=ct.sizeof(libbpf.ObjectOpenOpts), pin_root_path=pin_root.encode() if pin_root else None)
        ptr = lib.bpf_object__open_mem(self._buf, self._size, ct.byref(opts))
        if not ptr or lib.libbpf_get_error(ptr):
            raise BpfCompileError(f"libbpf could not open the object of {self.name}")
        return ptr

    @property
    def pins(self) -> dict[str, bool]:
        return self._pins

    @property
    def notes(self) -> list[str]:
        return self._notes

    warnings: tuple[str, ...] = ()  # CO-RE relocates kernel struct reads: none of BCC's offset warnings

    def _iter(self, next_fn):
        item = None
        while True:
            item = next_fn(self.ptr, item)
            if not item:
                return
            yield item

    def programs(self) -> dict[str, int]:
        lib = _lib()
        return {lib.bpf_program__name(p).decode(): p for p in self._iter(lib.bpf_object__next_program)}

    def maps(self) -> dict[str, int]:
        """C name -> map (a name over 15 characters stays whole, whatever the kernel keeps)."""
        lib = _lib()
        return {self._map_names.get(m) or lib.bpf_map__name(m).decode(): m for m in self._iter(lib.bpf_object__next_map)}

    def program_fd(self, prog) -> int:
        return _lib().bpf_program__fd(prog)

    def program_type(self, prog) -> str:
        return prog_type_name(_lib().bpf_program__type(prog))

    def section(self, prog) -> str:
        return _lib().bpf_program__section_name(prog).decode()

    def reuse(self, map_name: str, fd: int) -> None:
        """Make the object's map MAP_NAME the session's map FD (libbpf dups the fd)."""
        m = self.maps().get(map_name)
        if m is None:
            return
        if _lib().bpf_map__reuse_fd(m, fd) < 0:
            raise BpfCompileError(f"{self.name}: map {map_name} does not match the session's map of that name")
        # The session's map is pinned by the session: a LIBBPF_PIN_BY_NAME in the cell must not
        # make libbpf swap it for whatever is pinned under that name.
        _lib().bpf_map__set_pin_path(m, None)

    def load(self, origin: str, source: str, verbose: bool = False, stats: bool = False) -> str:
        """Load every program; returns what libbpf said (the verifier log with -v).
        ``stats``: ask each program's verification for its statistics (log level 4);
        a failure then raises _RetryWithoutStats (the log has no reason in it)."""
        lib = _lib()
        if verbose or stats:
            for prog in self.programs().values():
                lib.bpf_program__set_log_level(prog, (2 if verbose else 0) | (4 if stats else 0))
        existed = {path: os.path.lexists(path) for path in self._pin_paths().values()}
        with libbpf_messages(self.verifier_logs) as log:
            ret = lib.bpf_object__load(self.ptr)
        if ret == 0:
            self._pins = {path: not existed[path] for map_name, path in self._pin_paths().items() if lib.bpf_map__is_pinned(self.maps()[map_name])}
            self._note_default_pins()
        if ret < 0 and stats:
            raise _RetryWithoutStats()
        if ret < 0:
            untyped = re.search(r"prog '(\w+)': missing BPF prog type", log[0])
            legacy = untyped and _legacy_section_hint(self.section(self.programs()[untyped[1]]))
            if legacy:
                raise BpfCompileError(f"{self.name}.{untyped[1]}: {legacy}", log[0])
            if untyped:
                raise BpfCompileError(
                    f"{self.name}.{untyped[1]} has no SEC(): in a --core cell each program "
                    'needs one (SEC("xdp"), SEC("raw_tp/sys_enter"), SEC("tp_btf/sched_switch"), '
                    "...); a helper function should be static",
                    log[0],
                )
            if -ret == errno.EPERM:  # a missing capability, said as one (libbpf suggests `ulimit -l`)
                failed = re.search(r"prog '(\w+)': BPF program load failed", log[0])
                prog = self.programs().get(failed[1]) if failed else None
                ptype = self.program_type(prog) if prog else None
                what = f"{self.name}.{failed[1]} (as {ptype})" if prog else self.name
                problem = privilege_problem(what, ptype, log[0] + f"\n{os.strerror(errno.EPERM)}")
                if problem is not None:
                    raise problem
            if -ret == errno.EPERM:  # this kernel build refuses trampoline program types
                refusal = self._trampoline_refusal(log[0])
                if refusal is not None:
                    raise AttachError(refusal, log[0])
            raise _verifier_error(self.name, log[0], -ret, origin, source)
        return log[0]

    def _trampoline_refusal(self, log: str) -> str | None:
        """Why an EPERM load of fentry/fexit/freplace/LSM programs failed, with what serves
        instead: for kernel functions, BTF tracepoints; for a chain, its own instruments."""
        failed = re.search(r"prog '(\w+)': BPF program load failed", log)
        by_name = {p: self.section(prog) for p, prog in self.programs().items()}
        candidates = [failed[1]] if failed and failed[1] in by_name else list(by_name)
        refused = [(p, by_name[p]) for p in candidates if by_name[p].split("/", 1)[0] in ("fentry", "fexit", "freplace", "lsm", "fmod_ret")]
        if not refused:
            return None
        pname, section = refused[0]
        text = f'{self.name}.{pname}: SEC("{section}") programs are refused by this kernel (EPERM at load, a policy of this kernel build)'
        bound = self.bound.get(pname)
        if section.startswith("freplace"):
            return (
                f"{text}. To swap a stage of a chain at run time here, put the new version in a slot: "
                "-s ARRAY[KEY]=FUNC, or %bpf slot ARRAY[KEY]=MODULE.FUNC"
            )
        if bound is not None and bound[1]:  # aimed at a BPF program of the session
            return (
                f"{text}, also when aimed at a BPF program ({bound[2]}). To watch a chain on this kernel: "
                "its slots' call counters (%bpf slots), run counts (%bpf stats), the way runs go (%bpf paths --on, "
                "%bpf run MODULE.FUNC --path)"
            )
        return f'{text}. Use SEC("tp_btf/...") (BTF-typed tracepoints) or SEC("raw_tp/...") instead.'

    def _note_default_pins(self) -> None:
        """Say when a map the cell pins by name also has a pin at libbpf's default place
        (/sys/fs/bpf/NAME, someone else's or an older run's) that this load did not use."""
        paths = self._pin_paths()
        for map_name in self.pinned_by_name:
            default = os.path.join(BPFFS, map_name)
            if paths.get(map_name) != default and os.path.lexists(default):
                self._notes.append(
                    f"{map_name} is LIBBPF_PIN_BY_NAME; {default} exists and was not used: this module's "
                    f"{map_name} is {'the session array' if map_name not in paths else 'pinned in the session'}. "
                    "To use a pinned map on purpose, name its directory with --pin-root DIR"
                )

    def _pin_paths(self) -> dict[str, str]:
        """map name -> the path libbpf pins it at (maps the cell pins by name)."""
        lib = _lib()
        out = {}
        for name, m in self.maps().items():
            path = lib.bpf_map__pin_path(m)
            if path:
                out[name] = path.decode()
        return out

    def table(self, name: str) -> CoreMap:
        lib = _lib()
        m = self.maps()[name]
        return CoreMap(
            name, lib.bpf_map__fd(m), lib.bpf_map__type(m), lib.bpf_map__key_size(m), lib.bpf_map__value_size(m), lib.bpf_map__max_entries(m)
        )

    def tables(self) -> list[str]:
        return [n for n in self.maps() if "." not in n and not n.startswith("__bm_")]

    # -- the backend interface (backends/__init__.py)
    kind = "core"

    def functions(self) -> list[str]:
        return list(self.programs()) if self.ptr else []

    def map_fd(self, name: str) -> int:
        return _lib().bpf_map__fd(self.maps()[name])

    def preloaded(self) -> dict[str, tuple[str, int, str]]:
        """Every program: libbpf loads them all with the object. name -> (type, fd, verifier stats)."""
        out = {}
        for pname, prog in self.programs().items():
            fd = self.program_fd(prog)
            if fd >= 0:
                out[pname] = (self.program_type(prog), fd, self.verifier_logs.get(pname, ""))
        return out

    def convention_attached(self) -> list[str]:
        return []  # SEC() attachments are made by attach_sections, after the slots

    def eager(self, contexts, loaded) -> list[tuple[str, str]]:
        return []  # already loaded

    def left_unloaded(self, func: str, qualname: str) -> str | None:
        """Why FUNC, a program of the object, was not loaded with it (SEC("?...")); None if it was."""
        prog = self.programs().get(func)
        if prog is None or self.program_fd(prog) >= 0:
            return None
        return (
            f'{qualname} is SEC("?{self.section(prog)}"): libbpf loads it only when the cell names it; '
            f"attach it with -a {func}=TARGET or slot it with -s ARRAY[KEY]={func}"
        )

    def load_program(self, func: str, ptype: str, qualname: str):
        if (why := self.left_unloaded(func, qualname)) is not None:
            raise UsageProblem(why)
        known = ", ".join(self.programs()) or "none"
        raise UsageProblem(f"{qualname.rsplit('.', 1)[0]} has no program {func!r} (programs: {known})")

    def attach_sections(self, module, attached: set[str], slotted: set[str]) -> list:
        """Attach the programs whose SEC() names their target (attach_sections below)."""
        return attach_sections(self, module, attached, slotted)

    def close(self) -> None:
        if self.ptr:
            _lib().bpf_object__close(self.ptr)
            self.ptr = None

    # -- maps, records, globals (backends/__init__.py)
    cell_lines = True  # the #line markers keep the cell's numbers

    def cell_line(self, line: int) -> int:
        return line

    def map_handle(self, name: str) -> MapHandle:
        lib = _lib()
        m = self.maps()[name]
        return MapHandle(
            name,
            lib.bpf_map__fd(m),
            lib.bpf_map__type(m),
            lib.bpf_map__key_size(m),
            lib.bpf_map__value_size(m),
            lib.bpf_map__max_entries(m),
            btf_key_type_id=lib.bpf_map__btf_key_type_id(m),
            btf_value_type_id=lib.bpf_map__btf_value_type_id(m),
        )

    def btf(self) -> Btf | None:
        lib = _lib()
        ptr = lib.bpf_object__btf(self.ptr) if self.ptr else None
        return Btf(lib, ptr) if ptr else None

    def event_fields(self, table: str) -> None:
        return None  # no inference: the struct the cell writes, laid out by btf()

    def perf_refusal(self, table: str) -> None:
        return None  # libbpf's perf buffer reads it (kernel/libbpf.PerfBuffer)

    def open_perf_buffer(self, table: str, on_event, on_lost, page_cnt: int):
        return libbpf.PerfBuffer(self.map_fd(table), page_cnt, on_event, on_lost)

    def loss_counter(self, table: str) -> tuple[int, int, int] | None:
        """Rings are counted by the front end's bpf_ringbuf_* macros, in the order of ring_tables."""
        from ..c.instrument import LOST_COUNTER

        tables = ring_tables(self.syntax.source) if self.syntax is not None else []
        if table in tables and LOST_COUNTER in self.maps():
            return self.map_fd(LOST_COUNTER), tables.index(table), len(tables)
        return None

    def global_sections(self) -> dict[str, str]:
        """Global-variable maps: section name without the dot ("bss", "data", "rodata",
        "data.custom") -> libbpf's map name."""
        if not self.ptr:
            return {}
        out = {}
        for name in self.maps():
            section = name[1:] if name.startswith(".") else name.partition(".")[2]
            if section.split(".")[0] in GLOBAL_SECTIONS and not section.startswith("rodata.str"):
                out[section] = name
        return out

    def global_variables(self) -> dict | None:
        """{name: (map name, Variable)} of every global variable, {} once closed."""
        from .core_globals import sections

        lib = _lib()
        names = self._map_names
        return {v.name: (names.get(ptr) or lib.bpf_map__name(ptr).decode(), v) for ptr, variables in sections(self).values() for v in variables}


# Section kinds libbpf attaches by their target: (what the target is, a section that names
# one, the -a target that attaches the program instead).
_ATTACH_KINDS = {
    "raw_tp": ("raw tracepoint", "raw_tp/sys_enter", "raw_tracepoint:EVENT"),
    "raw_tracepoint": ("raw tracepoint", "raw_tracepoint/sys_enter", "raw_tracepoint:EVENT"),
    "tp": ("tracepoint", "tp/syscalls/sys_enter_write", "tracepoint:CATEGORY:EVENT"),
    "tracepoint": ("tracepoint", "tracepoint/syscalls/sys_enter_write", "tracepoint:CATEGORY:EVENT"),
    "tp_btf": ("BTF tracepoint", "tp_btf/sched_switch", None),
}


def _no_target(program, section: str, kind: str) -> str:
    """Why a SEC() that ends in "/" attaches nowhere (libbpf would ask the kernel for a
    tracepoint named "" and get ENOENT), and the two ways to name the target."""
    what, example, option = _ATTACH_KINDS.get(kind, ("target", f"{kind}/NAME", None))
    text = f'{program.qualname} is SEC("{section}"), which names no {what}: name it in the section, e.g. SEC("{example}")'
    if option:
        text += f", or attach it from the cell with -a {program.name}={option} (in the Python API: attach={{{program.name!r}: {option!r}}})"
    return text


def attach_by_section(obj: "CoreObject", program, prog_ptr) -> CoreLink:
    """Attach PROGRAM where its SEC() says (libbpf's bpf_program__attach), or say why not."""
    lib = _lib()
    section = obj.section(prog_ptr)
    kind, _, target = section.partition("/")
    if not target:
        raise AttachError(_no_target(program, section, kind))
    with libbpf_messages() as log:  # libbpf's own line goes to the error's log, not to fd 2
        link = lib.bpf_program__attach(prog_ptr)
        # -errno of the failed call (ctypes keeps errno across calls with use_errno), 0 on success
        err = lib.libbpf_get_error(link)
    if not link or err:
        code = -err if err < 0 else 0
        hint = (
            " (fentry/fexit/LSM are refused by this kernel build; tp_btf/ and raw_tp/ sections work)"
            if section.startswith(("fentry/", "fexit/", "lsm/"))
            else ""
        )
        if code == errno.ENOENT and kind in _ATTACH_KINDS:
            what, example, option = _ATTACH_KINDS[kind]
            hint = f": this kernel has no {what} {target!r}" + (f" (-a {program.name}={option})" if option else "")
        elif code == errno.ENOENT and section.startswith(UPROBE_SECTIONS):
            binary, _, func = target.rpartition(":")
            if os.path.exists(binary):  # the file is there: libbpf found no such function in it
                hint = f": {binary} has no symbol {func!r} (its symbols: nm -D {binary}; a library's functions attach through the .so)"
            else:
                hint = f": there is no file {binary} (give the path of the binary or library to probe)"
        reason = os.strerror(code) if code else "failed"
        raise AttachError(f'libbpf could not attach {program.qualname} (SEC("{section}")): {reason}{hint}', log[0])
    kind, _, rest = obj.section(prog_ptr).partition("/")
    return CoreLink(Target(kind, (rest,), f"{kind}:{rest}"), program, link)


def attach_sections(obj: "CoreObject", module, attached: set[str], slotted: set[str]) -> list:
    """Attach the programs whose SEC() names their target (tp_btf/..., raw_tp/...), but
    those attached with -a. A slotted program keeps its SEC() attachment; when that
    fails (tail-call-only programs often carry a placeholder SEC()) the slot is its use."""
    made = []
    for pname, prog_ptr in obj.programs().items():
        if pname not in module.programs:
            continue  # left unloaded (SEC("?...")): nothing to attach
        section = obj.section(prog_ptr)
        names_binary = section.startswith(UPROBE_SECTIONS) and ":" in section
        if pname not in attached and section.startswith(UPROBE_SECTIONS) and not names_binary and pname not in slotted:
            kind, _, func = section.partition("/")
            module.notes.append(
                f'{pname} is not attached: SEC("{section}") names no binary (its loader gives it); '
                f"attach it with -a {pname}={kind.removesuffix('.s')}:/PATH/TO/BINARY:{func}"
            )
        if pname in attached or not (section.startswith(AUTO_ATTACH_SECTIONS) or names_binary):
            continue  # attached with -a; attached by no section
        try:
            made.append(attach_by_section(obj, module.programs[pname], prog_ptr))
        except AttachError as e:
            if pname not in slotted:
                for att in made:
                    att.detach()
                raise
            module.notes.append(f"{pname} runs through its slot only: {e.message}")
            continue
        module.auto_attached.append(pname)
    return made


class _RetryWithoutStats(Exception):
    """A load with log level 4 failed: its log lacks the reason; load again without it."""


# Section names libbpf 0.x took with a suffix that libbpf 1.x refuses, and what to write instead.
_LEGACY_SECTIONS = {
    "classifier": 'SEC("tc") (or SEC("classifier") without a suffix)',
    "socket": 'SEC("socket") without a suffix',
    "action": 'SEC("action") without a suffix',
    "xdp": 'SEC("xdp") without a suffix',
    "perf_event": 'SEC("perf_event") without a suffix',
}


def _legacy_section_hint(section: str) -> str | None:
    """What to write instead of a SEC() name libbpf 1.x no longer takes."""
    kind, slash, rest = section.partition("/")
    if slash and kind in _LEGACY_SECTIONS:
        return (
            f'SEC("{section}") is a libbpf 0.x section name; libbpf 1.x takes {_LEGACY_SECTIONS[kind]} '
            f"(in a --core cell the slot, not the section, says where a program goes: -s ARRAY[KEY]=FUNC)"
        )
    return None


# Trampoline sections and the -a target kind each serves, by libbpf's expected attach type.
_TRAMPOLINE_SECTIONS = {24: "fentry", 25: "fexit"}


def bind_target(obj: "CoreObject", name: str, func: str, prog, wanted: str, target_fd: int, target_func: str, text: str) -> None:
    """Give libbpf the program (fd; 0: the kernel) and function the fentry/fexit/freplace
    (WANTED) program FUNC is for: the kernel binds it at load (bpf_program__set_attach_target).
    TEXT: the target as the cell wrote it."""
    lib = _lib()
    section = obj.section(prog)
    kind = "freplace" if obj.program_type(prog) == "ext" else _TRAMPOLINE_SECTIONS.get(lib.bpf_program__expected_attach_type(prog))
    if kind != wanted:
        raise AttachError(f'{name}.{func} is SEC("{section}"); -a {func}={text} needs SEC("{wanted}")')
    with libbpf_messages() as log:
        ret = lib.bpf_program__set_attach_target(prog, target_fd, target_func.encode())
    obj.bound[func] = (wanted, target_fd, text)
    if ret < 0:
        said = " ".join(line.removeprefix("libbpf: ").strip() for line in log[0].splitlines() if line.strip())
        where = "the kernel's BTF" if not target_fd else "the target program's BTF"
        raise AttachError(f"{name}.{func}: libbpf cannot find {target_func!r} in {where} ({os.strerror(-ret)}){': ' + said if said else ''}", log[0])


def check_sections(obj: "CoreObject", attached=frozenset()) -> None:
    """Refuse, before loading, programs whose SEC() this kernel cannot serve or that would
    load and then sit unattached. ATTACHED: the programs the cell attaches with -a."""
    from ..kernel.attach import ALTERNATIVE, kprobes_available

    for pname, prog in obj.programs().items():
        section = obj.section(prog)
        kind = section.split("/", 1)[0]
        if kind in ("freplace", "fentry", "fexit") and "/" not in section and pname not in attached:
            raise AttachError(
                f'{obj.name}.{pname} is SEC("{section}"), which names no target: attach it with '
                f"-a {pname}={kind}:MODULE.FUNC (a program or subprogram of a module loaded before)"
            )
        if kind == "freplace" and pname not in attached:
            raise AttachError(
                f'{obj.name}.{pname} is SEC("{section}"): an freplace program replaces a global function of a '
                f"program loaded before; name it with -a {pname}=freplace:MODULE.FUNC (or, to swap code at run "
                "time through a prog array, put the new version in a slot: -s ARRAY[KEY]=FUNC)"
            )
        if kind in ("kprobe", "kretprobe", "ksyscall", "kretsyscall") and not kprobes_available():
            raise AttachError(
                f'{obj.name}.{pname} is SEC("{section}"): kprobes are not available on this kernel (CONFIG_KPROBES is off); {ALTERNATIVE}'
            )


def type_custom_sections(obj: "CoreObject", syntax: CellSyntax, needs: dict[str, str], slotted: list, arrays: dict) -> None:
    """Programs in a section libbpf has no type for (SEC("xdp-root"), SEC("xdp_stats"),
    SEC("action")) get one, as cilium/ebpf's and libxdp's loaders take such files: from the
    -a target, else the array the program is slotted into, else its context parameter (a
    ``struct __sk_buff *`` one, tc or socket filter, only when the session arrays it
    tail-calls through hold one type). Only when nothing says it, one line asks.
    (No SEC() at all is said at load.)"""
    lib = _lib()
    typed: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (type, why) -> [(function, section)]: one note each
    programs = obj.programs()
    # An array this cell creates has no type yet: the programs it slots there must share one, so
    # a peer whose type is known (its -a target, its section) gives it to the others.
    peer_types: dict[str, set[str]] = {}
    for array, fname in slotted:
        prog = programs.get(fname)
        known = needs.get(fname) or (obj.program_type(prog) if prog is not None and lib.bpf_program__type(prog) != 0 else None)
        if known:
            peer_types.setdefault(array.name, set()).add(known)
    for pname, prog in programs.items():
        section = obj.section(prog)
        want = needs.get(pname) or next((a.owner_type for a, f in slotted if f == pname and a.owner_type), None)
        if obj.program_type(prog) == "sched_act" and want == "sched_cls":
            # iproute2's `tc filter ... bpf da sec action` loads SEC("action") as a classifier
            lib.bpf_program__set_type(prog, prog_type_value("sched_cls"))
            obj._notes.append(f'{pname}: SEC("{section}") is sched_act to libbpf; loaded as sched_cls for its use, as tc loads it')
            continue
        if lib.bpf_program__type(prog) != 0 or section == ".text":
            continue
        fn = syntax.functions.get(pname)
        chosen, why = needs.get(pname), "its -a target"
        if chosen is None:
            chosen, why = next((a.owner_type for a, f in slotted if f == pname and a.owner_type), None), "the array it is slotted into"
        if chosen is None:
            shared = next((a.name for a, f in slotted if f == pname and len(peer_types.get(a.name, ())) == 1), None)
            if shared is not None:
                chosen, why = next(iter(peer_types[shared])), f"the type of the other programs slotted into {shared}"
        if chosen is None and fn is not None and fn.context == "__sk_buff":
            kinds = {arrays[t.array].owner_type for t in syntax.tail_calls if t.function == pname and t.array in arrays} & SKB_TYPES
            if len(kinds) == 1:
                chosen, why = kinds.pop(), "the arrays it tail-calls through"
        elif chosen is None and fn is not None and fn.prog_type:
            chosen, why = fn.prog_type, f"its context, struct {fn.context} *"
        if chosen is None:
            hint = (
                f"-a {pname}=tc:IFACE (sched_cls), -a {pname}=socket:IFACE (socket filter) or -s into an array of that type"
                if fn is not None and fn.context == "__sk_buff"
                else f"-a {pname}=TARGET or -s ARRAY[KEY]={pname}, or give its context parameter a type (struct xdp_md *, ...)"
            )
            legacy = _legacy_section_hint(section)
            raise BpfCompileError(
                f'{obj.name}.{pname} is SEC("{section}"), a section name that gives no program type: say which with {hint}'
                + (f"; {legacy}" if legacy else "")
            )
        lib.bpf_program__set_type(prog, prog_type_value(chosen))
        typed.setdefault((chosen, why), []).append((pname, section))
    for (chosen, why), named in typed.items():
        if len(named) == 1:
            pname, section = named[0]
            obj._notes.append(f'{pname}: SEC("{section}") names no program type libbpf knows; loaded as {chosen} ({why})')
        else:  # a PROG(X)-built chain: one line, not one per stage
            (first, first_section), (last, last_section) = named[0], named[-1]
            obj._notes.append(
                f'{len(named)} functions, {first} (SEC("{first_section}")) to {last} (SEC("{last_section}")): their sections name '
                f"no program type libbpf knows; loaded as {chosen} ({why.replace('the array it is', 'the array they are').replace('its ', 'their ')})"
            )


def size_event_maps(obj: "CoreObject", syntax: CellSyntax, origin: str) -> None:
    """Event maps declared with a key or value type, as cilium/ebpf's examples write them
    (``__type(value, struct event)`` in a ring buffer or a perf event array): cilium/ebpf
    ignores those types for such maps; libbpf 1.1 passes their sizes on and the kernel refuses
    the map with a bare EINVAL. Created with the sizes the kernel wants (a ring buffer none, a
    perf event array 4-byte CPU keys and fd values); the type stays in the object's BTF, where
    the stream finds the record's layout."""
    lib = _lib()
    for map_name, m in obj.maps().items():
        kind = lib.bpf_map__type(m)
        want = {MapType.RINGBUF: 0, MapType.PERF_EVENT_ARRAY: 4}.get(kind)
        if want is None:
            continue
        sizes = {"key": lib.bpf_map__key_size(m), "value": lib.bpf_map__value_size(m)}
        wrong = {field: size for field, size in sizes.items() if size != want}
        if not wrong:
            continue
        lib.bpf_map__set_key_size(m, want)
        lib.bpf_map__set_value_size(m, want)
        decl = next((d for d in syntax.rings + syntax.perf_arrays if d.name == map_name), None)
        where = f" ({origin}:{decl.line})" if decl else ""
        declared = " and ".join(f"a {size}-byte {field}" if size else f"no {field} size" for field, size in wrong.items())
        if kind == MapType.RINGBUF:
            what = "a ring buffer has no key or value, so it is created without them"
        else:
            what = "a perf event array's keys and values are 4 bytes (a CPU, its event's fd), so it is created with those"
        obj._notes.append(
            f"{map_name}{where} has {declared}: {what}, as cilium/ebpf does (libbpf 1.1 would pass the declared sizes to "
            "the kernel, which refuses the map); the stream reads the records the program writes"
        )


def _libbpf_refusal(name: str, log: str, errno_: int) -> BpfCompileError:
    """libbpf refused the object before the kernel's verifier saw a program:
    say so, with libbpf's own reason and what it usually means."""
    lines = [line.removeprefix("libbpf: ").strip() for line in log.splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(("failed to load object", "prog '")) or "failed to find" in line] or lines
    text = f"libbpf refused to load {name} ({os.strerror(errno_)}), before the verifier saw it:\n" + "\n".join(f"  {line}" for line in reasons[-6:])
    event = re.search(r"failed to find kernel BTF type ID of '(\w+)'", log)
    if event:
        text += (
            f'\nThe kernel\'s BTF has no {event[1]!r}: SEC("tp_btf/NAME") and fentry-style sections name a '
            "raw tracepoint or kernel function that must exist (see /sys/kernel/tracing/available_events)."
        )
    pinned = re.search(r"couldn't reuse pinned map at '([^']+)': parameter mismatch", log)
    if pinned:
        text += (
            f"\nA map pinned at {pinned[1]} has this name but another definition (type, key or value size, "
            "max_entries or flags): a map pinned by name is shared by every cell that declares it, so "
            "declare it the same, or unload the modules using it (or `%bpf reset`) first."
        )
    kfunc = re.search(r"extern \(func ksym\) '(\w+)': not found", log)
    if kfunc:
        text += f"\nThis kernel exports no kfunc {kfunc[1]!r} (bpftool btf dump file /sys/kernel/btf/vmlinux lists them)."
    return BpfCompileError(text, log)


def _verifier_error(name: str, log: str, errno_: int, origin: str, source: str) -> BpfVerifierError:
    from ..c.diagnostics import verifier_error

    # libbpf frames the kernel's log between these markers; keep libbpf's own lines out of the tail.
    m = re.search(r"-- BEGIN PROG LOAD LOG --\n(.*?)-- END PROG LOAD LOG --", log, re.S)
    if m is None and "-- BEGIN PROG LOAD LOG --" not in log:
        return _libbpf_refusal(name, log, errno_)
    if m is None:  # a log without its end marker: all of it from the start marker
        m = re.search(r"-- BEGIN PROG LOAD LOG --\n(.*)", log, re.S)
    prog = re.search(r"prog '(\w+)': BPF program load failed", log)
    body = m[1] if m else log
    body = body.replace(f"@ {CORE_CELL_FILE}:", f"@ {origin}:")
    err = verifier_error(f"{name}.{prog[1]}" if prog else name, body, os.strerror(errno_), origin)
    err.log = log
    return err


def load_object(
    name: str,
    syntax: CellSyntax,
    origin: str,
    cflags: list[str],
    slot_index,
    file: str | None,
    arrays: dict,
    count_calls: bool,
    verbose: bool,
    needs: dict[str, str],
    slotted: list,
    initial_globals: dict | None = None,
    sites=None,
    paths=None,
    cursor=None,
    pin_root=None,
    bound=None,
) -> tuple[CoreObject, str]:
    """Compile a --core cell and load it: clang against vmlinux.h, then libbpf
    with the session's arrays (and their call counters) reusing the session's
    map fds. ``needs``: function -> the program type its -a target needs;
    ``slotted``: (array, function) of its -s slots. A type its SEC() cannot
    serve is refused before the kernel would say only EINVAL.
    ``initial_globals``: values written into the object's sections before load
    (.rodata included). ``pin_root``: where maps the cell pins by name go (CoreObject).
    ``bound``: function -> (program fd, or 0 for the kernel; function name) of its fentry,
    fexit or freplace target, given to libbpf before load. Returns the loaded object and what clang and libbpf said."""
    source = syntax.source
    written = syntax.written or source  # what errors quote and BTF line info holds: the cell as the user wrote it
    # sites: (counter table, base) of the session's per-call-site counters
    text = core_text(
        syntax,
        {n: (a.size, a.counters) for n, a in arrays.items()},
        slot_index,
        count_calls,
        site_base=sites[1] if sites else None,
        paths=paths is not None,
        cursor=cursor is not None,
        sites=sites[0] if sites else None,
        path_rows=paths.rows if paths is not None else 0,
    )
    text = keep_ring_types(text, source)  # record types of rings get BTF: the stream reads their layout
    include_dirs = [os.path.dirname(os.path.abspath(file))] if file else []
    obj_bytes, warnings_text = compile_object(text, written, origin, cflags, include_dirs, vmlinux_first=syntax.starts_with_vmlinux)

    def open_and_load(stats: bool):
        return _open_and_load(
            name,
            syntax,
            origin,
            obj_bytes,
            arrays,
            needs,
            slotted,
            initial_globals,
            verbose,
            warnings_text,
            stats=stats,
            sites=sites,
            paths=paths,
            cursor=cursor,
            pin_root=pin_root,
            bound=bound,
        )

    try:
        try:
            return open_and_load(stats=True)
        except _RetryWithoutStats:
            return open_and_load(stats=False)
    except BpfVerifierError as e:
        if not any(f.startswith("-mcpu") for f in cflags) and any(reason in e.message for reason in BOUNDS_REASONS):
            e.message += ISA_NOTE
            e.args = (e.message,)
        raise


def _open_and_load(
    name,
    syntax,
    origin,
    obj_bytes,
    arrays,
    needs,
    slotted,
    initial_globals,
    verbose,
    warnings_text,
    stats: bool,
    sites=None,
    paths=None,
    cursor=None,
    pin_root=None,
    bound=None,
):
    source = syntax.written or syntax.source  # verifier errors quote the cell as written
    obj = CoreObject(name, obj_bytes, pin_root)
    obj.syntax = syntax
    try:
        maps = obj.maps()
        for array_name, array in arrays.items():
            if array_name in maps:
                have = _lib().bpf_map__max_entries(maps[array_name])
                if have != array.size:  # the object's own size: macros and #ifs resolved by the compiler
                    decl = next((d for d in syntax.arrays if d.name == array_name), None)
                    where = f"{origin}:{decl.line}: " if decl else ""
                    raise SlotError(
                        f"{where}prog array {array_name} has {have} slots in this cell; the session's "
                        f"array {array_name} has {array.size} slots: declare it with {array.size}, or free the "
                        f"session's array first (`%bpf reset`, or unload the modules that use it, then "
                        f"`%bpf unload {array_name}`)"
                    )
                obj.reuse(array_name, array.fd)
            if counter_section(counter_name(array_name)) in maps:
                obj.reuse(counter_section(counter_name(array_name)), array.counters.fd)
        if sites and counter_section(SITES_MAP) in maps:
            obj.reuse(counter_section(SITES_MAP), sites[0].fd)
        if cursor is not None and "__bm_cursor" in maps:
            obj.reuse("__bm_cursor", cursor)
        if paths is not None:
            for map_name, fd in ((counter_section(PATH_RECORDS), paths.rec_fd), ("__bm_pathc", paths.counts_fd), ("__bm_pathctl", paths.ctl_fd)):
                if map_name in maps:
                    obj.reuse(map_name, fd)
        size_event_maps(obj, syntax, origin)
        type_custom_sections(obj, syntax, needs, slotted, arrays)
        progs = obj.programs()
        check_sections(obj, set(needs))

        def program(func: str):
            if func not in progs:
                raise UsageProblem(f"{name} has no program {func!r} (programs: {', '.join(progs) or 'none'})")
            return progs[func]

        # SEC("?...") leaves a program out of the object's load (libbpf's autoload off, as
        # skeleton users turn it on for the one they want): the cell turns it on by naming it.
        for func in {*needs, *(f for _, f in slotted)}:
            if not _lib().bpf_program__autoload(program(func)):
                _lib().bpf_program__set_autoload(program(func), True)
        for func, need in needs.items():
            have = obj.program_type(program(func))
            if have != need:
                section = {"tracing": 'SEC("fentry") or SEC("fexit")', "ext": 'SEC("freplace")'}.get(need, need)
                raise AttachError(f'{name}.{func} is SEC("{obj.section(progs[func])}"), a {have} program; its target needs {section}')
        for func, (kind, target_fd, target_func, text) in (bound or {}).items():
            bind_target(obj, name, func, progs[func], kind, target_fd, target_func, text)
        for array, func in slotted:
            have, kind = array.owner_type, obj.program_type(program(func))
            if have and have != kind:
                raise SlotError(f'{array.name} holds {have} programs; {name}.{func} is SEC("{obj.section(progs[func])}"), a {kind} program')
        if initial_globals:
            from .core_globals import set_initial

            set_initial(obj, initial_globals)
        log = obj.load(origin, source, verbose, stats=stats)
    except BaseException:
        obj.close()
        raise
    return obj, warnings_text + log


def compile_cell(ctx: LoadContext, req, syntax) -> tuple[CoreObject, str]:
    """Compile REQ's --core cell with clang and load it with libbpf in CTX's session. ``ctx.bound``:
    function -> (program fd or 0, function) its fentry/fexit/freplace target names (load.bound_targets)."""
    from ..kernel.attach import parse_target

    needs = {func: parse_target(target).prog_type for func, target in req.attach}
    slotted = [(array, func) for array, _, func in ctx.resolved_slots]
    sites = (ctx.sites, ctx.site_base) if ctx.site_base is not None else None
    paths = ctx.path_maps if sites else None
    return load_object(
        req.name,
        syntax,
        req.origin,
        req.cflags,
        ctx.slot_index,
        req.file,
        ctx.arrays,
        req.count_calls,
        req.verbose,
        needs,
        slotted,
        req.initial_globals,
        sites=sites,
        paths=paths,
        cursor=ctx.cursor[0] if ctx.cursor else None,
        pin_root=req.pin_root or ctx.name_pin_dir,
        bound=ctx.bound,
    )


check_tools = tools


def read_source(source: str, origin: str) -> tuple[CellSyntax, list[str]]:
    """The cell's syntax with its legacy map definitions (struct bpf_map_def SEC("maps"))
    rewritten into BTF-defined maps, lines kept, and the note that says so. Errors and
    clang's BTF line info quote the cell as written (``CellSyntax.written``)."""
    from ..c.legacy_maps import legacy_maps_note, rewrite_legacy_maps

    text, legacy = rewrite_legacy_maps(source, origin)
    syntax = analyse(text)
    if not legacy:
        return syntax, []
    syntax.written = source
    return syntax, [legacy_maps_note(legacy, origin)]


def convention_targets(syntax):
    return []  # SEC() names the targets; no naming conventions
