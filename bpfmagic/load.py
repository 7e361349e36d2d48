"""The load/re-run transaction of one cell, in the steps DESIGN.md names, run
in this order by :meth:`LoadTransaction.run`: step 1 is the function
``read_cell``, steps 2-7 are methods of :class:`LoadTransaction`.

1. ``read_cell``  the front end reads the cell: a :class:`CellSpec` (what it
                  declares and asks for), before any kernel object exists
2. ``arrays``     the session prog arrays it declares are shared or created;
                  the slot names it uses are resolved
3. ``compile``    the backend compiles the cell and loads what it must at once
                  (BCC: maps, convention-attached functions): a Module
4. ``load``       the functions it attaches and slots load with the type their
                  use demands; functions whose context names a type load too
5. ``slot``       the new version goes into its slots (a re-run's old slots get
                  the new function of the same name)
6. ``attach``     then it is attached (an old link is retargeted in one step),
                  and SEC()-named programs attach by themselves
7. ``commit``     new slot names become permanent, the old version is freed,
                  the session's on_load hooks run

A failure in steps 2-6 runs ``rollback``: previous slot occupants go back,
links return to the old programs, what was made is freed. The previous
version of the module keeps running, attached and slotted."""

from __future__ import annotations

import contextlib
import keyword
import os
import warnings
from dataclasses import dataclass, field

from . import backends
from . import progarray as prog_arrays
from .c import CellSyntax, analyse
from .c.analysis import SKB_TYPES
from .c.macro_code import expand_macro_code
from .c.source_files import check_includes, check_source_size, read_source_file, split_cflags
from .errors import AttachError, BpfError, SlotError, UsageProblem
from .kernel import libbpf, pins
from .kernel.attach import TRAMPOLINE_KINDS, Attachment, Target, check_event_exists, check_servable, parse_target
from .kernel.attach import attach as attach_target
from .kernel.env import KernelOffsetsWarning
from .kernel.progtypes import PROG_TYPES, prog_type_name
from .module import Module, Program


@dataclass
class LoadRequest:
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
    pin_root: str | None = None  # (--core) a checked directory whose pinned maps the cell shares on purpose

    @property
    def include_dirs(self) -> list[str]:
        return include_dirs(self.file)


def check_module_name(name: str) -> None:
    prog_arrays.check_name("module", name)
    if keyword.iskeyword(name):
        raise UsageProblem(f"bad module name {name!r}: a Python keyword cannot name the module object")


def make_request(name, source, attach, slots, cflags, file, verbose, core, origin, count_tail_calls, globals, pin_root, paths) -> LoadRequest:
    """Session.load's arguments checked and read (a --file's text) into a LoadRequest;
    SLOTS: [((array, key), function)]. Nothing that can block reads the source's includes."""
    check_module_name(name)
    if file is not None:
        source, origin = with_file(file, source)
    origin = origin or name
    specs = attach_specs(attach)
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
    return LoadRequest(name, source, origin, specs, slots, list(cflags), verbose, count_tail_calls, core, file, dict(globals or {}), paths, pin_root)


@dataclass
class CellSpec:
    """What a cell declares and asks for, read before anything is loaded: its
    syntax (functions and their context types and sections, prog arrays,
    tail-call sites, SLOT names, event tables), the prog arrays with their
    sizes, the chains it is a stage of, its attach targets (asked for and
    those its names imply) and the backend that compiles it."""

    syntax: CellSyntax
    backend: object
    attach: list[tuple[str, Target]]
    convention_targets: list[tuple[str, Target]]
    arrays: list[tuple[str, int, int]]  # (name, size, line) of each prog array it declares
    chains: set[str]  # chains described as data whose stage it is (CHAIN_NEXT)
    notes: list[str] = field(default_factory=list)  # what the front end changed in the cell, said in the cell


