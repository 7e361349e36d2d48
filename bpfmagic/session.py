"""The Session owns every kernel object bpfmagic creates: modules (BCC
objects and their programs), attachments and the session-wide prog arrays.
The magics and the Python API both go through it.

Long because: the registry and the load/re-run transaction share their rollback state;
the next step is moving slots and stats views out (see ARCHITECTURE.md)."""
from __future__ import annotations

import contextlib
import itertools
import keyword
import os
import re
import shlex
import threading
import time
import weakref
from dataclasses import dataclass

from . import backends
from . import progarray as prog_arrays
from .c import CellSyntax, analyse
from .c.analysis import SKB_TYPES
from .c.source_files import check_includes, check_source_size, read_source_file
from .errors import AttachError, BpfError, EnvironmentProblem, SlotError, UsageProblem
from .kernel import libbpf, pins
from .kernel.attach import Attachment, Target, check_event_exists, check_servable, parse_target
from .kernel.attach import attach as attach_target
from .kernel.progtypes import PROG_TYPE_NAMES, PROG_TYPES, auto_attach_type, prog_type_name, prog_type_value

PIN_ROOT = pins.PIN_ROOT
_SLOT_SPEC_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*\[\s*([^\]\s]+)\s*\]\s*$")
_serials = itertools.count(1)
# calls/taken/missed: tail calls made into each slot (counted by the rewritten
# ARRAY.call); run_cnt/run_time_ns: the kernel's stats, which count a program
# only when it runs as an entry point (attached or test-run), never when it
# is reached by a tail call.
SLOT_COLUMNS = ["array", "index", "key", "program", "type", "prog_id", "calls", "taken", "missed",
                "run_cnt", "run_time_ns"]
LS_COLUMNS = ["module", "function", "type", "prog_id", "attached", "slots", "tables", "insns_processed",
              "states", "verify_us", "stack"]


def parse_slot_spec(spec: str) -> tuple[str, str]:
    """'progs[write]' -> ('progs', 'write')."""
    m = _SLOT_SPEC_RE.match(spec)
    if not m:
        raise SlotError(f"bad slot {spec!r}: write ARRAY[KEY], e.g. progs[3] or progs[write]")
    return m[1], m[2]


@dataclass(eq=False)
class Program:
    """One loaded BPF program of a module."""

    module: "Module"
    name: str
    type: str
    fd: int
    verifier_log: str = ""  # the verifier's statistics lines (log level 4) from the load

    @property
    def verifier(self):
        """The verifier's cost: instructions processed (of the 1,000,000 limit), states,
        verification time, stack depth per subprogram (verifier.VerifierStats)."""
        from .experiments.verifier import stats_of
        return stats_of(self)

    def dump(self, mode: str = "xlated", source: bool = True) -> str:
        """The program's code: ``xlated`` (the BPF the kernel runs) or ``jited`` (x86), with the
        cell's source lines interleaved (BTF line info) and tail-call sites marked."""
        from .experiments.dump import dump
        return dump(self, mode=mode, source=source)

    @property
    def qualname(self) -> str:
        return f"{self.module.name}.{self.name}"

    def info(self) -> dict[str, str]:
        return libbpf.fdinfo(self.fd)

    @property
    def prog_id(self) -> int:
        return int(self.info()["prog_id"])

    @property
    def run_cnt(self) -> int:
        return int(self.info().get("run_cnt", 0))

    @property
    def run_time_ns(self) -> int:
        return int(self.info().get("run_time_ns", 0))

    def __repr__(self) -> str:
        return f"<Program {self.qualname} {self.type} fd={self.fd}>"


class Module:
    """A loaded cell: its BCC object, programs, attachments and slots.
    Tables are reached as ``module["table"]`` (BCC table objects)."""

    def __init__(self, session: "Session", name: str, syntax: CellSyntax, obj, origin: str):
        self.session = session
        self.name = name
        self.syntax = syntax  # what the C front end read in the cell
        self.source = syntax.source
        self.origin = origin
        self.object = obj  # what a backend loaded (backends/): the same interface for BCC and --core
        self.programs: dict[str, Program] = {}
        self.attachments: list[Attachment] = []
        self.auto_attached: list[str] = []  # functions BCC attached by naming convention
        self.slots: list[tuple[str, int]] = []  # (array, index) this module filled
        self.compile_log = ""
        self.contexts = syntax.contexts
        self.columns = None  # BCC: column shifts of instrumented call sites (for verifier messages)
        self.new_slot_names: list[str] = []  # "array[name]=index" this cell named first (a typo shows here)
        self.notes: list[str] = []  # what the cell should say besides its summary
        self.site_base: int | None = None  # this module's call-site counters: Session.site_counts
        self.paths = False  # loaded with path recording
        self.slot_notes: list[str] = []  # what a re-run did to slots the old version held (refilled / emptied)
        self.closed = False

    # -- contents
    @property
    def bpf(self):
        """BCC's own BPF object of a BCC module (None for --core): for what bpfmagic does not wrap."""
        return self.object.bpf if self.object is not None and self.object.kind == "bcc" else None

    @property
    def core(self):
        """libbpf's object (backends.libbpf.CoreObject) of a --core module, else None."""
        return self.object if self.object is not None and self.object.kind == "core" else None

    @property
    def functions(self) -> list[str]:
        names = self.object.functions() if self.object is not None else []
        return names or list(self.programs)

    @property
    def tables(self) -> list[str]:
        return self.object.tables() if self.object is not None and not self.closed else []

    @property
    def globals(self):
        """Global variables of a --core module: ``m.globals["count"]``, ``m.globals["selector"] = 2``,
        ``m.globals.df()``."""
        from .globals import Globals
        return Globals(self)

    @property
    def streams(self) -> dict:
        """The streams of this module's event tables, by table name."""
        return self.session.streams.of(self)

    def stats(self, since=None):
        """Session.stats() rows of this module's programs."""
        df = self.session.stats(since=since)
        return df[df["module"] == self.name].reset_index(drop=True)

    def __getitem__(self, table: str):
        if table not in self.tables:
            raise KeyError(f"{self.name} has no table {table!r} (tables: {', '.join(self.tables) or 'none'})")
        return self.object.table(table)

    def __contains__(self, table: str) -> bool:
        return table in self.tables

    def map(self, table: str):
        """A view of map TABLE: .df(), [key], [key] = value, del, .clear(), .from_df() (maps.MapView);
        --core globals: map("bss"), map("data"), map("rodata")."""
        from .maps import view_of
        if self.closed:
            raise UsageProblem(f"module {self.name} was unloaded: its maps are gone")
        return view_of(self.session, self, table)

    def df(self, table: str, sum: bool = False):
        """Map TABLE as a DataFrame (per-CPU values one column per CPU, or summed with ``sum``)."""
        return self.map(table).df(sum=sum)

    def program(self, name: str, type: str | None = None) -> Program:
        """The loaded program NAME, loading it now if needed (with ``type``,
        else the type its context parameter implies)."""
        return self.session._load_program(self, name, type)

    def __repr__(self) -> str:
        progs = ", ".join(f"{p.name}:{p.type}" for p in self.programs.values()) or "no programs loaded"
        state = "unloaded" if self.closed else "loaded"
        return f"<bpfmagic Module {self.name} ({state}): {progs}; tables: {', '.join(self.tables) or '-'}>"

    # -- teardown (called by the session)
    def _free(self) -> None:
        for att in self.attachments:
            att.detach()
        self.attachments.clear()
        if self.object is not None:
            self.object.close()
        self.programs.clear()
        self.closed = True


