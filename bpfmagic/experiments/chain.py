"""Chains described as data (the L3AF idea): an ordered list of stages, each
a loaded ``MODULE.FUNC`` that ends with ``CHAIN_NEXT(ctx, NAME)``, run by a
generated entry program ``NAME_entry.entry``.

The chain owns the prog array NAME with two banks of ``capacity`` slots:
stage i of the current order sits at ``base + i`` (base 0 or capacity), and
the slot after the last stage is empty, so the last stage's CHAIN_NEXT falls
through and its own return value stands. The entry reads ``base`` from its
one-entry map ``cfg``, sets the run's per-CPU position (``__bm_cursor``) to
it and tail-calls ``NAME[base]``; CHAIN_NEXT adds one to the position and
tail-calls that slot. A new order (reorder, insert, remove) is written into
the other bank, then one map update of ``cfg`` switches the entry to it: a
run reads ``base`` once, so it goes through the old order or the new one,
never a mix. The bank left behind is rewritten at the next change, once
every run that may have read the old ``base`` has finished (see ``set``).
"""

from __future__ import annotations

import os

from ..errors import NotFound, SlotError, UsageProblem
from ..kernel import libbpf

DEFAULT_CAPACITY = 16

_CTX = {
    "xdp": ("struct xdp_md", "XDP_PASS"),
    "sched_cls": ("struct __sk_buff", "0"),
    "socket_filter": ("struct __sk_buff", "0"),
    "sched_act": ("struct __sk_buff", "0"),
    "raw_tracepoint": ("struct bpf_raw_tracepoint_args", "0"),
}


def entry_source(name: str, ptype: str) -> str:
    ctx_type, default = _CTX[ptype]
    return (
        f"BPF_ARRAY(cfg, u32, 1);\n"
        f"int entry({ctx_type} *ctx) {{\n"
        f"    u32 z = 0; u32 *b = cfg.lookup(&z); u32 base = b ? *b : 0;\n"
        f"    u32 *c = __bm_cursor.lookup(&z); if (!c) return {default};\n"
        f"    *c = base;\n"
        f"    {name}.call(ctx, base);\n"
        f"    return {default};\n"
        f"}}\n"
    )


def chain(session, name: str, stages: list[str] | None = None, type: str | None = None, capacity: int = DEFAULT_CAPACITY) -> "Chain":
    """Session.chain: the chain NAME of the session's registry, made on first use, set to STAGES
    when given; without stages the chain as it is."""
    with session.lock:
        existing = session.chains.get(name)
        if stages is None:
            if existing is None:
                raise NotFound(f"no chain {name!r} (chains: {', '.join(session.chains) or 'none'})", "chain", name, tuple(session.chains))
            return existing
        if existing is None:
            existing = Chain.create(session, name, type=type, capacity=capacity)
            session.chains[name] = existing
        existing.set(stages)
        return existing


