"""The Session owns every kernel object bpfmagic creates: modules, their
programs and attachments, the session-wide prog arrays and the instrument
maps. The magics and the Python API both go through it. What a cell became
is module.py; how a cell is loaded or re-run is load.py.

Long because: it is the Python API's one door (DESIGN.md) and the registry every
method locks; most methods are a few lines that hand over to the module doing the
work (load.py, progarray.py, experiments/, events/, maps.py)."""

from __future__ import annotations

import contextlib
import itertools
import keyword
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from . import progarray as prog_arrays
from .c import CellSyntax
from .c.source_files import check_includes, check_source_size, split_cflags
from .errors import BpfError, EnvironmentProblem, NotFound, SlotError, UsageProblem
from .kernel import libbpf, pins
from .kernel.progtypes import PROG_TYPE_NAMES, auto_attach_type, prog_type_name, prog_type_value
from .load import LoadRequest, LoadTransaction, load_program, require_function, slot_type, with_file
from .load import attach_specs as attach_specs_of
from .module import Module, Program
from .sites import CallSites

if TYPE_CHECKING:  # the types of what the API returns; their modules load on first use
    import pandas as pd

    from .events.stream import Stream
    from .experiments.chain import Chain
    from .experiments.graph import ChainGraph
    from .experiments.testrun import TestRunResult
    from .maps import MapView

PIN_ROOT = pins.PIN_ROOT
_SLOT_SPEC_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*\[\s*([^\]\s]+)\s*\]\s*$")
_serials = itertools.count(1)
# calls/taken/missed: tail calls made into each slot (counted by the rewritten
# ARRAY.call); run_cnt/run_time_ns: the kernel's stats, which count a program
# only when it runs as an entry point (attached or test-run), never when it
# is reached by a tail call.
SLOT_COLUMNS = ["array", "index", "key", "program", "type", "prog_id", "calls", "taken", "missed", "run_cnt", "run_time_ns"]
LS_COLUMNS = ["module", "function", "type", "prog_id", "attached", "slots", "tables", "insns_processed", "states", "verify_us", "stack"]


