"""What a cell's C holds, read on its syntax tree: includes, functions and
their context types and SEC() names, prog arrays and their sizes, tail-call
sites (with the array each one reaches, when the code says), SLOT()
references, file-scope names. Comments and strings are never mistaken for
code, and a parameter or local named like a global map is not that map.

Long because: one walk of the tree answers all of these; split, each part would parse
and walk again."""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, field

# The context parameter's struct says which program type a function is written for.
CONTEXT_TYPES = {
    "xdp_md": "xdp",
    "__sk_buff": "sched_cls",
    "bpf_raw_tracepoint_args": "raw_tracepoint",
    "pt_regs": "kprobe",
    "bpf_perf_event_data": "perf_event",
    "sk_msg_md": "sk_msg",
    "bpf_sock_ops": "sock_ops",
}
# Program types a `struct __sk_buff *` function can be: the array or target decides.
SKB_TYPES = frozenset({"sched_cls", "sched_act", "socket_filter", "cgroup_skb", "lwt_in", "sk_skb", "flow_dissector"})

# BCC macros that define a function whose name and type the macro's arguments give.
_BCC_FUNCTION_MACROS = {
    "RAW_TRACEPOINT_PROBE": (lambda a: f"raw_tracepoint__{a[0]}", "raw_tracepoint"),
    "TRACEPOINT_PROBE": (lambda a: f"tracepoint__{a[0]}__{a[1]}", "tracepoint"),
    "KFUNC_PROBE": (lambda a: f"kfunc__{a[0]}", "tracing"),
    "KRETFUNC_PROBE": (lambda a: f"kretfunc__{a[0]}", "tracing"),
    "LSM_PROBE": (lambda a: f"lsm__{a[0]}", "lsm"),
}
# libbpf macros whose first argument is the function's name: SEC("...") int BPF_PROG(name, ...).
_LIBBPF_NAME_MACROS = frozenset(
    {"BPF_PROG", "BPF_PROG2", "BPF_KPROBE", "BPF_KRETPROBE", "BPF_UPROBE", "BPF_URETPROBE", "BPF_KSYSCALL", "BPF_KPROBE_SYSCALL", "BPF_USDT"}
)
_TAIL_CALL_HELPERS = {"bpf_tail_call": "helper", "bpf_tail_call_static": "static"}
_DECLARATOR_WRAPPERS = (
    "pointer_declarator",
    "array_declarator",
    "init_declarator",
    "parenthesized_declarator",
    "attributed_declarator",
    "function_declarator",
)


@dataclass(frozen=True)
class Include:
    path: str
    system: bool  # <...> rather than "..."
    line: int
    end: int  # byte offset just past the directive's line


@dataclass(frozen=True)
class Function:
    name: str
    line: int
    context: str | None  # the struct of the context parameter (xdp_md, __sk_buff, ...)
    prog_type: str | None  # what the context (or a BCC macro) implies; None when it says nothing
    section: str | None  # SEC("...")
    static: bool
    start: int
    end: int
    body_start: int = -1  # byte offset just past the body's "{" (-1: a BCC macro function)
    ctx_name: str | None = None  # the first parameter's name
    header_end: int = -1  # byte offset of the body's "{" (BCC macro functions too)


@dataclass(frozen=True)
class ArrayDecl:
    """A prog array the cell declares. ``size`` is None when the text alone
    cannot say (a macro or a conditional): the compiler then decides."""

    name: str
    size: int | None
    size_text: str
    line: int
    end_line: int  # the line of the declaration's last character
    form: str  # "macro" (BPF_PROG_ARRAY), "table" (BPF_TABLE("prog", ...)), "struct" (libbpf .maps)
    keyword_start: int = -1  # byte offset of BPF_TABLE for the "table" form
    initialized: bool = False  # libbpf's .values = { [i] = &prog } initializer
    code_after: bool = False  # more code starts on its last line: what goes after it would land inside that code


@dataclass(frozen=True)
class TailCall:
    kind: str  # "call" (BCC's ARRAY.call), "helper" (bpf_tail_call), "static" (bpf_tail_call_static)
    array: str | None  # the global prog array it reaches, when the code says which
    key: str  # the key expression as written
    line: int
    function: str | None  # the enclosing function
    start: int
    end: int
    ctx: str = ""
    key_start: int = -1
    key_end: int = -1
    expanded: bool = False  # written by one of the cell's macros (c/macro_code.py): no place in the cell's text


