"""Values of a BTF type, from and into bytes: how a --core object's global
variables are read and written (module.globals, ``--set``). Reading gives
int, float, str (char arrays), a numpy array or a dict (structs); writing
takes exactly the bytes of the type and refuses a value of another type or
size (ValueTypeError), never spilling into the next variable."""

from __future__ import annotations

import numbers

from ..errors import ValueTypeError
from .btf import CHARS, KIND_ARRAY, KIND_ENUM, KIND_ENUM64, KIND_FLOAT, KIND_INT, KIND_PTR, KIND_STRUCT, KIND_UNION, Btf


def decode(btf: Btf, tid: int, raw: bytes):
    """Python value of RAW as type TID: int, float, str (char arrays), numpy array, dict (structs)."""
    import numpy as np

    tid = btf.resolve(tid)
    t, kind, vlen, kflag = btf.lookup(tid)
    if kind == KIND_INT:
        enc = btf.int_encoding(t)
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
        arr = btf.array(t)
        elem = btf.resolve(arr.type)
        et, ekind, _, _ = btf.lookup(elem)
        esize = btf.resolve_size(elem)
        if ekind == KIND_INT and esize == 1 and btf.name(et.name_off) in CHARS:
            return raw[: arr.nelems].split(b"\0", 1)[0].decode(errors="replace")
        if ekind == KIND_INT and esize in (1, 2, 4, 8):
            dtype = f"<{'i' if (btf.int_encoding(et) >> 24) & 1 else 'u'}{esize}"
            return np.frombuffer(raw[: esize * arr.nelems], dtype=dtype).copy()
        return [decode(btf, elem, raw[i * esize : (i + 1) * esize]) for i in range(arr.nelems)]
    if kind in (KIND_STRUCT, KIND_UNION):
        out = {}
        for m in btf.members(t, vlen, kflag):
            size = btf.resolve_size(m.type_id)
            start = m.bit_offset // 8
            if m.bits:
                word = int.from_bytes(raw[start : start + 8].ljust(8, b"\0"), "little")
                out[m.name] = (word >> (m.bit_offset % 8)) & ((1 << m.bits) - 1)
            else:
                out[m.name] = decode(btf, m.type_id, raw[start : start + size])
        return out
    return bytes(raw)


def encode(btf: Btf, tid: int, value, what: str, base: bytes | None = None) -> bytes:
    """Exactly the bytes of type TID holding VALUE; a value of another type or size is
    refused, naming WHAT (the variable or field). A dict for a struct sets the fields it
    names and keeps the others as they are in BASE (the current bytes), whichever door
    writes it (module.globals, a map view, --set)."""
    size = btf.resolve_size(btf.resolve(tid))
    data = _encode(btf, tid, value, what, base if base is not None and len(base) == size else None)
    if len(data) != size:  # never spill into the next variable
        raise ValueTypeError(f"{what}: {len(data)} bytes for a {btf.spelling(tid)} of {size}")
    return data


def _encode(btf: Btf, tid: int, value, what: str, base: bytes | None) -> bytes:
    import numpy as np

    tid = btf.resolve(tid)
    t, kind, vlen, kflag = btf.lookup(tid)
    size = btf.resolve_size(tid)
    if kind in (KIND_INT, KIND_ENUM, KIND_ENUM64, KIND_PTR):
        signed = kflag if kind != KIND_INT else bool((btf.int_encoding(t) >> 24) & 1)
        if isinstance(value, bool):
            value = int(value)
        elif not isinstance(value, (int, np.integer)):
            raise ValueTypeError(f"{what}: {btf.spelling(tid)} takes an integer, not {type(value).__name__}")
        try:
            return int(value).to_bytes(size, "little", signed=signed)
        except OverflowError:
            raise ValueTypeError(f"{what}: {value} does not fit in {btf.spelling(tid)} ({size} bytes)") from None
    if kind == KIND_FLOAT:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueTypeError(f"{what}: {btf.spelling(tid)} takes a number, not {type(value).__name__}")
        return np.array([value], dtype=f"<f{size}").tobytes()
    if kind == KIND_ARRAY:
        arr = btf.array(t)
        if btf.is_text(tid):
            if not isinstance(value, str):
                raise ValueTypeError(f"{what}: {btf.spelling(tid)} takes a str, not {type(value).__name__}")
            data = value.encode()
            if len(data) > arr.nelems:
                raise ValueTypeError(f"{what}: {len(data)} bytes do not fit in {btf.spelling(tid)}")
            return data.ljust(size, b"\0")
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
            raise ValueTypeError(f"{what}: {btf.spelling(tid)} takes a sequence of {arr.nelems} values, not {type(value).__name__}")
        items = list(value)
        if len(items) != arr.nelems:
            raise ValueTypeError(f"{what}: {btf.spelling(tid)} takes exactly {arr.nelems} values, not {len(items)}")
        esize = size // arr.nelems if arr.nelems else 0
        return b"".join(encode(btf, arr.type, v, f"{what}[{i}]", base[i * esize : (i + 1) * esize] if base else None) for i, v in enumerate(items))
    if kind in (KIND_STRUCT, KIND_UNION):
        if not isinstance(value, dict):
            raise ValueTypeError(f"{what}: {btf.spelling(tid)} takes a dict of its fields, not {type(value).__name__}")
        buf = bytearray(base) if base else bytearray(size)
        fields = {m.name: m for m in btf.members(t, vlen, kflag)}
        for key, v in value.items():
            if key not in fields:
                raise ValueTypeError(f"{what}: {btf.spelling(tid)} has no field {key!r} (fields: {', '.join(fields)})")
            m = fields[key]
            if m.bits:
                raise ValueTypeError(f"{what}.{key}: bit-fields cannot be written")
            start = m.bit_offset // 8
            msize = btf.resolve_size(m.type_id)
            data = encode(btf, m.type_id, v, f"{what}.{key}", bytes(buf[start : start + msize]))
            buf[start : start + len(data)] = data
        return bytes(buf)
    raise ValueTypeError(f"{what}: cannot write a {btf.spelling(tid)}")
