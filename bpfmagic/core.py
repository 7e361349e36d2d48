"""The CO-RE path (``%%bpf NAME --core``): the cell is libbpf-style C, compiled
by clang against ``vmlinux.h`` of the running kernel and loaded by libbpf.
It serves what BCC cannot: BPF-to-BPF calls, tp_btf programs and kernel
struct reads with correct offsets (BPF_CORE_READ).

Session prog arrays are shared with BCC cells: a prog array map of the
object whose name is a session array reuses the session's map fd, so CO-RE
and BCC programs tail-call each other through the same slots."""
from __future__ import annotations

import contextlib
import ctypes as ct
import os
import platform
import re
import shutil
import subprocess
import tempfile

from . import libbpf
from .attach import Attachment, Target
from .compiler import (
    counter_name,
    declare_first,
    is_statement,
    matching_paren,
    prog_type_name,
    splice,
    split_args,
    strip_comments,
)
from .errors import (
    AttachError,
    BpfCompileError,
    BpfVerifierError,
    EnvironmentProblem,
    SlotError,
    UsageProblem,
)
from .kernel_lock import NATIVE_LOCK

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
_ARCH = {"x86_64": "x86", "aarch64": "arm64", "s390x": "s390", "ppc64le": "powerpc", "riscv64": "riscv"}

