"""The struct members a cell reads through a typed base, found on the syntax
tree: ``task->tgid``, ``task->real_parent->tgid``, ``task->se.vruntime``,
``((struct task_struct *)bpf_get_current_task())->pid``, ``&t->comm`` in a
``bpf_probe_read_kernel``. A base is typed by the declaration in scope
(parameter, local, file-scope variable) or by a cast. BCC compiles these
with the offsets of the headers it uses, which may be another kernel's: the
BCC backend compares them with the running kernel's BTF
(backends/bcc_offsets.py).

Not listed: structs the cell defines itself, and the context structs whose
layout is uapi (the verifier rewrites those accesses); members reached
through a macro's body or untyped pointer arithmetic are invisible here."""

from __future__ import annotations

from dataclasses import dataclass

from .analysis import CONTEXT_TYPES, _declarator_name, _parser, _text, function_parameters
from .analysis import _walk_nodes as _walk

# A step of an access: "->" or "." and the member, or "[]" (an element of an array member).
Step = tuple[str, str]


@dataclass(frozen=True)
class MemberAccess:
    """``text`` at ``line``: members of ``struct`` (the base's struct) reached by ``steps``."""

    struct: str
    steps: tuple[Step, ...]
    line: int
    text: str


def member_accesses(syntax) -> list[MemberAccess]:
    """Each outermost member-access chain of SYNTAX (a CellSyntax) whose base has
    a struct type the cell does not define and that is not a context struct."""
    tree = getattr(syntax, "_tree", None) or _parser().parse(syntax.source.encode())
    root = tree.root_node
    own = _defined_structs(root)
    found = []
    for node in _walk(root):
        if node.type != "field_expression" or _inside_chain(node):
            continue
        base, steps = _unwind(node)
        struct = _struct_of(base)
        if struct is None or struct in own or struct in CONTEXT_TYPES or not steps or steps[0][0] == "[]":
            continue
        found.append((node.start_byte, MemberAccess(struct, tuple(steps), node.start_point[0] + 1, _text(node))))
    return [access for _, access in sorted(found, key=lambda f: f[0])]  # in the order the source has them


def _defined_structs(root) -> set[str]:
    """Structs (and unions) the cell defines with a body: its own records, not the kernel's."""
    names = set()
    for node in _walk(root):
        if node.type in ("struct_specifier", "union_specifier") and node.child_by_field_name("body") is not None:
            name = node.child_by_field_name("name")
            if name is not None:
                names.add(_text(name))
    return names


def _inside_chain(node) -> bool:
    """NODE is the base of a longer chain (``task->real_parent`` in ``task->real_parent->tgid``)."""
    parent = node.parent
    while parent is not None and parent.type in ("parenthesized_expression", "subscript_expression"):
        if parent.type == "subscript_expression" and parent.child_by_field_name("argument") != node:
            return False  # NODE is the index, not the array
        node, parent = parent, parent.parent
    return parent is not None and parent.type == "field_expression" and parent.child_by_field_name("argument") == node


def _unwind(node) -> tuple[object, list[Step]]:
    """The base expression of a chain and its steps, first step first."""
    steps: list[Step] = []
    while True:
        if node.type == "field_expression":
            op = node.child_by_field_name("operator")
            field = node.child_by_field_name("field")
            if op is None or field is None:
                return None, []
            steps.append((_text(op), _text(field)))
            node = node.child_by_field_name("argument")
        elif node.type == "subscript_expression" and node.child_by_field_name("argument") is not None:
            steps.append(("[]", ""))
            node = node.child_by_field_name("argument")
        elif node.type == "parenthesized_expression" and node.named_children and node.named_children[0].type != "cast_expression":
            node = node.named_children[0]
        else:
            break
    steps.reverse()
    # an element of an array (or pointer) variable is of the variable's struct
    while steps and steps[0] == ("[]", "") and node.type == "identifier":
        steps.pop(0)
    return node, steps


def _struct_of(base) -> str | None:
    """The struct a chain's base is (or points to): a cast's type or the declaration in scope."""
    if base is None:
        return None
    if base.type == "parenthesized_expression" and base.named_children:
        base = base.named_children[0]
    if base.type == "cast_expression":
        return _struct_name(base.child_by_field_name("type"))
    if base.type == "pointer_expression" and _text(base).startswith("*"):  # (*pp)->x: pp is a pointer to a pointer
        inner = base.child_by_field_name("argument")
        return _struct_of(inner) if inner is not None else None
    if base.type == "identifier":
        decl = _declaration_of(base, _text(base))
        return _struct_name(decl.child_by_field_name("type")) if decl is not None else None
    return None


def _struct_name(type_node) -> str | None:
    """``task_struct`` of ``struct task_struct`` (a type or a cast's type descriptor)."""
    if type_node is None:
        return None
    if type_node.type == "type_descriptor":
        type_node = type_node.child_by_field_name("type")
    if type_node is not None and type_node.type in ("struct_specifier", "union_specifier"):
        name = type_node.child_by_field_name("name")
        return _text(name) if name is not None else None
    return None


def _declares(decl, name: str) -> bool:
    return any(_declarator_name(d) == name for d in decl.children_by_field_name("declarator"))


def _declaration_of(ident, name: str):
    """The declaration (or parameter declaration) NAME at IDENT refers to, by C's
    scope rules: the nearest enclosing block's earlier declarations, then the
    function's parameters, then file scope."""
    node = ident
    while node.parent is not None:
        parent = node.parent
        if parent.type in ("compound_statement", "for_statement", "translation_unit"):
            found = None
            for sibling in parent.named_children:
                if sibling.start_byte >= ident.start_byte:
                    break
                if sibling.type == "declaration" and _declares(sibling, name):
                    found = sibling  # the latest one before the use
            if found is not None:
                return found
        if parent.type == "function_definition":
            for p in function_parameters(parent):
                if _declares(p, name):
                    return p
        node = parent
    return None