def read_cell(req: LoadRequest) -> CellSpec:
    """Step 1: everything that can be refused before compiling is refused here."""
    backend = backends.for_cell(req.core)
    backend.check_tools()
    attach = [(func, parse_target(target)) for func, target in req.attach]
    for _func, target in attach:
        check_servable(target, core=req.core)
    syntax, notes = backend.read_source(req.source, req.origin)
    expand_macro_code(syntax, req.cflags, include_dirs(req.file))  # PROG(X)-built chains: their functions and tail calls
    if not syntax.has_content:
        raise UsageProblem(f"{req.origin} has no C code: write the program below the %%bpf line (or load a file with --file PATH)")
    conventions = list(backend.convention_targets(syntax))  # what BCC attaches by names: the same checks
    for _func, target in conventions:
        check_servable(target)
        check_event_exists(target)
    chains = {t.array for t in syntax.tail_calls if t.kind == "chain"}
    return CellSpec(syntax, backend, attach, conventions, declared_sizes(syntax, req), chains, notes)


class LoadTransaction:
    """One load or re-run of module ``req.name``; ``old`` is the version it replaces."""

    def __init__(self, session, req: LoadRequest, old: Module | None):
        self.session, self.req, self.old = session, req, old
        self.spec: CellSpec | None = None
        self.module: Module | None = None
        # What rollback undoes:
        self.new_arrays: list[str] = []
        self.pending: dict[str, dict[str, int]] = {}  # slot names this load allocates, by array
        self.attachments: list[Attachment] = []
        self.retargeted: list[tuple[Attachment, Program]] = []
        self.replaced: list[tuple[prog_arrays.ProgArray, int, Program | None]] = []
        self.resolved_slots: list[tuple[prog_arrays.ProgArray, int, str]] = []

    def run(self) -> Module:
        try:
            return self._run()
        except BpfError as e:
            if self.old is not None:
                e.message += (
                    f"\n\n[bpfmagic] the new version of {self.req.name} was not loaded; the previous version is still loaded, attached and slotted."
                )
                e.args = (e.message,)
            raise

    def _run(self) -> Module:
        self.spec = read_cell(self.req)
        try:
            self.arrays()
            self.compile()
            self.load()
            self.slot()
            self.attach()
            self.warn()
        except BaseException:
            self.rollback()
            raise
        return self.commit()

    # -- step 2
    def arrays(self) -> None:
        """Session arrays the cell declares: shared if they exist, created otherwise;
        the chains' arrays it is a stage of; every slot name it uses, resolved."""
        session, origin = self.session, self.req.origin
        for array_name, size, line in self.spec.arrays:
            prog_arrays.check_name("array", array_name)  # the C name, whole: the kernel keeps 15 characters of it
            have = session.arrays.get(array_name)
            if have is not None:
                if have.size != size:
                    raise SlotError(
                        f"{origin}:{line}: prog array {array_name} has {size} slots in this cell; the "
                        f"session's array {array_name} has {have.size} slots; declare it with {have.size}, "
                        f"or free it first: {session.registry.unload_advice(array_name)}"
                    )
            elif array_name not in self.new_arrays:
                session.progarray(array_name, size)
                self.new_arrays.append(array_name)
        # Stages of chains described as data (CHAIN_NEXT(ctx, NAME)): the position map, and
        # the chain's array when the chain is not made yet (chain.py sizes it the same).
        if self.spec.chains:
            from .experiments.chain import DEFAULT_CAPACITY

            session.cursor_map()
            for array_name in sorted(self.spec.chains - set(session.arrays)):
                session.progarray(array_name, 2 * DEFAULT_CAPACITY)
                self.new_arrays.append(array_name)
        for ref in self.spec.syntax.slot_refs:
            self.slot_index(ref.array, ref.key)
        self.resolved_slots = [(session.array(a), self.slot_index(a, k), func) for (a, k), func in self.req.slots]

    def slot_index(self, array_name: str, key: str) -> int:
        """The index of ARRAY[KEY]; a new name gets a free index, kept only if the load commits."""
        array = self.session.array(array_name)
        return array.resolve(key, allocate=True, pending=self.pending.setdefault(array_name, {}))

    # -- step 3
    def compile(self) -> None:
        session, req, syntax = self.session, self.req, self.spec.syntax
        instruments = session.instruments
        site_base = instruments.allocate_sites(syntax, req)
        ctx = backends.LoadContext(
            arrays=session.arrays,
            slot_index=self.slot_index,
            resolved_slots=self.resolved_slots,
            site_base=site_base,
            sites=instruments.sites.table if site_base is not None else None,
            path_maps=instruments.path_maps if req.paths else None,
            cursor=instruments.cursor,
            can_load=session.privileges.can_load,
            name_pin_dir=session.name_pin_dir,
            bound=bound_targets(session, req.name, self.spec.attach),
        )
        obj, log = self.spec.backend.compile_cell(ctx, req, syntax)
        module = self.module = Module(session, req.name, syntax, obj, req.origin)
        module.compile_log = log
        module.notes += [*self.spec.notes, *obj.notes]
        session.registry.pins.record_made(obj.pins)
        for fname, (ptype, fd, stats) in obj.preloaded().items():
            module.programs[fname] = Program(module, fname, ptype, fd, stats)
        module.auto_attached += obj.convention_attached()
        module.site_base = site_base
        if obj.implied_sites and site_base is not None:
            session.sites.imply(site_base, obj.implied_sites, session.arrays)
        module.paths = req.paths and site_base is not None
        module.counts_tail_calls = req.count_calls and bool(syntax.tail_calls)
        if not req.count_calls:  # (--core counts in the helper's macro, macro-written calls included; BCC refuses map calls in macros)
            reached = {t.array for t in syntax.tail_calls if t.array} | {n for n in session.arrays if syntax.uses(n)}
            module.uncounted_arrays = reached & set(session.arrays)
        adopt_initialized_slots(session, module, self.replaced)

    # -- step 4
    def load(self) -> None:
        """Load what is attached and slotted, with the type its use demands."""
        session, module = self.session, self.module
        for func in [f for f, _ in self.spec.attach] + [f for _, _, f in self.resolved_slots]:
            require_function(module, func)
        for func, target in self.spec.attach:
            load_program(session, module, func, target.prog_type, why=f"attached to {target}")
        for array, _index, func in self.resolved_slots:
            load_program(session, module, func, slot_type(array, module, func), array=array)
        # The rest whose context parameter names its type load now, so the verifier
        # speaks in this cell, not at the first %bpf run (__sk_buff is left for later:
        # tc or socket filter is the user's choice).
        for func, ptype in module.object.eager(module.contexts, module.programs):
            load_program(session, module, func, ptype)

    # -- step 5
    def slot(self) -> None:
        """Slot the new version before attaching it: a chain is complete before its
        entry sees its first event."""
        module = self.module
        for array, index, func in self.resolved_slots:
            self.replaced.append((array, index, array.entries.get(index)))
            array.put(index, module.programs[func])
        refill_slots(self.session, self.old, module, self.replaced)

    # -- step 6
    def attach(self) -> None:
        """Attach; an old version's link to the same target is retargeted in one step."""
        module = self.module
        for func, target in self.spec.attach:
            program = module.programs[func]
            old_att = find_link(self.old, target)
            if old_att is not None:
                previous = old_att.program
                if old_att.retarget(program):
                    self.retargeted.append((old_att, previous))
                    module.attachments.append(old_att)
                    continue
            if target.kind == "freplace" and self.old is not None:
                # A function takes one freplace program at a time (EBUSY): the old version lets go
                # first. Not undone by rollback: the kernel binds an freplace program to its target once.
                for old_att in self.old.attachments:
                    if old_att.target == target:
                        old_att.detach()
            att = attach_target(program, target)
            self.attachments.append(att)
            module.attachments.append(att)
        # Programs whose SEC() names their target (tp_btf/..., raw_tp/...) attach by themselves
        # (libbpf); a slotted program keeps that attachment too: only -a replaces it.
        slotted = {f for _, _, f in self.resolved_slots} | {a.entries[i].name for a in self.session.arrays.values() for i in a.held_by(module)}
        made = module.object.attach_sections(module, {f for f, _ in self.spec.attach}, slotted)
        self.attachments += made
        module.attachments += made

    def warn(self) -> None:
        """What the cell's values may get wrong, said before commit starts its streams
        (warnings as errors refuse the cell: rolled back like any failure)."""
        for text in self.module.object.warnings:
            warnings.warn_explicit(text, KernelOffsetsWarning, filename="bpfmagic", lineno=0)

    # -- step 7
    def commit(self) -> Module:
        """Names become permanent, the old version goes, the hooks (streams) run."""
        session, module, old = self.session, self.module, self.old
        for array_name, names in self.pending.items():
            session.arrays[array_name].names.update(names)
            module.new_slot_names += [f"{array_name}[{n}]={i}" for n, i in names.items()]
        if old is not None:
            for observer, target in session.observers(module.name):
                module.notes.append(f"{observer} ({target}) still traces the previous version of {module.name}: re-run {observer} to follow this one")
            transferred = {id(att) for att, _ in self.retargeted}
            old.attachments = [a for a in old.attachments if id(a) not in transferred]
            session.registry.free_module(old, successor=module)  # the slots the new version took are its own now
        session.modules[module.name] = module
        for hook in list(session.on_load):
            hook(module)
        return module

    def rollback(self) -> None:
        """Previous slot occupants, links, new attachments, the new module, new arrays."""
        for array, index, previous in reversed(self.replaced):
            with contextlib.suppress(Exception):
                if previous is not None and not previous.module.closed:
                    array.put(index, previous)
                else:
                    array.clear(index)
        for att, previous in self.retargeted:
            with contextlib.suppress(Exception):
                att.retarget(previous)
        for att in self.attachments:
            att.detach()
        if self.module is not None:
            self.module.attachments = []
            self.module.free()
            self.session.registry.release_pins(self.module)
        for array_name in self.new_arrays:  # created for this cell: nothing else can use them yet
            with contextlib.suppress(Exception):
                self.session.arrays.pop(array_name).close()