class Chain:
    def __init__(self, session, name: str, ptype: str | None, capacity: int):
        self.session, self.name, self.type, self.capacity = session, name, ptype, capacity
        self.stages: list[str] = []
        self.base = 0
        self.unsettled = False  # runs may still be in the bank left by the last switch
        self.entry = None  # the entry module

    @classmethod
    def create(cls, session, name: str, type: str | None = None, capacity: int = DEFAULT_CAPACITY) -> "Chain":
        if not 1 <= capacity <= 1024:
            raise UsageProblem(f"chain {name}: capacity must be 1..1024 stages")
        session.cursor_map()
        have = session.arrays.get(name)
        if have is not None and have.size != 2 * capacity:
            raise SlotError(f"chain {name}: the array {name} has {have.size} slots; a chain of capacity {capacity} needs {2 * capacity} (two banks)")
        if have is None:
            session.progarray(name, 2 * capacity, type=type)
        return cls(session, name, type, capacity)

    def _ensure_entry(self, ptype: str) -> None:
        if self.entry is not None and not self.entry.closed:
            return
        if ptype not in _CTX:
            raise UsageProblem(f"chain {self.name}: stages of type {ptype} are not supported (xdp, sched_cls, socket_filter, raw_tracepoint)")
        module = self.session.load(f"{self.name}_entry", entry_source(self.name, ptype), origin=f"chain {self.name}")
        self.entry = module
        self.session.program(f"{module.name}.entry", ptype)
        libbpf.map_update_u32(self._cfg_fd(), 0, self.base)

    def _cfg_fd(self) -> int:
        return self.entry.object.map_fd("cfg")

    @property
    def program(self):
        """The entry program: attach it, or test-run it."""
        return self.entry.programs["entry"] if self.entry else None

    def set(self, stages) -> None:
        """Switch the chain to STAGES (in order), atomically for the traffic."""
        stages = [str(s) for s in stages]
        if len(stages) >= self.capacity:
            # The slot after the last stage must be empty (the chain ends there); after a full
            # bank 0 that slot would be bank 1's first: the old order's stages would run on.
            raise UsageProblem(
                f"chain {self.name}: {len(stages)} stages; a chain of capacity {self.capacity} takes at most "
                f"{self.capacity - 1} (the slot after the last stays empty); make it with a larger capacity"
            )
        array = self.session.array(self.name)
        programs = []
        for spec in stages:
            mod, dot, func = spec.partition(".")
            if not dot:
                raise UsageProblem(f"chain {self.name}: a stage is MODULE.FUNC (got {spec!r})")
            module = self.session.module(mod)
            if not any(t.kind == "chain" and t.array == self.name and t.function == func for t in module.syntax.tail_calls):
                raise UsageProblem(f"chain {self.name}: {spec} does not call CHAIN_NEXT(ctx, {self.name}); without it the chain would end there")
            programs.append(spec)
        ptype = array.owner_type or self.type
        # Once the entry exists traffic may be running through the bank at base, even an
        # empty one: a new order always goes into the other bank.
        spare = self.base if self.entry is None or self.entry.closed else self.capacity - self.base
        if self.unsettled:
            # Runs still in the bank about to be rewritten finish first. Waiting a fixed time
            # is not enough: a run that outlasts it (a slow stage, a vCPU the host stopped
            # mid-run) would go on into the new order's stages: a mix. A run is one RCU
            # read-side section, so after a grace period no run that read the old base is left.
            libbpf.wait_for_running_programs()
            self.unsettled = False
        for i, spec in enumerate(programs):
            self.session.slot(f"{self.name}[{spare + i}]", spec)
        for i in range(len(programs), self.capacity):
            if spare + i in array.entries:
                self.session.unslot(f"{self.name}[{spare + i}]")
        ptype = array.owner_type or ptype
        if ptype is None:
            raise UsageProblem(f"chain {self.name}: give it a type (no stage says one)")
        self._ensure_entry(ptype)
        libbpf.map_update_u32(self._cfg_fd(), 0, spare)  # the switch: one map update
        self.base, self.stages, self.unsettled = spare, programs, True

    def reorder(self, stages) -> None:
        self.set(stages)

    def insert(self, position: int, stage: str) -> None:
        stages = list(self.stages)
        stages.insert(position, stage)
        self.set(stages)

    def remove(self, stage: str) -> None:
        if stage not in self.stages:
            raise UsageProblem(f"chain {self.name} has no stage {stage} (stages: {', '.join(self.stages)})")
        self.set([s for s in self.stages if s != stage])

    def df(self):
        """The stages in order, with their slots, the runs of each since this order began and
        its runs in this chain in all (every position and order it had)."""
        import pandas as pd

        array = self.session.array(self.name)
        calls, missed = array.call_counts()
        rows = []
        for i, spec in enumerate(self.stages):
            index = self.base + i
            c0, m0 = array.baselines.get(index, (0, 0))
            program = array.entries.get(index)
            total = sum(c - m for c, m in array.credited(program).values()) if program is not None else 0
            rows.append(
                {"position": i, "stage": spec, "slot": array.label(index), "runs": (calls[index] - c0) - (missed[index] - m0), "runs_in_chain": total}
            )
        df = pd.DataFrame(rows, columns=["position", "stage", "slot", "runs", "runs_in_chain"])
        df.attrs.update(chain=self.name, base=self.base, entry=f"{self.name}_entry.entry")
        return df

    def __repr__(self) -> str:
        order = " → ".join(s.split(".", 1)[1] for s in self.stages) or "no stages"
        return f"<Chain {self.name}: {self.name}_entry.entry → {order} (bank at {self.base})>"


MAX_CHAIN_FILE = 1 << 20


def _read_chain_file(path: str) -> str:
    """The file's text: a regular file only (a FIFO would block the cell), bounded, UTF-8."""
    from ..c.source_files import read_regular_file

    label = f"--file {os.path.basename(path)}"
    data = read_regular_file(path, label, MAX_CHAIN_FILE, f"a chain file is at most {MAX_CHAIN_FILE >> 20} MiB")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise UsageProblem(f"{label}: not UTF-8 text") from None