def parse_slot_spec(spec: str) -> tuple[str, str]:
    """'progs[write]' -> ('progs', 'write')."""
    m = _SLOT_SPEC_RE.match(spec)
    if not m:
        raise SlotError(f"bad slot {spec!r}: write ARRAY[KEY], e.g. progs[3] or progs[write]")
    return m[1], m[2]


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
        self._made_pins: set[str] = set()  # pins its loads made for maps pinned by name (LIBBPF_PIN_BY_NAME)
        self._stats_fd: int | None = None
        self.sites = CallSites(self._pin_counter_map)  # per call site counters, their map made on first use
        self._path_maps = None  # paths.PathMaps once enable_paths() ran
        self._cursor: tuple[int, str] | None = None  # (fd, pin) of chains' per-CPU position (chain.py)
        self.chains: dict = {}  # name -> chain.Chain
        self.paths_enabled = False
        self.closed = False
        # Extension points: callables run with a Module after it is switched in / before it is freed.
        self.on_load: list = []
        self.on_unload: list = []
        from .events.manager import StreamManager  # numpy: imported only once a Session exists

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
                f"or grant the capabilities: setcap cap_bpf,cap_perfmon,cap_net_admin+ep $(readlink -f $(which python3))"
            )
        self._require_open()

    def _require_open(self) -> None:
        if self.closed:
            raise UsageProblem("this Session is closed; create a new one")

    def pin_dir(self) -> str:
        """/sys/fs/bpf/bpfmagic/<pid>/s<N>: where this session pins its arrays
        (pins.py: a trusted root, a directory locked for the process's life)."""
        if self._pin_dir is None:
            from .kernel import env

            status = env.ensure_bpffs()
            if not env.is_mounted("/sys/fs/bpf", "bpf"):
                raise EnvironmentProblem(f"bpffs is not mounted and could not be ({status}); run: mount -t bpf bpf /sys/fs/bpf")
            self._pin_dir = pins.process_dir().session_dir(self._serial)
        return self._pin_dir

    def name_pin_dir(self) -> str:
        """<pin_dir>/by-name: where --core cells' LIBBPF_PIN_BY_NAME maps are pinned (libbpf's
        pin root), so that cells of this session share them and nothing another process pinned
        under /sys/fs/bpf is taken in their place. Removed with the session."""
        path = os.path.join(self.pin_dir(), pins.NAME_PINS)
        pins.make_dir(path)
        return path

    def _release_pins(self, module: Module, successor: Module | None = None) -> None:
        """Unlink the pins this session made for MODULE's maps that no other loaded module
        (nor SUCCESSOR, the version replacing it) holds. Pins it found and reused stay."""
        held = {
            path
            for m in [*self.modules.values(), successor]
            if m is not None and m is not module and m.object is not None and not m.closed
            for path in m.object.pins
        }
        for path in module.object.pins if module.object is not None else ():
            if path in self._made_pins and path not in held:
                pins.remove_pin(path)
                self._made_pins.discard(path)

    def enable_stats(self) -> None:
        """Keep kernel run-time stats (run_cnt, run_time_ns) on while the session holds them.
        (They cost the kernel a clock read per program run, machine-wide.)"""
        with self._lock:
            if self._stats_fd is None:
                try:
                    self._stats_fd = libbpf.enable_stats()
                except OSError as e:
                    raise EnvironmentProblem(f"the kernel refused to turn run-time stats on ({e.strerror}); it needs CAP_SYS_ADMIN or root") from None

    def disable_stats(self) -> None:
        with self._lock:  # closed once: a second close could hit a reused fd number
            if self._stats_fd is not None:
                os.close(self._stats_fd)
                self._stats_fd = None

    @property
    def stats_enabled(self) -> bool:
        return self._stats_fd is not None

    # ------------------------------------------------------------ arrays
    def progarray(
        self, name: str, size: int, type: str | None = None, keys: str | None = None, slots: dict[str, int] | list[str] | str | None = None
    ) -> prog_arrays.ProgArray:
        """Create the session array NAME (or return it when it exists with the same size).
        ``slots``: names for indices, "a,b,c" / ["a", "b"] (0, 1, ...) or {"a": 3}."""
        self._require_privileges()
        # Every argument is checked before anything is created or changed.
        prog_arrays.check_name("array", name)  # the C name, whole: the kernel keeps 15 characters of it
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
            self._require_open()
            existing = self.arrays.get(name)
            if existing is not None:
                if existing.size != size:
                    raise SlotError(f"array {name} exists with {existing.size} slots, not {size}; `%bpf unload {name}` or `%bpf reset` first")
                if type is not None and existing.owner_type and existing.owner_type != type:
                    raise SlotError(f"array {name} already holds {existing.owner_type} programs, not {type}")
                if keys is not None and keys != existing.keys and (existing.names or existing.keys is not None):
                    if not self._rekey_to_syscalls(existing, keys):
                        named = ", ".join(f"{n}={i}" for n, i in existing.names.items()) or existing.keys
                        raise SlotError(
                            f"array {name} already has keys ({named}); run `%bpf progarray {name} "
                            f"{size} --keys {keys}` before the cells that use it, or `%bpf reset`"
                        )
                for key, index in names.items():
                    owner = next((n for n, i in existing.names.items() if i == index and n != key), None)
                    if index is not None and owner:
                        raise SlotError(f"{name}[{index}] is already named {owner!r}")
                array = existing
                if keys is not None:
                    array.keys = keys
            else:
                try:
                    directory = self.pin_dir()
                except PermissionError as e:  # said as what it is, not a traceback
                    raise EnvironmentProblem(
                        f"array {name}: cannot create the pin directory "
                        f"{e.filename if os.path.isabs(str(e.filename or '')) else PIN_ROOT} "
                        f"({e.strerror}); session prog arrays are pinned in bpffs, and this process has "
                        f"{self.privileges.describe()}. Run Jupyter as root, or have root create "
                        f"{PIN_ROOT} owned by this user"
                    ) from None
                array = prog_arrays.create(name, size, os.path.join(directory, name), type, keys)
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
        if any((r.array, r.key) == (array.name, n) for m in self.modules.values() for r in m.syntax.slot_refs for n in array.names):
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
            raise SlotError(
                f"no prog array {name!r} in this session (arrays: {known}); declare it with "
                f"BPF_PROG_ARRAY({name}, N) in a cell or `%bpf progarray {name} N`"
            ) from None

    # ------------------------------------------------------------ loading
    def load(
        self,
        name: str,
        source: str = "",
        attach: dict[str, str | list[str]] | None = None,
        slots: dict[str, str] | None = None,
        cflags: str | Sequence[str] = (),
        file: str | None = None,
        verbose: bool = False,
        core: bool = False,
        origin: str | None = None,
        count_tail_calls: bool = True,
        globals: dict | None = None,
        pin_root: str | None = None,
    ) -> Module:
        """Compile and load SOURCE as module NAME, attach and slot its programs.

        attach: {"func": "raw_tracepoint:sys_enter"} (a value may be a list of targets)
        slots:  {"progs[write]": "func"}
        Re-loading NAME replaces the module only once the new version is fully
        loaded; on failure the previous version keeps running.
        count_tail_calls: count calls and fall-throughs per slot (False for
        benchmarks that must measure the bare tail call).
        globals: (--core) global variables set before load, ``const volatile`` ones included.
        pin_root: (--core) a directory under /sys/fs/bpf whose pinned maps the cell's
        LIBBPF_PIN_BY_NAME maps share on purpose (only you or root may write it); without it
        they are pinned in the session's own directory and removed with their modules.
        """
        prog_arrays.check_name("module", name)
        if keyword.iskeyword(name):
            raise UsageProblem(f"bad module name {name!r}: a Python keyword cannot name the module object")
        self._require_privileges()
        if file is not None:
            source, origin = with_file(file, source)
        origin = origin or name
        attach_specs = attach_specs_of(attach)
        slot_specs = [(parse_slot_spec(spec), func) for spec, func in (slots or {}).items()]
        if isinstance(cflags, str):  # "-DA=1 -DB=2": several flags in one string, the same as --cflags
            cflags = split_cflags(cflags)
        # Before anything reads the source's includes (preprocessor, compiler): nothing that can block.
        check_source_size(source, origin)
        check_includes(source, origin, os.path.dirname(os.path.abspath(file)) if file else None, list(cflags))
        if globals and not core:
            raise UsageProblem("globals= (--set) sets global variables of --core cells; BCC has no such globals")
        if pin_root is not None:
            if not core:
                raise UsageProblem("pin_root= (--pin-root) is where --core cells' LIBBPF_PIN_BY_NAME maps are pinned; BCC names each pin path itself")
            pin_root = pins.shared_root(pin_root)
        req = LoadRequest(
            name,
            source,
            origin,
            attach_specs,
            slot_specs,
            list(cflags),
            verbose,
            count_tail_calls,
            core,
            file,
            dict(globals or {}),
            self.paths_enabled,
            pin_root,
        )
        with self._lock:
            self._require_open()  # closed by another thread since the check above
            old = self.modules.get(name)
            try:
                return LoadTransaction(self, req, old).run()
            except BpfError as e:
                if old is not None:
                    e.message += (
                        f"\n\n[bpfmagic] the new version of {name} was not loaded; the previous version is still loaded, attached and slotted."
                    )
                    e.args = (e.message,)
                raise

    # ------------------------------------------------------------ per call site counters (sites.py)
    def _alloc_sites(self, syntax: CellSyntax, req: LoadRequest) -> int | None:
        """A base for this load's call-site counters; None when the cell has no tail call,
        counting is off, or the map is full (then only per-slot counts)."""
        if not (req.count_calls or req.paths) or not (syntax.tail_calls or req.paths):
            return None
        if req.paths:
            self._ensure_path_maps()  # freed by a reset while paths stay on
        return self.sites.allocate(syntax, req.name)

    # ------------------------------------------------------------ paths (paths.py)
    def enable_paths(self) -> None:
        """Cells loaded from now on record the way each run goes through the chain (and why a
        call fell through). Off by default; programs loaded without it run uninstrumented."""
        self._require_privileges()
        with self._lock:
            self._ensure_path_maps()
            self.paths_enabled = True

    def _ensure_path_maps(self) -> None:
        """The session's path maps (paths.py), made on first need and after a reset."""
        if self._path_maps is None:
            from .experiments.paths import PathMaps

            self._path_maps = PathMaps.create(self.pin_dir())

    def disable_paths(self) -> None:
        """Cells loaded from now on run without path recording (loaded ones keep theirs)."""
        self.paths_enabled = False

    def paths(self, array: str | None = None, seconds: float = 1.0, during: Callable[[], object] | None = None) -> pd.DataFrame:
        """The distinct paths live runs took during SECONDS, or while the callable ``during``
        runs (those through ARRAY): DataFrame of path (one line of text), runs, share, hops,
        how it ended."""
        from .experiments import paths

        return paths.live(self, seconds=seconds, array=array, during=during)

    def misses(self) -> pd.DataFrame:
        """Why tail calls fell through, per call site (line of the cell; ``slot`` where its key is
        a constant): calls, missed, and of those the limit (33 calls taken already) vs an empty
        slot. The split is known only at sites loaded with paths on (else <NA>)."""
        with self._lock:
            return self.sites.misses(list(self.modules.values()), self.arrays)

    def site_counts(self, module: Module) -> dict[int, tuple[int, int]]:
        """line of the cell -> (calls, fell through) at the tail-call site(s) on that line
        of MODULE (one read; fall-throughs first, so they never exceed the calls)."""
        with self._lock:
            return self.sites.counts(module)

    def _unload_advice(self, array_name: str) -> str:
        """How to free session array ARRAY_NAME: the modules that use it go first."""
        users = [
            m.name
            for m in self.modules.values()
            if array_name in m.tables or any(d.name == array_name for d in m.syntax.arrays) or m.syntax.uses(array_name)
        ]
        steps = [f"`%bpf unload {n}`" for n in users] + [f"`%bpf unload {array_name}`"]
        return ", ".join(steps) + " (or `%bpf reset`)"

    def load_program(self, module: Module, func: str, type: str | None = None) -> Program:
        """FUNC of MODULE, loaded now if it is not yet (Module.program)."""
        with self._lock:
            return load_program(self, module, func, type)

    def program(self, spec: str, type: str | None = None) -> Program:
        """'module.func' -> its Program, loaded on demand."""
        mod_name, dot, func = spec.partition(".")
        if not dot or not func:
            raise UsageProblem(f"name a program as MODULE.FUNC (got {spec!r})")
        with self._lock:  # the module found is the one loaded: no re-run in between
            return self.module(mod_name).program(func, type)

    def stream(self, name: str) -> Stream:
        """The stream of event table NAME ("events" when only one module has it, else "module.events")."""
        with self._lock:  # the registry of streams changes with every load
            return self.streams.get(name)

    def map(self, name: str) -> MapView:
        """A view of map NAME (TABLE when one module has it, else MODULE.TABLE): maps.MapView."""
        from . import maps

        with self._lock:  # module.tables reads libbcc's module, which a re-run frees
            return maps.find(self, name)

    def trace(self, seconds: float = 1.0, max_lines: int | None = None, grep: str | None = None, older: bool = False) -> pd.DataFrame:
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
            raise NotFound(f"no module {name!r} (modules: {', '.join(self.modules) or 'none'})", "module", name, tuple(self.modules)) from None

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
            require_function(module, func)
            prog = load_program(self, module, func, slot_type(array, module, func), array=array)
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
    def ls(self) -> pd.DataFrame:
        """DataFrame: one row per module function (loaded or not), and tables."""
        import pandas as pd

        rows = []
        with self._lock:
            for m in self.modules.values():
                tables = ", ".join(m.tables)  # one listing per module, not per function
                for func in m.functions:
                    p = m.programs.get(func)
                    v = p.verifier if p else None
                    rows.append(
                        {
                            "module": m.name,
                            "function": func,
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
                        }
                    )
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
        return [array.label(index) for array in self.arrays.values() for index in sorted(array.entries) if array.entries[index] is p]

    def slots(self, array: str | None = None, all_keys: bool = False) -> pd.DataFrame:
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
                    taken = max(calls[index] - missed[index], 0)
                    if p is None:
                        # Empty now: what it took, it took before it was emptied. A call counted between
                        # the two reads (a busy dispatcher) and not yet missed must not show as taken.
                        c0, m0 = a.baselines.get(index, (0, 0))
                        taken = min(taken, max(c0 - m0, 0))
                    rows.append(
                        {
                            "array": a.name,
                            "index": index,
                            "key": a.key_name(index),
                            "program": p.qualname if p else None,
                            "type": p.type if p else None,
                            "prog_id": int(info["prog_id"]) if p else None,
                            "calls": taken + missed[index],
                            "taken": taken,
                            "missed": missed[index],
                            "run_cnt": int(info.get("run_cnt", 0)) if p else 0,
                            "run_time_ns": int(info.get("run_time_ns", 0)) if p else 0,
                        }
                    )
            blind = {name: mods for name, mods in prog_arrays.uncounted_callers(self.modules.values()).items() if any(a.name == name for a in arrays)}
        df = pd.DataFrame(rows, columns=SLOT_COLUMNS)
        df["prog_id"] = df["prog_id"].astype("Int64")  # integers, empty slots blank (not NaN / 1394.0)
        if blind:  # a count that misses calls is no count: unknown, and the note says why
            for column in ("calls", "taken", "missed"):
                df[column] = df[column].astype("Int64")
                df.loc[df["array"].isin(list(blind)), column] = pd.NA
            df.attrs["not_counted"] = prog_arrays.not_counted_note(blind)
        return df

    # ------------------------------------------------------------ experiments (testrun.py, stats.py, graph.py)
    def test_run(
        self, spec: str, data: bytes | str | None = None, ctx: bytes | str | None = None, repeat: int = 1, type: str | None = None, path: bool = False
    ) -> TestRunResult:
        """BPF_PROG_TEST_RUN of MODULE.FUNC: retval (and its name), ns per run,
        data out, and the slots its tail calls went through. ``path``: also the way the
        (last) run went through the chain (.path DataFrame, .path_text); needs the chain
        loaded with paths on."""
        from .experiments import testrun

        return testrun.test_run(self, spec, data=data, ctx=ctx, repeat=repeat, type=type, path=path)

    def stats(self, since: pd.DataFrame | None = None) -> pd.DataFrame:
        """Per-program run_cnt, run_time_ns, avg_ns, tail calls in and missed;
        rows for empty slots that tail calls missed. ``since``: an earlier stats()."""
        from .experiments import stats

        return stats.stats(self, since=since)

    def bench_tailcalls(
        self, depth: int = 33, repeat: int = 100_000, index: str = "const", rounds: int = 3, paths: bool = False, count_tail_calls: bool = False
    ) -> pd.DataFrame:
        """Tail-call cost curve: DataFrame (depth, tail_calls, ns_per_run); the fit is in .attrs.
        ``paths``: the chain records paths; ``count_tail_calls``: it counts per slot (either's
        cost per hop: the slope minus the bare one)."""
        from .experiments import testrun

        return testrun.bench_tailcalls(self, depth=depth, repeat=repeat, index=index, rounds=rounds, paths=paths, count_tail_calls=count_tail_calls)

    def bench_calls(self, depths=(0, 1, 2, 4, 8, 16, 32), repeat: int = 100_000, rounds: int = 5) -> pd.DataFrame:
        """The same stage work chained by a constant- and a variable-index tail call, a BPF-to-BPF
        call and inlining, at each number of hops: ns per run, JIT bytes, instructions, stack;
        ``attrs["ns_per_hop"]`` per mechanism (experiments/calls.py)."""
        from .experiments import calls

        return calls.bench_calls(self, depths=depths, repeat=repeat, rounds=rounds)

    def call_limits(self) -> pd.DataFrame:
        """The limits of calls and tail calls tried on this kernel, with the verifier's own words."""
        from .experiments import calls

        return calls.call_limits(self)

    def graph(self, array: str | None = None) -> ChainGraph:
        """The tail-call chain (programs, slots, call sites) as data and a picture."""
        from .experiments import graph

        return graph.graph(self, array)

    # ------------------------------------------------------------ teardown
    def _free_module(self, module: Module, keep_slots=frozenset(), successor: Module | None = None) -> list[str]:
        """Free MODULE; returns the slots that emptied (ARRAY[KEY] with what was in them).
        SUCCESSOR: the new version of a re-run cell, which keeps the pins it shares with MODULE."""
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
        self._release_pins(module, successor)
        return emptied

    def unload(self, name: str) -> list[str]:
        """Detach and free module NAME (or the prog array NAME when no module has that name).
        Returns the slots that emptied (tail calls into them fall through from now on)."""
        with self._lock:
            if name in self.modules:
                observers = self.observers(name)
                if observers:
                    # Their links would keep the freed programs running in the kernel, traced by no one's code
                    users = ", ".join(f"{m} ({t})" for m, t in observers)
                    raise UsageProblem(f"{name} is traced by {users}: unload {', '.join(sorted({m for m, _ in observers}))} first")
                return self._free_module(self.modules.pop(name))
            elif name in self.arrays:
                users = [m.name for m in self.modules.values() if name in m.tables]
                if users:
                    raise UsageProblem(f"array {name} is used by {', '.join(users)}: unload those first")
                self.arrays.pop(name).close()
                return []
            else:
                raise UsageProblem(
                    f"nothing named {name!r} is loaded (modules: {', '.join(self.modules) or 'none'}; arrays: {', '.join(self.arrays) or 'none'})"
                )

    def observers(self, name: str) -> list[tuple[str, str]]:
        """(module, target) of the fentry/fexit/freplace attachments other modules hold on module NAME's programs."""
        return [
            (m.name, att.target.text)
            for m in self.modules.values()
            if m.name != name
            for att in m.attachments
            if att.target.traced_program and att.target.traced_program[0] == name
        ]

    def reset(self) -> None:
        """Unload every module and free every array."""
        with self._lock:
            for name in list(self.modules):
                self._free_module(self.modules.pop(name))
            self.streams.stop_all()  # also streams whose module hook missed them (stopped by the user)
            for name in list(self.arrays):
                self.arrays.pop(name).close()
            self._free_instrument_maps()
            if self._pin_dir:  # whatever a load pinned by name and no module recorded (a load libbpf failed half-way)
                pins.empty_dir(os.path.join(self._pin_dir, pins.NAME_PINS))
            self._made_pins.clear()

    def _free_instrument_maps(self) -> None:
        """The per-call-site counters and the path maps (made again by the next load that needs them)."""
        self.sites.free()
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

    def chain(self, name: str, stages: list[str] | None = None, type: str | None = None, capacity: int = 16) -> Chain:
        """The chain NAME described as data: ``stages`` in order, each "MODULE.FUNC" (each stage
        ends with ``CHAIN_NEXT(ctx, NAME)``); the entry program is NAME_entry.entry. Called again
        with other stages, it switches to them atomically for the traffic. Without stages: the
        chain as it is."""
        from .experiments import chain as chains

        with self._lock:
            existing = self.chains.get(name)
            if stages is None:
                if existing is None:
                    raise NotFound(f"no chain {name!r} (chains: {', '.join(self.chains) or 'none'})", "chain", name, tuple(self.chains))
                return existing
            if existing is None:
                existing = chains.Chain.create(self, name, type=type, capacity=capacity)
                self.chains[name] = existing
            existing.set(stages)
            return existing

    def close(self) -> None:
        with self._lock:  # two threads closing at once would free everything twice
            if self.closed:
                return
            self.reset()
            self.disable_stats()
            if self._pin_dir:
                # The process's own directory stays (locked) until the process dies: its reaper removes it.
                for path in (os.path.join(self._pin_dir, "calls"), os.path.join(self._pin_dir, pins.NAME_PINS), self._pin_dir):
                    with contextlib.suppress(OSError):
                        os.rmdir(path)
            self.closed = True
            self._finalizer.detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<bpfmagic Session: modules {', '.join(self.modules) or '-'}; arrays {', '.join(self.arrays) or '-'}>"

    # ------------------------------------------------------------ the magics' doors (issue 22, item 4)
    # Two %bpf commands reached experiments/ around the Session; these are their Python doors.
    def chain_from_file(self, name: str, path: str) -> Chain:
        """The chain NAME as a YAML file describes it (``stages: [MODULE.FUNC, ...]``; ``type:``
        and ``capacity:`` optional): made, or switched to the file's order atomically."""
        from .experiments import chain as chains

        return chains.load_file(self, name, path)

    def path_graph(self, paths: pd.DataFrame, array: str | None = None) -> ChainGraph:
        """The chain graph with each edge as wide as the runs ``paths`` (from ``s.paths()``) took along it."""
        from .experiments import paths as live_paths

        return live_paths.picture(self, paths, array)


