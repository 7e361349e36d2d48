"""Constructs in a BCC cell that libbcc's code generator may answer by ending
the process (LLVM's exit(1) or abort()) instead of returning an error: an
atomic builtin whose result is used (BPF v1 has no fetch form), floating
point, locals that may pass the 512-byte stack. Read on the syntax tree, so
only a cell that has one pays for a trial compile in a child process."""

from __future__ import annotations

from .analysis import _parser, _text, constant_value
from .analysis import _walk_nodes as _walk

# Sizes of the scalar types a local array is usually made of; anything else counts as 8 bytes.
_SCALAR_SIZES = {
    "char": 1,
    "u8": 1,
    "__u8": 1,
    "s8": 1,
    "__s8": 1,
    "uint8_t": 1,
    "int8_t": 1,
    "bool": 1,
    "u16": 2,
    "__u16": 2,
    "s16": 2,
    "__s16": 2,
    "short": 2,
    "uint16_t": 2,
    "int16_t": 2,
    "u32": 4,
    "__u32": 4,
    "s32": 4,
    "__s32": 4,
    "int": 4,
    "unsigned": 4,
    "uint32_t": 4,
    "int32_t": 4,
    "float": 4,
}
STACK_WATCH = 256  # bytes of local arrays in one function that make a trial compile worth it


def _array_bytes(declarator, element: int) -> int:
    total, node = element, declarator
    while node is not None and node.type == "array_declarator":
        size = constant_value(node.child_by_field_name("size"))
        total *= size if size is not None else 1
        node = node.child_by_field_name("declarator")
    return total


def _struct_sizes(root) -> dict[str, int]:
    """Rough byte sizes of the structs the cell defines (scalars, arrays, nested structs
    defined earlier; 8 for anything else): enough to see a local that may pass the stack."""
    sizes: dict[str, int] = {}
    for node in _walk(root):
        if node.type != "struct_specifier" or node.child_by_field_name("body") is None:
            continue
        name = node.child_by_field_name("name")
        total = 0
        for field in node.child_by_field_name("body").named_children:
            if field.type != "field_declaration":
                continue
            type_node = field.child_by_field_name("type")
            element = _element_size(type_node, sizes)
            for d in field.children_by_field_name("declarator"):
                total += _array_bytes(d, element) if d.type == "array_declarator" else element
        if name is not None:
            sizes[_text(name)] = total
    return sizes


def _element_size(type_node, structs: dict[str, int]) -> int:
    if type_node is None:
        return 8
    if type_node.type == "struct_specifier" and type_node.child_by_field_name("name") is not None:
        return structs.get(_text(type_node.child_by_field_name("name")), 8)
    return _SCALAR_SIZES.get(_text(type_node), 8)


def codegen_hazards(source: str) -> list[str]:
    """What in SOURCE could make libbcc end the process, one phrase each (empty: nothing)."""
    root = _parser().parse(source.encode()).root_node
    structs = _struct_sizes(root)
    found: list[str] = []
    for node in _walk(root):
        if node.type == "call_expression":
            fn = node.child_by_field_name("function")
            name = _text(fn) if fn is not None else ""
            if name.startswith(("__sync_", "__atomic_")) and node.parent is not None and node.parent.type != "expression_statement":
                found.append(f"the result of {name}() is used")
        elif node.type == "primitive_type" and _text(node) in ("float", "double"):
            found.append(f"a {_text(node)}")
        elif node.type == "number_literal" and any(c in _text(node) for c in ".eE") and not _text(node).lower().startswith("0x"):
            found.append(f"the floating-point constant {_text(node)}")
        elif node.type == "function_definition":
            local = 0
            for decl in _walk(node.child_by_field_name("body") or node):
                if decl.type != "declaration":
                    continue
                element = _element_size(decl.child_by_field_name("type"), structs)
                for d in decl.children_by_field_name("declarator"):
                    inner = d.child_by_field_name("declarator") if d.type == "init_declarator" else d
                    if inner is not None and inner.type == "array_declarator":
                        local += _array_bytes(inner, element)
                    elif inner is not None and inner.type == "identifier":
                        local += element
            if local >= STACK_WATCH:
                found.append(f"{local} bytes of locals")
    return sorted(set(found))
