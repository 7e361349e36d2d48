"""``module.globals``: the global variables of a module (.bss, .data,
.rodata and their .data.NAME / .rodata.NAME siblings, a --core feature),
typed from the object's BTF, read and written through the backend interface
(``global_variables()``, ``map_handle()``, ``btf()``). What libbpf itself
does with them (sections, values set before load) is backends/core_globals.py."""

from __future__ import annotations

import ctypes as ct
import functools
from collections.abc import MutableMapping

from .errors import UsageProblem
from .kernel import libbpf
from .kernel import values as btf_values


def _locked(method):
    """Under the session's lock: a re-run or unload in another thread frees the
    object (and closes its map fds) under that lock."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self.module.session.lock:
            return method(self, *args, **kwargs)

    return locked


class Globals(MutableMapping):
    """``module.globals``: name -> value of each global variable, read from the
    kernel's copy at each access; assignment writes .bss/.data at once (the
    program sees it on its next run)."""

    def __init__(self, module):
        self.module = module

    def _table(self):
        """(the object, its BTF, {name: (map name, Variable)})."""
        obj = self.module.object
        found = obj.global_variables() if obj is not None and not self.module.closed else None
        if found is None:
            raise UsageProblem(
                f"module {self.module.name} has no globals " + ("(unloaded)" if self.module.closed else "(globals are a --core feature)")
            )
        return obj, obj.btf(), found  # no BTF: no variables either

    def _read(self, obj, map_name: str) -> bytearray:
        handle = obj.map_handle(map_name)
        buf = ct.create_string_buffer(handle.value_size)
        key = ct.c_uint32(0)
        if libbpf.lib().bpf_map_lookup_elem(handle.fd, ct.byref(key), buf) < 0:
            raise UsageProblem(f"{self.module.name}: could not read its globals ({ct.get_errno()})")
        return bytearray(buf.raw)

    @_locked
    def __getitem__(self, name: str):
        obj, btf, found = self._table()
        if name not in found:
            raise KeyError(f"{self.module.name} has no global {name!r} (globals: {', '.join(found) or 'none'})")
        map_name, var = found[name]
        return btf_values.decode(btf, var.type_id, bytes(self._read(obj, map_name)[var.offset : var.offset + var.size]))

    @_locked
    def __setitem__(self, name: str, value) -> None:
        obj, btf, found = self._table()
        if name not in found:
            raise KeyError(f"{self.module.name} has no global {name!r} (globals: {', '.join(found) or 'none'})")
        map_name, var = found[name]
        if var.section.startswith((".rodata", ".kconfig")):
            raise UsageProblem(
                f"{self.module.name}.{name} is in {var.section}, frozen when the module loaded: set "
                f"it before, with `--set {name}=VALUE` (or Session.load(..., globals={{...}}))"
            )
        raw = self._read(obj, map_name)
        # a dict for a struct keeps the fields it does not name, as a map view's write does
        data = btf_values.encode(btf, var.type_id, value, name, bytes(raw[var.offset : var.offset + var.size]))
        raw[var.offset : var.offset + var.size] = data
        key = ct.c_uint32(0)
        buf = ct.create_string_buffer(bytes(raw), len(raw))
        if libbpf.lib().bpf_map_update_elem(obj.map_handle(map_name).fd, ct.byref(key), buf, 0) < 0:
            raise UsageProblem(f"{self.module.name}: could not write {name} ({ct.get_errno()})")

    def __delitem__(self, name: str) -> None:
        raise UsageProblem("a global variable cannot be deleted; assign it a value instead")

    @_locked
    def __iter__(self):
        return iter(self._table()[2])

    @_locked
    def __len__(self) -> int:
        return len(self._table()[2])

    @_locked
    def df(self):
        """DataFrame: name, section, type, value."""
        import pandas as pd

        obj, btf, found = self._table()
        rows = []
        cache: dict[str, bytearray] = {}
        for name, (map_name, var) in found.items():
            raw = cache.setdefault(map_name, self._read(obj, map_name))  # one read per section: values agree
            rows.append(
                {
                    "name": name,
                    "section": var.section,
                    "type": var.ctype,
                    "value": btf_values.decode(btf, var.type_id, bytes(raw[var.offset : var.offset + var.size])),
                }
            )
        return pd.DataFrame(rows, columns=["name", "section", "type", "value"])

    def __repr__(self) -> str:
        try:
            return f"<globals of {self.module.name}: {dict(self.items())}>"
        except UsageProblem as e:
            return f"<globals: {e}>"