# ---------------------------------------------------------------- programs and slots


def refill_slots(session, old: Module | None, module: Module, replaced: list) -> None:
    """A re-run: slots the old version held that this cell does not fill itself (put there
    with `%bpf slot`) get the new version's function of the same name; those it has no
    such function for (or that cannot load for the array) will empty. Both are said in
    ``module.slot_notes``."""
    if old is None:
        return
    for array_name, index in old.slots:  # those this cell filled itself hold the new version already
        array = session.arrays[array_name]
        previous = array.entries[index]
        label = array.label(index)
        func = previous.name
        if func in module.programs or func in module.functions:
            try:
                program = load_program(session, module, func, slot_type(array, module, func), array=array)
                replaced.append((array, index, previous))
                array.put(index, program)
            except BpfError as e:
                module.slot_notes.append(f"{label} emptied: the new {module.name}.{func} cannot go there ({e.message.splitlines()[0]})")
                continue
            module.slot_notes.append(f"{label} now holds the new {module.name}.{func} (was the old one)")
        else:
            module.slot_notes.append(f"{label} emptied: the new version of {module.name} has no {func}")


def skb_chain_type(session, module: Module, func: str) -> str | None:
    """A ``struct __sk_buff *`` function can be tc or a socket filter (or ...):
    in a chain whose arrays hold (or were declared for) one skb type, that type."""
    names = {t.array for t in module.syntax.tail_calls if t.function == func and t.array}
    names |= {n for n in session.arrays if module.syntax.uses(n)}
    types = {session.arrays[n].owner_type for n in names if n in session.arrays} - {None}
    types &= SKB_TYPES
    return types.pop() if len(types) == 1 else None


