"""Legacy map definitions, ``struct bpf_map_def SEC("maps") name = { ... };``
(kernel samples before 5.x, pchaigno's tail-call-bench, older xdp-tutorial),
rewritten into BTF-defined maps before a --core cell is compiled: libbpf 1.x
dropped the "maps" section and ``struct bpf_map_def``, cilium/ebpf still
reads them.

The rewrite is made on the syntax tree and keeps every line where it was:
each field's value stays on its own line (an error in ``.max_entries =
MAX_X`` still names that line) and the declaration ends on the line it
ended on, so everything after it keeps its number.

What is written does not depend on a header: ``int (*type)[EXPR]`` is what
libbpf's ``__uint(type, EXPR)`` expands to (old headers that define SEC()
lack ``__uint``), and an integer constant expression (``sizeof``, macros)
is valid there. Keys and values of hash and array maps written as
``sizeof(T)`` become ``__typeof__(T) *key`` (what ``__type(key, T)`` expands
to): the map then has BTF, and reads as typed columns. Prog arrays keep
sizes: the kernel refuses BTF for them."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageProblem
from .analysis import _file_scope, _parser, _text, _tokens, constant_value

LEGACY_STRUCT = "bpf_map_def"
LEGACY_SECTION = "maps"
# struct bpf_map_def's members in order (libbpf 0.x; the kernel samples' own header adds the last two).
_POSITIONS = ("type", "key_size", "value_size", "max_entries", "map_flags", "inner_map_idx", "numa_node")
# Members a BTF-defined map has under the same name; written only when not a literal 0 (the default).
_OPTIONAL = ("map_flags", "numa_node")
# Map types whose key and value may carry BTF types (the kernel checks them against the sizes).
_TYPED = frozenset(f"BPF_MAP_TYPE_{t}" for t in ("HASH", "ARRAY", "PERCPU_HASH", "PERCPU_ARRAY", "LRU_HASH", "LRU_PERCPU_HASH", "LPM_TRIE"))
_SECTION = '__attribute__((section(".maps"), used))'


@dataclass(frozen=True)
class LegacyMap:
    name: str
    line: int
    map_type: str  # the .type expression as written


def _section_calls(root) -> list[tuple[int, int]]:
    """Byte spans of ``SEC("maps")`` outside functions: tree-sitter does not know the macro
    and recovers from it badly, so these are blanked before the declarations are read."""
    leaves = _tokens(root)
    spans = []
    for i, leaf in enumerate(leaves[:-5]):
        if leaf.type != "identifier" or _text(leaf) != "SEC":
            continue
        run = leaves[i : i + 6]
        if [_text(t) for t in run] != ["SEC", "(", '"', LEGACY_SECTION, '"', ")"] or run[3].type != "string_content":
            continue
        node, in_function = leaf, False
        while node is not None:
            in_function = in_function or node.type == "function_definition"
            node = node.parent
        if not in_function:
            spans.append((leaf.start_byte, run[5].end_byte))
    return spans


def _has_section_attribute(decl) -> bool:
    """``__attribute__((section("maps")))`` written out instead of SEC()."""
    leaves = [_text(t) for t in _tokens(decl)]
    for i, text in enumerate(leaves[:-4]):
        if text in ("section", "__section__") and leaves[i + 1 : i + 5] == ["(", '"', LEGACY_SECTION, '"']:
            return True
    return False


def _fields(initializer, origin: str, name: str) -> list[tuple[str, object]]:
    """(member, value node) of a ``{ .type = ..., ... }`` or ``{ TYPE, KEY, ... }`` initializer."""
    out, position = [], 0
    for item in initializer.named_children:
        if item.type == "comment":
            continue
        line = item.start_point[0] + 1
        if item.type == "initializer_pair":
            designators = item.children_by_field_name("designator")
            if len(designators) != 1 or designators[0].type != "field_designator" or not designators[0].named_children:
                raise UsageProblem(f"{origin}:{line}: legacy map {name}: cannot read the initializer {_text(item)!r}; write .member = value")
            member = _text(designators[0].named_children[0])
            if member not in _POSITIONS:
                raise UsageProblem(f"{origin}:{line}: legacy map {name}: struct bpf_map_def has no member {member!r}")
            position = _POSITIONS.index(member)
            value = item.child_by_field_name("value")
        else:
            if position >= len(_POSITIONS):
                raise UsageProblem(f"{origin}:{line}: legacy map {name}: struct bpf_map_def has {len(_POSITIONS)} members; this is one more")
            member, value = _POSITIONS[position], item
        out.append((member, value))
        position += 1
    return out


def _typed_member(member: str, value) -> str | None:
    """``__typeof__(T) *key;`` for a ``sizeof(T)`` key or value, None for any other expression."""
    if value.type != "sizeof_expression":
        return None
    inner = value.child_by_field_name("type") or value.child_by_field_name("value")
    if inner is None:
        return None
    if inner.type == "parenthesized_expression" and inner.named_children:
        inner = inner.named_children[0]  # sizeof(u32): a type or a variable, __typeof__ takes either
    return f"__typeof__({_text(inner)}) *{'key' if member == 'key_size' else 'value'};"


def _member_text(member: str, value, typed: bool) -> str | None:
    if member in ("key_size", "value_size") and typed:
        written = _typed_member(member, value)
        if written:
            return written
    if member in _OPTIONAL and constant_value(value) == 0:
        return None
    return f"int (*{member})[{_text(value)}];"


def _rewrite(decl, origin: str) -> tuple[list[tuple[int, str]], list[LegacyMap]]:
    """The BTF-defined maps of one legacy declaration, as pieces (line, text): each
    piece goes on the line of what it was made from."""
    pieces: list[tuple[int, str]] = []
    found = []
    for declarator in decl.children_by_field_name("declarator"):
        line = declarator.start_point[0]
        if declarator.type != "init_declarator" or declarator.child_by_field_name("value") is None:
            raise UsageProblem(
                f"{origin}:{line + 1}: legacy map {_text(declarator)} has no initializer: say its .type, .key_size, .value_size and .max_entries"
            )
        name = _text(declarator.child_by_field_name("declarator"))
        initializer = declarator.child_by_field_name("value")
        if initializer.type != "initializer_list":
            raise UsageProblem(f"{origin}:{line + 1}: legacy map {name}: its initializer is not a {{ ... }} list")
        fields = _fields(initializer, origin, name)
        members = dict(fields)
        missing = [m for m in ("type", "max_entries") if m not in members]
        if missing:
            raise UsageProblem(f"{origin}:{line + 1}: legacy map {name} gives no .{' and no .'.join(missing)}")
        map_type = _text(members["type"]).strip()
        typed = map_type in _TYPED
        pieces.append((decl.start_point[0] if not pieces else line, f"{_SECTION} struct {{"))
        for member, value in fields:
            if member == "inner_map_idx":
                if constant_value(value) == 0:
                    continue
                raise UsageProblem(
                    f"{origin}:{value.start_point[0] + 1}: legacy map {name}: .inner_map_idx (a map of maps) has no rewrite here; "
                    "declare it as a BTF-defined map with __array(values, struct {...})"
                )
            text = _member_text(member, value, typed)
            if text:
                pieces.append((value.start_point[0], text))
        pieces.append((initializer.end_point[0], f"}} {name};"))
        found.append(LegacyMap(name, line + 1, map_type))
    return pieces, found


def _lay_out(pieces: list[tuple[int, str]], first: int, last: int) -> str:
    """PIECES joined so that each starts on its line (relative to FIRST) and the text ends on LAST."""
    out, current = [], first
    for line, text in pieces:
        if line > current:
            out.append("\n" * (line - current))
            current = line
        elif out:
            out.append(" ")
        out.append(text)
    out.append("\n" * (last - current))
    return "".join(out)


def _declarations(data: bytes) -> list:
    """The file-scope ``struct bpf_map_def`` declarations in the "maps" section (every #if
    branch), read from a parse with SEC("maps") blanked: byte offsets and lines are DATA's."""
    spans = _section_calls(_parser().parse(data).root_node)
    blanked = bytearray(data)
    for start, end in spans:
        blanked[start:end] = b" " * (end - start)
    root = _parser().parse(bytes(blanked)).root_node
    found = []
    for node in _file_scope(root):
        struct = node.child_by_field_name("type") if node.type == "declaration" else None
        if struct is None or struct.type != "struct_specifier" or struct.child_by_field_name("body") is not None:
            continue
        struct_name = struct.child_by_field_name("name")
        if struct_name is None or _text(struct_name) != LEGACY_STRUCT:
            continue
        if any(node.start_byte <= s < node.end_byte for s, _ in spans) or _has_section_attribute(node):
            found.append(node)
    return found


