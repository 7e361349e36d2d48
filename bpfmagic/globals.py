"""Global variables of a --core module: what .bss, .data, .rodata (and their
.data.NAME / .rodata.NAME siblings) hold, typed from the object's BTF.

libbpf keeps each section in a one-element array map whose BTF value type
is the section's DATASEC: its variables, with offsets and sizes. Reads and
writes go through that map (one lookup, one update); .rodata is frozen at
load, so it is set before, on the opened object (``--set VAR=VALUE``)."""
from __future__ import annotations

import ctypes as ct
from collections.abc import MutableMapping
from dataclasses import dataclass

import numpy as np

from .errors import UsageProblem, ValueTypeError
from .kernel import libbpf
from .kernel.btf import _BtfType

BTF_KIND_INT, BTF_KIND_PTR, BTF_KIND_ARRAY, BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_ENUM = 1, 2, 3, 4, 5, 6
BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT = 8, 9, 10, 11
BTF_KIND_VAR, BTF_KIND_DATASEC, BTF_KIND_FLOAT, BTF_KIND_TYPE_TAG, BTF_KIND_ENUM64 = 14, 15, 16, 18, 19
_MODIFIERS = (BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT, BTF_KIND_TYPE_TAG)
_SECTIONS = (".bss", ".data", ".rodata", ".kconfig")


class _Triple(ct.Structure):  # btf_member {name_off, type, offset}, btf_array, btf_var_secinfo {type, offset, size}
    _fields_ = [("a", ct.c_uint32), ("b", ct.c_uint32), ("c", ct.c_uint32)]


@dataclass(frozen=True)
class Variable:
    name: str
    section: str
    offset: int
    size: int
    type_id: int
    ctype: str


