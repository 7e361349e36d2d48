"""The house rules ARCHITECTURE.md states, checked on the source: no import
circle among bpfmagic's modules (function-level imports count), no module
over 600 lines without a reason at its top, no class over 300 lines, no module
reading another module's objects' private attributes, and no backend branching
in Session and Module (they use the backend interface)."""

from __future__ import annotations

import ast
import os

import bpfmagic

PACKAGE = os.path.dirname(bpfmagic.__file__)


def _modules() -> dict[str, str]:
    out = {}
    for folder, _dirs, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the bpfmagic modules it imports, anywhere in it."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        package = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
        deps: set[str] = set()
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module:
                    deps.add(target)
                deps.update(f"{target}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("bpfmagic"))
        graph[mod] = {d for d in deps if d in modules and d != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_circle_check_sees_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_long_modules_say_why():
    for mod, path in _modules().items():
        with open(path) as f:
            text = f.read()
        if text.count("\n") > 600:
            doc = ast.get_docstring(ast.parse(text)) or ""
            assert "Long because:" in doc, f"{mod} has {text.count(chr(10))} lines and no reason at its top"


def test_session_and_module_do_not_branch_on_the_backend():
    branches = []
    for name in ("session.py", "module.py", "load.py"):
        with open(os.path.join(PACKAGE, name)) as f:
            branches += [(name, line) for line in _backend_branches(ast.parse(f.read()))]
    # The accessor for BCC's own object (Module.bpf, for what bpfmagic does not wrap) is the only
    # place that looks at its kind.
    assert len(branches) <= 1, f"branches on the backend at {branches}"


def _backend_branches(tree) -> list[int]:
    branches = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.IfExp)):
            for n in ast.walk(node.test):  # module.core / module.bpf / <obj>.object.kind
                if isinstance(n, ast.Attribute) and (
                    n.attr in ("core", "bpf") or (n.attr == "kind" and isinstance(n.value, ast.Attribute) and n.value.attr == "object")
                ):
                    branches.append(node.lineno)
                    break
    return branches


def _in(mod: str, package: str) -> bool:
    return mod == package or mod.startswith(package + ".")


def test_kernel_imports_only_kernel_and_errors():
    """kernel/ is the bottom layer: libbpf ctypes, mounts, pins, privileges, BTF."""
    wrong = {
        mod: sorted(d for d in deps if not (_in(d, "bpfmagic.kernel") or d == "bpfmagic.errors"))
        for mod, deps in import_graph().items()
        if _in(mod, "bpfmagic.kernel")
    }
    assert {m: d for m, d in wrong.items() if d} == {}


def test_events_do_not_import_backends():
    """events/ reaches a module's maps, BTF and perf buffers through its backend object only."""
    wrong = {mod: sorted(d for d in deps if _in(d, "bpfmagic.backends")) for mod, deps in import_graph().items() if _in(mod, "bpfmagic.events")}
    assert {m: d for m, d in wrong.items() if d} == {}


# The layers of ARCHITECTURE.md, bottom (0) to top; a module is in the layer of its longest prefix.
LAYERS = {
    "bpfmagic.errors": 0,
    "bpfmagic.kernel": 0,
    "bpfmagic.c": 1,
    "bpfmagic.backends": 2,
    "bpfmagic.module": 3,
    "bpfmagic.progarray": 3,
    "bpfmagic.sites": 3,
    "bpfmagic.maps": 3,
    "bpfmagic.globals": 3,
    "bpfmagic.events": 3,
    "bpfmagic.experiments": 3,
    "bpfmagic.views": 3,
    "bpfmagic.load": 4,
    "bpfmagic.registry": 4,
    "bpfmagic.instrumentation": 4,
    "bpfmagic.session": 4,
    "bpfmagic.shell": 5,
    "bpfmagic.magics": 5,
    "bpfmagic.completion": 5,
    "bpfmagic.widgets": 5,
    "bpfmagic.cli": 5,
    "bpfmagic.site": 5,
    "bpfmagic.doctor": 5,
    "bpfmagic": 6,
}


def layer(mod: str) -> int:
    prefix = max((p for p in LAYERS if _in(mod, p)), key=len)
    return LAYERS[prefix]


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, d) for m, deps in graph.items() for d in deps if layer(d) > layer(m))


def test_imports_point_down_the_layers():
    graph = import_graph()
    unplaced = [m for m in graph if m != "bpfmagic" and not any(_in(m, p) for p in LAYERS if p != "bpfmagic")]
    assert unplaced == [], "modules in no layer: add them to LAYERS and to ARCHITECTURE.md"
    assert upward_imports(graph) == []


def test_the_layer_check_sees_an_upward_import():
    assert upward_imports({"bpfmagic.kernel.pins": {"bpfmagic.session"}, "bpfmagic.session": {"bpfmagic.kernel.pins"}}) == [
        ("bpfmagic.kernel.pins", "bpfmagic.session")
    ]


