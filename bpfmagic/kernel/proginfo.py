"""What the kernel says about a loaded program (BPF_OBJ_GET_INFO_BY_FD):
sizes, verified instructions, the translated and JIT code, BTF line and
function info. Kernel access only; verifier.py and dump.py read it."""

from __future__ import annotations

import ctypes as ct
from dataclasses import dataclass, field

from . import libbpf

u32, u64 = ct.c_uint32, ct.c_uint64


class BpfProgInfo(ct.Structure):
    # struct bpf_prog_info of the uapi (kernel 6.x); the kernel accepts a shorter one from older users.
    _fields_ = [
        ("type", u32),
        ("id", u32),
        ("tag", ct.c_uint8 * 8),
        ("jited_prog_len", u32),
        ("xlated_prog_len", u32),
        ("jited_prog_insns", u64),
        ("xlated_prog_insns", u64),
        ("load_time", u64),
        ("created_by_uid", u32),
        ("nr_map_ids", u32),
        ("map_ids", u64),
        ("name", ct.c_char * 16),
        ("ifindex", u32),
        ("gpl_compatible", u32),
        ("netns_dev", u64),
        ("netns_ino", u64),
        ("nr_jited_ksyms", u32),
        ("nr_jited_func_lens", u32),
        ("jited_ksyms", u64),
        ("jited_func_lens", u64),
        ("btf_id", u32),
        ("func_info_rec_size", u32),
        ("func_info", u64),
        ("nr_func_info", u32),
        ("nr_line_info", u32),
        ("line_info", u64),
        ("jited_line_info", u64),
        ("nr_jited_line_info", u32),
        ("line_info_rec_size", u32),
        ("jited_line_info_rec_size", u32),
        ("nr_prog_tags", u32),
        ("prog_tags", u64),
        ("run_time_ns", u64),
        ("run_cnt", u64),
        ("recursion_misses", u64),
        ("verified_insns", u32),
        ("attach_btf_obj_id", u32),
        ("attach_btf_id", u32),
        ("_pad", u32),
    ]


@dataclass
class LineInfo:
    insn_off: int  # in instructions (8 bytes each) from the program's start
    file: str
    line: int
    column: int
    text: str  # the source line as BTF recorded it


@dataclass
class ProgInfo:
    id: int
    type: int
    name: str
    xlated_len: int
    jited_len: int
    verified_insns: int
    btf_id: int
    xlated: bytes = b""
    jited: bytes = b""
    jited_ksyms: list[int] = field(default_factory=list)  # start address of each function (subprogram)
    jited_func_lens: list[int] = field(default_factory=list)
    func_info: list[tuple[int, int]] = field(default_factory=list)  # (insn_off, BTF type id)
    func_names: list[str] = field(default_factory=list)  # one per function, from BTF ("" when unknown)
    line_info: list[LineInfo] = field(default_factory=list)
    jited_line_info: list[int] = field(default_factory=list)  # JIT address of each line_info entry


def _get(fd: int, info: BpfProgInfo) -> None:
    size = u32(ct.sizeof(info))
    l = libbpf.lib()
    l.bpf_obj_get_info_by_fd.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(u32)]
    libbpf.check(l.bpf_obj_get_info_by_fd(fd, ct.byref(info), ct.byref(size)), "read program info")


