"""What a cell's event records look like, read on its syntax tree: the event
tables it declares, the output calls on them (for loss counting), the types
it writes into libbpf ring buffers, its typedefs, and whether a record
struct's layout can be known from its field types alone."""

from __future__ import annotations

from dataclasses import dataclass

from .analysis import _declarator_name, _file_scope, _is_shadowed, _parser, _text, _tokens, constant_value, file_constants, function_parameters

# BCC's output methods on event tables; ringbuf_reserve returns the record pointer, the others an int.
BCC_OUTPUT_METHODS = ("ringbuf_output", "ringbuf_reserve", "perf_submit", "perf_submit_skb")
_LIBBPF_RING_CALLS = ("bpf_ringbuf_output", "bpf_ringbuf_reserve", "bpf_perf_event_output")


@dataclass(frozen=True)
class OutputCall:
    table: str
    method: str
    start: int
    end: int


def _root(source: str):
    return _parser().parse((source or "").encode()).root_node


def _walk(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


def _call_name(call) -> str:
    fn = call.child_by_field_name("function")
    return _text(fn) if fn is not None else ""


def _call_args(call) -> list:
    args = call.child_by_field_name("arguments")
    return [a for a in args.named_children if a.type != "comment"] if args is not None else []


def _file_scope_calls(source: str):
    """Call statements at file scope, those in every branch of a preprocessor conditional
    included (``#if 1 BPF_RINGBUF_OUTPUT(ev, 1); #else BPF_PERF_OUTPUT(ev); #endif``):
    whichever branch the preprocessor keeps, its table is one the cell declares."""
    for node in _file_scope(_root(source)):
        if node.type == "expression_statement" and node.named_children and node.named_children[0].type == "call_expression":
            yield node.named_children[0]


def event_tables(source: str) -> list[str]:
    """Names of the ring/perf output tables a BCC cell declares
    (BPF_RINGBUF_OUTPUT, BPF_PERF_OUTPUT), in any branch of a conditional, in the
    order of their slots in the loss counter."""
    names = set()
    for call in _file_scope_calls(source):
        args = _call_args(call)
        if _call_name(call) in ("BPF_RINGBUF_OUTPUT", "BPF_PERF_OUTPUT") and args and args[0].type == "identifier":
            names.add(_text(args[0]))
    return sorted(names)


def ring_pages(source: str) -> dict[str, tuple[str, int | None]]:
    """Ring tables a BCC cell declares -> their size in pages, as written and
    its value where the text gives it (``BPF_RINGBUF_OUTPUT(events, 1 << 4)``
    -> ``{"events": ("1 << 4", 16)}``)."""
    out = {}
    defines = file_constants(source)
    for call in _file_scope_calls(source):
        args = _call_args(call)
        if _call_name(call) == "BPF_RINGBUF_OUTPUT" and len(args) == 2 and args[0].type == "identifier":
            out[_text(args[0])] = (_text(args[1]), constant_value(args[1], defines))
    return out


def output_calls(source: str, tables: set[str]) -> list[OutputCall]:
    """``TABLE.ringbuf_output(...)`` and the like on the declared event tables, in order."""
    out = []
    for node in _walk(_root(source)):
        if node.type != "call_expression":
            continue
        fn = node.child_by_field_name("function")
        if fn is None or fn.type != "field_expression":
            continue
        target, method = fn.child_by_field_name("argument"), fn.child_by_field_name("field")
        if target is None or method is None or target.type != "identifier":
            continue
        if _text(method) in BCC_OUTPUT_METHODS and _text(target) in tables and not _is_shadowed(target, _text(target)):
            out.append(OutputCall(_text(target), _text(method), node.start_byte, node.end_byte))
    return sorted(out, key=lambda c: c.start)


def _type_spelling(type_node) -> str | None:
    """``struct NAME`` or a typedef name for a declaration's type node."""
    if type_node is None:
        return None
    if type_node.type == "struct_specifier":
        name = type_node.child_by_field_name("name")
        return f"struct {_text(name)}" if name is not None else None
    if type_node.type in ("type_identifier", "primitive_type", "sized_type_specifier"):
        return _text(type_node)
    return None


def _declaration_of(ident, name: str):
    """The declaration (node) that NAME at IDENT refers to: a local before it, a
    parameter, or a file-scope one."""
    node = ident
    while node.parent is not None:
        parent = node.parent
        for sibling in parent.named_children:
            if sibling.start_byte >= ident.start_byte and parent.type != "translation_unit":
                break
            if sibling.type in ("declaration", "parameter_declaration"):
                for d in sibling.children_by_field_name("declarator"):
                    if _declarator_name(d) == name:
                        return sibling
            if sibling.type == "function_definition" and parent.type != "translation_unit":
                break
        if parent.type == "function_definition":
            for p in function_parameters(parent):
                if _declarator_name(p.child_by_field_name("declarator")) == name:
                    return p
        node = parent
    return None


def _sizeof_type(node) -> str | None:
    """The type of ``sizeof(struct X)``, ``sizeof(T)``, ``sizeof(var)``, ``sizeof(*ptr)``."""
    if node is None or node.type != "sizeof_expression":
        return None
    described = node.child_by_field_name("type")
    if described is not None:
        return _type_spelling(described.child_by_field_name("type") or described)
    value = node.child_by_field_name("value")
    while value is not None and value.type == "parenthesized_expression" and value.named_children:
        value = value.named_children[0]
    if value is not None and value.type == "pointer_expression":
        value = value.child_by_field_name("argument")
    if value is not None and value.type == "identifier":
        decl = _declaration_of(value, _text(value))
        return _type_spelling(decl.child_by_field_name("type")) if decl is not None else None
    return None


def ring_record_types(source: str, table: str) -> list[str]:
    """The types (``struct NAME`` or typedef names) a --core cell writes into
    ring TABLE: the variable ``bpf_ringbuf_output(&TABLE, &VAR, ...)`` sends,
    the pointer a ``bpf_ringbuf_reserve(&TABLE, ...)`` is assigned to, else the
    type the size is taken of; "?" for a call whose type the code does not say."""
    found: list[str] = []
    for node in _walk(_root(source)):
        if node.type != "call_expression" or _call_name(node) not in _LIBBPF_RING_CALLS:
            continue
        args = _call_args(node)
        perf = _call_name(node) == "bpf_perf_event_output"  # (ctx, &TABLE, flags, &VAR, size)
        at = 1 if perf else 0
        if len(args) <= at or args[at].type != "pointer_expression":
            continue
        ring = args[at].child_by_field_name("argument")
        if ring is None or _text(ring) != table:
            continue
        kind = None
        if perf and len(args) >= 5:
            data = args[3].child_by_field_name("argument") if args[3].type == "pointer_expression" else args[3]
            if data is not None and data.type == "identifier":
                decl = _declaration_of(data, _text(data))
                kind = _type_spelling(decl.child_by_field_name("type")) if decl is not None else None
            kind = kind or _sizeof_type(args[4])
        elif _call_name(node) == "bpf_ringbuf_output" and len(args) >= 3:
            data = args[1].child_by_field_name("argument") if args[1].type == "pointer_expression" else args[1]
            if data is not None and data.type == "identifier":
                decl = _declaration_of(data, _text(data))
                kind = _type_spelling(decl.child_by_field_name("type")) if decl is not None else None
            kind = kind or _sizeof_type(args[2])
        elif _call_name(node) == "bpf_ringbuf_reserve" and len(args) >= 2:
            holder = node.parent
            while holder is not None and holder.type in ("cast_expression", "parenthesized_expression"):
                holder = holder.parent
            if holder is not None and holder.type == "init_declarator":
                kind = _type_spelling(holder.parent.child_by_field_name("type"))
            elif holder is not None and holder.type == "assignment_expression":
                left = holder.child_by_field_name("left")
                if left is not None and left.type == "identifier":
                    decl = _declaration_of(left, _text(left))
                    kind = _type_spelling(decl.child_by_field_name("type")) if decl is not None else None
            kind = kind or _sizeof_type(args[1])
        if kind is None:
            found.append("?")
        elif kind not in found:
            found.append(kind)
    return found


def typedefs(source: str) -> dict[str, str]:
    """typedef name -> the type it names, as C spells it (``char[16]`` for arrays)."""
    out = {}
    for node in _walk(_root(source)):
        if node.type != "type_definition":
            continue
        base = node.child_by_field_name("type")
        for d in node.children_by_field_name("declarator"):
            dims = ""
            inner = d
            while inner is not None and inner.type == "array_declarator":
                size = inner.child_by_field_name("size")
                dims = f"[{_text(size) if size is not None else ''}]" + dims
                inner = inner.child_by_field_name("declarator")
            stars = ""
            while inner is not None and inner.type == "pointer_declarator":
                stars += "*"
                inner = inner.child_by_field_name("declarator")
            if inner is not None and base is not None:
                spelled = " ".join(_text(base).split()) + (f" {stars}" if stars else "")
                out[_text(inner)] = spelled + dims
    return out


def _layout_attributes(node) -> bool:
    """Whether NODE carries an alignment specifier or an aligned/packed attribute."""
    for t in _tokens(node):
        if _text(t) in ("_Alignas", "alignas", "__aligned", "__packed", "aligned", "packed", "__aligned__", "__packed__"):
            return True
    return False


def struct_layout(source: str, names: list[str]) -> tuple[bool, str | None]:
    """(packed, problem) for the struct whose fields are exactly NAMES: packed
    when the whole struct is ``__attribute__((packed))`` (laid out exactly); a
    problem (text) when its layout cannot be known from field types alone:
    bit-fields, aligned or per-field packed attributes, #pragma pack.
    (False, None) when no such struct is found."""
    root = _root(source)
    pragma_pack = any(n.type == "preproc_call" and _text(n).lstrip("# \t").startswith("pragma") and "pack" in _text(n) for n in _walk(root))
    for node in _walk(root):
        if node.type != "struct_specifier" or node.child_by_field_name("body") is None:
            continue
        fields, bits, attributed = [], [], []
        for decl in node.child_by_field_name("body").named_children:
            if decl.type != "field_declaration":
                continue
            declarators = decl.children_by_field_name("declarator")
            width = next((c for c in decl.named_children if c.type == "bitfield_clause"), None)
            for d in declarators:
                name = _declarator_name(d)
                if name is None:
                    continue
                fields.append(name)
                if width is not None:
                    bits.append(f"{name}:{_text(width).lstrip(':').strip()}")
                if _layout_attributes(decl):
                    attributed.append(name)
        if fields != names:
            continue
        tag = node.child_by_field_name("name")
        what = f"struct {_text(tag)}" if tag is not None else "the record struct"
        if bits:
            return False, f"{what} has bit-fields ({', '.join(bits)})"
        if attributed:
            return False, f"{what} has alignment/packing attributes on {', '.join(attributed)}"
        outer = [c for c in node.children if c.type == "attribute_specifier"]
        parent = node.parent
        if parent is not None and parent.type in ("declaration", "type_definition"):
            outer += [c for c in parent.children if c.type in ("attribute_specifier", "attributed_declarator")]
            outer += [d for d in parent.children_by_field_name("declarator")]
        texts = " ".join(_text(o) for o in outer)
        if "aligned" in texts or "_Alignas" in texts:
            return False, f"{what} is declared aligned"
        if pragma_pack:
            return False, f"{what} may be laid out by #pragma pack"
        return "packed" in texts, None
    return False, None
