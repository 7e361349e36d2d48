"""What one cell became: a Module (the backend's loaded object, its programs,
attachments and slots) and its Programs (one loaded function each, with the
kernel's and the verifier's view of it). The Session owns them; the load
transaction (load.py) makes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .c import CellSyntax
from .errors import UsageProblem
from .kernel import libbpf
from .kernel.attach import Attachment

if TYPE_CHECKING:  # the types of what the API returns; their modules load on first use
    import pandas as pd

    from .experiments.testrun import TestRunResult
    from .experiments.verifier import VerifierStats
    from .globals import Globals
    from .maps import MapView


@dataclass(eq=False)
class Program:
    """One loaded BPF program of a module."""

    module: "Module"
    name: str
    type: str
    fd: int
    verifier_log: str = ""  # the verifier's statistics lines (log level 4) from the load

    @property
    def verifier(self) -> VerifierStats:
        """The verifier's cost: instructions processed (of the 1,000,000 limit), states,
        verification time, stack depth per subprogram (verifier.VerifierStats)."""
        from .experiments.verifier import stats_of

        with self.module.session.lock:
            self.require_loaded()
            return stats_of(self)

    def dump(self, mode: str = "xlated", source: bool = True) -> str:
        """The program's code: ``xlated`` (the BPF the kernel runs) or ``jited`` (x86), with the
        cell's source lines interleaved (BTF line info) and tail-call sites marked."""
        from .experiments.dump import dump

        with self.module.session.lock:
            self.require_loaded()
            return dump(self, mode=mode, source=source)

    def test_run(self, data: bytes | str | None = None, ctx: bytes | str | None = None, repeat: int = 1, path: bool = False) -> TestRunResult:
        """BPF_PROG_TEST_RUN of this program (Session.test_run with the program in hand: this
        version, even when its cell was re-run since, then refused as freed)."""
        return self.module.session.test_run(self, data=data, ctx=ctx, repeat=repeat, path=path)

    @property
    def stats(self) -> dict:
        """This program's row of Session.stats(): run_cnt, run_time_ns, avg_ns, tail_calls_in, missed, ..."""
        df = self.module.session.stats()
        rows = df[df["program"] == self.qualname]
        return rows.iloc[0].to_dict() if len(rows) else {}

    def require_loaded(self) -> None:
        """Refuse a program whose module was freed: its fd number is closed and may
        already name another object. Call with the session's lock held."""
        if self.module.closed:
            raise UsageProblem(
                f"the program {self.name} of module {self.module.name} was freed when the cell was re-run or "
                f"unloaded; get it again with s.program({self.qualname!r})"
            )

    @property
    def qualname(self) -> str:
        return f"{self.module.name}.{self.name}"

    def info(self) -> dict[str, str]:
        with self.module.session.lock:
            self.require_loaded()
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
    Maps are reached as ``module["table"]`` or ``module.map("table")``, the same
    view (maps.MapView; BCC's own table objects: ``module.bpf["table"]``)."""

    def __init__(self, session, name: str, syntax: CellSyntax, obj, origin: str):
        self.session = session
        self.name = name
        self.syntax = syntax  # what the C front end read in the cell
        self.source = syntax.source
        self.origin = origin
        self.object = obj  # what a backend loaded (backends/): the same interface for BCC and --core
        self.programs: dict[str, Program] = {}
        self.attachments: list[Attachment] = []
        self.auto_attached: list[str] = []  # functions BCC attached by naming convention
        self.compile_log = ""
        self.contexts = syntax.contexts
        self.columns = None  # BCC: column shifts of instrumented call sites (for verifier messages)
        self.new_slot_names: list[str] = []  # "array[name]=index" this cell named first (a typo shows here)
        self.notes: list[str] = []  # what the cell should say besides its summary
        self.site_base: int | None = None  # this module's call-site counters: Session.site_counts
        self.paths = False  # loaded with path recording
        self.counts_tail_calls = False  # its tail-call sites bump per-slot counters (loaded without --no-count)
        # Arrays it tail-calls into without counting (loaded with --no-count):
        # their slot counts miss its calls, so they are shown as unknown while it is loaded.
        self.uncounted_arrays: set[str] = set()
        self.slot_notes: list[str] = []  # what a re-run did to slots the old version held (refilled / emptied)
        self.closed = False

    # -- contents
    @property
    def slots(self) -> list[tuple[str, int]]:
        """(array, index) of the session's slots that hold this module's programs (the arrays keep them)."""
        return [(a.name, i) for a in list(self.session.arrays.values()) for i in a.held_by(self)]

    @property
    def bpf(self):
        """BCC's own BPF object of a BCC module (None for --core): for what bpfmagic does not wrap."""
        return self.object.bpf if self.object is not None and self.object.kind == "bcc" else None

    # libbcc reads its module structure in place: every read of the object holds the
    # session's lock, under which another thread's re-run or unload frees it.
    @property
    def functions(self) -> list[str]:
        with self.session.lock:
            names = self.object.functions() if self.object is not None and not self.closed else []
            return names or list(self.programs)

    @property
    def tables(self) -> list[str]:
        with self.session.lock:
            return self.object.tables() if self.object is not None and not self.closed else []

    @property
    def globals(self) -> Globals:
        """Global variables of a --core module: ``m.globals["count"]``, ``m.globals["selector"] = 2``,
        ``m.globals.df()``."""
        from .globals import Globals

        return Globals(self)

    @property
    def streams(self) -> dict:
        """The streams of this module's event tables, by table name."""
        return self.session.streams.of(self)

    def stats(self, since: pd.DataFrame | None = None) -> pd.DataFrame:
        """Session.stats() rows of this module's programs."""
        df = self.session.stats(since=since)
        return df[df["module"] == self.name].reset_index(drop=True)

    def __getitem__(self, table: str) -> MapView:
        """``module["t"]``: the same view as ``module.map("t")``."""
        return self.map(table)

    def __contains__(self, table: str) -> bool:
        return table in self.tables

    def map(self, table: str) -> MapView:
        """The view of map TABLE (also ``module[TABLE]``): .df(), [key], [key] = value, del, .clear(),
        .from_df() (maps.MapView, of the class its map type calls for); --core globals: map("bss"),
        map("data"), map("rodata")."""
        from .maps import view_of

        with self.session.lock:
            if self.closed:
                raise UsageProblem(f"module {self.name} was unloaded or re-run: its maps are gone; use the module object the cell made now")
            return view_of(self.session, self, table)

    def df(self, table: str, sum: bool = False) -> pd.DataFrame:
        """Map TABLE as a DataFrame (per-CPU values one column per CPU, or summed with ``sum``)."""
        return self.map(table).df(sum=sum)

    def program(self, name: str, type: str | None = None) -> Program:
        """The loaded program NAME, loading it now if needed (with ``type``,
        else the type its context parameter implies)."""
        return self.session.load_program(self, name, type)

    def __repr__(self) -> str:
        progs = ", ".join(f"{p.name}:{p.type}" for p in self.programs.values()) or "no programs loaded"
        state = "unloaded" if self.closed else "loaded"
        return f"<bpfmagic Module {self.name} ({state}): {progs}; tables: {', '.join(self.tables) or '-'}>"

    # -- teardown
    def free(self) -> None:
        """Detach and close everything the module holds (the session's registry calls this when
        it unloads or replaces the module: use Session.unload, which also empties its slots)."""
        for att in self.attachments:
            att.detach()
        self.attachments.clear()
        if self.object is not None:
            self.object.close()
        self.programs.clear()
        self.closed = True
