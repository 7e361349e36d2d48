"""The JIT annotator on code recorded on hosts unlike this one (tests/data/jit/,
written by tests/data/jit/record.py): a return is never a tail call, and every
site is found whatever the host's mitigations. The live dump on this host is
checked against the branch this host has."""

from __future__ import annotations

import glob
import json
import os
import re

import pytest

from bpfmagic.experiments.dump import JitImage, annotate_jited
from bpfmagic.kernel import cpu

from ..helpers import last_instruction
from ..paths import REPO

DATA = os.path.join(REPO, "tests", "data", "jit")
RECORDED = sorted(glob.glob(os.path.join(DATA, "*.json")))


def _load(path):
    with open(path) as f:
        return json.load(f)


def _rows(text, start):
    return [line for line in text.splitlines() if line.startswith(start)]


def _return_kind(image):
    """'thunk' where the host's functions return through a return thunk, 'ret' where they don't."""
    return "thunk" if any(cpu.thunk_kind(s) == "return" for s in image.symbols.values()) else "ret"


def _indirect_kind(image):
    """'thunk' where the host jumps through an indirect-branch thunk (a retpoline, ITS), 'register' where not."""
    return "thunk" if any(cpu.thunk_kind(s) == "indirect" for s in image.symbols.values()) else "register"


def test_recordings_cover_both_kinds_of_host():
    """Recordings return through a return thunk and with `ret`, and jump to a variable index
    through a retpoline and through a register: every branch of the annotator is proved on
    every host."""
    returns, indirect = set(), set()
    for path in RECORDED:
        for data in _load(path)["images"].values():
            returns.add(_return_kind(JitImage.from_json(data)))
            indirect.add(_indirect_kind(JitImage.from_json(data)))
    assert returns == {"thunk", "ret"} and indirect == {"thunk", "register"}, (RECORDED, returns, indirect)


@pytest.mark.parametrize("path", RECORDED, ids=os.path.basename)
def test_recorded_chain_sites_and_returns(path):
    rec = _load(path)
    filled = annotate_jited(JitImage.from_json(rec["images"]["const-filled-and-var"]))
    empty = annotate_jited(JitImage.from_json(rec["images"]["const-empty-and-var"]))
    image = JitImage.from_json(rec["images"]["const-filled-and-var"])
    for text in (filled, empty):
        marks = [r for r in text.splitlines() if "◀ tail call" in r]
        # three marked rows per state: the constant site's two 5-byte places and the variable site's jump
        assert len(marks) == 3, text
        var = [m for m in marks if "variable index" in m]
        assert len(var) == 1, text
        if _indirect_kind(image) == "thunk":
            assert "through the retpoline" in var[0] or "through the ITS thunk" in var[0], var
        else:
            assert re.search(r": jmp r[a-z0-9]+\s+◀ tail call: indirect jump to the slot's program", var[0]), var
        last = last_instruction(text, "entry")
        assert "tail call" not in last, last
        if _return_kind(image) == "thunk":
            assert "◀ return, through the return thunk" in last, last
        else:
            assert last.rstrip().endswith(": ret"), last
    assert sum("direct jump the kernel patched in for a constant index, into rec.leaf" in r for r in filled.splitlines()) == 1
    assert "patch site (a nop while the slot is filled" in filled
    assert "into rec.leaf" not in empty
    assert "the slot is empty: jumps over the patch site below" in empty
    assert "patch site (a nop while the slot is empty" in empty
    assert "; jt.call(ctx, 1);  @ rec:4" in filled and "; jt.call(ctx, k);  @ rec:6" in filled


@pytest.mark.parametrize("path", [p for p in RECORDED if "subprog-const-filled" in _load(p)["images"]], ids=os.path.basename)
def test_recorded_subprogram_tail_call(path):
    text = annotate_jited(JitImage.from_json(_load(path)["images"]["subprog-const-filled"]))
    assert "<top>:" in text and "<hop>:" in text
    assert sum("◀ BPF-to-BPF call to hop" in r for r in text.split("<hop>:")[0].splitlines()) == 1, text
    hop = text.split("<hop>:")[1]
    assert sum("direct jump the kernel patched in for a constant index, into sub.end" in r for r in hop.splitlines()) == 1
    for function in ("top", "hop"):
        assert "tail call" not in last_instruction(text, function)


def test_thunk_names():
    assert cpu.thunk_kind("its_return_thunk") == "return"
    assert cpu.thunk_kind("__x86_return_thunk") == "return"
    assert cpu.thunk_kind("srso_alias_return_thunk") == "return"
    assert cpu.thunk_kind("srso_safe_ret") == "return"
    assert cpu.thunk_kind("__x86_indirect_thunk_rcx") == "indirect"
    assert cpu.thunk_kind("__x86_indirect_its_thunk_rcx") == "indirect"
    assert cpu.thunk_kind("bpf_prog_0123456789abcdef_f") is None
    assert cpu.thunk_mitigation("its_return_thunk") == "indirect_target_selection"
    assert cpu.thunk_mitigation("srso_return_thunk") == "spec_rstack_overflow"
    assert cpu.thunk_mitigation("__x86_indirect_thunk_rcx") == "spectre_v2"