class _Btf:
    """Reading one object's BTF through libbpf."""

    def __init__(self, lib, btf: int):
        self.lib, self.btf = lib, btf

    def type(self, tid: int):
        t = _BtfType.from_address(self.lib.btf__type_by_id(self.btf, tid))
        return t, (t.info >> 24) & 0x1F, t.info & 0xFFFF, bool(t.info >> 31)

    def name(self, off: int) -> str:
        raw = self.lib.btf__name_by_offset(self.btf, off)
        return raw.decode() if raw else ""

    def entries(self, t: _BtfType, count: int) -> list[_Triple]:
        base = ct.addressof(t) + ct.sizeof(_BtfType)
        return [_Triple.from_address(base + i * ct.sizeof(_Triple)) for i in range(count)]

    def resolve(self, tid: int) -> int:
        for _ in range(32):
            t, kind, _, _ = self.type(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = t.size_or_type
        return tid

    def spelling(self, tid: int) -> str:
        t, kind, _, _ = self.type(tid)
        if kind in (BTF_KIND_TYPEDEF, BTF_KIND_INT, BTF_KIND_FLOAT):
            return self.name(t.name_off)
        if kind in _MODIFIERS:
            return self.spelling(t.size_or_type)
        if kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            return f"{'struct' if kind == BTF_KIND_STRUCT else 'union'} {self.name(t.name_off)}".rstrip()
        if kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            return f"enum {self.name(t.name_off)}".rstrip()
        if kind == BTF_KIND_PTR:
            return self.spelling(t.size_or_type) + " *" if t.size_or_type else "void *"
        if kind == BTF_KIND_ARRAY:
            arr = self.entries(t, 1)[0]
            return f"{self.spelling(arr.a)}[{arr.c}]"
        return f"BTF kind {kind}"

    def is_text(self, tid: int) -> bool:
        """Whether TID is a char array (decoded as str)."""
        t, kind, _, _ = self.type(self.resolve(tid))
        if kind != BTF_KIND_ARRAY:
            return False
        elem = self.resolve(self.entries(t, 1)[0].a)
        et, ekind, _, _ = self.type(elem)
        return ekind == BTF_KIND_INT and self.name(et.name_off) in ("char", "signed char", "unsigned char")

    def decode(self, tid: int, raw: bytes):
        """Python value of RAW as type TID: int, float, str (char arrays), numpy array, dict (structs)."""
        tid = self.resolve(tid)
        t, kind, vlen, kflag = self.type(tid)
        if kind == BTF_KIND_INT:
            enc = ct.c_uint32.from_address(ct.addressof(t) + ct.sizeof(_BtfType)).value
            if (enc >> 24) & 4:
                return bool(raw[0])
            return int.from_bytes(raw[:t.size_or_type], "little", signed=bool((enc >> 24) & 1))
        if kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            return int.from_bytes(raw[:t.size_or_type], "little", signed=kflag)
        if kind == BTF_KIND_PTR:
            return int.from_bytes(raw[:8], "little")
        if kind == BTF_KIND_FLOAT:
            return float(np.frombuffer(raw[:t.size_or_type], dtype=f"<f{t.size_or_type}")[0])
        if kind == BTF_KIND_ARRAY:
            arr = self.entries(t, 1)[0]
            elem = self.resolve(arr.a)
            et, ekind, _, _ = self.type(elem)
            esize = self.lib.btf__resolve_size(self.btf, elem)
            if ekind == BTF_KIND_INT and esize == 1 and self.name(et.name_off) in ("char", "signed char",
                                                                                     "unsigned char"):
                return raw[:arr.c].split(b"\0", 1)[0].decode(errors="replace")
            if ekind == BTF_KIND_INT and esize in (1, 2, 4, 8):
                enc = ct.c_uint32.from_address(ct.addressof(et) + ct.sizeof(_BtfType)).value
                dtype = f"<{'i' if (enc >> 24) & 1 else 'u'}{esize}"
                return np.frombuffer(raw[:esize * arr.c], dtype=dtype).copy()
            return [self.decode(elem, raw[i * esize:(i + 1) * esize]) for i in range(arr.c)]
        if kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            out = {}
            for m in self.entries(t, vlen):
                bit_off = m.c & 0xFFFFFF if kflag else m.c
                bits = m.c >> 24 if kflag else 0
                size = self.lib.btf__resolve_size(self.btf, m.b)
                start = bit_off // 8
                if bits:
                    word = int.from_bytes(raw[start:start + 8].ljust(8, b"\0"), "little")
                    out[self.name(m.a)] = (word >> (bit_off % 8)) & ((1 << bits) - 1)
                else:
                    out[self.name(m.a)] = self.decode(m.b, raw[start:start + size])
            return out
        return bytes(raw)

    def encode(self, tid: int, value, what: str) -> bytes:
        """Bytes of VALUE as type TID; a value that does not fit names WHAT (the variable or field)."""
        tid = self.resolve(tid)
        t, kind, vlen, kflag = self.type(tid)
        size = self.lib.btf__resolve_size(self.btf, tid)
        if kind in (BTF_KIND_INT, BTF_KIND_ENUM, BTF_KIND_ENUM64, BTF_KIND_PTR):
            signed = kflag if kind != BTF_KIND_INT else bool(
                (ct.c_uint32.from_address(ct.addressof(t) + ct.sizeof(_BtfType)).value >> 24) & 1)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                if isinstance(value, bool):
                    value = int(value)
                else:
                    raise ValueTypeError(f"{what}: {self.spelling(tid)} takes an integer, not {type(value).__name__}")
            try:
                return int(value).to_bytes(size, "little", signed=signed)
            except OverflowError:
                raise ValueTypeError(f"{what}: {value} does not fit in {self.spelling(tid)} ({size} bytes)") from None
        if kind == BTF_KIND_FLOAT:
            return np.array([value], dtype=f"<f{size}").tobytes()
        if kind == BTF_KIND_ARRAY:
            arr = self.entries(t, 1)[0]
            if isinstance(value, str):
                data = value.encode()
                if len(data) > arr.c:
                    raise ValueTypeError(f"{what}: {len(data)} bytes do not fit in {self.spelling(tid)}")
                return data.ljust(size, b"\0")
            if not hasattr(value, "__iter__"):
                raise ValueTypeError(f"{what}: {self.spelling(tid)} takes a sequence of values, not {value!r}")
            items = list(value)
            if len(items) > arr.c:
                raise ValueTypeError(f"{what}: {len(items)} items do not fit in {self.spelling(tid)}")
            return b"".join(self.encode(arr.a, v, f"{what}[{i}]") for i, v in enumerate(items)).ljust(size, b"\0")
        if kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            if not isinstance(value, dict):
                raise ValueTypeError(f"{what}: {self.spelling(tid)} takes a dict of its fields")
            buf = bytearray(size)
            fields = {self.name(m.a): m for m in self.entries(t, vlen)}
            for key, v in value.items():
                if key not in fields:
                    raise ValueTypeError(f"{what}: {self.spelling(tid)} has no field {key!r} "
                                    f"(fields: {', '.join(fields)})")
                m = fields[key]
                if kflag and m.c >> 24:
                    raise ValueTypeError(f"{what}.{key}: bit-fields cannot be written")
                start = (m.c & 0xFFFFFF if kflag else m.c) // 8
                data = self.encode(m.b, v, f"{what}.{key}")
                buf[start:start + len(data)] = data
            return bytes(buf)
        raise ValueTypeError(f"{what}: cannot write a {self.spelling(tid)}")


def sections(obj) -> dict[str, tuple[int, list[Variable]]]:
    """Each global-data section of OBJ (a core.CoreObject): its map pointer and variables."""
    lib = libbpf.object_api()
    btf_ptr = lib.bpf_object__btf(obj.ptr) if obj.ptr else None
    if not btf_ptr:
        return {}
    btf = _Btf(lib, btf_ptr)
    out: dict[str, tuple[int, list[Variable]]] = {}
    for map_name, map_ptr in obj.maps().items():
        section = map_name[map_name.index("."):] if "." in map_name else ""
        if not section.startswith(_SECTIONS):
            continue
        tid = lib.bpf_map__btf_value_type_id(map_ptr)
        if not tid:
            continue
        t, kind, vlen, _ = btf.type(tid)
        if kind != BTF_KIND_DATASEC:
            continue
        variables = []
        for info in btf.entries(t, vlen):
            var, vkind, _, _ = btf.type(info.a)
            if vkind != BTF_KIND_VAR:
                continue
            name = btf.name(var.name_off)
            if name.startswith("__bm_"):
                continue  # bpfmagic's own (ring record-type anchors)
            variables.append(Variable(name, section, info.b, info.c, var.size_or_type, btf.spelling(var.size_or_type)))
        out[section] = (map_ptr, variables)
    return out


def set_initial(obj, values: dict) -> None:
    """Write VALUES into the opened (not yet loaded) object's sections: how
    .rodata (``const volatile``) configuration is set before the verifier sees it."""
    lib = libbpf.object_api()
    found = {v.name: (map_ptr, v) for map_ptr, variables in sections(obj).values() for v in variables}
    btf = _Btf(lib, lib.bpf_object__btf(obj.ptr))
    for name, value in values.items():
        if name not in found:
            raise UsageProblem(f"{obj.name} has no global variable {name!r} (globals: {', '.join(found) or 'none'})")
        map_ptr, var = found[name]
        size = ct.c_size_t()
        base = lib.bpf_map__initial_value(map_ptr, ct.byref(size))
        if not base:
            raise UsageProblem(f"{obj.name}: libbpf gives no initial value for {var.section}")
        data = btf.encode(var.type_id, _parse_literal(value, btf.is_text(var.type_id)), name)
        ct.memmove(base + var.offset, data, len(data))


def _parse_literal(value, text_type: bool = False):
    """``--set N=4`` gives text: integers (0x.. too) become ints, except for a
    char array, which takes the text as it is (``--set pid="123"`` or ``--set pid=123``);
    quotes around a string are dropped."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if text_type:
        return text
    try:
        return int(text, 0)
    except ValueError:
        return text


class Globals(MutableMapping):
    """``module.globals``: name -> value of each global variable, read from the
    kernel's copy at each access; assignment writes .bss/.data at once (the
    program sees it on its next run)."""

    def __init__(self, module):
        self.module = module

    def _table(self):
        obj = self.module.core
        if obj is None or not obj.ptr:
            raise UsageProblem(f"module {self.module.name} has no globals "
                               + ("(unloaded)" if self.module.closed else "(globals are a --core feature)"))
        lib = libbpf.object_api()
        btf = _Btf(lib, lib.bpf_object__btf(obj.ptr))
        return lib, btf, {v.name: (map_ptr, v) for map_ptr, variables in sections(obj).values() for v in variables}

    def _read(self, lib, map_ptr) -> bytearray:
        size = lib.bpf_map__value_size(map_ptr)
        buf = ct.create_string_buffer(size)
        key = ct.c_uint32(0)
        if libbpf.lib().bpf_map_lookup_elem(lib.bpf_map__fd(map_ptr), ct.byref(key), buf) < 0:
            raise UsageProblem(f"{self.module.name}: could not read its globals ({ct.get_errno()})")
        return bytearray(buf.raw)

    def __getitem__(self, name: str):
        lib, btf, found = self._table()
        if name not in found:
            raise KeyError(f"{self.module.name} has no global {name!r} (globals: {', '.join(found) or 'none'})")
        map_ptr, var = found[name]
        return btf.decode(var.type_id, bytes(self._read(lib, map_ptr)[var.offset:var.offset + var.size]))

    def __setitem__(self, name: str, value) -> None:
        lib, btf, found = self._table()
        if name not in found:
            raise KeyError(f"{self.module.name} has no global {name!r} (globals: {', '.join(found) or 'none'})")
        map_ptr, var = found[name]
        if var.section.startswith((".rodata", ".kconfig")):
            raise UsageProblem(f"{self.module.name}.{name} is in {var.section}, frozen when the module loaded: set "
                               f"it before, with `--set {name}=VALUE` (or Session.load(..., globals={{...}}))")
        data = btf.encode(var.type_id, value, name)
        raw = self._read(lib, map_ptr)
        raw[var.offset:var.offset + len(data)] = data
        key = ct.c_uint32(0)
        buf = ct.create_string_buffer(bytes(raw), len(raw))
        if libbpf.lib().bpf_map_update_elem(lib.bpf_map__fd(map_ptr), ct.byref(key), buf, 0) < 0:
            raise UsageProblem(f"{self.module.name}: could not write {name} ({ct.get_errno()})")

    def __delitem__(self, name: str) -> None:
        raise UsageProblem("a global variable cannot be deleted; assign it a value instead")

    def __iter__(self):
        return iter(self._table()[2])

    def __len__(self) -> int:
        return len(self._table()[2])

    def df(self):
        """DataFrame: name, section, type, value."""
        import pandas as pd
        lib, btf, found = self._table()
        rows = []
        cache: dict[int, bytearray] = {}
        for name, (map_ptr, var) in found.items():
            raw = cache.setdefault(map_ptr, self._read(lib, map_ptr))  # one read per section: values agree
            rows.append({"name": name, "section": var.section, "type": var.ctype,
                         "value": btf.decode(var.type_id, bytes(raw[var.offset:var.offset + var.size]))})
        return pd.DataFrame(rows, columns=["name", "section", "type", "value"])

    def __repr__(self) -> str:
        try:
            return f"<globals of {self.module.name}: {dict(self.items())}>"
        except UsageProblem as e:
            return f"<globals: {e}>"
