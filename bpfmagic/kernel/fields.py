"""The bytes of a map's key or value as flat fields (leaves), for decoding
with a numpy structured dtype: from the object's BTF (``btf_fields``), from
BCC's ctypes Key/Leaf (``ctypes_fields``) or, without type information, as
one raw field (``raw_fields``).

Nested structs are flattened (``a.b``), arrays keep their dimensions,
``char[]`` is a string, bit-fields are read from their storage unit, a
union stays bytes."""

from __future__ import annotations

import ctypes as ct
import math
from dataclasses import dataclass, field

from .btf import (
    KIND_ARRAY,
    KIND_DATASEC,
    KIND_ENUM,
    KIND_ENUM64,
    KIND_FLOAT,
    KIND_INT,
    KIND_PTR,
    KIND_STRUCT,
    KIND_UNION,
    KIND_VAR,
    Btf,
)


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
        return {"int": f"<i{self.size}", "uint": f"<u{self.size}", "float": f"<f{self.size}", "bool": "?", "str": f"S{self.size}"}.get(
            self.kind, f"V{self.size}"
        )

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
                out.append(Field(full, base + desc.offset, _int_kind(ftype), ct.sizeof(ftype), bits=desc.size >> 16, bit_offset=desc.size & 0xFFFF))
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


# ------------------------------------------------------------------ BTF (--core objects)


def btf_fields(btf: Btf, tid: int, prefix: str = "", base: int = 0) -> list[Field]:
    """The leaves of BTF type TID at byte offset BASE."""
    tid, t, kind, vlen, kflag = btf.strip(tid)
    if kind == KIND_DATASEC:  # .bss/.data/.rodata: each global variable at its offset
        out = []
        for info in btf.secinfos(t, vlen):
            var, _, _, _ = btf.lookup(info.type)
            name = btf.name(var.name_off)
            out.extend(btf_fields(btf, var.size_or_type, f"{prefix}.{name}" if prefix else name, base + info.offset))
        return out
    if kind == KIND_VAR:
        return btf_fields(btf, t.size_or_type, prefix, base)
    if kind == KIND_UNION:  # which member is live is unknowable: keep the bytes
        return [Field(prefix, base, "bytes", t.size_or_type)]
    if kind == KIND_STRUCT:
        out = []
        for mem in btf.members(t, vlen, kflag):
            bits = mem.bits
            full = f"{prefix}.{mem.name}" if prefix and mem.name else (mem.name or prefix)
            if not bits:
                _, mt, mkind, _, _ = btf.strip(mem.type_id)
                if mkind == KIND_INT:
                    width = btf.int_encoding(mt) & 0xFF
                    if mem.bit_offset % 8 or width != mt.size_or_type * 8:
                        bits = width  # an old-style bit-field: the width is in the int type
            if bits:
                out.append(_bitfield(btf, full, mem.type_id, base, mem.bit_offset, bits))
            else:
                out.extend(btf_fields(btf, mem.type_id, full, base + mem.bit_offset // 8))
        return out
    if kind == KIND_ARRAY:
        dims, elem = [], tid
        while True:
            elem, et, ekind, _, _ = btf.strip(elem)
            if ekind != KIND_ARRAY:
                break
            arr = btf.array(et)
            dims.append(arr.nelems)
            elem = arr.type
        inner = btf_fields(btf, elem, "", 0)
        if len(inner) == 1 and inner[0].size == 1 and inner[0].kind == "int" and btf.name(et.name_off) == "char":
            return [Field(prefix, base, "str", dims[-1], tuple(dims[:-1]))]
        if len(inner) == 1 and not inner[0].shape and inner[0].kind != "str" and not inner[0].bits:
            return [Field(prefix, base, inner[0].kind, inner[0].size, tuple(dims))]
        return [Field(prefix, base, "bytes", btf.size_of(tid))]
    if kind == KIND_INT:
        enc = btf.int_encoding(t)
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
    return [Field(prefix, base, "bytes", btf.size_of(tid))]


def _bitfield(btf: Btf, name: str, tid: int, base: int, bit_off: int, bits: int) -> Field:
    """A bit-field BITS wide at BIT_OFF bits, as a Field over the aligned storage unit holding it."""
    _, t, kind, _, _ = btf.strip(tid)
    size = t.size_or_type if kind in (KIND_INT, KIND_ENUM, KIND_ENUM64) else 4
    signed = kind == KIND_INT and bool((btf.int_encoding(t) >> 24) & 1)
    unit = bit_off // (size * 8) * size  # the aligned storage unit holding it
    return Field(name, base + unit, "int" if signed else "uint", size, bits=bits, bit_offset=bit_off - unit * 8)