class Session:
    """Registry and lifecycle of everything bpfmagic loads into the kernel.

    >>> s = Session()
    >>> m = s.load("disp", source, attach={"dispatch": "raw_tracepoint:sys_enter"},
    ...            slots={"progs[write]": "on_write"})
    >>> s.slots(); s.close()
    """

    def __init__(self, stats: bool = True, prepare: bool = True):
        self.started = time.monotonic()
        self.modules: dict[str, Module] = {}
        self.arrays: dict[str, prog_arrays.ProgArray] = {}
        self._lock = threading.RLock()
        self._serial = next(_serials)
        self._pin_dir: str | None = None
        self._stats_fd: int | None = None
        self._sites_fd: int | None = None  # per call site counters (site_counts), made on first use
        self._sites_pin = ""
        self._next_site = 0
        self._site_owners: list = []  # (base, lines, syntax, module name) of every load with site ids
        self._path_maps = None  # paths.PathMaps once enable_paths() ran
        self._cursor: tuple[int, str] | None = None  # (fd, pin) of chains' per-CPU position (chain.py)
        self.chains: dict = {}  # name -> chain.Chain
        self.paths_enabled = False
        self.closed = False
        # Extension points: callables run with a Module after it is switched in / before it is freed.
        self.on_load: list = []
        self.on_unload: list = []
        from .events.stream import StreamManager  # numpy: imported only once a Session exists
        self.streams = StreamManager(self)  # event tables -> DataFrames, started/stopped by the hooks above
        self.env = _prepare_environment() if prepare else {}
        # env is imported late: `python -m bpfmagic.kernel.env` must not find it loaded already
        from .kernel import env
        self.privileges = env.privileges()
        if self.privileges.can_load:
            _claim_pins()
            if stats:
                with contextlib.suppress(EnvironmentProblem):  # counts stay 0; `%bpf stats --on` says why
                    self.enable_stats()
        self._finalizer = weakref.finalize(self, Session._close_at_exit, weakref.ref(self))

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _close_at_exit(ref) -> None:
        session = ref()
        if session is not None:
            session.close()

    def _require_privileges(self) -> None:
        p = self.privileges
        if not p.can_load:
            raise EnvironmentProblem(
                f"loading BPF programs needs root or CAP_BPF (with CAP_PERFMON for tracing and "
                f"CAP_NET_ADMIN for XDP/tc); this process has {p.describe()}. Start Jupyter as root, "
                f"or grant the capabilities: setcap cap_bpf,cap_perfmon,cap_net_admin+ep $(readlink -f $(which python3))")
        if self.closed:
            raise UsageProblem("this Session is closed; create a new one")

    def pin_dir(self) -> str:
        """/sys/fs/bpf/bpfmagic/<pid>/s<N>: where this session pins its arrays
        (pins.py: a trusted root, a directory locked for the process's life)."""
        if self._pin_dir is None:
            from .kernel import env
            status = env.ensure_bpffs()
            if not env.is_mounted("/sys/fs/bpf", "bpf"):
                raise EnvironmentProblem(f"bpffs is not mounted and could not be ({status}); "
                                         "run: mount -t bpf bpf /sys/fs/bpf")
            self._pin_dir = pins.process_dir().session_dir(self._serial)
        return self._pin_dir

    def enable_stats(self) -> None:
        """Keep kernel run-time stats (run_cnt, run_time_ns) on while the session holds them.
        (They cost the kernel a clock read per program run, machine-wide.)"""
        if self._stats_fd is None:
            try:
                self._stats_fd = libbpf.enable_stats()
            except OSError as e:
                raise EnvironmentProblem(f"the kernel refused to turn run-time stats on ({e.strerror}); "
                                         "it needs CAP_SYS_ADMIN or root") from None

    def disable_stats(self) -> None:
        if self._stats_fd is not None:
            os.close(self._stats_fd)
            self._stats_fd = None

    @property
    def stats_enabled(self) -> bool:
        return self._stats_fd is not None

    # ------------------------------------------------------------ arrays
    def progarray(self, name: str, size: int, type: str | None = None, keys: str | None = None,
                  slots=None) -> prog_arrays.ProgArray:
        """Create the session array NAME (or return it when it exists with the same size).
        ``slots``: names for indices, "a,b,c" / ["a", "b"] (0, 1, ...) or {"a": 3}."""
        self._require_privileges()
        # Every argument is checked before anything is created or changed.
        prog_arrays.check_name("array", name, prog_arrays.MAX_ARRAY_NAME)
        if not isinstance(size, int) or not 1 <= size <= prog_arrays.MAX_ARRAY_SIZE:
            raise UsageProblem(f"array {name}: size must be an integer between 1 and {prog_arrays.MAX_ARRAY_SIZE}")
        if type is not None:
            try:
                type = prog_type_name(PROG_TYPE_NAMES[prog_type_value(type)])
            except ValueError as e:
                raise UsageProblem(f"array {name}: {e}") from None
        if keys not in (None, "syscalls"):
            raise UsageProblem(f"array {name}: keys can be 'syscalls' (got {keys!r})")
        names = _slot_names(slots)
        if names and (keys == "syscalls" or (name in self.arrays and self.arrays[name].keys == "syscalls")):
            raise SlotError(f"{name} is keyed by syscall names; it takes no --slots")
        for key, index in names.items():
            prog_arrays.check_name("slot", key)
            if index is not None and not 0 <= index < size:
                raise SlotError(f"{name}[{key}={index}]: index out of range 0..{size - 1}")
        with self._lock:
            existing = self.arrays.get(name)
            if existing is not None:
                if existing.size != size:
                    raise SlotError(f"array {name} exists with {existing.size} slots, not {size}; "
                                    f"`%bpf unload {name}` or `%bpf reset` first")
                if type is not None and existing.owner_type and existing.owner_type != type:
                    raise SlotError(f"array {name} already holds {existing.owner_type} programs, not {type}")
                if keys is not None and keys != existing.keys and (existing.names or existing.keys is not None):
                    if not self._rekey_to_syscalls(existing, keys):
                        named = ", ".join(f"{n}={i}" for n, i in existing.names.items()) or existing.keys
                        raise SlotError(f"array {name} already has keys ({named}); run `%bpf progarray {name} "
                                        f"{size} --keys {keys}` before the cells that use it, or `%bpf reset`")
                for key, index in names.items():
                    owner = next((n for n, i in existing.names.items() if i == index and n != key), None)
                    if index is not None and owner:
                        raise SlotError(f"{name}[{index}] is already named {owner!r}")
                array = existing
                if keys is not None:
                    array.keys = keys
            else:
                try:
                    pins = self.pin_dir()
                except PermissionError as e:  # said as what it is, not a traceback
                    raise EnvironmentProblem(
                        f"array {name}: cannot create the pin directory "
                        f"{e.filename if os.path.isabs(str(e.filename or '')) else PIN_ROOT} "
                        f"({e.strerror}); session prog arrays are pinned in bpffs, and this process has "
                        f"{self.privileges.describe()}. Run Jupyter as root, or have root create "
                        f"{PIN_ROOT} owned by this user") from None
                array = prog_arrays.create(name, size, os.path.join(pins, name), type, keys)
                self.arrays[name] = array
            if type is not None:
                array.declared_type = type
            for key, index in names.items():
                if index is None:
                    array.resolve(key, allocate=True)
                else:
                    array.names[key] = index
            return array

    def _rekey_to_syscalls(self, array: prog_arrays.ProgArray, keys: str) -> bool:
        """Switch an array whose slot names are all syscall names to syscall keys,
        moving each named program to its syscall's index (DESIGN's own example
        slots progs[write] first and asks for syscall keys after). Refused (False)
        when a loaded program has a name's old index compiled in (SLOT()), or
        when the move would overwrite a slot."""
        numbers = prog_arrays.syscall_numbers()
        if keys != "syscalls" or array.keys is not None or not array.names:
            return False
        if any(n not in numbers or numbers[n] >= array.size for n in array.names):
            return False
        if any((r.array, r.key) == (array.name, n) for m in self.modules.values() for r in m.syntax.slot_refs
               for n in array.names):
            return False
        moves = {array.names[n]: numbers[n] for n in array.names}
        if any(new in array.entries and new not in moves for new in moves.values()):
            return False
        programs = {old: array.entries.get(old) for old in moves}
        for old, new in moves.items():
            if programs[old] is not None and old != new:
                array.put(new, programs[old])
                programs[old].module.slots.append((array.name, new))
        for old, new in moves.items():
            if programs[old] is not None and old != new and old not in moves.values():
                array.clear(old)
                with contextlib.suppress(ValueError):
                    programs[old].module.slots.remove((array.name, old))
        array.names.clear()
        array.keys = keys
        return True

    def array(self, name: str) -> prog_arrays.ProgArray:
        try:
            return self.arrays[name]
        except KeyError:
            known = ", ".join(self.arrays) or "none yet"
            raise SlotError(f"no prog array {name!r} in this session (arrays: {known}); declare it with "
                            f"BPF_PROG_ARRAY({name}, N) in a cell or `%bpf progarray {name} N`") from None

    # ------------------------------------------------------------ loading
    def load(self, name: str, source: str = "", attach=None, slots=None, cflags=(), file: str | None = None,
             verbose: bool = False, core: bool = False, origin: str | None = None,
             count_tail_calls: bool = True, globals: dict | None = None) -> Module:
        """Compile and load SOURCE as module NAME, attach and slot its programs.

        attach: {"func": "raw_tracepoint:sys_enter"} (a value may be a list of targets)
        slots:  {"progs[write]": "func"}
        Re-loading NAME replaces the module only once the new version is fully
        loaded; on failure the previous version keeps running.
        count_tail_calls: count calls and fall-throughs per slot (False for
        benchmarks that must measure the bare tail call).
        globals: (--core) global variables set before load, ``const volatile`` ones included.
        """
        prog_arrays.check_name("module", name)
        if keyword.iskeyword(name):
            raise UsageProblem(f"bad module name {name!r}: a Python keyword cannot name the module object")
        self._require_privileges()
        if file is not None:
            source, origin = _with_file(file, source)
        origin = origin or name
        attach_specs = _attach_specs(attach)
        slot_specs = [(parse_slot_spec(spec), func) for spec, func in (slots or {}).items()]
        if isinstance(cflags, str):  # "-DA=1 -DB=2": several flags in one string, as on a command line
            cflags = shlex.split(cflags)
        # Before anything reads the source's includes (preprocessor, compiler): nothing that can block.
        check_source_size(source, origin)
        check_includes(source, origin, os.path.dirname(os.path.abspath(file)) if file else None, list(cflags))
        if globals and not core:
            raise UsageProblem("globals= (--set) sets global variables of --core cells; BCC has no such globals")
        req = _LoadRequest(name, source, origin, attach_specs, slot_specs, list(cflags), verbose,
                           count_tail_calls, core, file, dict(globals or {}), self.paths_enabled)
        with self._lock:
            old = self.modules.get(name)
            try:
                return self._load(req, old)
            except BpfError as e:
                if old is not None:
                    e.message += (f"\n\n[bpfmagic] the new version of {name} was not loaded; the previous "
                                  f"version is still loaded, attached and slotted.")
                    e.args = (e.message,)
                raise

    def _load(self, req: "_LoadRequest", old: Module | None) -> Module:
        name, source, origin, attach_specs = req.name, req.source, req.origin, req.attach
        backend = backends.for_cell(req.core)
        backend.check_tools()
        for func, target in attach_specs:
            check_servable(parse_target(target))  # before any compiling
        syntax = analyse(source)
        if not syntax.has_content:
            raise UsageProblem(f"{origin} has no C code: write the program below the %%bpf line "
                               "(or load a file with --file PATH)")
        for func, target in backend.convention_targets(syntax):  # what BCC attaches by names: the same checks
            check_servable(target)
            check_event_exists(target)
        new_arrays: list[str] = []
        pending: dict[str, dict[str, int]] = {}
        module = None
        attachments: list[Attachment] = []
        retargeted: list[tuple[Attachment, Program]] = []
        replaced: list[tuple[prog_arrays.ProgArray, int, Program | None]] = []
        try:
            # Session arrays this cell declares: shared if they exist, created otherwise.
            for array_name, size, line in _declared_sizes(syntax, req):
                prog_arrays.check_name("array", array_name, prog_arrays.MAX_ARRAY_NAME)
                have = self.arrays.get(array_name)
                if have is not None:
                    if have.size != size:
                        raise SlotError(f"{origin}:{line}: prog array {array_name} has {size} slots in this cell; the "
                                        f"session's array {array_name} has {have.size} slots; declare it with {have.size}, "
                                        f"or free it first: {self._unload_advice(array_name)}")
                elif array_name not in new_arrays:
                    self.progarray(array_name, size)
                    new_arrays.append(array_name)

            # Stages of chains described as data (CHAIN_NEXT(ctx, NAME)): the position map, and
            # the chain's array when the chain is not made yet (chain.py sizes it the same).
            chained = {t.array for t in syntax.tail_calls if t.kind == "chain"}
            if chained:
                from .experiments.chain import DEFAULT_CAPACITY
                self.cursor_map()
                for array_name in sorted(chained - set(self.arrays)):
                    self.progarray(array_name, 2 * DEFAULT_CAPACITY)
                    new_arrays.append(array_name)

            def slot_index(array_name: str, key: str) -> int:
                array = self.array(array_name)
                return array.resolve(key, allocate=True, pending=pending.setdefault(array_name, {}))

            for ref in syntax.slot_refs:
                slot_index(ref.array, ref.key)
            resolved_slots = [(self.array(a), slot_index(a, k), func) for (a, k), func in req.slots]
            site_base = self._alloc_sites(syntax, req)
            obj, log = backend.compile_cell(self, req, syntax, slot_index, resolved_slots, site_base)
            module = Module(self, req.name, syntax, obj, req.origin)
            module.compile_log = log
            for fname, (ptype, fd, stats) in obj.preloaded().items():
                module.programs[fname] = Program(module, fname, ptype, fd, stats)
            module.auto_attached += obj.convention_attached()
            module.site_base = site_base
            module.paths = req.paths and site_base is not None

            self._adopt_initialized_slots(module, replaced)
            # Load what is attached and slotted, with the type its use demands.
            for func in [f for f, _ in attach_specs] + [f for _, _, f in resolved_slots]:
                _require_function(module, func)
            for func, target in attach_specs:
                self._load_program(module, func, parse_target(target).prog_type, why=f"attached to {target}")
            for array, index, func in resolved_slots:
                self._load_program(module, func, self._slot_type(array, module, func), array=array)
            # The rest whose context parameter names its type load now, so the verifier
            # speaks in this cell, not at the first %bpf run (__sk_buff is left for later:
            # tc or socket filter is the user's choice).
            for func, ptype in obj.eager(module.contexts, module.programs):
                self._load_program(module, func, ptype)

            # Switch over: slot the new version, then attach it (an old link is retargeted in one step):
            # a chain is complete before its entry sees its first event.
            for array, index, func in resolved_slots:
                program = module.programs[func]
                replaced.append((array, index, array.entries.get(index)))
                array.put(index, program)
                module.slots.append((array.name, index))
            self._refill_slots(old, module, replaced)
            for func, target_text in attach_specs:
                target = parse_target(target_text)
                program = module.programs[func]
                old_att = _find_link(old, target)
                if old_att is not None:
                    previous = old_att.program
                    if old_att.retarget(program):
                        retargeted.append((old_att, previous))
                        module.attachments.append(old_att)
                        continue
                att = attach_target(program, target, obj.attach_handle)
                attachments.append(att)
                module.attachments.append(att)
            # Programs whose SEC() names their target (tp_btf/..., raw_tp/...) attach by themselves
            # (libbpf); a slotted program keeps that attachment too: only -a replaces it.
            slotted = {f for _, _, f in resolved_slots} | {p.name for a in self.arrays.values()
                                                            for p in a.entries.values() if p.module is module}
            made = obj.attach_sections(module, {f for f, _ in attach_specs}, slotted)
            attachments += made
            module.attachments += made
        except BaseException:
            # Roll back: previous slot occupants, links, new attachments, the new module, new arrays.
            for array, index, previous in reversed(replaced):
                with contextlib.suppress(Exception):
                    if previous is not None and not previous.module.closed:
                        array.put(index, previous)
                    else:
                        array.clear(index)
            for att, previous in retargeted:
                with contextlib.suppress(Exception):
                    att.retarget(previous)
            for att in attachments:
                att.detach()
            if module is not None:
                module.attachments = []
                module._free()
            for array_name in new_arrays:  # created for this cell: nothing else can use them yet
                with contextlib.suppress(Exception):
                    self.arrays.pop(array_name).close()
            raise

        # Committed: names become permanent, the old version goes.
        for array_name, names in pending.items():
            self.arrays[array_name].names.update(names)
            module.new_slot_names += [f"{array_name}[{n}]={i}" for n, i in names.items()]
        if old is not None:
            transferred = {id(att) for att, _ in retargeted}
            old.attachments = [a for a in old.attachments if id(a) not in transferred]
            kept = {(a.name, i) for a, i, _ in resolved_slots} | set(module.slots)
            self._free_module(old, keep_slots=kept)
        self.modules[name] = module
        for hook in list(self.on_load):
            hook(module)
        return module

    def _refill_slots(self, old: Module | None, module: Module, replaced: list) -> None:
        """A re-run: slots the old version held that this cell does not fill itself (put there
        with `%bpf slot`) get the new version's function of the same name; those it has no
        such function for (or that cannot load for the array) will empty. Both are said in
        ``module.slot_notes``."""
        if old is None:
            return
        filled = set(module.slots)
        for array_name, index in list(old.slots):
            array = self.arrays.get(array_name)
            if array is None or (array_name, index) in filled:
                continue
            previous = array.entries.get(index)
            if previous is None or previous.module is not old:
                continue
            label = array.label(index)
            func = previous.name
            if func in module.programs or func in module.functions:
                try:
                    program = self._load_program(module, func, self._slot_type(array, module, func), array=array)
                    replaced.append((array, index, previous))
                    array.put(index, program)
                except BpfError as e:
                    module.slot_notes.append(f"{label} emptied: the new {module.name}.{func} cannot go there "
                                             f"({e.message.splitlines()[0]})")
                    continue
                module.slots.append((array_name, index))
                module.slot_notes.append(f"{label} now holds the new {module.name}.{func} (was the old one)")
            else:
                module.slot_notes.append(f"{label} emptied: the new version of {module.name} has no {func}")

    # ------------------------------------------------------------ per call site counters
    def _alloc_sites(self, syntax: CellSyntax, req: "_LoadRequest") -> int | None:
        """A base for this load's call-site counters (site = base + line of the cell), in the
        session's per-CPU map __bm_sites (created on first use); None when the cell has no
        tail call, counting is off, or the map is full (then only per-slot counts)."""
        from .c.instrument import SITES
        if not (req.count_calls or req.paths) or not (syntax.tail_calls or req.paths):
            return None
        if req.paths and self._path_maps is None:  # freed by a reset while paths stay on
            from .experiments.paths import PathMaps
            self._path_maps = PathMaps.create(self.pin_dir())
        lines = syntax.source.count("\n") + 2
        if self._next_site + lines > SITES:
            return None
        if self._sites_fd is None:
            fd = libbpf.map_create_percpu_u64_array("bm_sites", 3 * SITES)  # calls, fell through, of those the limit
            self._sites_fd, self._sites_pin = fd, self._pin_counter_map(fd, "bm_sites")
        base = self._next_site
        self._next_site += lines
        self._site_owners.append((base, lines, syntax, req.name))
        return base

    def _site_owner(self, site: int):
        """(base, lines, syntax, module name) of the load a site or function id belongs to."""
        for owner in self._site_owners:
            if owner[0] <= site < owner[0] + owner[1]:
                return owner
        return None

    def _site_name(self, site: int, function: bool = False) -> str | None:
        """MODULE.FUNC of a function id (base + the line of its definition)."""
        owner = self._site_owner(site)
        if owner is None:
            return None
        base, _, syntax, name = owner
        line = site - base
        fn = next((f.name for f in syntax.functions.values() if f.line == line), None)
        return f"{name}.{fn}" if fn else f"{name}:{line}"

    # ------------------------------------------------------------ paths (paths.py)
    def enable_paths(self) -> None:
        """Cells loaded from now on record the way each run goes through the chain (and why a
        call fell through). Off by default; programs loaded without it run uninstrumented."""
        self._require_privileges()
        if self._path_maps is None:
            from .experiments.paths import PathMaps
            self._path_maps = PathMaps.create(self.pin_dir())
        self.paths_enabled = True

    def disable_paths(self) -> None:
        """Cells loaded from now on run without path recording (loaded ones keep theirs)."""
        self.paths_enabled = False

    def paths(self, array: str | None = None, seconds: float = 1.0, during=None):
        """The distinct paths live runs took during SECONDS, or while the callable ``during``
        runs (those through ARRAY): DataFrame of path (one line of text), runs, share, hops,
        how it ended."""
        from .experiments import paths
        return paths.live(self, seconds=seconds, array=array, during=during)

    def misses(self):
        """Why tail calls fell through, per call site (line of the cell; ``slot`` where its key is
        a constant): calls, missed, and of those the limit (33 calls taken already) vs an empty
        slot. The split is known only at sites loaded with paths on (else <NA>)."""
        import pandas as pd

        from .c.instrument import SITES
        rows = []
        with self._lock:
            for m in self.modules.values():
                if m.site_base is None or self._sites_fd is None:
                    continue
                lines = m.source.count("\n") + 2
                limit = libbpf.percpu_u64_sums(self._sites_fd, lines, start=2 * SITES + m.site_base)
                counts = self.site_counts(m)
                from .experiments.graph import resolve_key
                for t in m.syntax.tail_calls:
                    calls, missed = counts.get(t.line, (0, 0))
                    lim = limit[t.line] if m.paths else None
                    a = self.arrays.get(t.array) if t.array else None
                    index = resolve_key(a, t.key, m.source) if a is not None and t.kind != "chain" else None
                    slot = a.label(index) if index is not None and 0 <= index < a.size else None
                    rows.append({"module": m.name, "function": t.function, "line": t.line, "array": t.array,
                                 "key": t.key, "slot": slot, "calls": calls, "taken": calls - missed, "missed": missed,
                                 "slot_empty": missed - lim if lim is not None else None, "limit_reached": lim})
        df = pd.DataFrame(rows, columns=["module", "function", "line", "array", "key", "slot", "calls", "taken",
                                         "missed", "slot_empty", "limit_reached"])
        for col in ("slot_empty", "limit_reached"):
            df[col] = df[col].astype("Int64")
        return df.drop_duplicates(["module", "line"]).reset_index(drop=True)

    def site_counts(self, module: Module) -> dict[int, tuple[int, int]]:
        """line of the cell -> (calls, fell through) at the tail-call site(s) on that line
        of MODULE (one read; fall-throughs first, so they never exceed the calls)."""
        from .c.instrument import SITES
        if module.site_base is None or self._sites_fd is None:
            return {}
        lines = module.source.count("\n") + 2
        missed = libbpf.percpu_u64_sums(self._sites_fd, lines, start=SITES + module.site_base)
        calls = libbpf.percpu_u64_sums(self._sites_fd, lines, start=module.site_base)
        return {t.line: (calls[t.line], missed[t.line]) for t in module.syntax.tail_calls}

    def _unload_advice(self, array_name: str) -> str:
        """How to free session array ARRAY_NAME: the modules that use it go first."""
        users = [m.name for m in self.modules.values()
                 if array_name in m.tables or any(d.name == array_name for d in m.syntax.arrays)
                 or m.syntax.uses(array_name)]
        steps = [f"`%bpf unload {n}`" for n in users] + [f"`%bpf unload {array_name}`"]
        return ", ".join(steps) + " (or `%bpf reset`)"

    def _skb_chain_type(self, module: Module, func: str) -> str | None:
        """A ``struct __sk_buff *`` function can be tc or a socket filter (or ...):
        in a chain whose arrays hold (or were declared for) one skb type, that type."""
        names = {t.array for t in module.syntax.tail_calls if t.function == func and t.array}
        names |= {n for n in self.arrays if module.syntax.uses(n)}
        types = {self.arrays[n].owner_type for n in names if n in self.arrays} - {None}
        types &= SKB_TYPES
        return types.pop() if len(types) == 1 else None

    def _adopt_initialized_slots(self, module: Module, replaced: list) -> None:
        """libbpf fills a prog array declared with ``.values = { [i] = &prog }``
        when it loads the object: those slots hold the module's programs now,
        so the session records them (shown by slots, emptied on unload)."""
        by_id = {p.prog_id: p for p in module.programs.values()}
        for decl in module.syntax.arrays:
            array = self.arrays.get(decl.name)
            if not decl.initialized or array is None:
                continue
            for index in range(array.size):
                program = by_id.get(libbpf.map_lookup_u32(array.fd, index))
                if program is not None and array.entries.get(index) is not program:
                    replaced.append((array, index, array.entries.get(index)))
                    array._turn_over(index)
                    array.entries[index] = program
                    module.slots.append((array.name, index))

    def _slot_type(self, array: prog_arrays.ProgArray, module: Module, func: str) -> str:
        """The type FUNC must be loaded with to go into ARRAY."""
        have = array.owner_type
        declared = module.contexts.get(func)
        if func in module.programs:
            declared = module.programs[func].type
        if have and declared == "sched_cls" and module.contexts.get(func) == "sched_cls" and have in SKB_TYPES \
                and func not in module.programs:
            declared = have  # a __sk_buff function fits any skb array: the array's type decides
        if have and declared and have != declared:
            raise SlotError(f"{array.name} holds {have} programs (fixed by the first program that used it); "
                            f"{module.name}.{func} is a {declared} program. Tail calls only reach programs of "
                            f"the caller's type: write {func} for {have} or use another array.")
        ptype = have or declared
        if ptype is None:
            raise SlotError(f"cannot tell which program type {module.name}.{func} is for {array.name}: give its "
                            f"context parameter a type (struct xdp_md *, struct __sk_buff *, struct "
                            f"bpf_raw_tracepoint_args *, ...) or fix the array's type with "
                            f"`%bpf progarray {array.name} {array.size} --type TYPE`")
        return ptype

    def _load_program(self, module: Module, func: str, ptype: str | None = None, why: str = "",
                      array: prog_arrays.ProgArray | None = None) -> Program:
        if module.closed:
            raise UsageProblem(f"module {module.name} is unloaded")
        existing = module.programs.get(func)
        if ptype is not None:
            ptype = prog_type_name(ptype)
        if existing is not None:
            if ptype and existing.type != ptype:
                raise (SlotError if array else AttachError)(
                    f"{module.name}.{func} is loaded as {existing.type}; {why or 'this use'} needs {ptype}")
            return existing
        if func not in module.functions:
            known = ", ".join(module.functions) or "none"
            raise UsageProblem(f"{module.name} has no function {func!r} (functions: {known})")
        if ptype is None and module.contexts.get(func) == "sched_cls":
            ptype = self._skb_chain_type(module, func)
        ptype = ptype or module.contexts.get(func)
        if ptype is None:
            raise UsageProblem(f"say which program type {module.name}.{func} is: its context parameter does "
                               f"not tell (known: {', '.join(sorted(PROG_TYPES))})")
        if ptype not in PROG_TYPES:
            raise UsageProblem(f"unknown program type {ptype!r}; known: {', '.join(sorted(PROG_TYPES))}")
        fd, log, stats = module.object.load_program(func, ptype, f"{module.name}.{func}")
        module.compile_log += log
        program = Program(module, func, ptype, fd, stats)
        module.programs[func] = program
        return program

    def program(self, spec: str, type: str | None = None) -> Program:
        """'module.func' -> its Program, loaded on demand."""
        mod_name, dot, func = spec.partition(".")
        if not dot or not func:
            raise UsageProblem(f"name a program as MODULE.FUNC (got {spec!r})")
        return self.module(mod_name).program(func, type)

    def stream(self, name: str):
        """The stream of event table NAME ("events" when only one module has it, else "module.events")."""
        return self.streams.get(name)

    def map(self, name: str):
        """A view of map NAME (TABLE when one module has it, else MODULE.TABLE): maps.MapView."""
        from . import maps
        return maps.find(self, name)

    def trace(self, seconds: float = 1.0, max_lines: int | None = None, grep: str | None = None,
              older: bool = False):
        """bpf_trace_printk lines from trace_pipe for up to SECONDS: DataFrame (ts, cpu, pid, comm, msg).
        Lines printed before this session began (left unread in the pipe by an
        earlier process) are skipped unless ``older``; ``df.attrs["older"]`` counts them."""
        from .events.trace import capture
        # The trace clock ("local") runs with CLOCK_MONOTONIC here; a second of slack covers their drift.
        since = None if older else self.started - 1.0
        return capture(seconds=seconds, max_lines=max_lines, grep=grep, since=since)

    def module(self, name: str) -> Module:
        try:
            return self.modules[name]
        except KeyError:
            raise UsageProblem(f"no module {name!r} (modules: {', '.join(self.modules) or 'none'})") from None

    # ------------------------------------------------------------ slots
    def slot(self, spec: str, program: str) -> None:
        """Hot-swap: put MODULE.FUNC into ARRAY[KEY] (one atomic map update)."""
        with self._lock:
            array_name, key = parse_slot_spec(spec)
            array = self.array(array_name)
            pending: dict[str, int] = {}
            index = array.resolve(key, allocate=True, pending=pending)
            mod_name, dot, func = program.partition(".")
            if not dot or not func:
                raise UsageProblem(f"name the program as MODULE.FUNC (got {program!r})")
            module = self.module(mod_name)
            _require_function(module, func)
            prog = self._load_program(module, func, self._slot_type(array, module, func), array=array)
            previous = array.entries.get(index)
            array.put(index, prog)
            array.names.update(pending)  # a new name is kept only once its slot is filled
            if previous is not None and (array.name, index) in previous.module.slots:
                previous.module.slots.remove((array.name, index))
            module.slots.append((array.name, index))

    def unslot(self, spec: str) -> bool:
        """Empty ARRAY[KEY]; tail calls to it fall through again. False if it was empty."""
        with self._lock:
            array_name, key = parse_slot_spec(spec)
            array = self.array(array_name)
            index = array.resolve(key)
            previous = array.entries.get(index)
            array.clear(index)
            if previous is not None and (array.name, index) in previous.module.slots:
                previous.module.slots.remove((array.name, index))
            return previous is not None

    # ------------------------------------------------------------ views
    def ls(self):
        """DataFrame: one row per module function (loaded or not), and tables."""
        import pandas as pd
        rows = []
        with self._lock:
            for m in self.modules.values():
                tables = ", ".join(m.tables)  # one listing per module, not per function
                for func in m.functions:
                    p = m.programs.get(func)
                    v = p.verifier if p else None
                    rows.append({
                        "module": m.name, "function": func,
                        "type": p.type if p else None,
                        "prog_id": p.prog_id if p else None,
                        "attached": ", ".join(self._attached_to(p)) if p else "",
                        "slots": ", ".join(self._slots_of(p)) if p else "",
                        "tables": tables,
                        # The verifier's cost (log level 4 statistics of the load; the program's info).
                        "insns_processed": v.insns_processed if v else None,
                        "states": v.total_states if v else None,
                        "verify_us": v.time_usec if v else None,
                        "stack": "+".join(map(str, v.stack_depths)) if v and v.stack_depths else None,
                    })
        df = pd.DataFrame(rows, columns=LS_COLUMNS)
        for col in ("prog_id", "insns_processed", "states", "verify_us"):
            df[col] = df[col].astype("Int64")  # integers, blanks where not loaded (not NaN / 1394.0)
        return df

    def placement(self, p: Program) -> list[str]:
        """Where a program runs: its attach targets and the slots that hold it."""
        return self._attached_to(p) + self._slots_of(p)

    def _attached_to(self, p: Program) -> list[str]:
        out = [str(a.target) for a in p.module.attachments if a.program is p]
        if p.module.object is not None and p.name in p.module.object.convention_attached():  # BCC's names
            t = auto_attach_type(p.name)
            event = p.name.split("__", 1)[1].replace("__", ":")
            out.append(f"{t}:{event} (auto)")
        return out

    def _slots_of(self, p: Program) -> list[str]:
        return [array.label(index) for array in self.arrays.values()
                for index in sorted(array.entries) if array.entries[index] is p]

    def slots(self, array: str | None = None, all_keys: bool = False):
        """DataFrame of filled or named slots: array, index, key name, program, type,
        calls, taken, missed, run_cnt, run_time_ns (kernel stats, on while the
        session keeps them). The call counts are per slot, since the array was
        created, whoever sat in it; stats() credits each program only its own."""
        import pandas as pd
        rows = []
        with self._lock:
            arrays = [self.array(array)] if array else list(self.arrays.values())
            for a in arrays:
                calls, missed = a.call_counts()
                named = set(a.names.values())
                used = {i for i in range(a.size) if calls[i]}
                indices = range(a.size) if all_keys else sorted(set(a.entries) | named | used)
                for index in indices:
                    p = a.entries.get(index)
                    info = p.info() if p else {}
                    rows.append({
                        "array": a.name, "index": index, "key": a.key_name(index),
                        "program": p.qualname if p else None,
                        "type": p.type if p else None,
                        "prog_id": int(info["prog_id"]) if p else None,
                        "calls": calls[index],
                        "taken": max(calls[index] - missed[index], 0),
                        "missed": missed[index],
                        "run_cnt": int(info.get("run_cnt", 0)) if p else 0,
                        "run_time_ns": int(info.get("run_time_ns", 0)) if p else 0,
                    })
        df = pd.DataFrame(rows, columns=SLOT_COLUMNS)
        df["prog_id"] = df["prog_id"].astype("Int64")  # integers, empty slots blank (not NaN / 1394.0)
        return df

    # ------------------------------------------------------------ experiments (testrun.py, stats.py, graph.py)
    def test_run(self, spec: str, data=None, ctx=None, repeat: int = 1, type: str | None = None,
                 path: bool = False):
        """BPF_PROG_TEST_RUN of MODULE.FUNC: retval (and its name), ns per run,
        data out, and the slots its tail calls went through. ``path``: also the way the
        (last) run went through the chain (.path DataFrame, .path_text); needs the chain
        loaded with paths on."""
        from .experiments import testrun
        return testrun.test_run(self, spec, data=data, ctx=ctx, repeat=repeat, type=type, path=path)

    def stats(self, since=None):
        """Per-program run_cnt, run_time_ns, avg_ns, tail calls in and missed;
        rows for empty slots that tail calls missed. ``since``: an earlier stats()."""
        from .experiments import stats
        return stats.stats(self, since=since)

    def bench_tailcalls(self, depth: int = 33, repeat: int = 100_000, index: str = "const", rounds: int = 3,
                        paths: bool = False):
        """Tail-call cost curve: DataFrame (depth, tail_calls, ns_per_run); the fit is in .attrs.
        ``paths``: the chain records paths (its cost per hop: the slope minus the bare one)."""
        from .experiments import testrun
        return testrun.bench_tailcalls(self, depth=depth, repeat=repeat, index=index, rounds=rounds, paths=paths)

    def graph(self, array: str | None = None):
        """The tail-call chain (programs, slots, call sites) as data and a picture."""
        from .experiments import graph
        return graph.graph(self, array)

    # ------------------------------------------------------------ teardown
    def _free_module(self, module: Module, keep_slots=frozenset()) -> list[str]:
        """Free MODULE; returns the slots that emptied (ARRAY[KEY] with what was in them)."""
        for hook in list(self.on_unload):
            with contextlib.suppress(Exception):
                hook(module)
        emptied = []
        for array_name, index in module.slots:
            array = self.arrays.get(array_name)
            if array is None or (array_name, index) in keep_slots:
                continue
            p = array.entries.get(index)
            if p is not None and p.module is module:
                with contextlib.suppress(OSError):
                    array.clear(index)
                    emptied.append(f"{array.label(index)} (was {p.qualname})")
        module.slots.clear()
        module._free()
        return emptied

    def unload(self, name: str) -> list[str]:
        """Detach and free module NAME (or the prog array NAME when no module has that name).
        Returns the slots that emptied (tail calls into them fall through from now on)."""
        with self._lock:
            if name in self.modules:
                return self._free_module(self.modules.pop(name))
            elif name in self.arrays:
                users = [m.name for m in self.modules.values() if name in m.tables]
                if users:
                    raise UsageProblem(f"array {name} is used by {', '.join(users)}: unload those first")
                self.arrays.pop(name).close()
                return []
            else:
                raise UsageProblem(f"nothing named {name!r} is loaded (modules: {', '.join(self.modules) or 'none'}; "
                                   f"arrays: {', '.join(self.arrays) or 'none'})")

    def reset(self) -> None:
        """Unload every module and free every array."""
        with self._lock:
            for name in list(self.modules):
                self._free_module(self.modules.pop(name))
            self.streams.stop_all()  # also streams whose module hook missed them (stopped by the user)
            for name in list(self.arrays):
                self.arrays.pop(name).close()
            self._free_instrument_maps()

    def _free_instrument_maps(self) -> None:
        """The per-call-site counters and the path maps (made again by the next load that needs them)."""
        if self._sites_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._sites_pin)
            os.close(self._sites_fd)
            self._sites_fd = None
        self._next_site = 0
        self._site_owners.clear()
        if self._path_maps is not None:
            self._path_maps.close()
            self._path_maps = None
        if self._cursor is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._cursor[1])
            os.close(self._cursor[0])
            self._cursor = None
        self.chains.clear()

    def _pin_counter_map(self, fd: int, name: str) -> str:
        """Pin session map FD as calls/NAME (BCC cells open it by that path); the fd is
        closed when the pin fails. Returns the pin."""
        pin = os.path.join(self.pin_dir(), "calls", name)
        pins.make_dir(os.path.dirname(pin))  # 0700 whatever the umask, as progarray makes it
        try:
            libbpf.obj_pin(fd, pin)
        except OSError:
            os.close(fd)
            raise
        return pin

    def cursor_map(self) -> tuple[int, str]:
        """(fd, pin) of the per-CPU position a run has in a chain described as data."""
        if self._cursor is None:
            fd = libbpf.map_create(libbpf.BPF_MAP_TYPE_PERCPU_ARRAY, "bm_cursor", 4, 4, 1)
            self._cursor = (fd, self._pin_counter_map(fd, "bm_cursor"))
        return self._cursor

    def chain(self, name: str, stages=None, type: str | None = None, capacity: int = 16):
        """The chain NAME described as data: ``stages`` in order, each "MODULE.FUNC" (each stage
        ends with ``CHAIN_NEXT(ctx, NAME)``); the entry program is NAME_entry.entry. Called again
        with other stages, it switches to them atomically for the traffic. Without stages: the
        chain as it is."""
        from .experiments import chain as chains
        with self._lock:
            existing = self.chains.get(name)
            if stages is None:
                if existing is None:
                    raise UsageProblem(f"no chain {name!r} (chains: {', '.join(self.chains) or 'none'})")
                return existing
            if existing is None:
                existing = chains.Chain.create(self, name, type=type, capacity=capacity)
                self.chains[name] = existing
            existing.set(stages)
            return existing

    def close(self) -> None:
        if self.closed:
            return
        self.reset()
        self.disable_stats()
        if self._pin_dir:
            # The process's own directory stays (locked) until the process dies: its reaper removes it.
            for path in (os.path.join(self._pin_dir, "calls"), self._pin_dir):
                with contextlib.suppress(OSError):
                    os.rmdir(path)
        self.closed = True
        self._finalizer.detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"<bpfmagic Session: modules {', '.join(self.modules) or '-'}; "
                f"arrays {', '.join(self.arrays) or '-'}>")