@dataclass(frozen=True)
class SlotRef:
    array: str
    key: str
    line: int
    start: int = 0


@dataclass
class CellSyntax:
    source: str  # the text analysed: the cell, or what the front end rewrote it into (c/legacy_maps.py), lines kept
    includes: list[Include] = field(default_factory=list)
    functions: dict[str, Function] = field(default_factory=dict)
    arrays: list[ArrayDecl] = field(default_factory=list)
    rings: list[ArrayDecl] = field(default_factory=list)  # BPF_MAP_TYPE_RINGBUF maps of the libbpf form
    perf_arrays: list[ArrayDecl] = field(default_factory=list)  # BPF_MAP_TYPE_PERF_EVENT_ARRAY maps of the libbpf form
    tail_calls: list[TailCall] = field(default_factory=list)
    slot_refs: list[SlotRef] = field(default_factory=list)
    globals: set[str] = field(default_factory=set)  # names declared at file scope
    # identifier nodes inside functions, by name; uses() resolves them lazily (most names are never asked about)
    identifier_nodes: dict = field(default_factory=dict, repr=False)
    # the tree-sitter trees those nodes belong to (the cell's first; c/macro_code.py adds its
    # expansion's): a node lives as long as its tree
    trees: list = field(default_factory=list, repr=False)
    has_license: bool = False
    has_code: bool = False  # any file-scope node that is not a preprocessor directive or a comment
    has_content: bool = False  # anything but comments and blank space
    # The cell's first line of code includes vmlinux.h (or it includes nothing, so bpfmagic's prelude
    # does): a precompiled vmlinux.h then stands for it.
    starts_with_vmlinux: bool = False
    written: str | None = None  # the cell as written, when ``source`` is a rewrite of it: what errors quote

    @property
    def contexts(self) -> dict[str, str | None]:
        """Function name -> the program type its context implies."""
        return {name: f.prog_type for name, f in self.functions.items()}

    def uses(self, name: str) -> bool:
        """Whether a function refers to file-scope NAME (not a parameter or local of that name)."""
        return any(not _is_shadowed(node, name) for node in self.identifier_nodes.get(name, ()))

    @property
    def instrument_offset(self) -> int:
        """Byte offset where bpfmagic's declarations go for --core: after the
        cell's own includes (at file scope), so the headers come first."""
        return self._instrument_offset

    _instrument_offset: int = 0
    first_code_offset: int = 0  # start of the first file-scope node that is not a directive (BCC's prelude)


@functools.lru_cache(maxsize=1)
def _parser():
    import tree_sitter_c
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_c.language()))


def _text(node) -> str:
    return node.text.decode(errors="replace")


def _args(call) -> list:
    arguments = call.child_by_field_name("arguments")
    if arguments is None:
        return []
    return [c for c in arguments.named_children if c.type != "comment"]


def _declarator_name(node) -> str | None:
    """The identifier a declarator declares (through *, [], =, (), attributes)."""
    while node is not None:
        if node.type in ("identifier", "field_identifier", "type_identifier"):
            return _text(node)
        if node.type in _DECLARATOR_WRAPPERS:
            node = node.child_by_field_name("declarator") or (node.named_children[0] if node.named_children else None)
            continue
        return None
    return None


def _declared_in(node) -> list[str]:
    """Names a declaration (or parameter) node declares."""
    return [n for d in node.children_by_field_name("declarator") if (n := _declarator_name(d))]


def function_parameters(definition) -> list:
    """The parameter_declaration nodes of a function_definition (through pointer declarators)."""
    declarator = definition.child_by_field_name("declarator")
    while declarator is not None and declarator.type != "function_declarator":
        declarator = declarator.child_by_field_name("declarator")
    params = declarator.child_by_field_name("parameters") if declarator is not None else None
    return [p for p in params.named_children if p.type == "parameter_declaration"] if params is not None else []


