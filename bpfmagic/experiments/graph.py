"""The tail-call chain as a graph: programs and slots as nodes; call sites
(program -> slot it tail-calls) and slot contents (slot -> program in it) as
edges, annotated with the kernel's run counts and bpfmagic's per-slot call
and missed counters.

Rendering uses the `graphviz` Python package with Graphviz's `dot` (the
Debian package `graphviz`): `dot`'s layered layout draws a chain as a chain,
left to right when it fits a notebook's width, else top to bottom, and gives
SVG that Jupyter shows as is. The data
(`ChainGraph.nodes`, `ChainGraph.edges`) needs neither.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from ..c import analyse
from ..c.analysis import constant_key
from ..progarray import slot_counts

NODE_COLUMNS = [
    "node",
    "kind",
    "program",
    "type",
    "array",
    "index",
    "key",
    "run_cnt",
    "avg_ns",
    "calls",
    "taken",
    "missed",
    "insns_processed",
    "stack",
]
# A call edge counts the calls made at its call site (line of the cell) when the site's
# counters know (a constant key reaches one slot); a variable key's edges to the slots it
# may reach carry no split (calls <NA>), the site's own totals are in site_calls/site_missed.
EDGE_COLUMNS = ["src", "dst", "kind", "array", "index", "key", "calls", "taken", "missed", "line", "site_calls", "site_missed"]
WIDE = 6  # pictures with more nodes than this side by side are laid out top to bottom (a notebook is ~950 px wide)
DEEP = 4  # ... and those whose longest way passes more nodes than this (each rank with its edge label ~220 px)
FAN_OUT = 2  # variable keys of several programs reaching more slots than this: drawn through one node for the array's lookup
COLLAPSED_KEYS_SHOWN = 6  # of slots collapsed into one node, the keys of this many (most called first)


@dataclass
class CallSite:
    function: str
    array: str
    key: str  # the key expression as written
    line: int = 0  # the cell's line


def call_sites(source: str) -> list[CallSite]:
    """Every tail call in SOURCE whose array the code names: the function it is
    in, the array and the key expression (``ARRAY.call(ctx, KEY)``,
    ``bpf_tail_call(ctx, &ARRAY, KEY)``, ``bpf_tail_call_static``, through a
    map-pointer variable), read on the syntax tree."""
    return [CallSite(t.function, t.array, t.key, t.line) for t in analyse(source).tail_calls if t.function and t.array]


def _callers(cell, function: str) -> set[str]:
    """The functions of the cell that call FUNCTION (a BPF-to-BPF call or an inlined
    helper), directly or through others: a tail call in a subprogram is made by them."""
    spans = [(f.start, f.end, f.name) for f in cell.functions.values()]
    out: set[str] = set()
    todo = [function]
    while todo:
        name = todo.pop()
        for node in cell.identifier_nodes.get(name, ()):
            parent = node.parent
            if parent is None or parent.type != "call_expression" or parent.child_by_field_name("function") != node:
                continue  # a name used otherwise (SLOT(jt, parse_ip), a pointer) is no call
            for start, end, caller in spans:
                if start <= node.start_byte < end and caller != name and caller not in out:
                    out.add(caller)
                    todo.append(caller)
    return out


def resolve_key(array, key: str, source: str) -> int | None:
    """The slot index a key expression names when it is a constant (a number,
    a #define'd number or SLOT(array, name)); None when it is computed at run time."""
    return constant_key(key, source, array.resolve)


class ChainGraph:
    """Nodes and edges of the session's tail-call chains, as DataFrames, and
    as a Graphviz picture in Jupyter."""

    def __init__(self, nodes, edges, title: str = "", stack=None):
        self.nodes = nodes
        self.edges = edges
        self.title = title
        self.stack = stack or {}  # the chain's worst-case stack (chain_stack)
        self.widths: dict = {}  # (src, dst) -> runs along the edge (live paths): drawn as its width

    def edge_set(self, kind: str | None = None) -> set[tuple[str, str]]:
        rows = self.edges if kind is None else self.edges[self.edges["kind"] == kind]
        return set(zip(rows["src"], rows["dst"]))

    def _ranks(self, drawn) -> int:
        """How many nodes the longest way through the drawn chain passes (loops counted once):
        side by side, each takes a node and a labelled edge, about 220 px."""
        succ: dict = {}
        for r in self.edges.itertuples(index=False):
            succ.setdefault(drawn(r.src), set()).add(drawn(r.dst))
        targets = {d for ds in succ.values() for d in ds}
        level = {n: 1 for n in succ if n not in targets} or {n: 1 for n in succ}
        frontier = list(level)
        while frontier:
            node = frontier.pop()
            for nxt in succ.get(node, ()):
                if nxt != node and level.get(nxt, 0) < level[node] + 1 and level[node] < len(self.nodes):
                    level[nxt] = level[node] + 1
                    frontier.append(nxt)
        return max(level.values(), default=1)

    def dot(self):
        """graphviz.Digraph of the chain, drawn to be read at a notebook's width: empty
        slots reached only through a variable key are one node per array (how many,
        their calls, all missed), variable keys of several programs that fan out to more
        than FAN_OUT slots go through one node for the array's lookup, and more than WIDE nodes
        are laid out top to bottom. ``.nodes`` / ``.edges`` keep every slot."""
        import graphviz

        collapsed = self._missed_only()
        drawn = lambda node: collapsed.get(node, node)  # noqa: E731 - the node a slot is drawn as
        shown = len(self.nodes) - len(collapsed) + len(set(collapsed.values()))
        title = self.title + (f"\n{stack_summary(self.stack)}" if self.stack.get("worst") is not None else "")
        # Fit a notebook's output (about 950 px): past WIDE nodes side by side the text would
        # be scaled below reading size, so the chain goes top to bottom; anything still
        # wider is scaled down to 9.5 inches (at 96 px per inch).
        g = graphviz.Digraph(
            "chain",
            graph_attr={
                "rankdir": "TB" if shown > WIDE or self._ranks(drawn) > DEEP else "LR",
                "fontsize": "10",
                "label": title,
                "labelloc": "t",
                "size": "9.5,40",
            },
            node_attr={"fontname": "Helvetica", "fontsize": "10"},
            edge_attr={"fontname": "Helvetica", "fontsize": "9"},
        )
        for row in self.nodes.itertuples(index=False):
            if row.node in collapsed:
                continue
            if row.kind == "program":
                lines = [row.program, row.type or ""]
                if row.run_cnt:
                    avg = f", {row.avg_ns:.0f} ns avg" if row.avg_ns is not None else ""
                    lines.append(f"{row.run_cnt:,} runs{avg}")
                if row.taken:
                    lines.append(f"{row.taken:,} tail calls in")
                if row.insns_processed is not None and row.insns_processed == row.insns_processed:
                    lines.append(f"verifier: {int(row.insns_processed):,} insns, stack {row.stack} B")
                g.node(row.node, "\n".join(lines), shape="box", style="rounded,filled", fillcolor="#e8f0fe")
            else:
                label = row.node + f"\n{row.calls:,} calls"
                empty = not isinstance(row.program, str)
                if row.missed:
                    label += f", {row.missed:,} missed"
                color = "#d93025" if row.missed else ("#9aa0a6" if empty else "#1a73e8")
                g.node(
                    row.node,
                    label + ("\n(empty)" if empty else ""),
                    shape="ellipse",
                    style="dashed" if empty else "solid",
                    color=color,
                    fontcolor=color if row.missed else "black",
                )
        for node, (count, calls, keys) in self._collapsed_nodes(collapsed).items():
            more = ["…"] if count > len(keys) else []
            rows = [", ".join(keys[i : i + 3]) for i in range(0, len(keys), 3)]  # 3 keys a line: a narrow node
            label = "\n".join([f"{node.split('[')[0]}: {count} empty slots", *rows, *more, f"{calls:,} calls, all missed"])
            g.node(node, label, shape="ellipse", style="dashed", color="#d93025", fontcolor="#d93025")
        top = max(self.widths.values(), default=0)

        def width(pairs) -> dict:
            n = sum(self.widths.get(pair, 0) for pair in pairs)
            return {"penwidth": f"{1 + 5 * n / top:.1f}", "xlabel": f"{n:,} runs"} if n and top else {}

        variable = self.edges[(self.edges["kind"] == "call") & (self.edges["key"] == "(var)")]
        fanned = {array for array, group in variable.groupby("array") if group["dst"].nunique() > FAN_OUT and group["src"].nunique() > 1}
        done: set = set()
        for row in self.edges.itertuples(index=False):
            if row.kind == "call" and row.key == "(var)":
                if row.array in fanned:  # src -> the array's lookup -> each slot: N + M edges, not N x M
                    lookup = f"{row.array}[var]"
                    if lookup not in done:
                        g.node(lookup, f"{row.array}[key]\nvariable key", shape="diamond", style="dashed", fontsize="9")
                    mine = variable[variable["src"] == row.src][["src", "dst"]].itertuples(index=False)
                    self._once(g, done, row.src, lookup, width(mine), label="var", style="dashed")
                    into = [(r.src, r.dst) for r in variable.itertuples(index=False) if drawn(r.dst) == drawn(row.dst)]
                    self._once(g, done, lookup, drawn(row.dst), width(into), style="dashed")
                else:
                    self._once(g, done, row.src, drawn(row.dst), width([(row.src, row.dst)]), label="var", style="dashed")
            elif row.kind == "call":
                label = f"line {row.line}" if row.line else ""
                if row.calls is not None and row.calls == row.calls and row.calls:
                    label += f": {int(row.calls):,} calls" + (f", {int(row.missed):,} missed" if row.missed else "")
                g.edge(row.src, row.dst, label=label, **width([(row.src, row.dst)]))
            else:
                g.edge(row.src, row.dst, label=f"{row.taken:,} taken", color="#1a73e8", **width([(row.src, row.dst)]))
        return g

    @staticmethod
    def _once(g, done: set, src: str, dst: str, attrs: dict, **style) -> None:
        """One drawn edge per pair: several slots collapsed into one node share it."""
        if (src, dst) not in done:
            done.update({(src, dst), src, dst})
            g.edge(src, dst, **style, **attrs)

    def _missed_only(self) -> dict[str, str]:
        """Slot node -> the node it is drawn in: the empty slots of an array that only
        variable-key calls reach (a dispatcher's missed syscalls), when there are two or
        more; a slot a constant key names or a program fills stays a node of its own."""
        if not len(self.nodes):
            return {}
        named_by = {(r.dst) for r in self.edges.itertuples(index=False) if not (r.kind == "call" and r.key == "(var)")}
        empty = self.nodes[(self.nodes["kind"] == "slot") & ~self.nodes["program"].apply(lambda p: isinstance(p, str))]
        groups: dict[str, list[str]] = {}
        for row in empty.itertuples(index=False):
            if row.node not in named_by:
                groups.setdefault(row.array, []).append(row.node)
        return {node: f"{array}[empty]" for array, members in groups.items() if len(members) > 1 for node in members}

    def _collapsed_nodes(self, collapsed: dict[str, str]) -> dict[str, tuple[int, int, list[str]]]:
        """Collapsed node -> (slots in it, their calls, the keys of the most called few)."""
        out = {}
        for node in sorted(set(collapsed.values())):
            rows = self.nodes[self.nodes["node"].map(collapsed.get) == node].sort_values("calls", ascending=False, kind="stable")
            keys = [str(k if isinstance(k, str) else i) for k, i in zip(rows["key"], rows["index"])]
            out[node] = (len(rows), int(rows["calls"].sum()), keys[:COLLAPSED_KEYS_SHOWN])
        return out

    def svg(self) -> str:
        return self.render("svg").decode()

    def render(self, format: str = "svg") -> bytes:
        """The picture as bytes: svg, png, pdf (any format `dot` writes)."""
        if not shutil.which("dot"):
            raise RuntimeError("drawing the graph needs Graphviz's `dot`: apt-get install graphviz (the data is in .nodes and .edges)")
        return self.dot().pipe(format=format)

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = {"text/plain": repr(self)}
        if shutil.which("dot") and len(self.nodes):
            bundle["image/svg+xml"] = self.svg()
        return bundle

    def __repr__(self) -> str:
        if not len(self.edges):
            return "<ChainGraph: no tail calls or slots>"
        lines = [f"{r.src} -> {r.dst}" + (f"  ({r.taken} taken)" if r.kind == "slot" else "") for r in self.edges.itertuples(index=False)]
        if self.stack.get("worst") is not None:
            lines.append(stack_summary(self.stack))
        return "<ChainGraph\n  " + "\n  ".join(lines) + "\n>"


def graph(session, array: str | None = None) -> ChainGraph:
    """The chain graph of every session array, or of ARRAY. Slot nodes and call
    edges count per slot (since the array was created); slot edges and program
    nodes count only the calls made while the program sat in the slot."""
    import pandas as pd

    nodes: dict[str, dict] = {}
    edges: list[dict] = []
    verifier: dict = {}
    with session.lock:
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
                v = p.verifier
                nodes[p.qualname] = {
                    "node": p.qualname,
                    "kind": "program",
                    "program": p.qualname,
                    "type": p.type,
                    "array": None,
                    "index": None,
                    "key": None,
                    "run_cnt": run_cnt,
                    "avg_ns": round(run_time / run_cnt, 1) if run_cnt else None,
                    "calls": calls,
                    "taken": calls - missed,
                    "missed": missed,
                    "insns_processed": v.insns_processed,
                    "stack": v.stack,
                }
                verifier[p.qualname] = v
            return p.qualname

        def slot_node(a, index):
            label = a.label(index)
            if label not in nodes:
                calls, missed = counts.get((a.name, index), (0, 0))
                occupant = a.entries.get(index)
                nodes[label] = {
                    "node": label,
                    "kind": "slot",
                    "program": occupant.qualname if occupant else None,
                    "type": occupant.type if occupant else None,
                    "array": a.name,
                    "index": index,
                    "key": a.key_name(index),
                    "run_cnt": 0,
                    "avg_ns": None,
                    "calls": calls,
                    "taken": calls - missed,
                    "missed": missed,
                }
            return label

        def called(a):
            return {index for name, index in counts if name == a.name}

        def interesting(a):
            return sorted(set(a.entries) | set(a.names.values()) | called(a))

        sites_by_module = {m.name: call_sites(m.source) for m in session.modules.values()}
        site_counts = {m.name: session.site_counts(m) for m in session.modules.values()}
        for p in programs:
            for site in sites_by_module.get(p.module.name, []):
                if site.array not in names or (site.function != p.name and p.name not in _callers(p.module.syntax, site.function)):
                    continue
                a = session.arrays[site.array]
                index = resolve_key(a, site.key, p.module.source)
                targets = [index] if index is not None and 0 <= index < a.size else interesting(a)
                at_site = site_counts[p.module.name].get(site.line)
                for target in targets:
                    if at_site is None:  # no per-site counters (counting off): the slot's own
                        mine = counts.get((a.name, target), (0, 0)) if index is not None else (None, None)
                    else:
                        mine = at_site if index is not None else (None, None)
                    edge = _edge(program_node(p), slot_node(a, target), "call", a, target, a.key_name(target) if index is not None else "(var)", mine)
                    edge.update(line=site.line, site_calls=at_site[0] if at_site else None, site_missed=at_site[1] if at_site else None)
                    if edge not in edges:
                        edges.append(edge)
        for a in arrays:
            for index in sorted(a.entries):
                p = a.entries[index]
                edges.append(_edge(slot_node(a, index), program_node(p), "slot", a, index, a.key_name(index), a.credited(p, counts)[index]))
            for index in sorted(called(a)):  # slots that were called though no call site names them (e.g. var keys)
                slot_node(a, index)
    node_df = pd.DataFrame(list(nodes.values()), columns=NODE_COLUMNS)
    edge_df = pd.DataFrame(edges, columns=EDGE_COLUMNS)
    for col in ("calls", "taken", "missed", "line", "site_calls", "site_missed"):
        edge_df[col] = edge_df[col].astype("Int64")
    for col in ("insns_processed", "stack", "index"):
        node_df[col] = node_df[col].astype("Int64")
    title = f"tail-call chain: {', '.join(sorted(names)) or 'no arrays'}"
    return ChainGraph(node_df, edge_df, title, chain_stack(edge_df, verifier))


def _edge(src, dst, kind, array, index, key, calls_missed):
    calls, missed = calls_missed
    return {
        "src": src,
        "dst": dst,
        "kind": kind,
        "array": array.name,
        "index": index,
        "key": key,
        "calls": calls,
        "taken": calls - missed if calls is not None else None,
        "missed": missed,
        "line": None,
        "site_calls": None,
        "site_missed": None,
    }


def chain_stack(edges, verifier: dict) -> dict:
    """The worst-case stack along the chain's tail calls and BPF-to-BPF calls.

    A tail call replaces the frame it is made from; when it is made from a
    subprogram (a program that mixes BPF-to-BPF calls and tail calls), the
    frames of the callers above it stay. Counted conservatively: a program with
    subprograms keeps all of its frames across its tail calls, one without keeps
    none; the chain's last program adds its own deepest stack. Walks of up to 33
    tail calls (the kernel's limit) are considered, cycles included. The rules
    checked: each frame of a mixing program under 256 bytes (the verifier
    refuses a tail call below 256 bytes of frames), and the whole under
    256 B x 33 = 8448 bytes ("8 KB")."""
    from .verifier import CHAIN_STACK_LIMIT, MAX_TAIL_CALL_CNT, MIXED_FRAME_LIMIT

    nxt: dict[str, set[str]] = {}
    calls = edges[edges["kind"] == "call"]
    slots = edges[edges["kind"] == "slot"]
    held_by_slot: dict[str, set[str]] = {}
    for r in slots.itertuples(index=False):
        held_by_slot.setdefault(r.src, set()).add(r.dst)
    for r in calls.itertuples(index=False):
        nxt.setdefault(r.src, set()).update(held_by_slot.get(r.dst, set()))
    own = {p: (v.stack or 0) for p, v in verifier.items()}
    mixing = {p for p, v in verifier.items() if len(v.stack_depths) > 1 and nxt.get(p)}
    held = {p: (own[p] if p in mixing else 0) for p in verifier}
    best = dict(own)  # the deepest stack of a walk starting at p with no tail call left
    for _ in range(MAX_TAIL_CALL_CNT):
        new = {}
        for p in verifier:
            options = [(held[p] + best[q], q) for q in nxt.get(p, ()) if q in best]
            top = max(options, default=(own[p], None))
            new[p] = top[0] if top[0] > own[p] else own[p]
        if new == best:
            break
        best = new
    if not best:
        return {}
    start = max(best, key=best.get)
    frames_over = [f"{p}: frame of {d} B" for p in sorted(mixing) for d in verifier[p].stack_depths if d >= MIXED_FRAME_LIMIT]
    worst = best[start]
    return {
        "worst": worst,
        "from": start,
        "limit": CHAIN_STACK_LIMIT,
        "frame_limit": MIXED_FRAME_LIMIT,
        "mixing": sorted(mixing),
        "over_frame_limit": frames_over,
        "ok": worst <= CHAIN_STACK_LIMIT and not frames_over,
    }


def stack_summary(stack: dict) -> str:
    if not stack or stack.get("worst") is None:
        return "stack: unknown"
    text = f"worst-case stack {stack['worst']} B (from {stack['from']}) of {stack['limit']} B (256 B x 33)"
    if stack["mixing"]:
        text += f"; mixing BPF-to-BPF and tail calls: {', '.join(stack['mixing'])}"
    if stack["over_frame_limit"]:
        text += f"; over 256 B per frame: {', '.join(stack['over_frame_limit'])}"
    return text
