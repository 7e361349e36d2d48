"""The Session owns every kernel object bpfmagic creates: modules, their
programs and attachments, the session-wide prog arrays and the instrument
maps. The magics and the Python API both go through it. It is a façade of
short delegations to its rooms: the registry (registry.py: modules, arrays,
chains, lookups, the lock), the instruments (instrumentation.py: run stats,
call-site counters, path maps, the chains' cursor), the DataFrame views
(views.py), the load transaction (load.py) and the experiments."""

from __future__ import annotations

import contextlib
import itertools
import re
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import views
from .errors import EnvironmentProblem, SlotError, UsageProblem
from .experiments.doors import ExperimentDoors
from .instrumentation import Instrumentation
from .kernel import pins
from .load import LoadTransaction, check_module_name, load_program, make_request, require_function, slot_type
from .module import Module, Program
from .registry import Registry, SessionPins

if TYPE_CHECKING:  # the types of what the API returns; their modules load on first use
    import pandas as pd

    from . import progarray as prog_arrays
    from .events.stream import Stream
    from .maps import MapView

__all__ = ["Session", "Module", "Program", "parse_slot_spec", "headers_note"]

PIN_ROOT = pins.PIN_ROOT
_SLOT_SPEC_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*\[\s*([^\]\s]+)\s*\]\s*$")
_serials = itertools.count(1)


def parse_slot_spec(spec: str) -> tuple[str, str]:
    """'progs[write]' -> ('progs', 'write')."""
    m = _SLOT_SPEC_RE.match(spec)
    if not m:
        raise SlotError(f"bad slot {spec!r}: write ARRAY[KEY], e.g. progs[3] or progs[write]", hint="ARRAY[KEY]")
    return m[1], m[2]