def _is_shadowed(ident, name: str) -> bool:
    """Whether NAME at IDENT refers to a parameter or a local declared before it."""
    node = ident
    while node.parent is not None:
        parent = node.parent
        if parent.type in ("compound_statement", "for_statement"):
            for sibling in parent.named_children:
                if sibling.start_byte >= ident.start_byte:
                    break
                if sibling.type == "declaration" and name in _declared_in(sibling):
                    return True
        if parent.type == "function_definition":
            return any(name in _declared_in(p) for p in function_parameters(parent))
        node = parent
    return False


def _local_pointer_target(ident, name: str) -> str | None:
    """For a map-pointer variable (``void *m = &jt;``), the global it points at."""
    node = ident
    while node.parent is not None:
        parent = node.parent
        if parent.type == "compound_statement":
            for sibling in parent.named_children:
                if sibling.start_byte >= ident.start_byte or sibling.type != "declaration":
                    continue
                for d in sibling.children_by_field_name("declarator"):
                    if d.type == "init_declarator" and _declarator_name(d) == name:
                        value = d.child_by_field_name("value")
                        if value is not None and value.type == "pointer_expression":
                            target = value.child_by_field_name("argument")
                            if target is not None and target.type == "identifier":
                                return _text(target)
        if parent.type == "function_definition":
            return None
        node = parent
    return None


def _map_argument(node) -> str | None:
    """The global prog array a tail call's map argument names (``&jt``, or a
    pointer variable initialised with ``&jt``), None when it cannot say."""
    if node.type == "pointer_expression":
        inner = node.child_by_field_name("argument")
        if inner is not None and inner.type == "identifier":
            name = _text(inner)
            return None if _is_shadowed(inner, name) else name
        return None
    if node.type == "identifier":
        name = _text(node)
        if _is_shadowed(node, name):
            return _local_pointer_target(node, name)
        return None  # a global used without & is not a map reference libbpf accepts
    if node.type in ("cast_expression", "parenthesized_expression"):
        inner = node.child_by_field_name("value") or (node.named_children[-1] if node.named_children else None)
        return _map_argument(inner) if inner is not None else None
    return None


_BINARY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a // b if b else None,
    "<<": lambda a, b: a << b,
    ">>": lambda a, b: a >> b,
    "|": lambda a, b: a | b,
    "&": lambda a, b: a & b,
}


def constant_value(node, defines: dict[str, str] | None = None, depth: int = 0) -> int | None:
    """An integer constant expression's value (literals, + - * / << >> | &,
    unconditional object-like #defines); None when the text alone cannot say."""
    if node is None or depth > 16:
        return None
    if node.type == "number_literal":
        text = _text(node).rstrip("uUlL")
        try:
            return int(text, 0) if not (len(text) > 1 and text[0] == "0" and text[1].isdigit()) else int(text, 8)
        except ValueError:
            return None
    if node.type == "parenthesized_expression" and node.named_children:
        return constant_value(node.named_children[0], defines, depth + 1)
    if node.type == "binary_expression":
        op = node.child_by_field_name("operator")
        a = constant_value(node.child_by_field_name("left"), defines, depth + 1)
        b = constant_value(node.child_by_field_name("right"), defines, depth + 1)
        if op is None or a is None or b is None or _text(op) not in _BINARY:
            return None
        return _BINARY[_text(op)](a, b)
    if node.type == "identifier" and defines and _text(node) in defines:
        tree = _parser().parse(b"int __bm_v = " + defines[_text(node)].encode() + b";")
        init = tree.root_node.named_children[0].child_by_field_name("declarator") if tree.root_node.named_children else None
        value = init.child_by_field_name("value") if init is not None else None
        return constant_value(value, defines, depth + 1)
    return None


def _unconditional_defines(root) -> dict[str, str]:
    """Object-like #defines at file scope outside any #if: name -> value text.
    A name defined twice (or conditionally) is left out: only the preprocessor knows."""
    seen: dict[str, str | None] = {}

    def walk(node, conditional: bool):
        for child in node.named_children:
            if child.type == "preproc_def":
                name = _text(child.child_by_field_name("name"))
                value = child.child_by_field_name("value")
                seen[name] = None if conditional or name in seen else (_text(value).strip() if value else "")
            elif child.type.startswith("preproc_if") or child.type.startswith("preproc_el"):
                walk(child, True)

    walk(root, False)
    return {k: v for k, v in seen.items() if v is not None}