# ---------------------------------------------------------------- helpers

@dataclass
class _LoadRequest:
    """What one %%bpf cell (or Session.load call) asks for."""
    name: str
    source: str
    origin: str  # how errors name the source: "cell", the module name or the --file's name
    attach: list[tuple[str, str]]  # (function, target)
    slots: list[tuple[tuple[str, str], str]]  # ((array, key), function)
    cflags: list[str]
    verbose: bool
    count_calls: bool  # count tail calls per slot (off for benchmarks of the bare call)
    core: bool
    file: str | None
    initial_globals: dict  # --set VAR=VALUE of a --core cell
    paths: bool = False  # record paths (Session.enable_paths())

    @property
    def include_dirs(self) -> list[str]:
        return _include_dirs(self.file)


def _prepare_environment() -> dict:
    """env.prepare(), with its once-per-process headers warning re-issued
    without a source line. In IPython it is a one-line note on stdout
    instead: a warning goes to stderr, which a notebook shows as a pink,
    error-looking block on the cell that loaded the extension."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from .kernel import env
        result = env.prepare()
    for w in caught:
        if issubclass(w.category, env.HeadersMismatchWarning) and _in_ipython():
            print(headers_note(str(w.message)), flush=True)
        else:
            warnings.warn_explicit(w.message, w.category, filename="bpfmagic", lineno=0)
    return result


def headers_note(message: str) -> str:
    """The headers warning in one short line (the message itself if its shape is unknown)."""
    m = re.search(r"running kernel (\S+) has no headers; BCC compiles against the headers of kernel (\S+)",
                  message)
    if not m:
        return f"note: {message}"
    return (f"note: BCC uses the headers of kernel {m.group(2)} (running {m.group(1)}): kernel struct "
            "offsets read with bpf_probe_read_kernel may be wrong; use --core for those (%bpf doctor)")


def _in_ipython() -> bool:
    import sys
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return get is not None and get() is not None


def _attach_specs(attach) -> list[tuple[str, str]]:
    specs = []
    for func, targets in (attach or {}).items():
        for target in [targets] if isinstance(targets, str) else targets:
            if (func, target) in specs:
                raise UsageProblem(f"{func} is asked to attach to {target} twice")
            specs.append((func, target))
    return specs


def _require_function(module: Module, func: str) -> None:
    if func not in module.programs and func not in module.functions:
        known = ", ".join(module.functions) or "none"
        raise UsageProblem(f"{module.name} has no function {func!r} (functions: {known})")


def _slot_names(slots) -> dict[str, int | None]:
    if not slots:
        return {}
    if isinstance(slots, dict):
        return dict(slots)
    if isinstance(slots, str):
        slots = [s for s in slots.split(",") if s.strip()]
    out: dict[str, int | None] = {}
    for i, item in enumerate(slots):
        name, eq, index = item.strip().partition("=")
        if name.strip() in out:
            raise UsageProblem(f"slot name {name.strip()!r} given twice")
        try:
            out[name.strip()] = int(index, 0) if eq else i
        except ValueError:
            raise UsageProblem(f"slot {item.strip()!r}: write NAME or NAME=INDEX with an integer index") from None
    return out


def _include_dirs(file: str | None) -> list[str]:
    """``#include "x.h"`` in a --file finds x.h beside that file, as a C compiler does."""
    return [os.path.dirname(os.path.abspath(file))] if file else []


