"""The BCC backend: a cell in BCC's C dialect, compiled by libbcc (with the
front end's instrumentation), its functions loaded one by one, each with the
program type its use demands."""

from __future__ import annotations

import atexit
import contextlib
import ctypes as ct
import os
import re
import tempfile

from ..c.diagnostics import compile_error, verifier_error
from ..c.instrument import ColumnMap, bcc_text, const_site_keys
from ..errors import BpfError, EnvironmentProblem, UsageProblem
from ..kernel import libbpf
from ..kernel.lock import captured_fd2
from ..kernel.privileges import fd_limit_problem, privilege_problem
from ..kernel.progtypes import PROG_TYPES, auto_attach_type
from .interface import LoadContext, MapHandle


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
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # kernel struct members read at another kernel's offsets (bcc_offsets.py)
    # line -> (array, index): call sites that count in the sites map for a constant slot (const_site_keys)
    implied_sites: dict[int, tuple[str, int]] = {}

    @property
    def pins(self) -> dict[str, bool]:
        return {}  # BPF_TABLE_PINNED tables name their own paths; bpfmagic's are the session's

    def __init__(self, bpf, columns, origin: str, syntax, stats: dict | None = None):
        self.bpf = bpf
        self.columns = columns  # where the compiled text puts the cell's lines and columns: compile and verifier messages
        self.origin, self.syntax = origin, syntax
        self.stats = stats or {}  # function -> the verifier's statistics of what loaded with the object
        # BCC's funcs grows with every load_func: what its naming conventions loaded is what is there now.
        self._conventions = [name.decode() for name in bpf.funcs] if bpf is not None else []

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
        return {name: (auto_attach_type(name) or "unknown", self.bpf.funcs[name.encode()].fd, self.stats.get(name, "")) for name in self._conventions}

    def convention_attached(self) -> list[str]:
        return list(self._conventions)

    def eager(self, contexts: dict[str, str | None], loaded) -> list[tuple[str, str]]:
        """Functions whose context parameter names their type load with the cell, so the
        verifier speaks in it, not at the first %bpf run (__sk_buff is left for later: tc
        or socket filter is the user's choice)."""
        functions = set(self.functions())
        return [(f, t) for f, t in contexts.items() if f in functions and f not in loaded and t not in (None, "sched_cls")]

    def left_unloaded(self, func: str, qualname: str) -> str | None:
        return None  # BCC loads each function on demand: none is held back

    def load_program(self, func: str, ptype: str, qualname: str) -> tuple[int, str, str]:
        """(fd, what libbcc said, the verifier's statistics) of FUNC loaded as PTYPE."""
        from .bcc_stats import collect_bcc

        with captured_fd2() as log, collect_bcc() as stats:
            try:
                # XDP with expected attach type BPF_XDP, as libbpf's SEC("xdp") loads it: this kernel
                # refuses tail calls between programs of different attach types.
                fn = self.bpf.load_func(func.encode(), PROG_TYPES[ptype], attach_type=libbpf.BPF_XDP if ptype == "xdp" else -1)
                error = None
            except Exception as e:  # BCC raises bare Exception
                error = e
        if error is not None:
            said = f"{error}\n{log[0]}"
            raise (
                privilege_problem(f"{qualname} (as {ptype})", ptype, said)
                or fd_limit_problem(qualname, said)
                or verifier_error(
                    f"{qualname} (as {ptype})",
                    log[0],
                    str(error).split(": ")[-1],
                    self.origin,
                    self.syntax.source,
                    columns=self.columns,
                    syntax=self.syntax,
                )
            ) from None
        return fn.fd, log[0], stats.get(func, "")

    def attach_sections(self, module, skip: set[str], slotted: set[str]) -> list:
        return []  # BCC attached its naming conventions at compile time

    # -- maps, records, globals (backends/__init__.py)
    cell_lines = False  # BCC compiles its own lines in front of the cell (and its rewrites may add some)

    def cell_line(self, line: int) -> int:
        return self.columns.cell_line(line) if self.columns is not None else line

    def map_handle(self, name: str) -> MapHandle:
        table = self.table(name)
        info = libbpf.fdinfo(table.map_fd)
        return MapHandle(
            name,
            table.map_fd,
            int(info["map_type"]),
            int(info["key_size"]),
            int(info["value_size"]),
            int(info["max_entries"]),
            getattr(table, "Key", None),
            getattr(table, "sLeaf", None) or getattr(table, "Leaf", None),
        )

    def btf(self):
        return None  # libbcc keeps its BTF to itself: layouts come from the ctypes Key/Leaf

    def event_fields(self, table: str) -> list[str]:
        """libbcc's "name#ctype" fields of the record type BCC inferred for TABLE."""
        lib, name = _libbcc(), table.encode()
        module = self._module()
        return [lib.bpf_perf_event_field(module, name, i).decode() for i in range(lib.bpf_perf_event_fields(module, name))]

    def perf_refusal(self, table: str) -> None:
        return None

    def open_perf_buffer(self, table: str, on_event, on_lost, page_cnt: int) -> "BccPerfBuffer":
        return BccPerfBuffer(self.table(table), on_event, on_lost, page_cnt)

    def loss_counter(self, table: str) -> tuple[int, int, int] | None:
        from ..c.instrument import LOST_COUNTER
        from ..c.records import event_tables

        tables = event_tables(self.syntax.source)
        if table not in tables:
            return None
        try:
            return self.map_fd(LOST_COUNTER), tables.index(table), len(tables)
        except KeyError:  # compiled without the rewrite
            return None

    def global_sections(self) -> dict[str, str]:
        return {}

    def global_variables(self) -> None:
        return None  # BCC has no globals of its own

    def close(self) -> None:
        if self.bpf is None:
            return
        with captured_fd2():
            self.bpf.cleanup()
        # BCC registers cleanup with atexit, which would keep the object alive forever.
        with contextlib.suppress(Exception):
            atexit.unregister(self.bpf.cleanup)
        self.bpf = None