def adopt_initialized_slots(session, module: Module, replaced: list) -> None:
    """libbpf fills a prog array declared with ``.values = { [i] = &prog }``
    when it loads the object: those slots hold the module's programs now,
    so the session records them (shown by slots, emptied on unload)."""
    by_id = {p.prog_id: p for p in module.programs.values()}
    for decl in module.syntax.arrays:
        array = session.arrays.get(decl.name)
        if not decl.initialized or array is None:
            continue
        for index in range(array.size):
            program = by_id.get(libbpf.map_lookup_u32(array.fd, index))
            if program is not None and array.entries.get(index) is not program:
                replaced.append((array, index, array.entries.get(index)))
                array.adopt(index, program)


def slot_type(array: prog_arrays.ProgArray, module: Module, func: str) -> str:
    """The type FUNC must be loaded with to go into ARRAY."""
    have = array.owner_type
    declared = module.contexts.get(func)
    if func in module.programs:
        declared = module.programs[func].type
    if have and declared == "sched_cls" and module.contexts.get(func) == "sched_cls" and have in SKB_TYPES and func not in module.programs:
        declared = have  # a __sk_buff function fits any skb array: the array's type decides
    if have and declared and have != declared:
        raise SlotError(
            f"{array.name} holds {have} programs (fixed by the first program that used it); "
            f"{module.name}.{func} is a {declared} program. Tail calls only reach programs of "
            f"the caller's type: write {func} for {have} or use another array."
        )
    ptype = have or declared
    if ptype is None:
        raise SlotError(
            f"cannot tell which program type {module.name}.{func} is for {array.name}: give its "
            f"context parameter a type (struct xdp_md *, struct __sk_buff *, struct "
            f"bpf_raw_tracepoint_args *, ...) or fix the array's type with "
            f"`%bpf progarray {array.name} {array.size} --type TYPE`"
        )
    return ptype