# Declarations every --core cell gets unless it includes vmlinux.h itself.
PRELUDE = """#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
"""
# BPF_PROG_ARRAY(name, n) means the same thing in BCC and --core cells.
PROG_ARRAY_MACRO = """#ifndef BPF_PROG_ARRAY
#define BPF_PROG_ARRAY(_name, _n) struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); \\
    __uint(max_entries, _n); __type(key, __u32); __type(value, __u32); } _name SEC(".maps")
#endif
"""
_STRUCT_MAP_RE = re.compile(r"struct\s*\{([^{}]*)\}\s*([A-Za-z_]\w*)\s+SEC\(\s*\"\.maps\"\s*\)")
_MAX_ENTRIES_RE = re.compile(r"__uint\s*\(\s*max_entries\s*,\s*(\w+)\s*\)")
_TAIL_CALL_RE = re.compile(r"\bbpf_tail_call(?:_static)?\s*\(")
# SEC prefixes libbpf can attach by itself (the section names the target).
AUTO_ATTACH_SECTIONS = ("tp_btf/", "raw_tp/", "raw_tracepoint/", "tp/", "tracepoint/", "fentry/", "fexit/",
                        "lsm/", "iter/")


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
    """A directory holding vmlinux.h of the running kernel (dumped once from its BTF, cached)."""
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bpfmagic",
                         "vmlinux", platform.release())
    header = os.path.join(cache, "vmlinux.h")
    if os.path.exists(header):
        return cache
    os.makedirs(cache, exist_ok=True)
    res = subprocess.run([_tool("bpftool") or "bpftool", "btf", "dump", "file", VMLINUX_BTF, "format", "c"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise EnvironmentProblem(f"bpftool could not dump {VMLINUX_BTF}: {res.stderr.strip()}")
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".h")  # atomic: concurrent sessions never see half a file
    with os.fdopen(fd, "w") as f:
        f.write(res.stdout)
    os.replace(tmp, header)
    return cache


# ------------------------------------------------------------ source

def declared_struct_prog_arrays(source: str) -> list[tuple[str, int, int]]:
    """(name, size, line) of prog arrays declared in libbpf's struct form."""
    code = strip_comments(source)
    out = []
    for m in _STRUCT_MAP_RE.finditer(code):
        body = m[1]
        if "BPF_MAP_TYPE_PROG_ARRAY" not in body:
            continue
        size = _MAX_ENTRIES_RE.search(body)
        try:
            n = int(size[1], 0) if size else 0
        except ValueError:
            raise BpfCompileError(f"prog array {m[2]}: max_entries must be an integer literal so cells can "
                                  "share the array") from None
        out.append((m[2], n, code.count("\n", 0, m.start()) + 1))
    return out


def _count_core_tail_calls(text: str, sizes: dict[str, int]) -> str:
    """Wrap ``bpf_tail_call(ctx, &ARRAY, key)`` on a session array to count calls
    and fall-throughs per key (the same counters BCC cells bump)."""
    code = strip_comments(text)

    def edits():
        for m in _TAIL_CALL_RE.finditer(code):
            close = matching_paren(code, m.end() - 1)
            if close is None:
                continue
            args = split_args(code, m.end(), close)
            if len(args) != 3:
                continue
            array = text[args[1][0]:args[1][1]].strip().lstrip("&").strip()
            if array not in sizes:
                continue
            ctx, key = text[args[0][0]:args[0][1]], text[args[2][0]:args[2][1]]
            counter, size = counter_name(array), sizes[array]
            bump = f"__bm_v = bpf_map_lookup_elem(&{counter}, &__bm_i); if (__bm_v) *__bm_v += 1;"
            result = "" if is_statement(code, m.start(), close) else " __bm_r;"
            yield (m.start(), close + 1,
                   f"({{ __u32 __bm_k = ({key}); __u32 __bm_i = __bm_k; __u64 *__bm_v; {bump} "
                   f"long __bm_r = bpf_tail_call({ctx}, &{array}, __bm_k); __bm_i = __bm_k + {size}; {bump}"
                   f"{result} }})")
    return splice(text, edits())


def tail_called_arrays(source: str) -> set[str]:
    code = strip_comments(source)
    names = set()
    for m in _TAIL_CALL_RE.finditer(code):
        close = matching_paren(code, m.end() - 1)
        if close is None:
            continue
        args = split_args(code, m.end(), close)
        if len(args) == 3:
            names.add(code[args[1][0]:args[1][1]].strip().lstrip("&").strip())
    return names


# ------------------------------------------------------------ ring buffers: loss counting, record struct

LOST_COUNTER = "__bm_lost"  # the same name BCC cells use (stream.LOST_COUNTER); hidden from tables()
_RINGBUF_CALL_RE = re.compile(r"\b(bpf_ringbuf_output|bpf_ringbuf_reserve)\s*\(")
_KEYWORDS = {"return", "sizeof", "if", "else", "case", "goto", "do", "while", "for", "switch", "const",
             "volatile", "static", "register", "unsigned", "signed", "break", "continue", "default"}


def ring_tables(source: str) -> list[str]:
    """Names of the BPF_MAP_TYPE_RINGBUF maps the cell declares in libbpf's
    struct form, in the order of their slots in the loss counter."""
    return sorted({m[2] for m in _STRUCT_MAP_RE.finditer(strip_comments(source))
                   if "BPF_MAP_TYPE_RINGBUF" in m[1]})


def _ring_calls(code: str):
    """(match, close, args, table) of each bpf_ringbuf_output/reserve call on ``&TABLE``."""
    for m in _RINGBUF_CALL_RE.finditer(code):
        close = matching_paren(code, m.end() - 1)
        if close is None:
            continue
        args = split_args(code, m.end(), close)
        if not args:
            continue
        first = code[args[0][0]:args[0][1]].strip()
        if not first.startswith("&"):
            continue
        yield m, close, args, first[1:].strip()


def count_ringbuf_failures(text: str) -> str:
    """Wrap each ``bpf_ringbuf_output(&RING, ...)`` / ``bpf_ringbuf_reserve(&RING, ...)``
    on a ring the cell declares so that a failure (ring full) bumps
    ``__bm_lost[slot of RING]`` per CPU; the declaration of that counter goes
    in front of the cell's first line of code. Lines stay where they were and
    the calls keep their value."""
    tables = ring_tables(text)
    if not tables:
        return text
    slot = {name: i for i, name in enumerate(tables)}
    code = strip_comments(text)

    def edits():
        for m, close, _args, table in _ring_calls(code):
            if table not in slot:
                continue
            call = text[m.start():close + 1]
            bump = (f"{{ __u32 __bm_lk = {slot[table]}; __u64 *__bm_lv = bpf_map_lookup_elem(&{LOST_COUNTER}, "
                    f"&__bm_lk); if (__bm_lv) *__bm_lv += 1; }}")
            statement = is_statement(code, m.start(), close)
            if m[1] == "bpf_ringbuf_reserve":
                wrapped = f"({{ void *__bm_rp = {call}; if (!__bm_rp) {bump}{'' if statement else ' __bm_rp;'} }})"
            else:
                wrapped = f"({{ long __bm_rc = {call}; if (__bm_rc) {bump}{'' if statement else ' __bm_rc;'} }})"
            yield m.start(), close + 1, wrapped
    counter = (f"struct {{ __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, {len(tables)}); "
               f"__type(key, __u32); __type(value, __u64); }} {LOST_COUNTER} SEC(\".maps\");")
    return declare_first(splice(text, edits()), [counter])


def keep_ring_types(text: str, source: str) -> str:
    """Append a global pointer to each type the cell writes into a ring it
    declares: clang emits BTF only for types reachable from globals, maps
    and function signatures, and a local ``struct event rec`` is none of
    them. The stream reads the record layout from that BTF. (A .bss map
    holds the pointers; it is not one of the module's tables.) The types
    are found in SOURCE, the cell before the loss-counting rewrite."""
    code = strip_comments(source)
    decls = []
    for table in ring_tables(source):
        for kind in ring_record_types(source, table):
            if kind == "?":
                continue
            if not kind.startswith("struct ") and not re.search(
                    r"\btypedef\b[^;{}]*\b" + re.escape(kind) + r"\s*;|\}\s*" + re.escape(kind) + r"\s*;", code):
                continue  # a name that may not be a type: declaring a pointer to it could break the cell
            decls.append(f"{kind} *__bm_rec_{table}_{len(decls)} __attribute__((unused));")
    if not decls:
        return text
    return text + ("" if text.endswith("\n") else "\n") + "\n".join(decls) + "\n"


def _declared_type(code: str, var: str, before: int) -> str | None:
    """The type VAR is declared with last before offset BEFORE: "struct NAME" or a
    typedef name (pointer or not), None when no declaration is found."""
    found = None
    pattern = re.compile(r"(?:\bstruct\s+([A-Za-z_]\w*)|\b([A-Za-z_]\w*))[\s*]*(?:const\s+)?\b"
                         + re.escape(var) + r"\s*(?=[=;,\[)])")
    for m in pattern.finditer(code, 0, before):
        if m[1]:
            found = f"struct {m[1]}"
        elif m[2] not in _KEYWORDS:
            found = m[2]
    return found


def _sizeof_type(code: str, arg: str, at: int) -> str | None:
    """The type of ``sizeof(struct NAME)``, ``sizeof(TYPE)``, ``sizeof(VAR)`` or ``sizeof(*VAR)``."""
    m = re.fullmatch(r"\s*sizeof\s*\(\s*(struct\s+[A-Za-z_]\w*|\*?\s*[A-Za-z_]\w*)\s*\)\s*", arg)
    if not m:
        return None
    inner = m[1]
    if inner.startswith("struct"):
        return "struct " + inner.split()[-1]
    name = inner.lstrip("*").strip()
    return _declared_type(code, name, at) or (name if not inner.startswith("*") else None)


def ring_record_types(source: str, table: str) -> list[str]:
    """The types (``struct NAME`` or typedef names) the cell writes into ring
    TABLE, from its ``bpf_ringbuf_output(&TABLE, &VAR, sizeof(..), 0)`` and
    ``bpf_ringbuf_reserve(&TABLE, sizeof(..), 0)`` calls (the variable's
    declared type, the sizeof's type, or the pointer the reserve is assigned to)."""
    code = strip_comments(source)
    found: list[str] = []
    for m, close, args, name in _ring_calls(code):
        if name != table:
            continue
        kind = None
        if m[1] == "bpf_ringbuf_output" and len(args) >= 3:
            data = code[args[1][0]:args[1][1]].strip()
            var = re.fullmatch(r"&?\s*([A-Za-z_]\w*)", data)
            if var:
                kind = _declared_type(code, var[1], m.start())
            if kind is None:
                kind = _sizeof_type(code, code[args[2][0]:args[2][1]], m.start())
        elif m[1] == "bpf_ringbuf_reserve" and len(args) >= 2:
            # struct NAME *e = bpf_ringbuf_reserve(...)  or  e = bpf_ringbuf_reserve(...)
            target = re.search(r"(?:\bstruct\s+([A-Za-z_]\w*)|\b([A-Za-z_]\w*))?[\s*]*\b([A-Za-z_]\w*)\s*=\s*"
                               r"(?:\([^()]*\)\s*)?$", code[max(0, m.start() - 200):m.start()])
            if target and target[1]:
                kind = f"struct {target[1]}"
            elif target and target[2] and target[2] not in _KEYWORDS:
                kind = target[2]
            elif target:
                kind = _declared_type(code, target[3], m.start())
            if kind is None:
                kind = _sizeof_type(code, code[args[1][0]:args[1][1]], m.start())
        if kind is not None and kind not in found:
            found.append(kind)
        elif kind is None:
            found.append("?")
    return found


class _BtfType(ct.Structure):
    _fields_ = [("name_off", ct.c_uint32), ("info", ct.c_uint32), ("size_or_type", ct.c_uint32)]


class _BtfMember(ct.Structure):
    _fields_ = [("name_off", ct.c_uint32), ("type", ct.c_uint32), ("offset", ct.c_uint32)]


class _BtfArray(ct.Structure):
    _fields_ = [("type", ct.c_uint32), ("index_type", ct.c_uint32), ("nelems", ct.c_uint32)]


BTF_KIND_INT, BTF_KIND_PTR, BTF_KIND_ARRAY, BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_ENUM = 1, 2, 3, 4, 5, 6
BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT = 8, 9, 10, 11
BTF_KIND_FLOAT, BTF_KIND_TYPE_TAG, BTF_KIND_ENUM64 = 16, 18, 19
_BTF_KIND_NAMES = {BTF_KIND_STRUCT: "struct", BTF_KIND_UNION: "union", 7: "forward declaration",
                   12: "function", 13: "function prototype"}


def btf_struct(obj: CoreObject, type_name: str) -> tuple[str, list[dict], int]:
    """The layout of TYPE_NAME (``struct NAME`` or a typedef of a struct) from
    the object's BTF: (struct name, members, size). Each member is a dict:
    name, ctype (C spelling), offset (bytes), bits (bit-field width or 0),
    base: ("int", size, signed, is_char) / ("float", size) / ("ptr", 8) /
    ("other", kind name), dims (array dimensions). Raises LookupError when
    the type is not in the BTF, TypeError when it is not a struct."""
    lib = _lib()
    btf = lib.bpf_object__btf(obj.ptr) if obj.ptr else None
    if not btf:
        raise LookupError(f"{obj.name} has no BTF")

    def type_at(tid: int):
        t = _BtfType.from_address(lib.btf__type_by_id(btf, tid))
        return t, (t.info >> 24) & 0x1F, t.info & 0xFFFF, bool(t.info >> 31)

    def name_of(off: int) -> str:
        raw = lib.btf__name_by_offset(btf, off)
        return raw.decode() if raw else ""

    if type_name.startswith("struct "):
        tid = lib.btf__find_by_name_kind(btf, type_name.split()[-1].encode(), BTF_KIND_STRUCT)
    else:
        tid = lib.btf__find_by_name_kind(btf, type_name.encode(), BTF_KIND_TYPEDEF)
    if tid <= 0:
        raise LookupError(f"{type_name} is not in the object's BTF")
    seen = 0
    while True:  # a typedef (or modifiers) down to the struct
        t, kind, vlen, kflag = type_at(tid)
        if kind in (BTF_KIND_TYPEDEF, BTF_KIND_CONST, BTF_KIND_VOLATILE, BTF_KIND_RESTRICT, BTF_KIND_TYPE_TAG) \
                and seen < 16:
            tid, seen = t.size_or_type, seen + 1
            continue
        break
    if kind != BTF_KIND_STRUCT:
        raise TypeError(f"{type_name} is a {_BTF_KIND_NAMES.get(kind, 'non-struct type')}, not a struct")
    struct_name = name_of(t.name_off) or type_name
    size = t.size_or_type
    base_addr = ct.addressof(t) + ct.sizeof(_BtfType)
    members = []
    for i in range(vlen):
        mem = _BtfMember.from_address(base_addr + i * ct.sizeof(_BtfMember))
        if kflag:
            bits, bit_off = mem.offset >> 24, mem.offset & 0xFFFFFF
        else:
            bits, bit_off = 0, mem.offset
        mtid, dims, spelled = mem.type, [], None
        for _ in range(32):
            mt, mkind, _, _ = type_at(mtid)
            if mkind == BTF_KIND_TYPEDEF:
                spelled = spelled or name_of(mt.name_off)
                mtid = mt.size_or_type
            elif mkind in (BTF_KIND_CONST, BTF_KIND_VOLATILE, BTF_KIND_RESTRICT, BTF_KIND_TYPE_TAG):
                mtid = mt.size_or_type
            elif mkind == BTF_KIND_ARRAY:
                arr = _BtfArray.from_address(ct.addressof(mt) + ct.sizeof(_BtfType))
                dims.append(arr.nelems)
                mtid = arr.type
            else:
                break
        if mkind == BTF_KIND_INT:
            enc = ct.c_uint32.from_address(ct.addressof(mt) + ct.sizeof(_BtfType)).value
            int_bits = enc & 0xFF
            if not bits and (bit_off % 8 or int_bits != mt.size_or_type * 8):
                bits = int_bits  # an old-style bit-field: the width is in the int type
            cname = name_of(mt.name_off)
            base = ("int", mt.size_or_type, bool((enc >> 24) & 1) or cname == "char",
                    cname in ("char", "signed char"))
            if cname == "_Bool" or (enc >> 24) & 4:
                base = ("bool", 1)
        elif mkind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            cname = "enum " + name_of(mt.name_off)
            base = ("int", mt.size_or_type, bool(mt.info >> 31), False)
        elif mkind == BTF_KIND_FLOAT:
            cname = name_of(mt.name_off)
            base = ("float", mt.size_or_type)
        elif mkind == BTF_KIND_PTR:
            cname = "void *"
            base = ("ptr", 8)
        else:
            cname = _BTF_KIND_NAMES.get(mkind, f"BTF kind {mkind}")
            if mkind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
                cname += f" {name_of(mt.name_off)}".rstrip()
            base = ("other", cname)
        ctype = (spelled or cname) + "".join(f"[{d}]" for d in (dims if not spelled else []))
        if spelled and dims:
            ctype = spelled + "".join(f"[{d}]" for d in dims)
        members.append({"name": name_of(mem.name_off), "ctype": ctype, "offset": bit_off // 8,
                        "bit_offset": bit_off, "bits": bits, "base": base, "dims": tuple(dims)})
    return struct_name, members, size


def prepare_source(source: str, origin: str, arrays: dict[str, int], declared: set[str],
                   count_calls: bool) -> str:
    """The text clang compiles: prelude, declarations of session arrays used
    but not declared, counters, then the cell under ``#line 1`` so every
    diagnostic and every line-info record names the cell's own lines."""
    used = {n for n in tail_called_arrays(source) if n in arrays}
    text = _count_core_tail_calls(source, {n: arrays[n] for n in used}) if count_calls else source
    text = keep_ring_types(count_ringbuf_failures(text), source)  # failed ring outputs bump __bm_lost: Stream.lost
    prelude = [] if re.search(r'#\s*include\s*[<"]vmlinux\.h[>"]', source) else [PRELUDE]
    prelude.append(PROG_ARRAY_MACRO)
    for name in sorted(used - declared):
        prelude.append(f"BPF_PROG_ARRAY({name}, {arrays[name]});\n")
    if count_calls:
        for name in sorted(used):
            prelude.append(f"struct {{ __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, {2 * arrays[name]}); "
                           f"__type(key, __u32); __type(value, __u64); }} {counter_name(name)} SEC(\".maps\");\n")
    if not re.search(r'SEC\(\s*"license"\s*\)', source):
        prelude.append('char _license[] SEC("license") = "GPL";\n')
    return "".join(prelude) + f'#line 1 "{origin}"\n' + text


_CLANG_LOC_RE = re.compile(r"^(.*?):(\d+):(\d+): (error|warning|note|fatal error):")


def compile_object(text: str, source: str, origin: str, cflags: list[str], include_dirs=()) -> tuple[bytes, str]:
    """clang -target bpf: the object file and clang's warnings; errors raise
    BpfCompileError with the offending lines of the cell."""
    arch = _ARCH.get(platform.machine(), platform.machine())
    with tempfile.TemporaryDirectory(prefix="bpfmagic-core-") as tmp:
        out = os.path.join(tmp, "module.bpf.o")
        # The cell under its own name in clang's working directory: `#line 1 "cell"`
        # then names a real file, and the BTF line info (what the verifier quotes)
        # carries the cell's lines.
        with open(os.path.join(tmp, origin), "w") as f:
            f.write(source)
        cmd = [_tool("clang") or "clang", "-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{arch}", "-I", vmlinux_dir(),
               *(f"-I{os.path.abspath(d)}" for d in include_dirs), *cflags, "-x", "c", "-c", "-", "-o", out]
        res = subprocess.run(cmd, input=text, capture_output=True, text=True, cwd=tmp)
        if res.returncode != 0:
            raise _clang_error(res.stderr, source, origin)
        with open(out, "rb") as f:
            return f.read(), res.stderr


def _clang_error(stderr: str, source: str, origin: str) -> BpfCompileError:
    lines = source.split("\n")
    shown = []
    for raw in stderr.splitlines():
        m = _CLANG_LOC_RE.match(raw)
        if m and m[1] == origin and m[4] != "note":
            shown.append(raw)
            n = int(m[2])
            if "error" in m[4] and 1 <= n <= len(lines):
                shown.append(f"    {n:4d} | {lines[n - 1]}")
        elif m and "error" in m[4]:
            shown.append(raw)  # an error inside a header: keep it as clang said it
    if not shown:
        shown = [stderr.strip() or "clang failed without a message"]
    return BpfCompileError("\n".join(shown), stderr)


# ------------------------------------------------------------ libbpf object

_declared = False


def _lib() -> ct.CDLL:
    global _declared
    lib = libbpf.lib()
    if not _declared:
        vp, cp = ct.c_void_p, ct.c_char_p
        for fname, res, args in [
            ("bpf_object__open_mem", vp, [vp, ct.c_size_t, vp]),
            ("bpf_object__load", ct.c_int, [vp]),
            ("bpf_object__close", None, [vp]),
            ("bpf_object__next_program", vp, [vp, vp]),
            ("bpf_object__next_map", vp, [vp, vp]),
            ("bpf_program__name", cp, [vp]),
            ("bpf_program__section_name", cp, [vp]),
            ("bpf_program__fd", ct.c_int, [vp]),
            ("bpf_program__type", ct.c_int, [vp]),
            ("bpf_program__attach", vp, [vp]),
            ("bpf_map__name", cp, [vp]),
            ("bpf_map__fd", ct.c_int, [vp]),
            ("bpf_map__type", ct.c_int, [vp]),
            ("bpf_map__max_entries", ct.c_uint32, [vp]),
            ("bpf_map__key_size", ct.c_uint32, [vp]),
            ("bpf_map__value_size", ct.c_uint32, [vp]),
            ("bpf_map__reuse_fd", ct.c_int, [vp, ct.c_int]),
            ("bpf_link__destroy", ct.c_int, [vp]),
            ("bpf_program__set_log_level", ct.c_int, [vp, ct.c_uint32]),
            ("libbpf_set_print", vp, [vp]),
            ("libbpf_get_error", ct.c_long, [vp]),
            ("bpf_object__btf", vp, [vp]),
            ("btf__find_by_name_kind", ct.c_int32, [vp, cp, ct.c_uint32]),
            ("btf__type_by_id", vp, [vp, ct.c_uint32]),
            ("btf__resolve_size", ct.c_int64, [vp, ct.c_uint32]),
            ("btf__name_by_offset", cp, [vp, ct.c_uint32]),
        ]:
            f = getattr(lib, fname)
            f.restype, f.argtypes = res, args
        _declared = True
    return lib


_PRINT_FN = ct.CFUNCTYPE(ct.c_int, ct.c_int, ct.c_char_p, ct.c_void_p)
_libc = ct.CDLL(None)
_libc.vsnprintf.argtypes = [ct.c_char_p, ct.c_size_t, ct.c_char_p, ct.c_void_p]


@contextlib.contextmanager
def libbpf_messages():
    """Collect libbpf's messages (verifier logs included) for the duration of
    the block. libbpf prints through a process-wide callback that libbcc
    replaces with its own, so capturing fd 2 is not enough: install ours, then
    put back whatever was there."""
    chunks: list[str] = []
    out: list[str] = []

    def collect(level, fmt, args):
        if level <= 1:  # LIBBPF_WARN, LIBBPF_INFO; not DEBUG
            buf = ct.create_string_buffer(1 << 16)
            _libc.vsnprintf(buf, len(buf), fmt, args)
            chunks.append(buf.value.decode(errors="replace"))
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
        self.percpu = map_type in (5, 6, 10)  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH

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
        values = [vt.from_buffer_copy(buf.raw[i * stride:i * stride + self.value_size]) if vt
                  else buf.raw[i * stride:i * stride + self.value_size] for i in range(ncpu)]
        return values if self.percpu else values[0]

    def items(self):
        if self.map_type in (2, 6):  # arrays: every index exists
            return [(ct.c_uint32(i), self[i]) for i in range(self.max_entries)]
        raise NotImplementedError(f"{self.name}: iterating this map type is not supported; look keys up with [key]")

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

    def __init__(self, name: str, obj_bytes: bytes):
        lib = _lib()
        self._buf = ct.create_string_buffer(obj_bytes, len(obj_bytes))
        ptr = lib.bpf_object__open_mem(self._buf, len(obj_bytes), None)
        if not ptr or lib.libbpf_get_error(ptr):
            raise BpfCompileError(f"libbpf could not open the object of {name}")
        self.ptr = ptr
        self.name = name
        self.hidden: set[str] = set()  # bpfmagic's own maps (call counters)

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
        lib = _lib()
        return {lib.bpf_map__name(m).decode(): m for m in self._iter(lib.bpf_object__next_map)}

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
        if map_name.startswith("__bm_"):
            # reuse_fd renames the map after the kernel's name: remember it to keep it out of tables()
            self.hidden.add(_lib().bpf_map__name(m).decode())

    def load(self, origin: str, source: str, verbose: bool = False) -> str:
        """Load every program; returns what libbpf said (the verifier log with -v)."""
        lib = _lib()
        if verbose:
            for prog in self.programs().values():
                lib.bpf_program__set_log_level(prog, 2)
        with libbpf_messages() as log:
            ret = lib.bpf_object__load(self.ptr)
        if ret < 0:
            untyped = re.search(r"prog '(\w+)': missing BPF prog type", log[0])
            if untyped:
                raise BpfCompileError(f"{self.name}.{untyped[1]} has no SEC(): in a --core cell each program "
                                      'needs one (SEC("xdp"), SEC("raw_tp/sys_enter"), SEC("tp_btf/sched_switch"), '
                                      "...); a helper function should be static", log[0])
            sections = [self.section(p) for p in self.programs().values()]
            refused = [sec for sec in sections if sec.startswith(("fentry/", "fexit/", "lsm/", "fmod_ret/"))]
            if refused and -ret == 1:  # EPERM: this kernel build refuses these program types
                raise AttachError(f"{self.name}: SEC(\"{refused[0]}\") programs are refused by this kernel "
                                  "(EPERM at load, a policy of this kernel build). Use SEC(\"tp_btf/...\") "
                                  "(BTF-typed tracepoints) or SEC(\"raw_tp/...\") instead.", log[0])
            raise _verifier_error(self.name, log[0], -ret, origin, source)
        return log[0]

    def table(self, name: str) -> CoreMap:
        lib = _lib()
        m = self.maps()[name]
        return CoreMap(name, lib.bpf_map__fd(m), lib.bpf_map__type(m), lib.bpf_map__key_size(m),
                       lib.bpf_map__value_size(m), lib.bpf_map__max_entries(m))

    def tables(self) -> list[str]:
        return [n for n in self.maps() if "." not in n and not n.startswith("__bm_") and n not in self.hidden]

    def attach_by_section(self, program, prog_ptr) -> CoreLink:
        lib = _lib()
        link = lib.bpf_program__attach(prog_ptr)
        err = lib.libbpf_get_error(link) if link else -1
        if not link or err:
            code = -err if err and err < 0 else ct.get_errno()
            section = self.section(prog_ptr)
            hint = (" (fentry/fexit/LSM are refused by this kernel build; tp_btf/ and raw_tp/ sections work)"
                    if section.startswith(("fentry/", "fexit/", "lsm/")) else "")
            raise AttachError(f"libbpf could not attach {program.qualname} (SEC(\"{section}\")): "
                              f"{os.strerror(code) if code else 'failed'}{hint}")
        kind, _, rest = self.section(prog_ptr).partition("/")
        return CoreLink(Target(kind, (rest,), f"{kind}:{rest}"), program, link)

    def close(self) -> None:
        if self.ptr:
            _lib().bpf_object__close(self.ptr)
            self.ptr = None


def _verifier_error(name: str, log: str, errno_: int, origin: str, source: str) -> BpfVerifierError:
    from .compiler import verifier_error
    # libbpf frames the kernel's log between these markers; keep libbpf's own lines out of the tail.
    m = re.search(r"-- BEGIN PROG LOAD LOG --\n(.*?)-- END PROG LOAD LOG --", log, re.S)
    prog = re.search(r"prog '(\w+)': BPF program load failed", log)
    body = m[1] if m else log
    body = re.sub(rf"@ {re.escape(origin)}:(\d+)", lambda mm: f"@ {origin}:{mm[1]}", body)
    err = verifier_error(f"{name}.{prog[1]}" if prog else name, body, os.strerror(errno_), origin)
    err.log = log
    return err


def load_object(name: str, source: str, origin: str, cflags: list[str], slot_index, file: str | None,
                declared: set[str], arrays: dict, count_calls: bool, verbose: bool,
                needs: dict[str, str], slotted: list) -> tuple[CoreObject, str]:
    """Compile a --core cell and load it: clang against vmlinux.h, then libbpf
    with the session's arrays (and their call counters) reusing the session's
    map fds. ``needs``: function -> the program type its -a target needs;
    ``slotted``: (array, function) of its -s slots. A type its SEC() cannot
    serve is refused before the kernel would say only EINVAL.
    Returns the loaded object and what clang and libbpf said."""
    from .compiler import rewrite_source
    text = rewrite_source(source, {}, slot_index, count_calls=False)  # SLOT() only; counting is done below
    text = prepare_source(text, origin, {n: a.size for n, a in arrays.items()}, declared, count_calls)
    include_dirs = [os.path.dirname(os.path.abspath(file))] if file else []
    obj_bytes, warnings_text = compile_object(text, source, origin, cflags, include_dirs)
    obj = CoreObject(name, obj_bytes)
    try:
        maps = obj.maps()
        for array_name, array in arrays.items():
            if array_name in maps:
                obj.reuse(array_name, array.fd)
            if counter_name(array_name) in maps:
                obj.reuse(counter_name(array_name), array.counter_fd)
        progs = obj.programs()

        def program(func: str):
            if func not in progs:
                raise UsageProblem(f"{name} has no program {func!r} (programs: {', '.join(progs) or 'none'})")
            return progs[func]
        for func, need in needs.items():
            have = obj.program_type(program(func))
            if have != need:
                raise AttachError(f"{name}.{func} is SEC(\"{obj.section(progs[func])}\"), a {have} program; "
                                  f"its target needs {need}")
        for array, func in slotted:
            have, kind = array.owner_type, obj.program_type(program(func))
            if have and have != kind:
                raise SlotError(f"{array.name} holds {have} programs; {name}.{func} is "
                                f"SEC(\"{obj.section(progs[func])}\"), a {kind} program")
        log = obj.load(origin, source, verbose)
    except BaseException:
        obj.close()
        raise
    return obj, warnings_text + log
