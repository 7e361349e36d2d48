"""A struct's members as C names them, from BTF: what a ``--core`` ring
record is (events/records.py lays out its columns from them). Members of an
anonymous struct or union member are the outer struct's own, at their
offsets in it; each member keeps its C spelling (typedef names too), its
array dimensions and its bit-field width."""

from __future__ import annotations

from .btf import (
    KIND_ARRAY,
    KIND_ENUM,
    KIND_ENUM64,
    KIND_FLOAT,
    KIND_INT,
    KIND_NAMES,
    KIND_PTR,
    KIND_STRUCT,
    KIND_TYPEDEF,
    KIND_UNION,
    MODIFIERS,
    Btf,
    BtfType,
    Member,
)


def struct_members(btf: Btf, type_name: str) -> tuple[str, list[dict], int]:
    """The layout of TYPE_NAME (``struct NAME`` or a typedef of a struct):
    (struct name, members, size). Each member is a dict: name, ctype (C
    spelling), offset (bytes), bit_offset, bits (bit-field width or 0), base:
    ("int", size, signed, is_char) / ("bool", 1) / ("float", size) / ("ptr", 8) /
    ("other", kind name), dims (array dimensions). Raises LookupError when
    the type is not in the BTF, TypeError when it is not a struct."""
    if type_name.startswith("struct "):
        tid = btf.find(type_name.split()[-1], KIND_STRUCT)
    else:
        tid = btf.find(type_name, KIND_TYPEDEF)
    if tid <= 0:
        raise LookupError(f"{type_name} is not in the object's BTF")
    seen = 0
    while True:  # a typedef (or modifiers) down to the struct
        t, kind, vlen, kflag = btf.lookup(tid)
        if kind in MODIFIERS and seen < 16:
            tid, seen = t.size_or_type, seen + 1
            continue
        break
    if kind != KIND_STRUCT:
        raise TypeError(f"{type_name} is a {KIND_NAMES.get(kind, 'non-struct type')}, not a struct")
    struct_name = btf.name(t.name_off) or type_name
    return struct_name, _members(btf, t, kflag, vlen), t.size_or_type


def _members(btf: Btf, t: BtfType, kflag: bool, vlen: int, bit_base: int = 0) -> list[dict]:
    """The members of struct T as C names them: those of an anonymous struct or union
    member are the outer struct's own (``e->ports`` for ``union { __be32 ports; ... };``),
    at their offsets in it; a union's members share their bytes."""
    out = []
    for mem in btf.members(t, vlen, kflag):
        tid = mem.type_id
        for _ in range(16):
            inner, kind, inner_vlen, inner_kflag = btf.lookup(tid)
            if kind not in MODIFIERS:
                break
            tid = inner.size_or_type
        if not mem.name and kind in (KIND_STRUCT, KIND_UNION):
            out += _members(btf, inner, inner_kflag, inner_vlen, bit_base + mem.bit_offset)
            continue
        member = _member(btf, mem)
        member["bit_offset"] += bit_base
        member["offset"] = member["bit_offset"] // 8
        out.append(member)
    return out


def _member(btf: Btf, mem: Member) -> dict:
    """One named member as a dict (see struct_members), at its offset in its own struct."""
    bits, bit_off = mem.bits, mem.bit_offset
    mtid, dims, spelled = mem.type_id, [], None
    for _ in range(32):
        mt, mkind, _, _ = btf.lookup(mtid)
        if mkind == KIND_TYPEDEF:
            spelled = spelled or btf.name(mt.name_off)
            mtid = mt.size_or_type
        elif mkind in MODIFIERS:
            mtid = mt.size_or_type
        elif mkind == KIND_ARRAY:
            arr = btf.array(mt)
            dims.append(arr.nelems)
            mtid = arr.type
        else:
            break
    if mkind == KIND_INT:
        enc = btf.int_encoding(mt)
        int_bits = enc & 0xFF
        if not bits and (bit_off % 8 or int_bits != mt.size_or_type * 8):
            bits = int_bits  # an old-style bit-field: the width is in the int type
        cname = btf.name(mt.name_off)
        base = ("int", mt.size_or_type, bool((enc >> 24) & 1) or cname == "char", cname in ("char", "signed char"))
        if cname == "_Bool" or (enc >> 24) & 4:
            base = ("bool", 1)
    elif mkind in (KIND_ENUM, KIND_ENUM64):
        cname = "enum " + btf.name(mt.name_off)
        base = ("int", mt.size_or_type, bool(mt.info >> 31), False)
    elif mkind == KIND_FLOAT:
        cname = btf.name(mt.name_off)
        base = ("float", mt.size_or_type)
    elif mkind == KIND_PTR:
        cname = "void *"
        base = ("ptr", 8)
    else:
        cname = KIND_NAMES.get(mkind, f"BTF kind {mkind}")
        if mkind in (KIND_STRUCT, KIND_UNION):
            cname += f" {btf.name(mt.name_off)}".rstrip()
        base = ("other", cname)
    ctype = (spelled or cname) + "".join(f"[{d}]" for d in (dims if not spelled else []))
    if spelled and dims:
        ctype = spelled + "".join(f"[{d}]" for d in dims)
    return {
        "name": mem.name,
        "ctype": ctype,
        "offset": bit_off // 8,
        "bit_offset": bit_off,
        "bits": bits,
        "base": base,
        "dims": tuple(dims),
    }
