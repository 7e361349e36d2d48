"""What this kernel can do, found out by trying: a program type or attach
kind loaded (never attached) with the fewest instructions. Used by attach
(to say why a target is refused) and by the doctor."""

from __future__ import annotations

import ctypes
import os
import platform
import struct

_BTF_KIND_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0), 15: (0, 12), 17: (4, 0), 19: (0, 12)}


def btf_func_id(name: str, path: str = "/sys/kernel/btf/vmlinux") -> int | None:
    """BTF type id of FUNC ``name`` in vmlinux BTF (about 50 ms)."""
    with open(path, "rb") as f:
        data = f.read()
    magic, _v, _fl, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data, 0)
    if magic != 0xEB9F:
        return None
    strs = data[hdr_len + str_off : hdr_len + str_off + str_len]
    i = strs.find(b"\0" + name.encode() + b"\0")
    if i < 0:
        return None
    name_off = i + 1
    pos, end, tid = hdr_len + type_off, hdr_len + type_off + type_len, 0
    unpack = struct.Struct("<III").unpack_from
    while pos < end:
        tid += 1
        n, info, _ = unpack(data, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if n == name_off and kind == 12:
            return tid
        fixed, per = _BTF_KIND_EXTRA.get(kind, (0, 0))
        pos += 12 + fixed + per * vlen
    return None


def probe_fentry(func: str = "bpf_fentry_test1") -> tuple[bool, str]:
    """Try to load (never attach) a 2-instruction fentry program on ``func``."""
    if not os.path.isfile("/sys/kernel/btf/vmlinux"):
        return False, "no vmlinux BTF"
    try:
        btf_id = btf_func_id(func)
    except OSError as e:
        return False, f"cannot read BTF: {e}"
    if btf_id is None:
        return False, f"{func} not in vmlinux BTF"
    if platform.machine() != "x86_64":
        return False, "not checked on this architecture"
    BPF_PROG_LOAD, PROG_TYPE_TRACING, TRACE_FENTRY, NR_BPF = 5, 26, 24, 321
    insns = (ctypes.c_uint64 * 2)(0x000000000000B7, 0x95)  # r0 = 0; exit
    lic = ctypes.c_char_p(b"GPL")
    attr = (ctypes.c_uint8 * 128)()
    struct.pack_into("<IIQQ", attr, 0, PROG_TYPE_TRACING, 2, ctypes.addressof(insns), ctypes.cast(lic, ctypes.c_void_p).value)
    attr[48 : 48 + 13] = list(b"bpfmagic_doct")  # prog_name
    struct.pack_into("<I", attr, 68, TRACE_FENTRY)  # expected_attach_type
    struct.pack_into("<I", attr, 108, btf_id)  # attach_btf_id
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(ctypes.c_long(NR_BPF), ctypes.c_long(BPF_PROG_LOAD), ctypes.byref(attr), ctypes.c_uint(128))
    if fd >= 0:
        os.close(fd)
        return True, f"fentry program on {func} loads"
    err = ctypes.get_errno()
    return False, f"loading an fentry program fails with {os.strerror(err)} (errno {err})"
