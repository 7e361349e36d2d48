"""BTF, the one reader: a libbpf ``struct btf *`` walked type by type (kinds,
names, typedefs and qualifiers stripped, members, arrays, a section's
variables), C spellings of its types, and where a struct has a member
(``vmlinux()``, the running kernel's BTF: BCC's header offsets checked).

What is built from it lives beside it: a key's or value's flat fields
(fields.py, map layouts), a struct's members as C names them (structs.py,
ring record layouts), values decoded from and encoded into bytes
(values.py, global variables)."""

from __future__ import annotations

import ctypes as ct
from dataclasses import dataclass
from typing import NamedTuple


class BtfType(ct.Structure):
    """``struct btf_type``: a type's header; the records of its kind follow it."""

    _fields_ = [("name_off", ct.c_uint32), ("info", ct.c_uint32), ("size_or_type", ct.c_uint32)]


class _BtfMember(ct.Structure):
    _fields_ = [("name_off", ct.c_uint32), ("type", ct.c_uint32), ("offset", ct.c_uint32)]


class BtfArray(ct.Structure):
    """``struct btf_array``: what follows an ARRAY type."""

    _fields_ = [("type", ct.c_uint32), ("index_type", ct.c_uint32), ("nelems", ct.c_uint32)]


class BtfVarSecinfo(ct.Structure):
    """``struct btf_var_secinfo``: one variable of a DATASEC, at its offset in the section."""

    _fields_ = [("type", ct.c_uint32), ("offset", ct.c_uint32), ("size", ct.c_uint32)]


KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 8, 9, 10, 11
KIND_VAR, KIND_DATASEC, KIND_FLOAT, KIND_TYPE_TAG, KIND_ENUM64 = 14, 15, 16, 18, 19
MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)
KIND_NAMES = {KIND_STRUCT: "struct", KIND_UNION: "union", 7: "forward declaration", 12: "function", 13: "function prototype"}
CHARS = ("char", "signed char", "unsigned char")


class Member(NamedTuple):
    """One member of a struct or union type: ``bits`` wide at ``bit_offset`` when a
    bit-field (the kind flag's encoding), else ``bits`` is 0. ``name`` is "" for an
    anonymous struct or union member."""

    name: str
    type_id: int
    bit_offset: int
    bits: int


@dataclass(frozen=True)
class Variable:
    """One variable of a global-data section (DATASEC): where it is in the section's value."""

    name: str
    section: str
    offset: int
    size: int
    type_id: int
    ctype: str


@dataclass(frozen=True)
class MemberLayout:
    """Where a member is: ``offset`` bytes into its struct, ``size`` bytes (a
    bit-field: ``bits`` wide at ``bit_offset`` bits, ``size`` is its width)."""

    offset: int
    size: int
    bits: int
    bit_offset: int
    type_id: int


