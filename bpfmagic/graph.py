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

import re
import shutil
from dataclasses import dataclass

from .compiler import (
    CALL_RE,
    MACRO_FUNCS,
    SLOT_RE,
    matching_paren,
    split_args,
    strip_comments,
)
from .progarray import slot_counts

NODE_COLUMNS = ["node", "kind", "program", "type", "array", "index", "key", "run_cnt", "avg_ns",
                "calls", "taken", "missed"]
EDGE_COLUMNS = ["src", "dst", "kind", "array", "index", "key", "calls", "taken", "missed"]

_HELPER_CALL_RE = re.compile(r"\bbpf_tail_call\s*\(")
_DEFINE_RE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)[ \t]+\(?\s*(0x[0-9a-fA-F]+|\d+)\s*\)?[ \t]*$", re.M)


@dataclass
class CallSite:
    function: str
    array: str
    key: str  # the key expression as written


def call_sites(source: str) -> list[CallSite]:
    """Every tail call in SOURCE: the function it is in, the array and the
    key expression (``ARRAY.call(ctx, KEY)`` and ``bpf_tail_call(ctx, &ARRAY, KEY)``)."""
    code = strip_comments(source)
    sites = []
    for name, start, end in _functions(code):
        body = code[start:end]
        for m in CALL_RE.finditer(body):
            args = _args(body, m.end() - 1)
            if args is not None and len(args) == 2:
                sites.append(CallSite(name, m[1], args[1]))
        for m in _HELPER_CALL_RE.finditer(body):
            args = _args(body, m.end() - 1)
            if args is not None and len(args) == 3:
                sites.append(CallSite(name, args[1].lstrip("&").strip(), args[2]))
    return sites


def _functions(code: str):
    """(name, body start, body end) of each top-level function definition."""
    depth, i = 0, 0
    while i < len(code):
        c = code[i]
        if c == "{":
            if depth == 0:
                name = _function_name(code[:i])
                end = matching_paren(code, i)
                if name and end is not None:
                    yield name, i, end
                    i = end + 1
                    continue
            depth += 1
        elif c == "}":
            depth = max(0, depth - 1)
        i += 1


def _function_name(before: str) -> str | None:
    text = before.rstrip()
    if not text.endswith(")"):
        return None
    depth = 0
    for j in range(len(text) - 1, -1, -1):
        if text[j] == ")":
            depth += 1
        elif text[j] == "(":
            depth -= 1
            if depth == 0:
                m = re.search(r"([A-Za-z_]\w*)\s*$", text[:j])
                if not m:
                    return None
                for regex, name, _ in MACRO_FUNCS:  # RAW_TRACEPOINT_PROBE(ev) -> raw_tracepoint__ev, ...
                    macro = regex.fullmatch(text, m.start())
                    if macro:
                        return name(macro)
                return m[1]
    return None


def _args(code: str, open_at: int) -> list[str] | None:
    close = matching_paren(code, open_at)
    if close is None:
        return None
    return [code[a:b].strip() for a, b in split_args(code, open_at + 1, close)]


def resolve_key(array, key: str, defines: dict[str, int]) -> int | None:
    """The slot index a key expression names when it is a constant (a number,
    a #define'd number or SLOT(array, name)); None when it is computed at run time."""
    key = key.strip()
    while key.startswith("(") and matching_paren(key, 0) == len(key) - 1:
        key = key[1:-1].strip()
    if re.fullmatch(r"0x[0-9a-fA-F]+|\d+", key):
        return int(key, 0)
    if key in defines:
        return defines[key]
    m = SLOT_RE.fullmatch(key)
    if not m:
        return None  # a variable (or an expression): known only at run time
    try:
        return array.resolve(m[2])
    except Exception:
        return None


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
        defines_by_module = {m.name: {d[1]: int(d[2], 0) for d in _DEFINE_RE.finditer(m.source)}
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