def test_only_the_transaction_and_the_session_pick_a_backend():
    """Above backends/, a module's backend object is reached through Module.object."""
    wrong = sorted(
        (m, d)
        for m, deps in import_graph().items()
        for d in deps
        if _in(d, "bpfmagic.backends") and not _in(m, "bpfmagic.backends") and m not in ("bpfmagic.load", "bpfmagic.session")
    )
    assert wrong == []


def test_every_package_is_installed():
    """A package the wheel leaves out works in the editable checkout and nowhere else."""
    import tomllib

    with open(os.path.join(os.path.dirname(PACKAGE), "pyproject.toml"), "rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    from setuptools import find_packages

    found = set(find_packages(os.path.dirname(PACKAGE), include=include))
    on_disk = {m for m, p in _modules().items() if p.endswith("__init__.py")}
    assert on_disk <= found, f"not in the wheel: {sorted(on_disk - found)}"


def interface_table() -> dict[str, tuple[bool, list[str] | None]]:
    """backends/__init__.py's interface table (the rows between its ``=====`` rules):
    name -> (a method?, its parameters; None when the table writes ``...``)."""
    import re

    from bpfmagic import backends

    rows = backends.__doc__.split("\n=====")[1].split("\n", 1)[1].split("\n=====")[0]
    out = {}
    for m in re.finditer(r"^``(\w+)(?:\(([^)]*)\))?``", rows, re.M):
        name, params = m[1], m[2]
        if params is None:
            out[name] = (False, None)
        else:
            out[name] = (True, None if params.strip() == "..." else [p.strip() for p in params.split(",") if p.strip()])
    return out


def _parameters(func) -> list[str]:
    import inspect

    return [p for p in inspect.signature(func).parameters if p != "self"]


def test_both_backend_objects_implement_the_interface():
    """Every name backends/__init__.py's table lists is on BccObject and on CoreObject,
    a method where the table writes one, with as many parameters as the table names."""
    import inspect

    from bpfmagic.backends.bcc import BccObject
    from bpfmagic.backends.libbpf import CoreObject

    table = interface_table()
    assert len(table) >= 20, f"the interface table was not found or not read: {sorted(table)}"
    wrong = []
    for cls in (BccObject, CoreObject):
        for name, (method, params) in table.items():
            if not hasattr(cls, name):
                wrong.append(f"{cls.__name__} has no {name}")
                continue
            static = inspect.getattr_static(cls, name)
            if method != inspect.isfunction(static):
                wrong.append(f"{cls.__name__}.{name}: the table says {'a method' if method else 'an attribute'}")
            elif method and params is not None and len(_parameters(static)) != len(params):
                wrong.append(f"{cls.__name__}.{name}{inspect.signature(static)}: the table says ({', '.join(params)})")
    assert wrong == []


def test_both_backend_objects_take_the_same_parameters():
    """A caller of the interface passes the same arguments whichever backend made the object."""
    from bpfmagic.backends.bcc import BccObject
    from bpfmagic.backends.libbpf import CoreObject

    differ = [
        (name, _parameters(getattr(BccObject, name)), _parameters(getattr(CoreObject, name)))
        for name, (method, _params) in interface_table().items()
        if method and len(_parameters(getattr(BccObject, name))) != len(_parameters(getattr(CoreObject, name)))
    ]
    assert differ == []


def test_both_backend_modules_compile_a_cell_alike():
    """backends.for_cell hands out a module: the functions its docstring names, on both."""
    import inspect
    import re

    from bpfmagic import backends
    from bpfmagic.backends import bcc, libbpf

    names = re.findall(r"``(\w+)``", backends.for_cell.__doc__)
    assert names, "for_cell's docstring names no functions"
    for name in names:
        assert inspect.signature(getattr(bcc, name)).parameters.keys() == inspect.signature(getattr(libbpf, name)).parameters.keys(), name


MAX_CLASS_LINES = 300


def class_lengths() -> dict[str, int]:
    """module.Class -> its lines (decorators not counted), for every class in bpfmagic/."""
    out = {}
    for mod, path in _modules().items():
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                out[f"{mod}.{node.name}"] = node.end_lineno - node.lineno + 1
    return out


def test_no_class_is_over_300_lines():
    lengths = class_lengths()
    assert len(lengths) > 50, "the classes of bpfmagic/ were not found"
    too_long = {name: n for name, n in lengths.items() if n > MAX_CLASS_LINES}
    assert too_long == {}, f"classes over {MAX_CLASS_LINES} lines: split them"


def test_the_class_length_check_sees_a_long_class(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_CLASS_LINES))
    (tmp_path / "long.py").write_text(f"class Long:\n{body}\n\nclass Short:\n    pass\n")
    import unittest.mock

    with unittest.mock.patch(f"{__name__}._modules", return_value={"long": str(tmp_path / "long.py")}):
        assert class_lengths() == {"long.Long": MAX_CLASS_LINES + 1, "long.Short": 2}


