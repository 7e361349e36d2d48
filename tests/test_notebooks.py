"""Tutorial notebooks, executed top to bottom with nbclient on the real
kernel, with assertions on what they produced."""
from __future__ import annotations

import glob
import json
import os

import nbformat
import pytest

from bpfmagic.cli import run_notebook

from .conftest import kernel_objects, leftovers, needs_root

pytestmark = needs_root
NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "notebooks", "*.ipynb")))


def execute(path, tmp_path):
    before = kernel_objects()
    ok, out = run_notebook(path, output=str(tmp_path / os.path.basename(path)), timeout=300, echo=False)
    nb = nbformat.read(out, as_version=4)
    # Cells tagged raises-exception show an error on purpose (a tutorial's "when it goes wrong").
    errors = [o for c in nb.cells if c.cell_type == "code"
              and "raises-exception" not in c.get("metadata", {}).get("tags", [])
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert ok and not errors, f"{path} failed: {[e.get('ename') + ': ' + e.get('evalue', '') for e in errors]}"
    # The kernel process has exited: nothing it loaded may remain.
    assert leftovers(before) == {}
    return nb


def text_outputs(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif "data" in o:
            parts.append(o["data"].get("text/plain", ""))
    return "".join(parts)


def tagged(nb, tag):
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_top_to_bottom(path, tmp_path):
    execute(path, tmp_path)


def test_syscall_dispatch_notebook_results(tmp_path):
    path = next(p for p in NOTEBOOKS if p.endswith("01-syscall-dispatch.ipynb"))
    nb = execute(path, tmp_path)
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    assert summary["write_runs"] >= 1000            # the workload's writes reached on_write
    assert summary["getppid_runs"] >= 1000          # 500 + 500 with the slot filled
    assert summary["runs_while_unslotted"] == 0     # empty slot: the calls fell through
    assert summary["runs_after_reslot"] >= 500
    assert summary["getppid_slot_missed"] >= 500
    assert summary["getppid_slot_calls"] >= 1500
    assert summary["fell_through"] > 0 and summary["dispatched"] > summary["fell_through"]
    everything = "\n".join(text_outputs(c) for c in nb.cells if c.cell_type == "code")
    assert "handlers.on_write" in everything and "progs[getppid] emptied" in everything
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", [])), "the write-size plot is missing"


def test_syscall_dispatch_notebook_shows_errors_in_cells(tmp_path):
    path = next(p for p in NOTEBOOKS if p.endswith("01-syscall-dispatch.ipynb"))
    nb = execute(path, tmp_path)
    verifier, rerun = [[o for o in c.outputs if o.output_type == "error"][0] for c in tagged(nb, "raises-exception")]
    assert verifier.ename == "BpfVerifierError"
    assert "map_value_or_null" in verifier.evalue and "HINT" in verifier.evalue
    assert "*v = bpf_ktime_get_ns(); " in verifier.evalue and "@ cell:5" in verifier.evalue  # lines of the cell body
    assert rerun.ename == "BpfCompileError"
    assert "cell:4:" in rerun.evalue and "calls.atomic_increment(k)" in rerun.evalue
    assert "the previous version is still loaded" in " ".join(rerun.evalue.split())
    assert not any("Traceback" in line for o in (verifier, rerun) for line in o.traceback)
    ran = int(text_outputs(tagged(nb, "still-running")[0]).split("still ran ")[1].split()[0])
    assert ran >= 100