def find_legacy_maps(source: str, origin: str = "cell") -> list[LegacyMap]:
    """The legacy map definitions in SOURCE (what rewrite_legacy_maps would rewrite)."""
    return rewrite_legacy_maps(source, origin)[1]


def rewrite_legacy_maps(source: str, origin: str = "cell") -> tuple[str, list[LegacyMap]]:
    """SOURCE with each ``struct bpf_map_def SEC("maps")`` declaration written as
    BTF-defined maps, every line kept, and the maps rewritten (none: SOURCE itself).
    A definition that cannot be rewritten is a UsageProblem naming its line."""
    data = source.encode()
    if LEGACY_STRUCT.encode() not in data:
        return source, []  # the common cell pays nothing
    out, found, last = [], [], 0
    for node in _declarations(data):
        pieces, maps = _rewrite(node, origin)
        out += [data[last : node.start_byte], _lay_out(pieces, node.start_point[0], node.end_point[0]).encode()]
        last = node.end_byte
        found += maps
    if not found:
        return source, []
    out.append(data[last:])
    return b"".join(out).decode(errors="replace"), found


def legacy_maps_note(found: list[LegacyMap], origin: str) -> str:
    listed = ", ".join(f"{m.name} ({origin}:{m.line})" for m in found)
    return (
        f'rewrote {len(found)} legacy map definition{"s" if len(found) > 1 else ""} (struct bpf_map_def SEC("maps"), '
        f'which libbpf 1.x no longer loads) as BTF-defined maps (SEC(".maps")): {listed}'
    )