def enum_constants(root, defines: dict[str, str] | None = None) -> dict[str, int]:
    """Enumerators of the file's enums (named or not, at file scope or in a typedef), by
    name: an explicit value evaluated like any constant (earlier enumerators and #defines
    included), an implicit one the previous plus one. A name whose value the text cannot
    give, or that two enums define differently, is left out (so is every one after it in
    its enum, whose values then depend on it)."""
    known: dict[str, int] = {}
    clash: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "function_definition":
            continue  # enums local to a function are not the file's
        if node.type == "enumerator_list":
            previous: int | None = -1
            for e in node.named_children:
                if e.type != "enumerator":
                    continue
                name_node, value_node = e.child_by_field_name("name"), e.child_by_field_name("value")
                if value_node is not None:
                    env = dict(defines or {})
                    env.update({k: str(v) for k, v in known.items()})
                    value = constant_value(value_node, env)
                else:
                    value = previous + 1 if previous is not None else None
                previous = value
                if name_node is None or value is None:
                    continue
                name = _text(name_node)
                if name in known and known[name] != value:
                    clash.add(name)
                known[name] = value
            continue
        stack.extend(reversed(node.children))  # in the file's order: an enumerator may use earlier ones
    return {k: v for k, v in known.items() if k not in clash}


def file_constants(source: str) -> dict[str, str]:
    """Names a key expression may use whose value the text gives: unconditional object-like
    #defines and enum constants, as text for constant_value."""
    root = _parser().parse(source.encode()).root_node
    defines = _unconditional_defines(root)
    out = {k: str(v) for k, v in enum_constants(root, defines).items()}
    out.update({k: v for k, v in defines.items() if k not in out})
    return out


def constant_key(key: str, source: str, slot_of) -> int | None:
    """The slot index a tail call's key expression names when it is a constant (a number,
    a #define'd number, an enum constant or SLOT(array, name), whose index ``slot_of(name)``
    gives); None when it is computed at run time or the text alone cannot say."""
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
                return slot_of(names[1])
            except Exception:
                return None
        return None
    return constant_value(value, file_constants(source))


def _struct_map_kind(decl) -> tuple[str | None, object]:
    """For a libbpf ``struct { __uint(type, BPF_MAP_TYPE_X); ... } name SEC(".maps")``
    declaration: ("PROG_ARRAY" etc., the max_entries argument node or None)."""
    struct = decl.child_by_field_name("type")
    if struct is None or struct.type != "struct_specifier":
        return None, None
    body = struct.child_by_field_name("body")
    if body is None:
        return None, None
    kind, size = None, None
    stack = [body]
    while stack:
        node = stack.pop()
        if node.type in ("identifier", "type_identifier") and _text(node).startswith("BPF_MAP_TYPE_"):
            kind = kind or _text(node)[len("BPF_MAP_TYPE_") :]
        declarator = node.child_by_field_name("declarator") if node.type == "field_declaration" else None
        if declarator is not None and declarator.type == "array_declarator" and _declarator_name(declarator) == "max_entries":
            size = declarator.child_by_field_name("size")  # int (*max_entries)[N]: __uint() expanded (legacy maps rewritten)
        elif node.type == "macro_type_specifier" or node.type == "field_declaration":
            tokens = [c for c in node.named_children]
            names = [_text(t) for t in tokens]
            if "max_entries" in names:
                after = tokens[names.index("max_entries") + 1 :]
                size = next((t for t in after if t.type != "comment"), None)
                while size is not None and size.type in ("type_descriptor", "ERROR") and size.named_children:
                    size = size.named_children[-1]
        stack.extend(node.children)
    if any(n.type.startswith("preproc") for n in _walk_nodes(body)):
        return kind, None  # max_entries under an #if: the compiler decides
    if size is None:  # error recovery put max_entries' value elsewhere: find the token after it
        flat = _tokens(body)
        for i, t in enumerate(flat):
            if _text(t) == "max_entries" and i + 2 < len(flat) and _text(flat[i + 1]) == ",":
                size = flat[i + 2]
                break
    return kind, size


