"""The BCC backend: a cell in BCC's C dialect, compiled by libbcc (with the
front end's instrumentation), its functions loaded one by one, each with the
program type its use demands."""
from __future__ import annotations

import atexit
import contextlib

from .. import libbpf
from ..compiler import (
    PROG_TYPES,
    auto_attach_type,
    captured_fd2,
    fd_limit_problem,
    load_bcc,
    privilege_problem,
    verifier_error,
)


def _libbcc():
    """libbcc with the table-listing calls BCC's Python binding leaves undeclared."""
    import ctypes as ct

    from bcc.libbcc import lib
    if lib.bpf_table_name.restype is not ct.c_char_p:
        lib.bpf_num_tables.restype = ct.c_ulonglong
        lib.bpf_num_tables.argtypes = [ct.c_void_p]
        lib.bpf_table_name.restype = ct.c_char_p
        lib.bpf_table_name.argtypes = [ct.c_void_p, ct.c_ulonglong]
    return lib


class BccObject:
    """One ``BPF(text=...)`` object of a cell."""

    kind = "bcc"

    def __init__(self, bpf, columns, origin: str, syntax, stats: dict | None = None):
        self.bpf = bpf
        self.columns = columns  # column shifts of instrumented call sites: verifier messages
        self.origin, self.syntax = origin, syntax
        self.stats = stats or {}  # function -> the verifier's statistics of what loaded with the object
        # BCC's funcs grows with every load_func: what its naming conventions loaded is what is there now.
        self._conventions = [name.decode() for name in bpf.funcs] if bpf is not None else []

    @property
    def attach_handle(self):
        return self.bpf

    def _module(self):
        return None if self.bpf is None else self.bpf.module

    def functions(self) -> list[str]:
        module = self._module()
        if module is None:
            return []
        lib = _libbcc()
        return [lib.bpf_function_name(module, i).decode() for i in range(lib.bpf_num_functions(module))]

    def tables(self) -> list[str]:
        module = self._module()
        if module is None:
            return []
        lib = _libbcc()
        names = (lib.bpf_table_name(module, i).decode() for i in range(lib.bpf_num_tables(module)))
        return [n for n in names if not n.startswith("__bm_")]  # bpfmagic's own counters stay hidden

    def table(self, name: str):
        return self.bpf[name.encode()]  # BCC wants bytes (a str works but warns)

    def map_fd(self, name: str) -> int:
        return self.bpf[name.encode()].map_fd

    def preloaded(self) -> dict[str, tuple[str, int, str]]:
        """What BCC loaded (and attached) by its naming conventions: name -> (type, fd, verifier stats)."""
        return {name: (auto_attach_type(name) or "unknown", self.bpf.funcs[name.encode()].fd, self.stats.get(name, ""))
                for name in self._conventions}

    def convention_attached(self) -> list[str]:
        return list(self._conventions)

    def eager(self, contexts: dict[str, str | None], loaded) -> list[tuple[str, str]]:
        """Functions whose context parameter names their type load with the cell, so the
        verifier speaks in it, not at the first %bpf run (__sk_buff is left for later: tc
        or socket filter is the user's choice)."""
        functions = set(self.functions())
        return [(f, t) for f, t in contexts.items() if f in functions and f not in loaded and t not in (None, "sched_cls")]

    def load_program(self, func: str, ptype: str, qualname: str) -> tuple[int, str, str]:
        """(fd, what libbcc said, the verifier's statistics) of FUNC loaded as PTYPE."""
        from ..verifier import collect_bcc
        with captured_fd2() as log, collect_bcc() as stats:
            try:
                # XDP with expected attach type BPF_XDP, as libbpf's SEC("xdp") loads it: this kernel
                # refuses tail calls between programs of different attach types.
                fn = self.bpf.load_func(func.encode(), PROG_TYPES[ptype],
                                        attach_type=libbpf.BPF_XDP if ptype == "xdp" else -1)
                error = None
            except Exception as e:  # BCC raises bare Exception
                error = e
        if error is not None:
            said = f"{error}\n{log[0]}"
            raise (privilege_problem(f"{qualname} (as {ptype})", ptype, said)
                   or fd_limit_problem(qualname, said)
                   or verifier_error(f"{qualname} (as {ptype})", log[0], str(error).split(": ")[-1], self.origin,
                                     self.syntax.source, columns=self.columns, syntax=self.syntax)) from None
        return fn.fd, log[0], stats.get(func, "")

    def attach_sections(self, module, skip: set[str], slotted: set[str]) -> list:
        return []  # BCC attached its naming conventions at compile time

    def close(self) -> None:
        if self.bpf is None:
            return
        with captured_fd2():
            self.bpf.cleanup()
        # BCC registers cleanup with atexit, which would keep the object alive forever.
        with contextlib.suppress(Exception):
            atexit.unregister(self.bpf.cleanup)
        self.bpf = None


def compile_cell(session, req, syntax, slot_index, resolved_slots, site_base) -> tuple[BccObject, str]:
    """Compile REQ's cell with BCC for SESSION: (the object, what libbcc and clang said)."""
    from ..verifier import collect_bcc
    arrays = {n: (a.pin, a.size, a.counter_pin) for n, a in session.arrays.items()}
    sites = (session._sites_pin, site_base) if site_base is not None else None
    paths = {"pins": session._path_maps.pins} if req.paths and session._path_maps and sites else None
    with collect_bcc() as stats:
        bpf, log, columns = load_bcc(syntax, req.origin, arrays, slot_index, req.cflags, req.count_calls,
                                     req.verbose, can_load=session.privileges.can_load,
                                     include_dirs=req.include_dirs, sites=sites, paths=paths,
                                     cursor=session._cursor[1] if session._cursor else None)
    return BccObject(bpf, columns, req.origin, syntax, dict(stats)), log


def check_tools() -> None:
    """BCC itself is checked when the session prepares the environment."""


def convention_targets(syntax):
    """The targets BCC's naming conventions attach (kprobe__..., RAW_TRACEPOINT_PROBE, ...)."""
    from ..attach import convention_targets as targets
    return targets(syntax.contexts)
