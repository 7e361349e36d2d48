"""The tail-call chain as a graph: programs and slots as nodes; call sites
(program -> slot it tail-calls) and slot contents (slot -> program in it) as
edges, annotated with the kernel's run counts and bpfmagic's per-slot call
and missed counters.

Rendering uses the `graphviz` Python package with Graphviz's `dot` (the
Debian package `graphviz`): `dot`'s layered layout draws a chain as a chain,
left to right, and gives SVG that Jupyter shows as is. The data
(`ChainGraph.nodes`, `ChainGraph.edges`) needs neither.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass

from .c import analyse
from .c.analysis import _parser, _unconditional_defines, constant_value
from .progarray import slot_counts

NODE_COLUMNS = ["node", "kind", "program", "type", "array", "index", "key", "run_cnt", "avg_ns",
                "calls", "taken", "missed"]
EDGE_COLUMNS = ["src", "dst", "kind", "array", "index", "key", "calls", "taken", "missed"]

@dataclass
class CallSite:
    function: str
    array: str
    key: str  # the key expression as written


def call_sites(source: str) -> list[CallSite]:
    """Every tail call in SOURCE whose array the code names: the function it is
    in, the array and the key expression (``ARRAY.call(ctx, KEY)``,
    ``bpf_tail_call(ctx, &ARRAY, KEY)``, ``bpf_tail_call_static``, through a
    map-pointer variable), read on the syntax tree."""
    return [CallSite(t.function, t.array, t.key) for t in analyse(source).tail_calls
            if t.function and t.array]


def resolve_key(array, key: str, source: str) -> int | None:
    """The slot index a key expression names when it is a constant (a number,
    a #define'd number or SLOT(array, name)); None when it is computed at run time."""
    tree = _parser().parse(b"int __bm_key = " + key.encode() + b";").root_node
    decl = tree.named_children[0] if tree.named_children else None
    init = decl.child_by_field_name("declarator") if decl is not None else None
    value = init.child_by_field_name("value") if init is not None else None
    while value is not None and value.type == "parenthesized_expression" and value.named_children:
        value = value.named_children[0]
    if value is not None and value.type == "call_expression":
        fn = value.child_by_field_name("function")
        args = value.child_by_field_name("arguments")
        names = [c.text.decode() for c in args.named_children] if args is not None else []
        if fn is not None and fn.text == b"SLOT" and len(names) == 2:
            try:
                return array.resolve(names[1])
            except Exception:
                return None
        return None
    defines = _unconditional_defines(_parser().parse(source.encode()).root_node)
    return constant_value(value, defines)


class ChainGraph:
    """Nodes and edges of the session's tail-call chains, as DataFrames, and
    as a Graphviz picture in Jupyter."""

    def __init__(self, nodes, edges, title: str = ""):
        self.nodes = nodes
        self.edges = edges
        self.title = title

    def edge_set(self, kind: str | None = None) -> set[tuple[str, str]]:
        rows = self.edges if kind is None else self.edges[self.edges["kind"] == kind]
        return set(zip(rows["src"], rows["dst"]))

    def dot(self):
        """graphviz.Digraph of the chain."""
        import graphviz

        g = graphviz.Digraph("chain", graph_attr={"rankdir": "LR", "fontsize": "10", "label": self.title,
                                                  "labelloc": "t"},
                             node_attr={"fontname": "Helvetica", "fontsize": "10"},
                             edge_attr={"fontname": "Helvetica", "fontsize": "9"})
        for row in self.nodes.itertuples(index=False):
            if row.kind == "program":
                lines = [row.program, row.type or ""]
                if row.run_cnt:
                    avg = f", {row.avg_ns:.0f} ns avg" if row.avg_ns is not None else ""
                    lines.append(f"{row.run_cnt:,} runs{avg}")
                if row.taken:
                    lines.append(f"{row.taken:,} tail calls in")
                g.node(row.node, "\n".join(lines), shape="box", style="rounded,filled", fillcolor="#e8f0fe")
            else:
                label = row.node + f"\n{row.calls:,} calls"
                empty = not isinstance(row.program, str)
                if row.missed:
                    label += f", {row.missed:,} missed"
                color = "#d93025" if row.missed else ("#9aa0a6" if empty else "#1a73e8")
                g.node(row.node, label + ("\n(empty)" if empty else ""), shape="ellipse",
                       style="dashed" if empty else "solid", color=color, fontcolor=color if row.missed else "black")
        for row in self.edges.itertuples(index=False):
            if row.kind == "call":
                variable = row.key == "(var)"
                g.edge(row.src, row.dst, label="var" if variable else "", style="dashed" if variable else "solid")
            else:
                g.edge(row.src, row.dst, label=f"{row.taken:,} taken", color="#1a73e8")
        return g

    def svg(self) -> str:
        return self.render("svg").decode()

    def render(self, format: str = "svg") -> bytes:
        """The picture as bytes: svg, png, pdf (any format `dot` writes)."""
        if not shutil.which("dot"):
            raise RuntimeError("drawing the graph needs Graphviz's `dot`: apt-get install graphviz "
                               "(the data is in .nodes and .edges)")
        return self.dot().pipe(format=format)

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = {"text/plain": repr(self)}
        if shutil.which("dot") and len(self.nodes):
            bundle["image/svg+xml"] = self.svg()
        return bundle

    def __repr__(self) -> str:
        if not len(self.edges):
            return "<ChainGraph: no tail calls or slots>"
        lines = [f"{r.src} -> {r.dst}" + (f"  ({r.taken} taken)" if r.kind == "slot" else "")
                 for r in self.edges.itertuples(index=False)]
        return "<ChainGraph\n  " + "\n  ".join(lines) + "\n>"


def graph(session, array: str | None = None) -> ChainGraph:
    """The chain graph of every session array, or of ARRAY. Slot nodes and call
    edges count per slot (since the array was created); slot edges and program
    nodes count only the calls made while the program sat in the slot."""
    import pandas as pd

    nodes: dict[str, dict] = {}
    edges: list[dict] = []
    with session._lock:
        arrays = [session.array(array)] if array else list(session.arrays.values())
        names = {a.name for a in arrays}
        counts = slot_counts(arrays)
        programs = [p for m in session.modules.values() for p in m.programs.values()]

        def program_node(p):
            if p.qualname not in nodes:
                info = p.info()
                run_cnt, run_time = int(info.get("run_cnt", 0)), int(info.get("run_time_ns", 0))
                credited = [cm for a in arrays for cm in a.credited(p, counts).values()]
                calls, missed = sum(c for c, _ in credited), sum(m for _, m in credited)
                nodes[p.qualname] = {"node": p.qualname, "kind": "program", "program": p.qualname, "type": p.type,
                                     "array": None, "index": None, "key": None, "run_cnt": run_cnt,
                                     "avg_ns": round(run_time / run_cnt, 1) if run_cnt else None,
                                     "calls": calls, "taken": calls - missed, "missed": missed}
            return p.qualname

        def slot_node(a, index):
            label = a.label(index)
            if label not in nodes:
                calls, missed = counts.get((a.name, index), (0, 0))
                occupant = a.entries.get(index)
                nodes[label] = {"node": label, "kind": "slot", "program": occupant.qualname if occupant else None,
                                "type": occupant.type if occupant else None, "array": a.name, "index": index,
                                "key": a.key_name(index), "run_cnt": 0, "avg_ns": None, "calls": calls,
                                "taken": calls - missed, "missed": missed}
            return label

        def called(a):
            return {index for name, index in counts if name == a.name}

        def interesting(a):
            return sorted(set(a.entries) | set(a.names.values()) | called(a))

        sites_by_module = {m.name: call_sites(m.source) for m in session.modules.values()}
        defines_by_module = {m.name: m.source
                             for m in session.modules.values()}
        for p in programs:
            for site in sites_by_module.get(p.module.name, []):
                if site.function != p.name or site.array not in names:
                    continue
                a = session.arrays[site.array]
                index = resolve_key(a, site.key, defines_by_module[p.module.name])
                targets = [index] if index is not None and 0 <= index < a.size else interesting(a)
                for target in targets:
                    edge = _edge(program_node(p), slot_node(a, target), "call", a, target,
                                 a.key_name(target) if index is not None else "(var)",
                                 counts.get((a.name, target), (0, 0)))
                    if edge not in edges:
                        edges.append(edge)
        for a in arrays:
            for index in sorted(a.entries):
                p = a.entries[index]
                edges.append(_edge(slot_node(a, index), program_node(p), "slot", a, index, a.key_name(index),
                                   a.credited(p, counts)[index]))
            for index in sorted(called(a)):  # slots that were called though no call site names them (e.g. var keys)
                slot_node(a, index)
    node_df = pd.DataFrame(list(nodes.values()), columns=NODE_COLUMNS)
    edge_df = pd.DataFrame(edges, columns=EDGE_COLUMNS)
    title = f"tail-call chain: {', '.join(sorted(names)) or 'no arrays'}"
    return ChainGraph(node_df, edge_df, title)


def _edge(src, dst, kind, array, index, key, calls_missed):
    calls, missed = calls_missed
    return {"src": src, "dst": dst, "kind": kind, "array": array.name, "index": index, "key": key,
            "calls": calls, "taken": calls - missed, "missed": missed}
