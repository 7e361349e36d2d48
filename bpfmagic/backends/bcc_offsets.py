"""Kernel struct offsets of a BCC cell, checked: BCC compiles a cell's
``task->tgid`` with the offsets of the headers it uses, which here may be
another kernel's (Debian's 6.1 headers on a 6.18 kernel), and the read then
returns other bytes than it names, silently. For each kernel struct member
the cell reads (c/member_reads.py), the offset and size in those headers
(asked of clang, with BCC's include paths and flags, run beside BCC's own
compile) are compared with the running kernel's BTF; where they differ the
cell warns, naming the member and both offsets, before any data is shown."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass

from ..c.member_reads import member_accesses
from ..errors import BpfError
from ..kernel import btf as kbtf
from ..kernel import cache, env

# uname -m -> the kernel's arch directory, as BCC's KBuildHelper maps it
_ARCH_DIRS = {"x86_64": "x86", "aarch64": "arm64", "s390x": "s390", "ppc64le": "powerpc", "ppc64": "powerpc", "riscv64": "riscv"}
# BCC's own virtual headers: libbcc has them built in, clang has not (and they hold no kernel structs)
_BCC_VIRTUAL = ("bcc/",)
_LAYOUT = "__bpfmagic_layout"
CLANG_TIMEOUT = 60  # seconds; the kernel headers a cell includes take a fraction of a second


@dataclass(frozen=True)
class MemberRead:
    """One kernel struct member a cell reads: ``record`` ("struct task_struct"),
    ``designator`` ("se.vruntime"), where in the cell, and where the running
    kernel has it (None: not in this kernel)."""

    record: str
    designator: str
    line: int
    text: str
    here: kbtf.MemberLayout | None

    @property
    def key(self) -> tuple[str, str]:
        return self.record, self.designator


def kernel_reads(syntax, btf: kbtf.Btf) -> list[MemberRead]:
    """Each kernel struct member SYNTAX reads (first read of each, in line order); a chain
    ``task->real_parent->tgid`` reads task_struct.real_parent, then task_struct.tgid."""
    reads: dict[tuple[str, str], MemberRead] = {}

    def emit(record: str, names: list[str], access, layout) -> None:
        key = (record, ".".join(names))
        if key not in reads and not (layout is not None and layout.bits):  # offsetof cannot take a bit-field
            reads[key] = MemberRead(record, key[1], access.line, access.text, layout)

    for access in member_accesses(syntax):
        tid = btf.record(access.struct)
        if tid is None:
            continue  # not a kernel struct (the cell's headers declare it)
        record, names, offset, last, current = btf.spelling(tid), [], 0, None, tid
        for op, name in access.steps:
            if op == "[]" or (op == "->" and names):  # through a pointer (or an element): a new base
                emit(record, names, access, kbtf.MemberLayout(offset, last.size, last.bits, last.bit_offset, last.type_id))
                current = btf.record_behind(last.type_id)
                record = btf.spelling(current) if current is not None else ""
                if current is None or record in ("struct", "union"):  # not a struct, or one without a name
                    break
                names, offset, last = [], 0, None
                if op == "[]":
                    continue
            elif names:  # "." into a struct member
                current = btf.record_behind(last.type_id)
                if current is None:
                    break
            member = btf.member(current, name)
            names.append(name)
            if member is None:
                emit(record, names, access, None)
                break
            offset, last = offset + member.offset, member
        else:
            if names:
                emit(record, names, access, kbtf.MemberLayout(offset, last.size, last.bits, last.bit_offset, last.type_id))
    return sorted(reads.values(), key=lambda r: r.line)


# ------------------------------------------------------------ the headers' side, from clang


def _probe(includes: list[str], reads: list[MemberRead]) -> tuple[str, dict[int, MemberRead]]:
    """C that includes what the cell includes and lays out offset and size of each
    read as constants; and which line of it asks for which read."""
    lines = [f"#include {inc}" for inc in includes]
    lines.append(f"const unsigned long long {_LAYOUT}[] = {{")
    by_line = {}
    for read in reads:
        by_line[len(lines) + 1] = read
        lines.append(f"__builtin_offsetof({read.record}, {read.designator}), sizeof((({read.record} *)0)->{read.designator}),")
    lines.append("};")
    return "\n".join(lines) + "\n", by_line


def _kbuild_flags(headers: str) -> list[str]:
    """BCC's include paths and defines for a kernel tree (KBuildHelper::get_flags),
    relative: clang runs in the tree, as libbcc does."""
    arch = os.environ.get("ARCH") or _ARCH_DIRS.get(platform.machine(), platform.machine())
    resource = _resource_dir()
    return [
        "-nostdinc",
        *(["-isystem", os.path.join(resource, "include")] if resource else []),
        f"-I./arch/{arch}/include",
        f"-Iarch/{arch}/include/generated/uapi",
        f"-Iarch/{arch}/include/generated",
        "-Iinclude",
        f"-I./arch/{arch}/include/uapi",
        "-I./include/uapi",
        "-Iinclude/generated/uapi",
        "-include",
        "./include/linux/kconfig.h",
        "-D__KERNEL__",
        "-D__BPF_TRACING__",
        "-D__HAVE_BUILTIN_BSWAP16__",
        "-D__HAVE_BUILTIN_BSWAP32__",
        "-D__HAVE_BUILTIN_BSWAP64__",
        # Kbuild's own defines for any file of the tree: x86's asm/ftrace.h refuses to compile without
        # CC_USING_FENTRY (Kbuild sets it beside -mfentry), and some headers want a module name.
        # Neither changes a struct's layout.
        *(["-DCC_USING_FENTRY"] if arch == "x86" else []),
        '-DKBUILD_MODNAME="bpfmagic"',
        "-Wno-unused-value",
        "-Wno-pointer-sign",
        "-Wno-address-of-packed-member",
        "-Wno-gnu-variable-sized-type-not-at-end",
        "-Wno-unknown-warning-option",
        "-fno-stack-protector",
    ]


_resource: list[str] = []


def _resource_dir() -> str:
    if not _resource:
        try:
            _resource.append(subprocess.run(["clang", "-print-resource-dir"], capture_output=True, text=True, timeout=10).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            _resource.append("")
    return _resource[0]


def _user_flags(cflags: list[str], include_dirs) -> list[str]:
    """The cell's own -D/-U/-I flags (what can change a struct), its file's directory included."""
    out, take = [], False
    for flag in cflags:
        if take:
            out.append(flag)
            take = False
        elif flag in ("-D", "-U", "-I"):
            out.append(flag)
            take = True
        elif flag.startswith(("-D", "-U", "-I")):
            out.append(flag if not flag.startswith("-I") else "-I" + os.path.abspath(flag[2:]))
    return out + [f"-I{os.path.abspath(d)}" for d in include_dirs]


_cache: dict[tuple, dict[tuple[str, str], tuple[int, int] | None]] = {}


class OffsetCheck:
    """The check of one cell, started before BCC compiles it and read after: clang
    runs beside libbcc. ``warnings()`` are the lines the cell must show (none
    when every member agrees)."""

    def __init__(self, origin: str, headers: str, reads: list[MemberRead], includes: list[str], flags: list[str]):
        self.origin, self.headers, self.reads = origin, headers, reads
        self.includes, self.flags = includes, flags
        self.key = (headers, _stamp(headers), tuple(includes), tuple(flags), tuple(r.key for r in reads))
        self.proc: subprocess.Popen | None = None
        self.by_line: dict[int, MemberRead] = {}
        if self.key not in _cache and not _recall(self.key):
            self._start(reads)

    def _start(self, reads: list[MemberRead]) -> None:
        source, self.by_line = _probe(self.includes, reads)
        cmd = ["clang", *_kbuild_flags(self.headers), *self.flags, "-x", "c", "-S", "-emit-llvm", "-O0", "-fno-color-diagnostics", "-o", "-", "-"]
        self.proc = subprocess.Popen(cmd, cwd=self.headers, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._source = source

    def _finish(self) -> tuple[dict[tuple[str, str], tuple[int, int] | None], str | None]:
        """{read: (offset, size) in the headers, None where they have no such member}, and
        why the headers could not be asked at all (None: they were)."""
        have: dict[tuple[str, str], tuple[int, int] | None] = {}
        reads = list(self.reads)
        for _attempt in range(2):
            try:
                out, err = self.proc.communicate(self._source, timeout=CLANG_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.cancel()
                return have, f"clang took over {CLANG_TIMEOUT} s"
            if self.proc.returncode == 0:
                m = re.search(rf"@{_LAYOUT} = .*?\[((?:i64 \d+(?:, )?)*)\]", out)
                if m is None:
                    return have, "clang's output holds no layout"
                values = [int(v.split()[1]) for v in m.group(1).split(", ") if v]
                for i, read in enumerate(reads):
                    have[read.key] = (values[2 * i], values[2 * i + 1])
                return have, None
            # A member the headers lack is BCC's compile error too: note it, ask again for the rest.
            failed = {int(n) for n in re.findall(r"^<stdin>:(\d+):\d+: error", err, re.M)}
            missing = [self.by_line[n] for n in failed if n in self.by_line]
            if not missing or len(missing) < len(failed):
                first = next((ln for ln in err.splitlines() if "error" in ln), err.strip()[:200])
                return have, f"clang could not compile the cell's includes with BCC's flags ({first})"
            for read in missing:
                have[read.key] = None
            reads = [r for r in reads if r.key not in have]
            if not reads:
                return have, None
            self._start(reads)
        return have, "clang failed twice"

    def cancel(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.SubprocessError):
                self.proc.communicate(timeout=5)

    def in_headers(self) -> tuple[dict[tuple[str, str], tuple[int, int] | None], str | None]:
        """Where the headers BCC compiles against put each member read: {(record,
        designator): (offset, size), None where they have no such member}, and why they
        could not be asked (None: they were). Clang is asked once per key; its answer is
        kept in memory and in the trusted cache directory."""
        if self.key in _cache:
            return _cache[self.key], None
        there, problem = self._finish()
        if problem is None:
            _remember(self.key, there)
        return there, problem

    def warnings(self) -> list[str]:
        """The lines the cell shows: the reads whose offsets in the headers differ from the
        running kernel's, or why they could not be checked; none when all agree."""
        there, problem = self.in_headers()
        if problem is not None:
            names = ", ".join(f"{r.record.split()[-1]}.{r.designator}" for r in self.reads)
            return [
                f"{self.origin} reads kernel struct members ({names}) whose offsets in the headers BCC compiles against "
                f"({env.headers_name(self.headers)}) could not be checked against the running kernel {env.running_kernel()}: "
                f"{problem}. If the values look wrong, load the cell with --core (CO-RE reads with this kernel's offsets)."
            ]
        lines = []
        for read in self.reads:
            theirs = there.get(read.key)
            if theirs is None:
                continue  # not in the headers: BCC's compile said so already
            name = f"{read.record.split()[-1]}.{read.designator}"
            where = f"{self.origin}:{read.line}: {read.text}: {name}"
            if read.here is None:
                lines.append(f"{where} is at offset {theirs[0]} in those headers; the running kernel has no such member")
            elif (theirs[0], theirs[1]) != (read.here.offset, read.here.size):
                size = f" ({theirs[1]} bytes there, {read.here.size} here)" if theirs[1] != read.here.size else ""
                lines.append(f"{where} is at offset {theirs[0]} in those headers, at {read.here.offset} in the running kernel{size}")
        if not lines:
            return []
        head = (
            f"{self.origin} reads kernel struct members at another kernel's offsets: BCC compiles against the headers "
            f"of {env.headers_name(self.headers)}, the running kernel is {env.running_kernel()}, and "
            f"{'this read gets' if len(lines) == 1 else 'these reads get'} other bytes than {'it names' if len(lines) == 1 else 'they name'}:"
        )
        tail = "Load the cell with --core (`%%bpf NAME --core`, libbpf-style C): CO-RE relocates each read to this kernel's offsets (BTF)."
        return ["\n".join([head, *(f"  {ln}" for ln in lines), tail])]