# A chain file is a flat mapping with one list of names: anything deeper or larger is not one.
MAX_YAML_DEPTH = 8
MAX_YAML_NODES = 10_000


def _parse_chain_yaml(text: str, label: str):
    """The YAML document, refused before any value is built when it uses aliases (a few
    hundred bytes of nested aliases expand to gigabytes), nests deeper than a chain file
    can, has more nodes than one can, or repeats a key (last-wins would hide a mistake).
    Errors name the line and the problem, never the file's text (it may be anyone's file)."""
    import yaml

    class ChainLoader(yaml.SafeLoader):
        depth = nodes = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise UsageProblem(f"{label}: YAML aliases (*name) are not accepted in a chain file (line {self.peek_event().start_mark.line + 1})")
            self.depth += 1
            self.nodes += 1
            if self.depth > MAX_YAML_DEPTH:
                raise UsageProblem(f"{label}: nested more than {MAX_YAML_DEPTH} levels deep; a chain file is a mapping with a list of stages")
            if self.nodes > MAX_YAML_NODES:
                raise UsageProblem(f"{label}: more than {MAX_YAML_NODES} YAML nodes; a chain file is a mapping with a list of stages")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key in seen:
                    raise UsageProblem(f"{label}: the key {str(key)[:40]!r} appears twice (line {key_node.start_mark.line + 1})")
                seen.add(key)
            return super().construct_mapping(node, deep)

    try:
        return yaml.load(text, Loader=ChainLoader)
    except yaml.MarkedYAMLError as e:
        where = f" at line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1}" if e.problem_mark else ""
        raise UsageProblem(f"{label}: not YAML ({e.problem or e.context}{where})") from None
    except yaml.YAMLError:
        raise UsageProblem(f"{label}: not YAML") from None
    except ValueError:  # an integer past Python's digit limit, a date out of range, ...
        raise UsageProblem(f"{label}: a value in the file is out of range (a capacity is a whole number of stages)") from None


def _kind(value) -> str:
    """What a parsed value is, for an error message that must not repeat the value itself."""
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else f"a {type(value).__name__}"


def load_file(session, name: str, path: str):
    """A chain from YAML: ``stages: [MODULE.FUNC, ...]`` (and optionally ``type``, ``capacity``)."""
    from ..kernel.progtypes import PROG_TYPES, prog_type_name

    label = f"--file {os.path.basename(path)}"
    spec = _parse_chain_yaml(_read_chain_file(path), label) or {}
    stages = spec.get("stages") if isinstance(spec, dict) else None
    if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
        raise UsageProblem(f"{label}: write `stages:` as a list of MODULE.FUNC")
    if spec.get("chain", name) != name:
        chain = spec["chain"]
        said = repr(chain[:40]) if isinstance(chain, str) else _kind(chain)
        raise UsageProblem(f"{label} describes chain {said}, not {name!r}")
    capacity, ptype = spec.get("capacity"), spec.get("type")
    if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int)):
        raise UsageProblem(f"{label}: capacity must be a whole number of stages (got {_kind(capacity)})")
    if capacity is not None and not 1 <= capacity <= 1024:
        raise UsageProblem(f"{label}: capacity must be 1..1024 stages")
    if ptype is not None:
        if not isinstance(ptype, str) or prog_type_name(ptype[:64]) not in PROG_TYPES:
            said = repr(ptype[:40]) if isinstance(ptype, str) else _kind(ptype)
            raise UsageProblem(f"{label}: type must be a program type such as xdp or sched_cls (got {said})")
        ptype = prog_type_name(ptype)
    existing = session.chains.get(name)
    # A file describes the chain as a whole: what it says of an existing chain must hold.
    if existing is not None and capacity is not None and capacity != existing.capacity:
        raise UsageProblem(
            f"{label}: chain {name} has capacity {existing.capacity}, the file says {capacity}; "
            f"`%bpf unload {name}_entry` and `%bpf unload {name}` first to change it"
        )
    running = (existing.type or session.array(name).owner_type) if existing is not None else None
    if ptype and running and ptype != running:
        raise UsageProblem(f"{label}: chain {name} runs {running} stages, the file says {ptype}")
    return session.chain(name, stages, type=ptype, capacity=DEFAULT_CAPACITY if capacity is None else capacity)
