"""The %bpf commands are declared once (bpfmagic/magics/registry.py): what is made from
that declaration agrees with it. Nothing is loaded; only the Session's doors need one."""

from __future__ import annotations

import os
import re

from bpfmagic import Session, completion
from bpfmagic.magics import CELL, COMMANDS, reference

from ..paths import REPO


def test_every_command_names_its_session_equivalent(session):
    """Each `s.NAME` a command gives as its Python door is a public attribute of a Session."""
    missing = []
    for name, each in COMMANDS.items():
        doors = re.findall(r"\bs\.(\w+)", each.python)
        assert doors or each.python.startswith("bpfmagic."), f"%bpf {name} names no Python equivalent"
        missing += [f"%bpf {name}: s.{door}" for door in doors if door.startswith("_") or not hasattr(session, door)]
    assert missing == []


def test_the_python_doors_of_chain_files_and_path_pictures():
    """%bpf chain --file and %bpf paths went around the Session; now they have their doors."""
    assert "chain_from_file" in COMMANDS["chain"].python and callable(Session.chain_from_file)
    assert "path_graph" in COMMANDS["paths"].python and callable(Session.path_graph)


def test_the_reference_table_is_made_from_the_registry():
    path = os.path.join(REPO, "docs", "reference.md")
    with open(path) as f:
        text = f.read()
    assert reference.with_table(text) == text, "run python -m bpfmagic.magics.reference docs/reference.md"
    table = text[text.index(reference.BEGIN) : text.index(reference.END)]
    for name in COMMANDS:
        assert f"| `%bpf {name}" in table, name


def test_what_a_value_names_is_a_kind_completion_serves():
    declared = {
        (name, action.dest): action.completes
        for name, parser in [*COMMANDS.parsers().items(), ("%%bpf", CELL.parser)]
        for action in parser._actions
        if getattr(action, "completes", None)
    }
    assert {kind for kind in declared.values()} <= completion.KINDS
    # the names a value takes are declared for the arguments that name something
    assert declared[("run", "program")] == "program" and declared[("%%bpf", "attach")] == "attach"
    assert declared[("load", "file")] == "path" and declared[("unload", "name")] == "module_or_array"


def test_a_command_is_declared_once():
    import pytest

    from bpfmagic.magics.registry import Registry

    with pytest.raises(ValueError, match="declared twice"):
        Registry([COMMANDS["ls"], COMMANDS["ls"]])