def _stamp(headers: str) -> tuple[int, ...]:
    """Changes when the headers tree is rebuilt (a new headers package) or its configuration changes."""
    out = []
    for path in (headers, os.path.join(headers, "include", "generated", "autoconf.h")):
        try:
            out.append(os.stat(path).st_mtime_ns)
        except OSError:
            out.append(0)
    return tuple(out)


def _disk_name(key: tuple) -> str | None:
    """The cache file of KEY; None when the cell's own headers (quoted includes, -I) take part,
    which may change without the key changing."""
    _headers, _stamp_, includes, flags, _reads = key
    if any(i.startswith('"') for i in includes) or any(f.startswith("-I") for f in flags):
        return None
    return hashlib.sha256(json.dumps(key).encode()).hexdigest() + ".json"


def _recall(key: tuple) -> bool:
    """KEY's layouts from the cache directory (a new session need not ask clang again)."""
    name = _disk_name(key)
    if name is None:
        return False
    try:
        data = cache.read_trusted(os.path.join(cache.trusted_dir("offsets"), name))
        if data is None:
            return False
        stored = json.loads(data)
        _cache[key] = {(r, d): (tuple(v) if v is not None else None) for r, d, v in stored}
        return True
    except (ValueError, TypeError, OSError, BpfError):  # damaged or unreadable: ask clang
        return False