# ---------------------------------------------------------------- helpers


def _prepare_environment() -> dict:
    """env.prepare(), with its once-per-process headers warning re-issued
    without a source line. In IPython it is a one-line note on stdout
    instead: a warning goes to stderr, which a notebook shows as a pink,
    error-looking block on the cell that loaded the extension. Where the
    running kernel has BTF, each BCC cell's kernel struct reads are checked
    against it (backends/bcc_offsets.py) and only a cell whose offsets differ
    warns: the session then says nothing of the headers."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from .kernel import btf, env

        result = env.prepare()
    for w in caught:
        if issubclass(w.category, env.HeadersMismatchWarning) and btf.vmlinux() is not None:
            continue
        if issubclass(w.category, env.HeadersMismatchWarning) and _in_ipython():
            print(headers_note(str(w.message)), flush=True)
        else:
            warnings.warn_explicit(w.message, w.category, filename="bpfmagic", lineno=0)
    return result


def headers_note(message: str) -> str:
    """The headers warning in one short line (the message itself if its shape is unknown)."""
    m = re.search(r"running kernel (\S+) has no headers; BCC compiles against the headers of kernel (\S+)", message)
    if not m:
        return f"note: {message}"
    return (
        f"note: BCC uses the headers of kernel {m.group(2)} (running {m.group(1)}): kernel struct "
        "offsets read with bpf_probe_read_kernel may be wrong; use --core for those (%bpf doctor)"
    )


def _in_ipython() -> bool:
    import sys

    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return get is not None and get() is not None


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