class BccPerfBuffer:
    """BCC's per-CPU perf readers of one perf event table: ON_EVENT(cpu, data, size)
    and ON_LOST(count) run from consume()."""

    def __init__(self, table, on_event, on_lost, page_cnt: int):
        self._lib = _libbcc()
        self.table = table
        table.open_perf_buffer(on_event, page_cnt=page_cnt, lost_cb=on_lost)
        self._readers = [r for (tid, _cpu), r in table.bpf.perf_buffers.items() if tid == id(table)]
        self._reader_array = (ct.c_void_p * len(self._readers))(*self._readers)

    def fds(self) -> list[int]:
        return [self._lib.perf_reader_fd(r) for r in self._readers]

    def consume(self) -> None:
        self._lib.perf_reader_consume(len(self._readers), self._reader_array)

    def close(self) -> None:
        for cpu in list(self.table._open_key_fds):
            with contextlib.suppress(Exception):
                del self.table[cpu]  # frees BCC's reader for that CPU
        self._readers, self._reader_array = [], None


def compile_cell(ctx: LoadContext, req, syntax) -> tuple[BccObject, str]:
    """Compile REQ's cell with BCC in CTX's session: (the object, what libbcc and clang said).
    ``ctx.bound``: fentry/fexit/freplace targets, which BCC cells cannot have (refused before)."""
    from .bcc_stats import collect_bcc

    slot_index = ctx.slot_index
    arrays = {n: (a.pin, a.size, a.counters) for n, a in ctx.arrays.items()}
    sites = (ctx.sites, ctx.site_base) if ctx.site_base is not None else None
    path_maps = ctx.path_maps
    paths = {"pins": path_maps.pins, "rec_fd": path_maps.rec_fd, "rows": path_maps.rows} if path_maps is not None and sites else None
    implied = const_site_keys(syntax, slot_index, {n: a[1] for n, a in arrays.items()}) if req.count_calls and sites else {}
    from . import bcc_offsets

    # The kernel struct offsets the cell reads are asked of clang while libbcc compiles it.
    offsets = bcc_offsets.start(syntax, req.origin, req.cflags, req.include_dirs)
    try:
        with collect_bcc() as stats:
            bpf, log, columns = load_bcc(
                syntax,
                req.origin,
                arrays,
                slot_index,
                req.cflags,
                req.count_calls,
                req.verbose,
                can_load=ctx.can_load,
                include_dirs=req.include_dirs,
                sites=sites,
                paths=paths,
                cursor=ctx.cursor[1] if ctx.cursor else None,
                implied=implied,
            )
    except BaseException:
        if offsets is not None:
            offsets.cancel()
        raise
    obj = BccObject(bpf, columns, req.origin, syntax, dict(stats))
    obj.implied_sites = implied
    if offsets is not None:
        obj.warnings = tuple(offsets.warnings())
    return obj, log