def load_program(session, module: Module, func: str, ptype: str | None = None, why: str = "", array: prog_arrays.ProgArray | None = None) -> Program:
    """FUNC of MODULE as a loaded Program: the one already loaded (refused if it has another
    type than PTYPE: one function, one program type), else loaded now by the backend with
    PTYPE, or the type its context (or the chain's skb arrays) implies. WHY and ARRAY say
    in the error what needed the type."""
    if module.closed:
        raise UsageProblem(f"this module {module.name} was unloaded or replaced by a re-run of its cell; use s.program('{module.name}.{func}')")
    existing = module.programs.get(func)
    if ptype is not None:
        ptype = prog_type_name(ptype)
    if existing is not None:
        if ptype and existing.type != ptype:
            raise (SlotError if array else AttachError)(f"{module.name}.{func} is loaded as {existing.type}; {why or 'this use'} needs {ptype}")
        return existing
    if func not in module.functions:
        known = ", ".join(module.functions) or "none"
        raise UsageProblem(f"{module.name} has no function {func!r} (functions: {known})")
    if (held_back := module.object.left_unloaded(func, f"{module.name}.{func}")) is not None:
        raise UsageProblem(held_back)
    if ptype is None and module.contexts.get(func) == "sched_cls":
        ptype = skb_chain_type(session, module, func)
    ptype = ptype or module.contexts.get(func)
    if ptype is None:
        raise UsageProblem(
            f"say which program type {module.name}.{func} is: its context parameter does not tell (known: {', '.join(sorted(PROG_TYPES))})"
        )
    if ptype not in PROG_TYPES:
        raise UsageProblem(f"unknown program type {ptype!r}; known: {', '.join(sorted(PROG_TYPES))}")
    fd, log, stats = module.object.load_program(func, ptype, f"{module.name}.{func}")
    module.compile_log += log
    program = Program(module, func, ptype, fd, stats)
    module.programs[func] = program
    return program


# ---------------------------------------------------------------- helpers


def bound_targets(session, name: str, attach: list[tuple[str, Target]]) -> dict[str, tuple[str, int, str, str]]:
    """function -> (fentry, fexit or freplace; fd of the program it traces or replaces, or 0 for
    the kernel; the function's name there; the target as written) of the cell's fentry/fexit/freplace targets: the kernel binds such a program
    to its target when it loads it, so the target is found before the cell is compiled."""
    out = {}
    for func, target in attach:
        if target.kind not in TRAMPOLINE_KINDS:
            continue
        traced = target.traced_program
        out[func] = (target.kind, *((0, target.args[0]) if traced is None else traced_function(session, name, target, traced)), target.text)
    return out