class Session(ExperimentDoors):
    """Registry and lifecycle of everything bpfmagic loads into the kernel.

    >>> s = Session()
    >>> m = s.load("disp", source, attach={"dispatch": "raw_tracepoint:sys_enter"},
    ...            slots={"progs[write]": "on_write"})
    >>> s.arrays["progs"]["read"] = m.programs["on_read"]; s.slots(); s.close()

    What it changes on the machine (``prepare=False`` skips the first four):
    mounts tracefs at /sys/kernel/tracing and bpffs at /sys/fs/bpf where they are
    missing (as root); builds, when the running kernel's headers are not where BCC
    looks, a merged header tree under $XDG_CACHE_HOME/bpfmagic/headers (~/.cache) and sets
    BCC_KERNEL_SOURCE to it for this process and its children; makes the pin root
    /sys/fs/bpf/bpfmagic (0700), this process's entry in it (locked, removed by a
    reaper process it starts, which outlives a kill) and removes dead processes'
    entries; keeps kernel run-time stats on (bpf_enable_stats: every BPF program on
    the machine pays a clock read per run) while it lives, unless ``stats=False``.
    On first need: its directory s<N> there (arrays, counters under calls/, --core
    maps pinned by name under by-name/; bpffs mounted if it is not), caches under
    $XDG_CACHE_HOME/bpfmagic (--core objects, vmlinux.h, BCC's struct offsets).
    It sets no rlimit. close() (or the interpreter's exit) frees what it loaded and
    removes its directories."""

    def __init__(self, stats: bool = True, prepare: bool = True):
        self.started = time.monotonic()
        self.closed = False
        self.pin_space = SessionPins(next(_serials))
        self.registry = Registry(self.pin_space, lambda: self.privileges.describe())
        self.lock = self.registry.lock
        self.modules, self.arrays, self.chains = self.registry.modules, self.registry.arrays, self.registry.chains
        self.instruments = Instrumentation(self.pin_dir, self.lock)
        self.sites = self.instruments.sites  # per call site counters, their map made on first use
        # Extension points: callables run with a Module after it is switched in / before it is freed.
        self.on_load: list = []
        self.on_unload: list = self.registry.on_unload
        from .events.manager import StreamManager  # numpy: imported only once a Session exists

        self.streams = StreamManager(self)  # event tables -> DataFrames, started/stopped by the hooks above
        self.env, self.privileges = _prepare_machine(prepare)
        if stats and self.privileges.can_load:
            with contextlib.suppress(EnvironmentProblem):  # counts stay 0; `%bpf stats --on` says why
                self.enable_stats()
        self._finalizer = weakref.finalize(self, Session._close_at_exit, weakref.ref(self))

    @staticmethod
    def _close_at_exit(ref) -> None:
        session = ref()
        if session is not None:
            session.close()

    def _require_privileges(self) -> None:
        if not self.privileges.can_load:
            raise _no_privileges(self.privileges)
        self._require_open()

    def _require_open(self) -> None:
        if self.closed:
            raise UsageProblem("this Session is closed; create a new one")

    def pin_dir(self) -> str:
        """/sys/fs/bpf/bpfmagic/<pid>/s<N>: where this session pins its arrays (made on first call)."""
        return self.pin_space.directory()

    def name_pin_dir(self) -> str:
        """<pin_dir>/by-name: where --core cells' LIBBPF_PIN_BY_NAME maps are pinned."""
        return self.pin_space.name_dir()

    # ------------------------------------------------------------ instruments (instrumentation.py)
    def enable_stats(self) -> None:
        """Keep kernel run-time stats (run_cnt, run_time_ns) on while the session holds them.
        (They cost the kernel a clock read per program run, machine-wide.)"""
        self.instruments.enable_stats()

    def disable_stats(self) -> None:
        self.instruments.disable_stats()

    @property
    def stats_enabled(self) -> bool:
        return self.instruments.stats_enabled

    @property
    def paths_enabled(self) -> bool:
        return self.instruments.paths_enabled

    def enable_paths(self) -> None:
        """Cells loaded from now on record the way each run goes through the chain (and why a
        call fell through). Off by default; programs loaded without it run uninstrumented."""
        self._require_privileges()
        self.instruments.enable_paths()

    def disable_paths(self) -> None:
        """Cells loaded from now on run without path recording (loaded ones keep theirs)."""
        self.instruments.disable_paths()

    def instrumentation(self, stats: bool | None = None, paths: bool | None = None):
        """``with s.instrumentation(stats=False, paths=False):`` run stats and path recording
        set for the block (None: as they are), put back after."""
        if paths:
            self._require_privileges()
        return self.instruments.using(stats=stats, paths=paths)

    def cursor_map(self) -> tuple[int, str]:
        """(fd, pin) of the per-CPU position a run has in a chain described as data."""
        return self.instruments.cursor_map()

    # ------------------------------------------------------------ registry (registry.py)
    def progarray(
        self, name: str, size: int, type: str | None = None, keys: str | None = None, slots: dict[str, int] | list[str] | str | None = None
    ) -> prog_arrays.ProgArray:
        """Create the session array NAME (or return it when it exists with the same size).
        ``slots``: names for indices, "a,b,c" / ["a", "b"] (0, 1, ...) or {"a": 3}."""
        self._require_privileges()
        names = _slot_names(slots)
        with self.lock:
            self._require_open()
            return self.registry.progarray(name, size, type, keys, names)

    def array(self, name: str) -> prog_arrays.ProgArray:
        """The session prog array NAME: a mapping key -> Program (``s.array("progs")["write"] = p``)."""
        return self.registry.array(name)

    def module(self, name: str) -> Module:
        return self.registry.module(name)

    def observers(self, name: str) -> list[tuple[str, str]]:
        """(module, target) of the fentry/fexit/freplace attachments other modules hold on module NAME's programs."""
        return self.registry.observers(name)

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
        check_module_name(name)
        self._require_privileges()
        req = make_request(
            name,
            source,
            attach,
            [(parse_slot_spec(spec), func) for spec, func in (slots or {}).items()],
            cflags,
            file,
            verbose,
            core,
            origin,
            count_tail_calls,
            globals,
            pin_root,
            self.paths_enabled,
        )
        with self.lock:
            self._require_open()  # closed by another thread since the check above
            return LoadTransaction(self, req, self.modules.get(name)).run()

    def load_program(self, module: Module, func: str, type: str | None = None) -> Program:
        """FUNC of MODULE, loaded now if it is not yet (Module.program)."""
        with self.lock:
            return load_program(self, module, func, type)

    def program(self, spec: str, type: str | None = None) -> Program:
        """'module.func' -> its Program, loaded on demand."""
        mod_name, dot, func = spec.partition(".")
        if not dot or not func:
            raise UsageProblem(f"name a program as MODULE.FUNC (got {spec!r})")
        with self.lock:  # the module found is the one loaded: no re-run in between
            return self.module(mod_name).program(func, type)

    def slot(self, spec: str, program: str) -> None:
        """Hot-swap: put MODULE.FUNC into ARRAY[KEY] (one atomic map update)."""
        with self.lock:
            array_name, key = parse_slot_spec(spec)
            array = self.array(array_name)
            array.resolve(key, allocate=True, pending={})  # a bad key is refused before FUNC loads
            mod_name, dot, func = program.partition(".")
            if not dot or not func:
                raise UsageProblem(f"name the program as MODULE.FUNC (got {program!r})", array=array_name, key=key)
            module = self.module(mod_name)
            require_function(module, func)
            array.assign(key, load_program(self, module, func, slot_type(array, module, func), array=array))

    def unslot(self, spec: str) -> bool:
        """Empty ARRAY[KEY]; tail calls to it fall through again. False if it was empty."""
        with self.lock:
            array_name, key = parse_slot_spec(spec)
            return self.array(array_name).remove(key) is not None

    def unload(self, name: str) -> list[str]:
        """Detach and free module NAME (or the prog array NAME when no module has that name).
        Returns the slots that emptied (tail calls into them fall through from now on)."""
        return self.registry.unload(name)

    # ------------------------------------------------------------ lookups of what cells made
    def stream(self, name: str) -> Stream:
        """The stream of event table NAME ("events" when only one module has it, else "module.events")."""
        with self.lock:  # the registry of streams changes with every load
            return self.streams.get(name)

    def map(self, name: str) -> MapView:
        """A view of map NAME (TABLE when one module has it, else MODULE.TABLE): maps.MapView."""
        from . import maps

        with self.lock:  # module.tables reads libbcc's module, which a re-run frees
            return maps.find(self, name)

    def trace(self, seconds: float = 1.0, max_lines: int | None = None, grep: str | None = None, older: bool = False) -> pd.DataFrame:
        """bpf_trace_printk lines from trace_pipe for up to SECONDS: DataFrame (ts, cpu, pid, comm, msg).
        Lines printed before this session began are skipped unless ``older`` (``df.attrs["older"]`` counts them)."""
        from .events.trace import capture

        # The trace clock ("local") runs with CLOCK_MONOTONIC here; a second of slack covers their drift.
        return capture(seconds=seconds, max_lines=max_lines, grep=grep, since=None if older else self.started - 1.0)

    # ------------------------------------------------------------ views (views.py)
    def ls(self) -> pd.DataFrame:
        """DataFrame: one row per module function (loaded or not), and tables."""
        with self.lock:
            return views.ls(self.modules, self.arrays)

    def slots(self, array: str | None = None, all_keys: bool = False) -> pd.DataFrame:
        """DataFrame of filled or named slots: array, index, key name, program, type,
        calls, taken, missed, run_cnt, run_time_ns (kernel stats, on while the
        session keeps them). The call counts are per slot, since the array was
        created, whoever sat in it; stats() credits each program only its own."""
        with self.lock:
            return views.slots([self.array(array)] if array else list(self.arrays.values()), all_keys, list(self.modules.values()))

    def placement(self, p: Program) -> list[str]:
        """Where a program runs: its attach targets and the slots that hold it."""
        return views.placement(self.arrays, p)

    def misses(self) -> pd.DataFrame:
        """Why tail calls fell through, per call site (line of the cell; ``slot`` where its key is
        a constant): calls, missed, and of those the limit (33 calls taken already) vs an empty
        slot. The split is known only at sites loaded with paths on (else <NA>)."""
        with self.lock:
            return self.sites.misses(list(self.modules.values()), self.arrays)

    def site_counts(self, module: Module) -> dict[int, tuple[int, int]]:
        """line of the cell -> (calls, fell through) at the tail-call site(s) on that line of MODULE."""
        with self.lock:
            return self.sites.counts(module)

    # ------------------------------------------------------------ teardown
    def reset(self) -> None:
        """Unload every module and free every array."""
        with self.lock:
            for name in list(self.modules):
                self.registry.free_module(self.modules.pop(name))
            self.streams.stop_all()  # also streams whose module hook missed them (stopped by the user)
            self.instruments.free()
            self.registry.reset()

    def close(self) -> None:
        with self.lock:  # two threads closing at once would free everything twice
            if self.closed:
                return
            self.reset()
            self.disable_stats()
            self.pin_space.remove()
            self.closed = True
            self._finalizer.detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<bpfmagic Session: modules {', '.join(self.modules) or '-'}; arrays {', '.join(self.arrays) or '-'}>"


# ---------------------------------------------------------------- helpers


def _prepare_machine(prepare: bool):
    """(env.prepare()'s report, or {} without PREPARE; the process's privileges); a process
    that may load claims its pin directory now (see _claim_pins)."""
    env_report = _prepare_environment() if prepare else {}
    # env is imported late: `python -m bpfmagic.kernel.env` must not find it loaded already
    from .kernel import env

    privileges = env.privileges()
    if privileges.can_load:
        _claim_pins()
    return env_report, privileges


def _no_privileges(p) -> EnvironmentProblem:
    return EnvironmentProblem(
        f"loading BPF programs needs root or CAP_BPF (with CAP_PERFMON for tracing and "
        f"CAP_NET_ADMIN for XDP/tc); this process has {p.describe()}. Start Jupyter as root, "
        f"or grant the capabilities: setcap cap_bpf,cap_perfmon,cap_net_admin+ep $(readlink -f $(which python3))"
    )


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
