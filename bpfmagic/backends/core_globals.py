"""Global variables of a --core object, as libbpf holds them: what .bss,
.data, .rodata (and their .data.NAME / .rodata.NAME siblings) hold, typed
from the object's BTF.

libbpf keeps each section in a one-element array map whose BTF value type
is the section's DATASEC: its variables, with offsets and sizes. .rodata is
frozen at load, so it is set before, on the opened object (``--set
VAR=VALUE``: :func:`set_initial`). Reading and writing them once loaded is
``bpfmagic.globals.Globals``, through the backend interface."""

from __future__ import annotations

import ctypes as ct

from ..errors import UsageProblem
from ..kernel import libbpf
from ..kernel import values as btf_values
from ..kernel.btf import Btf, Variable

_SECTIONS = (".bss", ".data", ".rodata", ".kconfig")


def sections(obj) -> dict[str, tuple[int, list[Variable]]]:
    """Each global-data section of OBJ (a CoreObject): its map pointer and variables."""
    lib = libbpf.object_api()
    btf_ptr = lib.bpf_object__btf(obj.ptr) if obj.ptr else None
    if not btf_ptr:
        return {}
    btf = Btf(lib, btf_ptr)
    out: dict[str, tuple[int, list[Variable]]] = {}
    for map_name, map_ptr in obj.maps().items():
        section = map_name[map_name.index(".") :] if "." in map_name else ""
        if not section.startswith(_SECTIONS):
            continue
        tid = lib.bpf_map__btf_value_type_id(map_ptr)
        if not tid:
            continue
        variables = btf.variables(tid, section)
        if variables is not None:
            out[section] = (map_ptr, variables)
    return out


def set_initial(obj, values: dict) -> None:
    """Write VALUES into the opened (not yet loaded) object's sections: how
    .rodata (``const volatile``) configuration is set before the verifier sees it."""
    lib = libbpf.object_api()
    found = {v.name: (map_ptr, v) for map_ptr, variables in sections(obj).values() for v in variables}
    btf = Btf(lib, lib.bpf_object__btf(obj.ptr))
    for name, value in values.items():
        if name not in found:
            raise UsageProblem(f"{obj.name} has no global variable {name!r} (globals: {', '.join(found) or 'none'})")
        map_ptr, var = found[name]
        size = ct.c_size_t()
        base = lib.bpf_map__initial_value(map_ptr, ct.byref(size))
        if not base:
            raise UsageProblem(f"{obj.name}: libbpf gives no initial value for {var.section}")
        current = ct.string_at(base + var.offset, var.size)
        data = btf_values.encode(btf, var.type_id, parse_literal(value, btf.is_text(var.type_id)), name, current)
        ct.memmove(base + var.offset, data, var.size)


def parse_literal(value, text_type: bool = False):
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
