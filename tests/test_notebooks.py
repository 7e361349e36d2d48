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


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Each notebook executed once for all the tests of this file."""
    cache = {}

    def get(name):
        path = next(p for p in NOTEBOOKS if p.endswith(name))
        if path not in cache:
            cache[path] = execute(path, tmp_path_factory.mktemp("nb"))
        return cache[path]
    return get


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_top_to_bottom(path, executed):
    executed(os.path.basename(path))


def test_syscall_dispatch_notebook_results(executed):
    nb = executed("01-syscall-dispatch.ipynb")
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


def test_syscall_dispatch_notebook_shows_errors_in_cells(executed):
    nb = executed("01-syscall-dispatch.ipynb")
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


def test_xdp_chain_experiments_notebook_results(executed):
    nb = executed("02-xdp-chain-experiments.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    assert summary["verdicts"] == {"dns": "XDP_DROP", "web": "XDP_PASS", "v6": "XDP_PASS"}
    assert summary["after_fill"] == "XDP_TX"
    assert summary["max_tail_calls"] == 33
    assert summary["const_ns_per_call"] > 0 and summary["var_ns_per_call"] > 0
    slots = text_outputs(tagged(nb, "slots-before")[0])
    assert "ipv4.parse_ipv4" in slots and "verdict" in slots and "ipv6" in slots
    graph = tagged(nb, "graph")[0]
    assert any("image/svg+xml" in o.get("data", {}) for o in graph.outputs), "the chain picture is missing"
    for tag in ("bench-const", "bench-var"):
        assert any("image/svg+xml" in o.get("data", {}) for o in tagged(nb, tag)[0].outputs)


def test_core_notebook_results(executed):
    nb = executed("03-core-and-bpf-to-bpf.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    reads = summary["reads"]
    assert reads["CO-RE"] == reads["real pid"]          # BPF_CORE_READ relocated to this kernel
    assert "BCC, 6.1 headers" in reads                   # shown beside it (wrong where headers mismatch)
    assert summary["mixed_retval"] == "XDP_DROP"         # BCC entry -> CO-RE stage -> BCC verdict
    assert summary["bytes"] == 100 * 100                 # 100 runs of a 100-byte frame, via the subprogram
    [error] = [o for c in tagged(nb, "raises-exception") for o in c.outputs if o.output_type == "error"]
    assert error.ename == "BpfVerifierError"
    assert "tail_calls are not allowed when call stack of previous frames" in error.evalue


def test_events_notebook_results(executed):
    nb = executed("04-events-into-dataframes.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    assert summary["write_events"] >= 2000 and summary["getppid_events"] >= 2000
    assert summary["write_bytes"] >= sum(i % 100 + 1 for i in range(2000))  # the count argument of each write
    assert summary["python_comm_rows"] >= 4000                               # char[16] decoded to str
    assert summary["rows_kept"] == 1000 and summary["dropped"] > 0          # max_rows bound
    assert summary["trace_lines"] >= 3
    frame = text_outputs(tagged(nb, "events")[0])
    for column in ("ts", "tid", "nr", "arg", "comm"):
        assert column in frame
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), "no live view"


def test_maps_notebook_results(executed):
    nb = executed("05-maps-into-dataframes.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    assert summary["dns_packets"] == 3 and summary["big_bytes"] == 2 * 1042  # counted by the program
    assert summary["runs"] >= 5                                               # per-CPU, summed
    assert summary["hist_buckets"] == [[64, 127, 3], [1024, 2047, 2]]         # 72- and 1042-byte frames
    assert summary["verdicts"] == ["XDP_PASS", "XDP_DROP"]                    # a write seen by the program
    assert summary["watched_packets"] == 100
