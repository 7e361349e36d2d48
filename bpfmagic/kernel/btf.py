"""BTF, the one reader: the byte layout of a BTF type (or a ctypes type) as
flat fields (what a map key or value holds, for decoding with a numpy
structured dtype), a struct's members as a ring record's layout, the
variables of a global-data section, values decoded from and encoded into
bytes as their BTF type says (global variables), and where the running
kernel has a struct's member (``vmlinux()``: BCC's header offsets checked).

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
_KIND_NAMES = {KIND_STRUCT: "struct", KIND_UNION: "union", 7: "forward declaration", 12: "function", 13: "function prototype"}
_CHARS = ("char", "signed char", "unsigned char")


@dataclass(frozen=True)
class Variable:
    """One variable of a global-data section (DATASEC): where it is in the section's value."""

    name: str
    section: str
    offset: int
    size: int
    type_id: int
    ctype: str


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

    def _entries(self, t: _BtfType, record, count: int) -> list:
        """The COUNT records (members, an array, var_secinfos) that follow type T."""
        first = ct.addressof(t) + ct.sizeof(_BtfType)
        return [record.from_address(first + i * ct.sizeof(record)) for i in range(count)]

    def _encoding(self, t: _BtfType) -> int:
        """The u32 that follows an INT type: bits 24.. say signed (1), char (2), bool (4); 0..7 the width."""
        return ct.c_uint32.from_address(ct.addressof(t) + ct.sizeof(_BtfType)).value

    def resolve(self, tid: int) -> int:
        """TID without its typedefs and qualifiers."""
        for _ in range(32):
            t, kind, _, _ = self._type(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = t.size_or_type
        return tid

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
                out.extend(self.fields(var.size_or_type, f"{prefix}.{name}" if prefix else name, base + info.offset))
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
            if len(inner) == 1 and inner[0].size == 1 and inner[0].kind == "int" and self._name(et.name_off) == "char":
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
        return Field(name, base + unit, "int" if signed else "uint", size, bits=bits, bit_offset=bit_off - unit * 8)

    # -------------------------------------------------- a struct's members (ring records)
    def struct(self, type_name: str) -> tuple[str, list[dict], int]:
        """The layout of TYPE_NAME (``struct NAME`` or a typedef of a struct):
        (struct name, members, size). Each member is a dict: name, ctype (C
        spelling), offset (bytes), bits (bit-field width or 0), base: ("int",
        size, signed, is_char) / ("bool", 1) / ("float", size) / ("ptr", 8) /
        ("other", kind name), dims (array dimensions). Raises LookupError when
        the type is not in the BTF, TypeError when it is not a struct."""
        lib = self.lib
        if type_name.startswith("struct "):
            tid = lib.btf__find_by_name_kind(self.ptr, type_name.split()[-1].encode(), KIND_STRUCT)
        else:
            tid = lib.btf__find_by_name_kind(self.ptr, type_name.encode(), KIND_TYPEDEF)
        if tid <= 0:
            raise LookupError(f"{type_name} is not in the object's BTF")
        seen = 0
        while True:  # a typedef (or modifiers) down to the struct
            t, kind, vlen, kflag = self._type(tid)
            if kind in _MODIFIERS and seen < 16:
                tid, seen = t.size_or_type, seen + 1
                continue
            break
        if kind != KIND_STRUCT:
            raise TypeError(f"{type_name} is a {_KIND_NAMES.get(kind, 'non-struct type')}, not a struct")
        struct_name = self._name(t.name_off) or type_name
        return struct_name, self._members(t, kflag, vlen), t.size_or_type

    def _members(self, t: _BtfType, kflag: bool, vlen: int, bit_base: int = 0) -> list[dict]:
        """The members of struct T as C names them: those of an anonymous struct or union
        member are the outer struct's own (``e->ports`` for ``union { __be32 ports; ... };``),
        at their offsets in it; a union's members share their bytes."""
        out = []
        for mem in self._entries(t, _BtfMember, vlen):
            tid = mem.type
            for _ in range(16):
                inner, kind, inner_vlen, inner_kflag = self._type(tid)
                if kind not in _MODIFIERS:
                    break
                tid = inner.size_or_type
            if not mem.name_off and kind in (KIND_STRUCT, KIND_UNION):
                bit_off = mem.offset & 0xFFFFFF if kflag else mem.offset
                out += self._members(inner, inner_kflag, inner_vlen, bit_base + bit_off)
                continue
            member = self._member(mem, kflag)
            member["bit_offset"] += bit_base
            member["offset"] = member["bit_offset"] // 8
            out.append(member)
        return out

    def _member(self, mem: _BtfMember, kflag: bool) -> dict:
        bits, bit_off = (mem.offset >> 24, mem.offset & 0xFFFFFF) if kflag else (0, mem.offset)
        mtid, dims, spelled = mem.type, [], None
        for _ in range(32):
            mt, mkind, _, _ = self._type(mtid)
            if mkind == KIND_TYPEDEF:
                spelled = spelled or self._name(mt.name_off)
                mtid = mt.size_or_type
            elif mkind in _MODIFIERS:
                mtid = mt.size_or_type
            elif mkind == KIND_ARRAY:
                arr = self._entries(mt, _BtfArray, 1)[0]
                dims.append(arr.nelems)
                mtid = arr.type
            else:
                break
        if mkind == KIND_INT:
            enc = self._encoding(mt)
            int_bits = enc & 0xFF
            if not bits and (bit_off % 8 or int_bits != mt.size_or_type * 8):
                bits = int_bits  # an old-style bit-field: the width is in the int type
            cname = self._name(mt.name_off)
            base = ("int", mt.size_or_type, bool((enc >> 24) & 1) or cname == "char", cname in ("char", "signed char"))
            if cname == "_Bool" or (enc >> 24) & 4:
                base = ("bool", 1)
        elif mkind in (KIND_ENUM, KIND_ENUM64):
            cname = "enum " + self._name(mt.name_off)
            base = ("int", mt.size_or_type, bool(mt.info >> 31), False)
        elif mkind == KIND_FLOAT:
            cname = self._name(mt.name_off)
            base = ("float", mt.size_or_type)
        elif mkind == KIND_PTR:
            cname = "void *"
            base = ("ptr", 8)
        else:
            cname = _KIND_NAMES.get(mkind, f"BTF kind {mkind}")
            if mkind in (KIND_STRUCT, KIND_UNION):
                cname += f" {self._name(mt.name_off)}".rstrip()
            base = ("other", cname)
        ctype = (spelled or cname) + "".join(f"[{d}]" for d in (dims if not spelled else []))
        if spelled and dims:
            ctype = spelled + "".join(f"[{d}]" for d in dims)
        return {
            "name": self._name(mem.name_off),
            "ctype": ctype,
            "offset": bit_off // 8,
            "bit_offset": bit_off,
            "bits": bits,
            "base": base,
            "dims": tuple(dims),
        }

    # -------------------------------------------------- global variables (a DATASEC)
    def variables(self, tid: int, section: str) -> list[Variable] | None:
        """The variables of DATASEC type TID (a global-data map's value type), in
        SECTION; None when TID is not a DATASEC."""
        t, kind, vlen, _ = self._type(tid)
        if kind != KIND_DATASEC:
            return None
        out = []
        for info in self._entries(t, _BtfVarSecinfo, vlen):
            var, vkind, _, _ = self._type(info.type)
            if vkind != KIND_VAR:
                continue
            name = self._name(var.name_off)
            if name.startswith("__bm_"):
                continue  # bpfmagic's own (ring record-type anchors)
            out.append(Variable(name, section, info.offset, info.size, var.size_or_type, self.spelling(var.size_or_type)))
        return out

    def spelling(self, tid: int) -> str:
        """TID spelled as C."""
        t, kind, _, _ = self._type(tid)
        if kind in (KIND_TYPEDEF, KIND_INT, KIND_FLOAT):
            return self._name(t.name_off)
        if kind in _MODIFIERS:
            return self.spelling(t.size_or_type)
        if kind in (KIND_STRUCT, KIND_UNION):
            return f"{'struct' if kind == KIND_STRUCT else 'union'} {self._name(t.name_off)}".rstrip()
        if kind in (KIND_ENUM, KIND_ENUM64):
            return f"enum {self._name(t.name_off)}".rstrip()
        if kind == KIND_PTR:
            return self.spelling(t.size_or_type) + " *" if t.size_or_type else "void *"
        if kind == KIND_ARRAY:
            arr = self._entries(t, _BtfArray, 1)[0]
            return f"{self.spelling(arr.type)}[{arr.nelems}]"
        return f"BTF kind {kind}"

    def is_text(self, tid: int) -> bool:
        """Whether TID is a char array (decoded as str)."""
        t, kind, _, _ = self._type(self.resolve(tid))
        if kind != KIND_ARRAY:
            return False
        et, ekind, _, _ = self._type(self.resolve(self._entries(t, _BtfArray, 1)[0].type))
        return ekind == KIND_INT and self._name(et.name_off) in _CHARS

    def decode(self, tid: int, raw: bytes):
        """Python value of RAW as type TID: int, float, str (char arrays), numpy array, dict (structs)."""
        import numpy as np

        tid = self.resolve(tid)
        t, kind, vlen, kflag = self._type(tid)
        if kind == KIND_INT:
            enc = self._encoding(t)
            if (enc >> 24) & 4:
                return bool(raw[0])
            return int.from_bytes(raw[: t.size_or_type], "little", signed=bool((enc >> 24) & 1))
        if kind in (KIND_ENUM, KIND_ENUM64):
            return int.from_bytes(raw[: t.size_or_type], "little", signed=kflag)
        if kind == KIND_PTR:
            return int.from_bytes(raw[:8], "little")
        if kind == KIND_FLOAT:
            return float(np.frombuffer(raw[: t.size_or_type], dtype=f"<f{t.size_or_type}")[0])
        if kind == KIND_ARRAY:
            arr = self._entries(t, _BtfArray, 1)[0]
            elem = self.resolve(arr.type)
            et, ekind, _, _ = self._type(elem)
            esize = self.lib.btf__resolve_size(self.ptr, elem)
            if ekind == KIND_INT and esize == 1 and self._name(et.name_off) in _CHARS:
                return raw[: arr.nelems].split(b"\0", 1)[0].decode(errors="replace")
            if ekind == KIND_INT and esize in (1, 2, 4, 8):
                dtype = f"<{'i' if (self._encoding(et) >> 24) & 1 else 'u'}{esize}"
                return np.frombuffer(raw[: esize * arr.nelems], dtype=dtype).copy()
            return [self.decode(elem, raw[i * esize : (i + 1) * esize]) for i in range(arr.nelems)]
        if kind in (KIND_STRUCT, KIND_UNION):
            out = {}
            for m in self._entries(t, _BtfMember, vlen):
                bit_off = m.offset & 0xFFFFFF if kflag else m.offset
                bits = m.offset >> 24 if kflag else 0
                size = self.lib.btf__resolve_size(self.ptr, m.type)
                start = bit_off // 8
                if bits:
                    word = int.from_bytes(raw[start : start + 8].ljust(8, b"\0"), "little")
                    out[self._name(m.name_off)] = (word >> (bit_off % 8)) & ((1 << bits) - 1)
                else:
                    out[self._name(m.name_off)] = self.decode(m.type, raw[start : start + size])
            return out
        return bytes(raw)

    def encode(self, tid: int, value, what: str, base: bytes | None = None) -> bytes:
        """Exactly the bytes of type TID holding VALUE; a value of another type or size is
        refused, naming WHAT (the variable or field). A dict for a struct sets the fields it
        names and keeps the others as they are in BASE (the current bytes), whichever door
        writes it (module.globals, a map view, --set)."""
        from ..errors import ValueTypeError

        size = self.lib.btf__resolve_size(self.ptr, self.resolve(tid))
        data = self._encode(tid, value, what, base if base is not None and len(base) == size else None)
        if len(data) != size:  # never spill into the next variable
            raise ValueTypeError(f"{what}: {len(data)} bytes for a {self.spelling(tid)} of {size}")
        return data

    def _encode(self, tid: int, value, what: str, base: bytes | None) -> bytes:
        import numbers

        import numpy as np

        from ..errors import ValueTypeError

        tid = self.resolve(tid)
        t, kind, vlen, kflag = self._type(tid)
        size = self.lib.btf__resolve_size(self.ptr, tid)
        if kind in (KIND_INT, KIND_ENUM, KIND_ENUM64, KIND_PTR):
            signed = kflag if kind != KIND_INT else bool((self._encoding(t) >> 24) & 1)
            if isinstance(value, bool):
                value = int(value)
            elif not isinstance(value, (int, np.integer)):
                raise ValueTypeError(f"{what}: {self.spelling(tid)} takes an integer, not {type(value).__name__}")
            try:
                return int(value).to_bytes(size, "little", signed=signed)
            except OverflowError:
                raise ValueTypeError(f"{what}: {value} does not fit in {self.spelling(tid)} ({size} bytes)") from None
        if kind == KIND_FLOAT:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueTypeError(f"{what}: {self.spelling(tid)} takes a number, not {type(value).__name__}")
            return np.array([value], dtype=f"<f{size}").tobytes()
        if kind == KIND_ARRAY:
            arr = self._entries(t, _BtfArray, 1)[0]
            if self.is_text(tid):
                if not isinstance(value, str):
                    raise ValueTypeError(f"{what}: {self.spelling(tid)} takes a str, not {type(value).__name__}")
                data = value.encode()
                if len(data) > arr.nelems:
                    raise ValueTypeError(f"{what}: {len(data)} bytes do not fit in {self.spelling(tid)}")
                return data.ljust(size, b"\0")
            if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
                raise ValueTypeError(f"{what}: {self.spelling(tid)} takes a sequence of {arr.nelems} values, not {type(value).__name__}")
            items = list(value)
            if len(items) != arr.nelems:
                raise ValueTypeError(f"{what}: {self.spelling(tid)} takes exactly {arr.nelems} values, not {len(items)}")
            esize = size // arr.nelems if arr.nelems else 0
            return b"".join(
                self.encode(arr.type, v, f"{what}[{i}]", base[i * esize : (i + 1) * esize] if base else None) for i, v in enumerate(items)
            )
        if kind in (KIND_STRUCT, KIND_UNION):
            if not isinstance(value, dict):
                raise ValueTypeError(f"{what}: {self.spelling(tid)} takes a dict of its fields, not {type(value).__name__}")
            buf = bytearray(base) if base else bytearray(size)
            fields = {self._name(m.name_off): m for m in self._entries(t, _BtfMember, vlen)}
            for key, v in value.items():
                if key not in fields:
                    raise ValueTypeError(f"{what}: {self.spelling(tid)} has no field {key!r} (fields: {', '.join(fields)})")
                m = fields[key]
                if kflag and m.offset >> 24:
                    raise ValueTypeError(f"{what}.{key}: bit-fields cannot be written")
                start = (m.offset & 0xFFFFFF if kflag else m.offset) // 8
                msize = self.lib.btf__resolve_size(self.ptr, m.type)
                data = self.encode(m.type, v, f"{what}.{key}", bytes(buf[start : start + msize]))
                buf[start : start + len(data)] = data
            return bytes(buf)
        raise ValueTypeError(f"{what}: cannot write a {self.spelling(tid)}")

    # -------------------------------------------------- a kernel struct's members (BCC's offsets checked)
    def record(self, name: str) -> int | None:
        """The type id of ``struct NAME`` (or ``union NAME``), None when the BTF has neither."""
        for kind in (KIND_STRUCT, KIND_UNION):
            tid = self.lib.btf__find_by_name_kind(self.ptr, name.encode(), kind)
            if tid > 0:
                return tid
        return None

    def member(self, tid: int, name: str) -> MemberLayout | None:
        """Member NAME of the struct or union TID, looked for inside its anonymous
        structs and unions too; None when it has no such member."""
        tid, t, kind, vlen, kflag = self._strip(tid)
        if kind not in (KIND_STRUCT, KIND_UNION):
            return None
        for mem in self._entries(t, _BtfMember, vlen):
            bits, bit_off = (mem.offset >> 24, mem.offset & 0xFFFFFF) if kflag else (0, mem.offset)
            mname = self._name(mem.name_off)
            if mname == name:
                size = self.lib.btf__resolve_size(self.ptr, mem.type)
                return MemberLayout(bit_off // 8, bits or (size if size >= 0 else 0), bits, bit_off, mem.type)
            if not mname:
                inner = self.member(mem.type, name)
                if inner is not None:
                    return MemberLayout(inner.offset + bit_off // 8, inner.size, inner.bits, inner.bit_offset + bit_off, inner.type_id)
        return None

    def record_behind(self, tid: int) -> int | None:
        """The struct or union a value of type TID is, or points to, or is an array of
        (through typedefs and qualifiers): the base of the next ``->`` or ``[i].``."""
        tid, t, kind, _, _ = self._strip(tid)
        if kind in (KIND_PTR, KIND_ARRAY):
            inner = t.size_or_type if kind == KIND_PTR else self._entries(t, _BtfArray, 1)[0].type
            tid, t, kind, _, _ = self._strip(inner)
        return tid if kind in (KIND_STRUCT, KIND_UNION) else None


@dataclass(frozen=True)
class MemberLayout:
    """Where a member is: ``offset`` bytes into its struct, ``size`` bytes (a
    bit-field: ``bits`` wide at ``bit_offset`` bits, ``size`` is its width)."""

    offset: int
    size: int
    bits: int
    bit_offset: int
    type_id: int


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