class Btf:
    """Read access to a libbpf ``struct btf *`` (e.g. ``bpf_object__btf``);
    LIB is libbpf with its object API declared (libbpf.object_api()).

    The reader: a type's header and kind (``lookup``), the records after it
    (``members``, ``array``, ``secinfos``, ``int_encoding``), names, sizes,
    typedefs and qualifiers stripped, C spellings, and a struct's members
    looked up by name (``record``, ``member``, ``record_behind``)."""

    def __init__(self, lib: ct.CDLL, ptr: int):
        self.lib, self.ptr = lib, ptr

    # -------------------------------------------------- one type and the records after it
    def lookup(self, tid: int) -> tuple[BtfType, int, int, bool]:
        """Type TID: (its header, kind, vlen, kind flag)."""
        t = BtfType.from_address(self.lib.btf__type_by_id(self.ptr, tid))
        return t, (t.info >> 24) & 0x1F, t.info & 0xFFFF, bool(t.info >> 31)

    def name(self, off: int) -> str:
        """The string at OFF in the BTF's string section ("" for none)."""
        raw = self.lib.btf__name_by_offset(self.ptr, off)
        return raw.decode() if raw else ""

    def find(self, name: str, kind: int) -> int:
        """The id of the type of KIND called NAME; <= 0 when there is none."""
        return self.lib.btf__find_by_name_kind(self.ptr, name.encode(), kind)

    @staticmethod
    def _entries(t: BtfType, record, count: int) -> list:
        """The COUNT records (members, an array, var_secinfos) that follow type T."""
        first = ct.addressof(t) + ct.sizeof(BtfType)
        return [record.from_address(first + i * ct.sizeof(record)) for i in range(count)]

    def members(self, t: BtfType, vlen: int, kflag: bool) -> list[Member]:
        """The VLEN members of struct or union T (KFLAG: its kind flag, which says how
        their offsets encode bit-fields)."""
        out = []
        for mem in self._entries(t, _BtfMember, vlen):
            bits, bit_off = (mem.offset >> 24, mem.offset & 0xFFFFFF) if kflag else (0, mem.offset)
            out.append(Member(self.name(mem.name_off), mem.type, bit_off, bits))
        return out

    def array(self, t: BtfType) -> BtfArray:
        """What follows ARRAY type T: its element type and number of elements."""
        return self._entries(t, BtfArray, 1)[0]

    def secinfos(self, t: BtfType, vlen: int) -> list[BtfVarSecinfo]:
        """The VLEN variables of DATASEC type T."""
        return self._entries(t, BtfVarSecinfo, vlen)

    @staticmethod
    def int_encoding(t: BtfType) -> int:
        """The u32 that follows an INT type: bits 24.. say signed (1), char (2), bool (4); 0..7 the width."""
        return ct.c_uint32.from_address(ct.addressof(t) + ct.sizeof(BtfType)).value

    # -------------------------------------------------- typedefs and qualifiers, sizes
    def resolve(self, tid: int) -> int:
        """TID without its typedefs and qualifiers."""
        for _ in range(32):
            t, kind, _, _ = self.lookup(tid)
            if kind not in MODIFIERS:
                return tid
            tid = t.size_or_type
        return tid

    def strip(self, tid: int) -> tuple[int, BtfType, int, int, bool]:
        """TID without its typedefs and qualifiers: (id, header, kind, vlen, kind flag);
        ValueError when the chain does not end."""
        for _ in range(32):
            t, kind, vlen, kflag = self.lookup(tid)
            if kind not in MODIFIERS:
                return tid, t, kind, vlen, kflag
            tid = t.size_or_type
        raise ValueError(f"BTF type {tid}: modifier chain too long")

    def size_of(self, tid: int) -> int:
        """Bytes of a value of type TID (a pointer is 8, a VAR its type's)."""
        tid, t, kind, _, _ = self.strip(tid)
        if kind == KIND_ARRAY:
            arr = self.array(t)
            return arr.nelems * self.size_of(arr.type)
        if kind == KIND_PTR:
            return 8
        if kind == KIND_VAR:
            return self.size_of(t.size_or_type)
        return t.size_or_type

    def resolve_size(self, tid: int) -> int:
        """libbpf's size of type TID (btf__resolve_size); negative when it has none."""
        return self.lib.btf__resolve_size(self.ptr, tid)

    # -------------------------------------------------- names and spellings
    def spelling(self, tid: int) -> str:
        """TID spelled as C."""
        t, kind, _, _ = self.lookup(tid)
        if kind in (KIND_TYPEDEF, KIND_INT, KIND_FLOAT):
            return self.name(t.name_off)
        if kind in MODIFIERS:
            return self.spelling(t.size_or_type)
        if kind in (KIND_STRUCT, KIND_UNION):
            return f"{'struct' if kind == KIND_STRUCT else 'union'} {self.name(t.name_off)}".rstrip()
        if kind in (KIND_ENUM, KIND_ENUM64):
            return f"enum {self.name(t.name_off)}".rstrip()
        if kind == KIND_PTR:
            return self.spelling(t.size_or_type) + " *" if t.size_or_type else "void *"
        if kind == KIND_ARRAY:
            arr = self.array(t)
            return f"{self.spelling(arr.type)}[{arr.nelems}]"
        return f"BTF kind {kind}"

    def is_text(self, tid: int) -> bool:
        """Whether TID is a char array (decoded as str)."""
        t, kind, _, _ = self.lookup(self.resolve(tid))
        if kind != KIND_ARRAY:
            return False
        et, ekind, _, _ = self.lookup(self.resolve(self.array(t).type))
        return ekind == KIND_INT and self.name(et.name_off) in CHARS

    # -------------------------------------------------- global variables (a DATASEC)
    def variables(self, tid: int, section: str) -> list[Variable] | None:
        """The variables of DATASEC type TID (a global-data map's value type), in
        SECTION; None when TID is not a DATASEC."""
        t, kind, vlen, _ = self.lookup(tid)
        if kind != KIND_DATASEC:
            return None
        out = []
        for info in self.secinfos(t, vlen):
            var, vkind, _, _ = self.lookup(info.type)
            if vkind != KIND_VAR:
                continue
            name = self.name(var.name_off)
            if name.startswith("__bm_"):
                continue  # bpfmagic's own (ring record-type anchors)
            out.append(Variable(name, section, info.offset, info.size, var.size_or_type, self.spelling(var.size_or_type)))
        return out

    # -------------------------------------------------- a kernel struct's members (BCC's offsets checked)
    def record(self, name: str) -> int | None:
        """The type id of ``struct NAME`` (or ``union NAME``), None when the BTF has neither."""
        for kind in (KIND_STRUCT, KIND_UNION):
            tid = self.find(name, kind)
            if tid > 0:
                return tid
        return None

    def member(self, tid: int, name: str) -> MemberLayout | None:
        """Member NAME of the struct or union TID, looked for inside its anonymous
        structs and unions too; None when it has no such member."""
        tid, t, kind, vlen, kflag = self.strip(tid)
        if kind not in (KIND_STRUCT, KIND_UNION):
            return None
        for mem in self.members(t, vlen, kflag):
            if mem.name == name:
                size = self.resolve_size(mem.type_id)
                return MemberLayout(mem.bit_offset // 8, mem.bits or (size if size >= 0 else 0), mem.bits, mem.bit_offset, mem.type_id)
            if not mem.name:
                inner = self.member(mem.type_id, name)
                if inner is not None:
                    return MemberLayout(inner.offset + mem.bit_offset // 8, inner.size, inner.bits, inner.bit_offset + mem.bit_offset, inner.type_id)
        return None

    def record_behind(self, tid: int) -> int | None:
        """The struct or union a value of type TID is, or points to, or is an array of
        (through typedefs and qualifiers): the base of the next ``->`` or ``[i].``."""
        tid, t, kind, _, _ = self.strip(tid)
        if kind in (KIND_PTR, KIND_ARRAY):
            inner = t.size_or_type if kind == KIND_PTR else self.array(t).type
            tid, t, kind, _, _ = self.strip(inner)
        return tid if kind in (KIND_STRUCT, KIND_UNION) else None


_vmlinux: Btf | None = None


def vmlinux(path: str = "/sys/kernel/btf/vmlinux") -> Btf | None:
    """The running kernel's BTF, read once per process; None when the kernel has none."""
    global _vmlinux
    if _vmlinux is None:
        import os

        from . import libbpf

        if not os.path.isfile(path):
            return None
        lib = libbpf.object_api()
        lib.btf__parse.restype, lib.btf__parse.argtypes = ct.c_void_p, [ct.c_char_p, ct.c_void_p]
        ptr = lib.btf__parse(path.encode(), None)
        if not ptr or lib.libbpf_get_error(ct.c_void_p(ptr)):
            return None
        _vmlinux = Btf(lib, ptr)  # kept for the process: the running kernel's types do not change
    return _vmlinux