def traced_function(session, name: str, target: Target, traced: tuple[str, ...]) -> tuple[int, str]:
    """(program fd, function name) of MODULE.FUNC or MODULE.PROG.FUNC: FUNC is a loaded program,
    or a subprogram of one (each program that calls it holds its own copy: the one it is in,
    or PROG's)."""
    from .kernel.proginfo import prog_info

    mod_name, *prog_name, func = traced
    if mod_name == name:
        raise UsageProblem(
            f"{target}: a cell cannot {target.kind} its own programs (they load together, and the target must be "
            f"loaded first): put the {target.kind} program in a cell of its own"
        )
    module = session.modules.get(mod_name)
    if module is None:
        raise UsageProblem(f"{target}: no module {mod_name!r} is loaded (modules: {', '.join(session.modules) or 'none'})")
    if not prog_name and func in module.programs:
        return module.programs[func].fd, func
    holders = [p for p in module.programs.values() if not prog_name or p.name == prog_name[0]]
    holders = [p for p in holders if func in prog_info(p.fd, code=True).func_names[1:]]
    if len(holders) == 1:
        return holders[0].fd, func
    if holders:
        copies = ", ".join(f"{target.kind}:{mod_name}.{p.name}.{func}" for p in holders)
        raise UsageProblem(f"{target}: {func} is a subprogram of several programs of {mod_name}, each with its own copy; name one: {copies}")
    where = f"{mod_name}.{prog_name[0]}" if prog_name else mod_name
    loaded = ", ".join(module.programs) or "none"
    raise UsageProblem(
        f"{target}: {where} has no loaded program or subprogram {func!r} (programs: {loaded}; a subprogram is "
        "found in the programs that call it, a static one only if the compiler kept it)"
    )


def attach_specs(attach) -> list[tuple[str, str]]:
    specs = []
    for func, targets in (attach or {}).items():
        for target in [targets] if isinstance(targets, str) else targets:
            if (func, target) in specs:
                raise UsageProblem(f"{func} is asked to attach to {target} twice")
            specs.append((func, target))
    return specs


def require_function(module: Module, func: str) -> None:
    if func not in module.programs and func not in module.functions:
        known = ", ".join(module.functions) or "none"
        raise UsageProblem(f"{module.name} has no function {func!r} (functions: {known})")


def include_dirs(file: str | None) -> list[str]:
    """``#include "x.h"`` in a --file finds x.h beside that file, as a C compiler does."""
    return [os.path.dirname(os.path.abspath(file))] if file else []


def declared_sizes(syntax: CellSyntax, req: LoadRequest) -> list[tuple[str, int, int]]:
    """(name, size, line) of each prog array the cell declares. A size the
    text cannot give (a macro, an #if, a -D flag), or a name declared in
    several #if branches, is what the preprocessor makes of it."""
    from .c.sizes import preprocessed_sizes

    names = [d.name for d in syntax.arrays]
    unknown = {d.name for d in syntax.arrays if d.size is None or names.count(d.name) > 1}
    resolved = preprocessed_sizes(syntax.source, req.cflags, include_dirs(req.file)) if unknown else {}
    out, seen = [], set()
    for d in syntax.arrays:
        if d.name in seen:
            continue
        size = resolved.get(d.name) if d.name in unknown else d.size
        if size is None:
            if d.name in unknown and d.name not in resolved and names.count(d.name) > 1:
                continue  # in an #if branch the preprocessor dropped
            raise SlotError(
                f"{req.origin}:{d.line}: prog array {d.name}: cannot tell its size "
                f"({d.size_text or 'no max_entries'}); write a constant the cell (or its --cflags) "
                "defines, so cells can share the array"
            )
        seen.add(d.name)
        out.append((d.name, size, d.line))
    return out


def find_link(old: Module | None, target: Target) -> Attachment | None:
    if old is None:
        return None
    for att in old.attachments:
        if att.link_fd is not None and att.target == target:
            return att
    return None


def with_file(path: str, body: str) -> tuple[str, str]:
    text = read_source_file(path)  # regular files within the size bound only; errors never quote it
    if analyse(body).has_content:
        raise UsageProblem(
            "--file loads the file as the whole module; leave the cell body empty or to comments (or #include the file from the body instead)"
        )
    return text, os.path.basename(path)