def prog_info(fd: int, code: bool = False) -> ProgInfo:
    """The program's info; with ``code``, its instructions, JIT image and BTF
    line/function info too (two calls: sizes first, then the buffers)."""
    first = BpfProgInfo()
    _get(fd, first)
    out = ProgInfo(
        id=first.id,
        type=first.type,
        name=first.name.decode(errors="replace"),
        xlated_len=first.xlated_prog_len,
        jited_len=first.jited_prog_len,
        verified_insns=first.verified_insns,
        btf_id=first.btf_id,
    )
    if not code:
        return out
    info = BpfProgInfo()
    bufs = {}

    def want(ptr_field: str, count: int, size: int):
        if count:
            buf = ct.create_string_buffer(count * size)
            bufs[ptr_field] = buf
            setattr(info, ptr_field, ct.addressof(buf))

    info.xlated_prog_len, info.jited_prog_len = first.xlated_prog_len, first.jited_prog_len
    want("xlated_prog_insns", first.xlated_prog_len, 1)
    want("jited_prog_insns", first.jited_prog_len, 1)
    info.nr_jited_ksyms, info.nr_jited_func_lens = first.nr_jited_ksyms, first.nr_jited_func_lens
    want("jited_ksyms", first.nr_jited_ksyms, 8)
    want("jited_func_lens", first.nr_jited_func_lens, 4)
    info.nr_func_info, info.func_info_rec_size = first.nr_func_info, first.func_info_rec_size
    want("func_info", first.nr_func_info, first.func_info_rec_size)
    info.nr_line_info, info.line_info_rec_size = first.nr_line_info, first.line_info_rec_size
    want("line_info", first.nr_line_info, first.line_info_rec_size)
    info.nr_jited_line_info, info.jited_line_info_rec_size = first.nr_jited_line_info, first.jited_line_info_rec_size
    want("jited_line_info", first.nr_jited_line_info, first.jited_line_info_rec_size)
    _get(fd, info)
    raw = {k: bytes(b.raw) for k, b in bufs.items()}
    out.xlated = raw.get("xlated_prog_insns", b"")[: info.xlated_prog_len]
    out.jited = raw.get("jited_prog_insns", b"")[: info.jited_prog_len]

    def u(buf: bytes, fmt_size: int, n: int, rec: int) -> list[tuple]:
        import struct

        return [struct.unpack_from("<" + "I" * (fmt_size // 4), buf, i * rec) for i in range(n)]

    import struct

    out.jited_ksyms = [struct.unpack_from("<Q", raw["jited_ksyms"], 8 * i)[0] for i in range(info.nr_jited_ksyms)] if "jited_ksyms" in raw else []
    out.jited_func_lens = (
        [struct.unpack_from("<I", raw["jited_func_lens"], 4 * i)[0] for i in range(info.nr_jited_func_lens)] if "jited_func_lens" in raw else []
    )
    if "func_info" in raw:
        out.func_info = [r[:2] for r in u(raw["func_info"], 8, info.nr_func_info, info.func_info_rec_size)]
    if "jited_line_info" in raw:
        rec = info.jited_line_info_rec_size
        out.jited_line_info = [struct.unpack_from("<Q", raw["jited_line_info"], i * rec)[0] for i in range(info.nr_jited_line_info)]
    btf = _load_btf(info.btf_id) if info.btf_id else None
    try:
        if "line_info" in raw:
            for insn_off, file_off, line_off, line_col in u(raw["line_info"], 16, info.nr_line_info, info.line_info_rec_size):
                out.line_info.append(LineInfo(insn_off, _btf_str(btf, file_off), line_col >> 10, line_col & 0x3FF, _btf_str(btf, line_off)))
        for _, type_id in out.func_info:
            out.func_names.append(_btf_type_name(btf, type_id))
    finally:
        if btf:
            libbpf.lib().btf__free(btf)
    return out


def _load_btf(btf_id: int):
    l = libbpf.lib()
    l.btf__load_from_kernel_by_id.restype = ct.c_void_p
    l.btf__load_from_kernel_by_id.argtypes = [u32]
    l.btf__free.argtypes = [ct.c_void_p]
    l.btf__name_by_offset.restype = ct.c_char_p
    l.btf__name_by_offset.argtypes = [ct.c_void_p, u32]
    l.btf__type_by_id.restype = ct.c_void_p
    l.btf__type_by_id.argtypes = [ct.c_void_p, u32]
    l.libbpf_get_error.restype = ct.c_long
    l.libbpf_get_error.argtypes = [ct.c_void_p]
    ptr = l.btf__load_from_kernel_by_id(btf_id)
    if not ptr or l.libbpf_get_error(ptr):
        return None
    return ptr


def _btf_str(btf, offset: int) -> str:
    if not btf:
        return ""
    s = libbpf.lib().btf__name_by_offset(btf, offset)
    return s.decode(errors="replace") if s else ""


def _btf_type_name(btf, type_id: int) -> str:
    if not btf:
        return ""
    t = libbpf.lib().btf__type_by_id(btf, type_id)
    if not t:
        return ""
    name_off = u32.from_address(t).value  # struct btf_type starts with name_off
    return _btf_str(btf, name_off)