def _remember(key: tuple, there: dict) -> None:
    _cache[key] = there
    name = _disk_name(key)
    if name is None:
        return
    with contextlib.suppress(OSError, BpfError):
        cache.write_file(cache.trusted_dir("offsets"), name, json.dumps([[r, d, v] for (r, d), v in there.items()]).encode())


def headers_in_use() -> str | None:
    """The kernel tree BCC compiles against when it is not the running kernel's own
    (``BCC_KERNEL_SOURCE``); None when BCC uses /lib/modules/$(uname -r)/build."""
    return os.environ.get("BCC_KERNEL_SOURCE") or None


def start(syntax, origin: str, cflags: list[str], include_dirs) -> OffsetCheck | None:
    """The check of the cell SYNTAX, started (None: nothing to check: BCC uses the running
    kernel's headers, or the cell reads no kernel struct member)."""
    headers = headers_in_use()
    if headers is None or not os.path.isdir(headers):
        return None
    btf = kbtf.vmlinux()
    if btf is None:
        return None  # no BTF: the session's headers note stands (session._prepare_environment)
    reads = kernel_reads(syntax, btf)
    if not reads:
        return None
    includes = [f"<{i.path}>" if i.system else f'"{i.path}"' for i in syntax.includes if not i.path.startswith(_BCC_VIRTUAL)]
    if shutil.which("clang") is None:
        return _Unchecked(origin, headers, reads, "no clang to ask (apt-get install clang)")
    return OffsetCheck(origin, headers, reads, includes, _user_flags(cflags, include_dirs))


class _Unchecked(OffsetCheck):
    """A check that cannot run: it says so, once, in the cell."""

    def __init__(self, origin: str, headers: str, reads: list[MemberRead], why: str):
        self.origin, self.headers, self.reads, self.why, self.proc = origin, headers, reads, why, None
        self.key = None

    def _finish(self):
        return {}, self.why