def _int_constants(node) -> list[int]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and type(n.value) is int]


def _names_map_type(node) -> bool:
    """NODE mentions a map type: a name or attribute called *map_type*, or libbpf's bpf_map__type()."""
    for n in ast.walk(node):
        name = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else ""
        if "map_type" in name or name == "bpf_map__type":
            return True
    return False


def test_map_types_and_enotsupp_are_defined_once():
    """enum bpf_map_type lives in kernel/maptypes.py (MapType) and ENOTSUPP in kernel/libbpf.py:
    no other module gives them numbers, compares a map type with a number or creates a map of
    a numbered type."""
    from bpfmagic.kernel import libbpf, pins
    from bpfmagic.kernel.maptypes import MapType

    wrong = []
    for mod, path in _modules().items():
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if isinstance(target, ast.Name) and (target.id.startswith("BPF_MAP_TYPE_") or target.id == "ENOTSUPP"):
                        wrong.append((mod, node.lineno, target.id))
            elif isinstance(node, ast.Compare) and _names_map_type(node) and _int_constants(node):
                wrong.append((mod, node.lineno, "a map type compared with a number"))
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("map_create", "bpf_map_create") and node.args:
                if isinstance(node.args[0], ast.Constant):
                    wrong.append((mod, node.lineno, "a map created with a numbered type"))
            elif isinstance(node, ast.Constant) and node.value == libbpf.ENOTSUPP and mod != "bpfmagic.kernel.libbpf":
                wrong.append((mod, node.lineno, "ENOTSUPP as a number"))
    # kernel/pins.py runs alone in the reaper (no package imports): its one copy must agree
    allowed = {("bpfmagic.kernel.pins", "BPF_MAP_TYPE_PROG_ARRAY"), ("bpfmagic.kernel.libbpf", "ENOTSUPP")}
    assert [w for w in wrong if (w[0], w[2]) not in allowed] == []
    assert pins.BPF_MAP_TYPE_PROG_ARRAY == MapType.PROG_ARRAY


def _private_names_defined() -> dict[str, set[str]]:
    """module -> the private names it defines: functions, classes and their methods,
    attributes it assigns (``self._x = ...``, ``cls._x``, class-level ``_x = ...``)."""
    out: dict[str, set[str]] = {}
    for mod, path in _modules().items():
        with open(path) as f:
            tree = ast.parse(f.read())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
        out[mod] = {n for n in names if _private(n)}
    return out


def _private(name: str) -> bool:
    """_x, not __x__ (Python's own) nor _x_ (ctypes' protocol: _fields_, _type_, _length_)."""
    return name.startswith("_") and not name.endswith("_")


def private_reads() -> list[tuple[str, int, str]]:
    """(module, line, expression) of every ``x._name`` read where x is not self or cls and
    _name is a private name some *other* bpfmagic module defines (whether or not this one
    defines one too: the receiver's type is not known here): one module reaching into
    another's object. A module's own privates (its functions reading its classes' fields)
    and other projects' privates (BCC's, argparse's, which bpfmagic cannot change and no
    name of its own collides with) are outside this check."""
    defined = _private_names_defined()
    found = []
    for mod, path in _modules().items():
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "super":
                continue  # a subclass calling its base class's own method
            if any(node.attr in names for other, names in defined.items() if other != mod):
                found.append((mod, node.lineno, ast.unparse(node)))
    return sorted(found)


def test_no_module_reads_another_objects_private_attributes():
    assert private_reads() == []


def test_the_private_read_check_sees_one(tmp_path):
    (tmp_path / "owner.py").write_text("class Session:\n    def __init__(self):\n        self._lock = 1\n")
    (tmp_path / "reader.py").write_text("def f(session):\n    return session._lock\n")
    (tmp_path / "own.py").write_text("class A:\n    _x = 1\n\ndef g(a):\n    return a._x\n")
    modules = {"owner": str(tmp_path / "owner.py"), "reader": str(tmp_path / "reader.py"), "own": str(tmp_path / "own.py")}
    import unittest.mock

    with unittest.mock.patch(f"{__name__}._modules", return_value=modules):
        assert private_reads() == [("reader", 2, "session._lock")]


def test_no_buffer_address_is_taken_of_a_temporary():
    """``ptr(x)`` (maps/bulk.py) is a bare address: ``ptr(make_array())`` frees the array
    before libbpf reads it, and another thread's allocation may fill that memory first (a
    lookup of key 3 in a 4-entry array once came back ENOENT under nine threads)."""
    found = []
    for mod, path in _modules().items():
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "ptr":
                if node.args and isinstance(node.args[0], ast.Call):
                    found.append((mod, node.lineno, ast.unparse(node)))
    assert found == []