def _declared_sizes(syntax: CellSyntax, req: "_LoadRequest") -> list[tuple[str, int, int]]:
    """(name, size, line) of each prog array the cell declares. A size the
    text cannot give (a macro, an #if, a -D flag), or a name declared in
    several #if branches, is what the preprocessor makes of it."""
    from .c.sizes import preprocessed_sizes
    names = [d.name for d in syntax.arrays]
    unknown = {d.name for d in syntax.arrays if d.size is None or names.count(d.name) > 1}
    resolved = preprocessed_sizes(syntax.source, req.cflags, _include_dirs(req.file)) if unknown else {}
    out, seen = [], set()
    for d in syntax.arrays:
        if d.name in seen:
            continue
        size = resolved.get(d.name) if d.name in unknown else d.size
        if size is None:
            if d.name in unknown and d.name not in resolved and names.count(d.name) > 1:
                continue  # in an #if branch the preprocessor dropped
            raise SlotError(f"{req.origin}:{d.line}: prog array {d.name}: cannot tell its size "
                            f"({d.size_text or 'no max_entries'}); write a constant the cell (or its --cflags) "
                            "defines, so cells can share the array")
        seen.add(d.name)
        out.append((d.name, size, d.line))
    return out


def _find_link(old: Module | None, target: Target) -> Attachment | None:
    if old is None:
        return None
    for att in old.attachments:
        if att.link_fd is not None and att.target == target:
            return att
    return None


def _with_file(path: str, body: str) -> tuple[str, str]:
    text = read_source_file(path)  # regular files within the size bound only; errors never quote it
    if analyse(body).has_content:
        raise UsageProblem("--file loads the file as the whole module; leave the cell body empty or to "
                           "comments (or #include the file from the body instead)")
    return text, os.path.basename(path)


def _claim_pins() -> None:
    """This process's pin directory and its reaper, made when the session
    starts: dead sessions' pins are cleaned now, and this process's are
    removed when it dies (SIGKILL included) even if it never pins. An
    untrusted pin root is reported now and refused when pins are needed."""
    import warnings

    from .kernel import env
    if not env.is_mounted(env.BPFFS, "bpf"):
        return  # pin_dir() mounts it or says why
    try:
        pins.clean_dead(keep=pins.process_dir().name)
    except EnvironmentProblem as e:
        warnings.warn(f"bpfmagic: {e}", RuntimeWarning, stacklevel=3)
    except OSError:
        pass  # pin_dir() raises it when pins are needed