def _walk_nodes(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(n.children)


def _tokens(node) -> list:
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        if n.child_count == 0:
            out.append(n)
        else:
            stack.extend(reversed(n.children))
    return out


_CONDITIONALS = ("preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef")


def _file_scope(root) -> list:
    """The file-scope nodes in order, those inside #if/#ifdef/#else blocks included
    (every branch: which one the compiler keeps is the preprocessor's business)."""
    out = []

    def walk(node):
        skip = {id(n) for f in ("condition", "name") for n in [node.child_by_field_name(f)] if n is not None}
        for child in node.named_children:
            if child.type == "comment" or id(child) in skip:
                continue
            if child.type in _CONDITIONALS:
                walk(child)
            else:
                out.append(child)

    walk(root)
    return out


def _statement_end_line(top_level: list, index: int) -> tuple[int, bool, bool]:
    """The last line of the file-scope statement that starts at top_level[index]
    (error recovery may split ``struct {...} x SEC(".maps") = {...};`` into
    several nodes), whether it carries an initializer, and whether more code
    starts on that last line."""
    initialized = False
    last = index
    for i, node in enumerate(top_level[index : index + 4], start=index):
        text = node.text
        if b".values" in text:
            initialized = True
        if text.rstrip().endswith(b";") or node.type == "function_definition":
            last = i
            break
    end_line = top_level[last].end_point[0] + 1
    code_after = last + 1 < len(top_level) and top_level[last + 1].start_point[0] + 1 == end_line
    return end_line, initialized, code_after


def analyse(source: str) -> CellSyntax:
    """The syntax of SOURCE (linear in its size: one tree-sitter parse and walks of the tree)."""
    data = source.encode()
    tree = _parser().parse(data)
    root = tree.root_node
    cell = CellSyntax(source=source)
    cell.trees.append(tree)
    defines = _unconditional_defines(root)
    top_level = _file_scope(root)
    cell.has_content = bool(top_level)
    pending_section: str | None = None
    last_include_end = 0

    def line_of(node) -> int:
        return node.start_point[0] + 1

    def record_includes(node, nested: bool):
        nonlocal last_include_end
        for child in node.named_children:
            if child.type == "preproc_include":
                path = child.child_by_field_name("path")
                text = _text(path) if path is not None else ""
                end = child.end_byte
                cell.includes.append(Include(text.strip('<>"'), text.startswith("<"), line_of(child), end))
                last_include_end = max(last_include_end, end)
            elif child.type.startswith("preproc_if") or child.type.startswith("preproc_el"):
                holds_code = any(c.type in ("function_definition", "declaration") for c in child.named_children)
                before = last_include_end
                record_includes(child, True)
                if last_include_end != before and not holds_code and not nested:
                    last_include_end = child.end_byte  # after the whole #if block: keep our lines outside it

    record_includes(root, False)
    first = top_level[0] if top_level else None
    cell.starts_with_vmlinux = not cell.includes or (
        first is not None
        and first.type == "preproc_include"
        and bool(cell.includes)
        and cell.includes[0].path == "vmlinux.h"
        and cell.includes[0].line == first.start_point[0] + 1
    )
    cell._instrument_offset = last_include_end

    for node in top_level:
        if node.type != "function_definition" and b"license" in node.text:
            for t in _tokens(node):
                if t.type == "string_content" and _text(t) == "license":
                    cell.has_license = True

    # File scope: declarations, functions, BCC macro functions, SEC() markers, prog arrays.
    # BCC's extra declarations go in front of the first code outside any #if (so no branch can drop them).
    unconditional = [c for c in root.children if c.type != "comment" and not c.type.startswith("preproc")]
    cell.first_code_offset = unconditional[0].start_byte if unconditional else len(data)
    for i, node in enumerate(top_level):
        cell.has_code = cell.has_code or not node.type.startswith("preproc")
        if node.type == "expression_statement" and node.named_children and node.named_children[0].type == "call_expression":
            call = node.named_children[0]
            fn = call.child_by_field_name("function")
            fname = _text(fn) if fn is not None else ""
            args = _args(call)
            if fname == "SEC" and args and args[0].type == "string_literal":
                section = _text(args[0])[1:-1]
                pending_section = section
                continue
            if fname in _BCC_FUNCTION_MACROS and args:
                make_name, ptype = _BCC_FUNCTION_MACROS[fname]
                name = make_name([_text(a) for a in args])
                body = top_level[i + 1] if i + 1 < len(top_level) else node
                header_end = body.start_byte if body is not node and body.type == "compound_statement" else -1
                cell.functions[name] = Function(name, line_of(node), None, ptype, None, False, node.start_byte, body.end_byte, header_end=header_end)
            elif fname == "BPF_PROG_ARRAY" and len(args) >= 2 and args[0].type == "identifier":
                end_line, _, code_after = _statement_end_line(top_level, i)
                cell.arrays.append(
                    ArrayDecl(
                        _text(args[0]), constant_value(args[1], defines), _text(args[1]), line_of(node), end_line, "macro", code_after=code_after
                    )
                )
            elif (
                fname in ("BPF_TABLE", "BPF_TABLE_PUBLIC")
                and len(args) >= 5
                and args[0].type == "string_literal"
                and _text(args[0]) == '"prog"'
                and args[3].type == "identifier"
                and fname == "BPF_TABLE"
            ):
                end_line, _, code_after = _statement_end_line(top_level, i)
                cell.arrays.append(
                    ArrayDecl(
                        _text(args[3]),
                        constant_value(args[4], defines),
                        _text(args[4]),
                        line_of(node),
                        end_line,
                        "table",
                        keyword_start=fn.start_byte,
                        code_after=code_after,
                    )
                )
            elif fname.startswith("BPF_") and len(args) >= 1:
                # BCC's table macros (BPF_HASH(name, ...), BPF_ARRAY, ...) declare a file-scope name.
                first = args[0] if fname != "BPF_TABLE" else (args[3] if len(args) > 3 else args[0])
                if first.type == "identifier":
                    cell.globals.add(_text(first))
            pending_section = None
            continue
        if node.type == "declaration":
            names = _declared_in(node)
            cell.globals.update(names)
            kind, size = _struct_map_kind(node)
            if kind in ("PROG_ARRAY", "RINGBUF", "PERF_EVENT_ARRAY") and names:
                end_line, initialized, code_after = _statement_end_line(top_level, i)
                decl = ArrayDecl(
                    names[0],
                    constant_value(size, defines),
                    _text(size) if size is not None else "",
                    line_of(node),
                    end_line,
                    "struct",
                    initialized=initialized,
                    code_after=code_after,
                )
                {"PROG_ARRAY": cell.arrays, "RINGBUF": cell.rings, "PERF_EVENT_ARRAY": cell.perf_arrays}[kind].append(decl)
            pending_section = None
            continue
        if node.type == "function_definition":
            fn = _function(node, pending_section)
            if fn is not None:
                cell.functions[fn.name] = fn
            pending_section = None
            continue
        if node.type not in ("comment",) and not node.type.startswith("preproc"):
            pending_section = None

    # Inside functions: tail calls, SLOT() references, uses of file-scope names.
    spans = sorted((f.start, f.end, f.name) for f in cell.functions.values())
    starts = [s for s, _, _ in spans]

    def enclosing(offset: int) -> str | None:
        i = bisect.bisect_right(starts, offset) - 1
        return spans[i][2] if i >= 0 and offset < spans[i][1] else None

    stack = [root]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type == "identifier":
            if enclosing(node.start_byte) is not None:
                cell.identifier_nodes.setdefault(_text(node), []).append(node)
            continue
        if node.type != "call_expression":
            continue
        fn = node.child_by_field_name("function")
        if fn is None:
            continue
        args = _args(node)
        if fn.type == "identifier" and _text(fn) == "CHAIN_NEXT" and len(args) == 2 and args[1].type == "identifier":
            # CHAIN_NEXT(ctx, chain): a stage of a chain described as data (bpfmagic/experiments/chain.py) calls the next
            cell.tail_calls.append(
                TailCall(
                    "chain", _text(args[1]), "CHAIN_NEXT", line_of(node), enclosing(node.start_byte), node.start_byte, node.end_byte, _text(args[0])
                )
            )
            continue
        if fn.type == "identifier" and _text(fn) == "SLOT" and len(args) == 2:
            cell.slot_refs.append(SlotRef(_text(args[0]), _text(args[1]), line_of(node), node.start_byte))
        elif fn.type == "identifier" and _text(fn) in _TAIL_CALL_HELPERS and len(args) == 3:
            cell.tail_calls.append(
                TailCall(
                    _TAIL_CALL_HELPERS[_text(fn)],
                    _map_argument(args[1]),
                    _text(args[2]),
                    line_of(node),
                    enclosing(node.start_byte),
                    node.start_byte,
                    node.end_byte,
                    _text(args[0]),
                    args[2].start_byte,
                    args[2].end_byte,
                )
            )
        elif fn.type == "field_expression" and len(args) == 2:
            field_node = fn.child_by_field_name("field")
            target = fn.child_by_field_name("argument")
            if (
                field_node is not None
                and _text(field_node) == "call"
                and target is not None
                and target.type == "identifier"
                and not _is_shadowed(target, _text(target))
            ):
                cell.tail_calls.append(
                    TailCall(
                        "call",
                        _text(target),
                        _text(args[1]),
                        line_of(node),
                        enclosing(node.start_byte),
                        node.start_byte,
                        node.end_byte,
                        _text(args[0]),
                        args[1].start_byte,
                        args[1].end_byte,
                    )
                )
    cell.tail_calls.sort(key=lambda t: t.start)
    cell.slot_refs.sort(key=lambda r: r.start)
    return cell


def _function(node, section: str | None) -> Function | None:
    declarator = node.child_by_field_name("declarator")
    type_node = node.child_by_field_name("type")
    if (
        declarator is not None
        and declarator.type == "parenthesized_declarator"
        and type_node is not None
        and _text(type_node) in _BCC_FUNCTION_MACROS
    ):
        # RAW_TRACEPOINT_PROBE(sys_enter) { ... } reads as a function named by a parenthesized declarator.
        make_name, ptype = _BCC_FUNCTION_MACROS[_text(type_node)]
        arg = _declarator_name(declarator.named_children[0]) if declarator.named_children else None
        if arg:
            return Function(make_name([arg]), node.start_point[0] + 1, None, ptype, None, False, node.start_byte, node.end_byte)
    while declarator is not None and declarator.type != "function_declarator":
        declarator = declarator.child_by_field_name("declarator")
    if declarator is None:
        return None
    name_node = declarator.child_by_field_name("declarator")
    name = _text(name_node) if name_node is not None else None
    params = declarator.child_by_field_name("parameters")
    param_list = [p for p in params.named_children if p.type == "parameter_declaration"] if params else []
    macro_ctx = False
    if name in _LIBBPF_NAME_MACROS and param_list:
        # SEC("tp_btf/x") int BPF_PROG(handler, ...): the macro's first argument is the name.
        first = param_list[0]
        name = _declarator_name(first.child_by_field_name("declarator")) or _text(first.child_by_field_name("type"))
        context = None
        macro_ctx = True  # the macro names its context parameter ctx
    else:
        context = None
        if param_list:
            ptype = param_list[0].child_by_field_name("type")
            if ptype is not None and ptype.type == "struct_specifier":
                struct_name = ptype.child_by_field_name("name")
                context = _text(struct_name) if struct_name is not None else None
    if not name:
        return None
    if section is None:  # int SEC("xdp") f(...) or __attribute__((section("xdp")))
        for t in _tokens(node.child_by_field_name("type") or node):
            if t.type == "string_content" and t.parent is not None and t.parent.parent is not None:
                call = t.parent.parent.parent
                if call is not None and call.type == "call_expression" and _text(call.child_by_field_name("function")) == "SEC":
                    section = _text(t)
    static = any(c.type == "storage_class_specifier" and _text(c) == "static" for c in node.children)
    body = node.child_by_field_name("body")
    ctx_name = "ctx" if macro_ctx else (_declarator_name(param_list[0].child_by_field_name("declarator")) if param_list else None)
    return Function(
        name,
        node.start_point[0] + 1,
        context,
        CONTEXT_TYPES.get(context) if context else None,
        section,
        static,
        node.start_byte,
        node.end_byte,
        body.start_byte + 1 if body is not None and body.type == "compound_statement" else -1,
        ctx_name,
        body.start_byte if body is not None and body.type == "compound_statement" else -1,
    )
