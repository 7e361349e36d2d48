"""The byte layout of a BTF type (or a ctypes type) as flat fields: what a
map key or value holds, for decoding with a numpy structured dtype.

Nested structs are flattened (``a.b``), arrays keep their dimensions,
``char[]`` is a string, bit-fields are read from their storage unit.
"""
from __future__ import annotations

import ctypes as ct
import math
from dataclasses import dataclass, field


@dataclass
class Field:
    """One leaf of a type. ``offset`` is in bytes from the start of the key
    or value; a bit-field is ``bits`` wide at ``bit_offset`` in the ``size``
    bytes at ``offset``."""
    name: str  # flattened: "flow.saddr"; "" for a scalar key or value
    offset: int
    kind: str  # int, uint, float, bool, str, bytes
    size: int  # bytes of one element (of the whole string for str)
    shape: tuple = field(default=())
    bits: int = 0
    bit_offset: int = 0

    @property
    def base(self) -> str:
        """The numpy type code of one element."""
        return {"int": f"<i{self.size}", "uint": f"<u{self.size}", "float": f"<f{self.size}",
                "bool": "?", "str": f"S{self.size}"}.get(self.kind, f"V{self.size}")

    @property
    def nbytes(self) -> int:
        return self.size * math.prod(self.shape)

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "uint", "float", "bool") and not self.shape


def raw_fields(size: int) -> list[Field]:
    """Without type information: 4 and 8 bytes are unsigned ints, anything else bytes."""
    return [Field("", 0, "uint" if size in (1, 2, 4, 8) else "bytes", size)]


# ------------------------------------------------------------------ ctypes (BCC's Key/Leaf)

_CT_FLOAT = (ct.c_float, ct.c_double, ct.c_longdouble)


def ctypes_fields(ctype, prefix: str = "", base: int = 0) -> list[Field]:
    """The leaves of a ctypes type, as BCC builds them for a table's Key and Leaf."""
    if issubclass(ctype, (ct.Structure, ct.Union)):
        out = []
        for entry in ctype._fields_:
            name, ftype = entry[0], entry[1]
            if name.startswith("__pad"):  # BCC's explicit padding
                continue
            desc = getattr(ctype, name)
            full = f"{prefix}.{name}" if prefix else name
            if len(entry) == 3:  # bit-field: size packs (width << 16) | bit offset in the unit
                out.append(Field(full, base + desc.offset, _int_kind(ftype), ct.sizeof(ftype),
                                 bits=desc.size >> 16, bit_offset=desc.size & 0xFFFF))
            else:
                out.extend(ctypes_fields(ftype, full, base + desc.offset))
        return out
    if issubclass(ctype, ct.Array):
        dims, elem = [], ctype
        while issubclass(elem, ct.Array):
            dims.append(elem._length_)
            elem = elem._type_
        if elem is ct.c_char:  # char[N] is a string; char[M][N] an array of M strings
            return [Field(prefix, base, "str", dims[-1], tuple(dims[:-1]))]
        inner = ctypes_fields(elem, "", 0)
        if len(inner) == 1 and not inner[0].shape and inner[0].kind != "str" and not inner[0].bits:
            return [Field(prefix, base, inner[0].kind, inner[0].size, tuple(dims))]
        return [Field(prefix, base, "bytes", ct.sizeof(ctype))]  # arrays of structs stay raw
    if ctype in _CT_FLOAT:
        return [Field(prefix, base, "float", ct.sizeof(ctype))]
    if ctype is ct.c_bool:
        return [Field(prefix, base, "bool", 1)]
    if ctype is ct.c_char:
        return [Field(prefix, base, "int", 1)]
    if issubclass(ctype, ct._SimpleCData) and getattr(ctype, "_type_", "") in "bBhHiIlLqQ":
        return [Field(prefix, base, _int_kind(ctype), ct.sizeof(ctype))]
    return [Field(prefix, base, "bytes", ct.sizeof(ctype))]  # pointers, __int128, ...


def _int_kind(ctype) -> str:
    return "int" if ctype._type_ in "bhilq" else "uint"


# ------------------------------------------------------------------ BTF (libbpf's struct btf)

class _BtfType(ct.Structure):
    _fields_ = [("name_off", ct.c_uint32), ("info", ct.c_uint32), ("size_or_type", ct.c_uint32)]


class _BtfMember(ct.Structure):
    _fields_ = [("name_off", ct.c_uint32), ("type", ct.c_uint32), ("offset", ct.c_uint32)]


class _BtfArray(ct.Structure):
    _fields_ = [("type", ct.c_uint32), ("index_type", ct.c_uint32), ("nelems", ct.c_uint32)]


class _BtfVarSecinfo(ct.Structure):
    _fields_ = [("type", ct.c_uint32), ("offset", ct.c_uint32), ("size", ct.c_uint32)]


KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 8, 9, 10, 11
KIND_VAR, KIND_DATASEC, KIND_FLOAT, KIND_TYPE_TAG, KIND_ENUM64 = 14, 15, 16, 18, 19
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class Btf:
    """Read access to a libbpf ``struct btf *`` (e.g. ``bpf_object__btf``);
    LIB is libbpf with its object API declared (libbpf.object_api())."""

    def __init__(self, lib: ct.CDLL, ptr: int):
        self.lib, self.ptr = lib, ptr

    def _type(self, tid: int):
        t = _BtfType.from_address(self.lib.btf__type_by_id(self.ptr, tid))
        return t, (t.info >> 24) & 0x1F, t.info & 0xFFFF, bool(t.info >> 31)

    def _name(self, off: int) -> str:
        raw = self.lib.btf__name_by_offset(self.ptr, off)
        return raw.decode() if raw else ""

    def _strip(self, tid: int):
        for _ in range(32):
            t, kind, vlen, kflag = self._type(tid)
            if kind not in _MODIFIERS:
                return tid, t, kind, vlen, kflag
            tid = t.size_or_type
        raise ValueError(f"BTF type {tid}: modifier chain too long")

    def size_of(self, tid: int) -> int:
        tid, t, kind, _, _ = self._strip(tid)
        if kind == KIND_ARRAY:
            arr = _BtfArray.from_address(ct.addressof(t) + ct.sizeof(_BtfType))
            return arr.nelems * self.size_of(arr.type)
        if kind == KIND_PTR:
            return 8
        if kind == KIND_VAR:
            return self.size_of(t.size_or_type)
        return t.size_or_type

    def fields(self, tid: int, prefix: str = "", base: int = 0) -> list[Field]:
        """The leaves of type TID at byte offset BASE."""
        tid, t, kind, vlen, kflag = self._strip(tid)
        if kind == KIND_DATASEC:  # .bss/.data/.rodata: each global variable at its offset
            out = []
            first = ct.addressof(t) + ct.sizeof(_BtfType)
            for i in range(vlen):
                info = _BtfVarSecinfo.from_address(first + i * ct.sizeof(_BtfVarSecinfo))
                var = _BtfType.from_address(self.lib.btf__type_by_id(self.ptr, info.type))
                name = self._name(var.name_off)
                out.extend(self.fields(var.size_or_type, f"{prefix}.{name}" if prefix else name,
                                       base + info.offset))
            return out
        if kind == KIND_VAR:
            return self.fields(t.size_or_type, prefix, base)
        if kind in (KIND_STRUCT, KIND_UNION):
            if kind == KIND_UNION:  # which member is live is unknowable: keep the bytes
                return [Field(prefix, base, "bytes", t.size_or_type)]
            out = []
            first = ct.addressof(t) + ct.sizeof(_BtfType)
            for i in range(vlen):
                mem = _BtfMember.from_address(first + i * ct.sizeof(_BtfMember))
                name = self._name(mem.name_off)
                bits, bit_off = (mem.offset >> 24, mem.offset & 0xFFFFFF) if kflag else (0, mem.offset)
                full = f"{prefix}.{name}" if prefix and name else (name or prefix)
                if not bits:
                    _, mt, mkind, _, _ = self._strip(mem.type)
                    if mkind == KIND_INT:
                        width = ct.c_uint32.from_address(ct.addressof(mt) + ct.sizeof(_BtfType)).value & 0xFF
                        if bit_off % 8 or width != mt.size_or_type * 8:
                            bits = width  # an old-style bit-field: the width is in the int type
                if bits:
                    out.append(self._bitfield(full, mem.type, base, bit_off, bits))
                else:
                    out.extend(self.fields(mem.type, full, base + bit_off // 8))
            return out
        if kind == KIND_ARRAY:
            dims, elem = [], tid
            while True:
                elem, et, ekind, _, _ = self._strip(elem)
                if ekind != KIND_ARRAY:
                    break
                arr = _BtfArray.from_address(ct.addressof(et) + ct.sizeof(_BtfType))
                dims.append(arr.nelems)
                elem = arr.type
            inner = self.fields(elem, "", 0)
            if len(inner) == 1 and inner[0].size == 1 and inner[0].kind == "int" \
                    and self._name(et.name_off) == "char":
                return [Field(prefix, base, "str", dims[-1], tuple(dims[:-1]))]
            if len(inner) == 1 and not inner[0].shape and inner[0].kind != "str" and not inner[0].bits:
                return [Field(prefix, base, inner[0].kind, inner[0].size, tuple(dims))]
            return [Field(prefix, base, "bytes", self.size_of(tid))]
        if kind == KIND_INT:
            enc = ct.c_uint32.from_address(ct.addressof(t) + ct.sizeof(_BtfType)).value
            if (enc >> 24) & 4:
                return [Field(prefix, base, "bool", 1)]
            signed = bool((enc >> 24) & 1)
            size = t.size_or_type
            if size not in (1, 2, 4, 8):
                return [Field(prefix, base, "bytes", size)]  # __int128
            return [Field(prefix, base, "int" if signed else "uint", size)]
        if kind in (KIND_ENUM, KIND_ENUM64):
            return [Field(prefix, base, "int" if kflag else "uint", t.size_or_type)]
        if kind == KIND_FLOAT:
            return [Field(prefix, base, "float", t.size_or_type)]
        if kind == KIND_PTR:
            return [Field(prefix, base, "uint", 8)]
        return [Field(prefix, base, "bytes", self.size_of(tid))]

    def _bitfield(self, name: str, tid: int, base: int, bit_off: int, bits: int) -> Field:
        _, t, kind, _, _ = self._strip(tid)
        size = t.size_or_type if kind in (KIND_INT, KIND_ENUM, KIND_ENUM64) else 4
        signed = False
        if kind == KIND_INT:
            signed = bool((ct.c_uint32.from_address(ct.addressof(t) + ct.sizeof(_BtfType)).value >> 24) & 1)
        unit = bit_off // (size * 8) * size  # the aligned storage unit holding it
        return Field(name, base + unit, "int" if signed else "uint", size, bits=bits,
                     bit_offset=bit_off - unit * 8)