def read_source(source: str, origin: str):
    """The cell's syntax and what the cell says about reading it (nothing, for BCC). A legacy
    map definition (struct bpf_map_def SEC("maps")) is libbpf's, which BCC never loads: one line says so."""
    from ..c import analyse
    from ..c.legacy_maps import find_legacy_maps

    legacy = find_legacy_maps(source, origin)
    if legacy:
        first = legacy[0]
        raise UsageProblem(
            f'{origin}:{first.line}: {first.name} is a legacy libbpf map definition (struct bpf_map_def SEC("maps")), which BCC '
            f"does not load: run the cell with --core (bpfmagic rewrites it into a BTF-defined map), or declare it the BCC way "
            f"(BPF_PROG_ARRAY({first.name}, N), BPF_HASH({first.name}, KEY, VALUE, N), ...)"
        )
    return analyse(source), []


def check_tools() -> None:
    """BCC itself is checked when the session prepares the environment."""


def convention_targets(syntax):
    """The targets BCC's naming conventions attach (kprobe__..., RAW_TRACEPOINT_PROBE, ...)."""
    from ..kernel.attach import convention_targets as targets

    return targets(syntax.contexts)


# ------------------------------------------------------------ compiling a cell


def load_bcc(
    syntax,
    origin: str,
    arrays: dict[str, tuple],
    slot_index,
    cflags: list[str],
    count_calls: bool,
    verbose: bool,
    can_load: bool = True,
    include_dirs=(),
    sites=None,
    paths=None,
    cursor=None,
    implied=None,
):
    """Compile the cell with BCC, instrumented for the session (shared arrays,
    SLOT, call and loss counters); BCC also loads and attaches the functions
    its naming conventions name. Returns (BPF object, what libbcc/clang wrote
    to fd 2, the column map of the instrumented call sites); failures raise
    errors that point at the cell."""
    from bcc import BPF

    text, header, columns = bcc_text(syntax, arrays, slot_index, count_calls, sites, paths, cursor, implied)
    debug = 0x10 if verbose else 0  # BCC's DEBUG_BPF_REGISTER_STATE: the full verifier log
    # The header lives in a directory only this process can enter, for the compile only.
    with tempfile.TemporaryDirectory(prefix="bpfmagic-bcc-") as tmp:
        header_path = os.path.join(tmp, "bpfmagic.h")
        with open(header_path, "w") as f:
            f.write(header)
        flags = [*cflags, *(f"-I{os.path.abspath(d)}" for d in include_dirs), "-include", header_path]
        # libbcc's LLVM ends the process on some errors (exit, abort): where the cell has what
        # can cause that (c/hazards.py), find out in a child first; other cells compile once.
        from ..c.hazards import codegen_hazards

        if codegen_hazards(syntax.source):
            from . import trial_compile

            trial_compile.check_compile_survives(text.encode(), flags, origin, syntax.source, key=[text, header, *cflags, *map(str, include_dirs)])
        with captured_fd2() as log:
            try:
                bpf = BPF(text=text.encode(), cflags=flags, debug=debug)
                error = None
            except Exception as e:  # BCC raises bare Exception
                bpf, error = None, e
    if error is not None:
        raise bcc_error(error, log[0], syntax.source, origin, can_load, columns, syntax) from None
    return bpf, log[0], columns


def bcc_error(
    error: Exception, stderr: str, source: str, origin: str, can_load: bool = True, columns: ColumnMap | None = None, syntax=None
) -> BpfError:
    """The error a failed BPF(text=...) means, from BCC's exception and fd-2 output."""
    from ..errors import AttachError

    text = str(error)
    auto = re.search(r"Failed to load BPF program b?'?(\w+)", text)
    problem = privilege_problem(
        f"module {origin}" + (f", function {auto[1]}" if auto else ""), auto_attach_type(auto[1]) if auto else None, f"{text}\n{stderr}"
    )
    if problem is not None:
        return problem
    fd_limit = fd_limit_problem(f"module {origin}", f"{text}\n{stderr}")
    if fd_limit is not None:
        return fd_limit
    if "Failed to load BPF program" in text:
        func = re.search(r"program b?'?([\w]+)", text)
        return verifier_error(func[1] if func else "a program", stderr, text.split(": ")[-1], origin, source, columns=columns, syntax=syntax)
    if "attach" in text.lower():
        return AttachError(f"{text}\n{stderr.strip()}".strip(), stderr)
    if "Need super-user" in text and not can_load:
        return EnvironmentProblem("loading BPF programs needs root or CAP_BPF", stderr)
    return compile_error(stderr, source, origin, columns, syntax)
