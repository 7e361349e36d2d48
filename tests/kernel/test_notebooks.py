"""Tutorial notebooks, executed top to bottom with nbclient on the real
kernel, with assertions on what they produced."""

from __future__ import annotations

import glob
import json
import os
import platform
import re
from html.parser import HTMLParser

import nbformat
import pytest

from bpfmagic.cli import run_notebook
from bpfmagic.kernel import cpu

from ..conftest import kernel_objects, leftovers, needs_root, syscall_nr
from ..paths import REPO

pytestmark = needs_root
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))


# Read-only cells the tests add before a notebook's final `%bpf reset`, to look at
# what the notebook built with a probe of their own. Each prints one JSON line.
PROBES = {
    # The dispatcher's counters and the handlers' are separate maps, read one after the
    # other while the process's other threads make syscalls: read seen (dispatched, fell
    # through) in one batch lookup before and after the handlers', until a quiet window
    # leaves dispatched - fell_through unchanged (our own reads fall through: they add to
    # both). Within any window, before <= handler runs <= after.
    "01-syscall-dispatch.ipynb": """
import json
def _diff():
    seen = dict(disp["seen"].items_lookup_batch())
    return seen[0] - seen[1]
_windows = []
for _ in range(200):
    _before = _diff()
    _runs = sum(v for _, v in handlers["calls"].items_lookup_batch())
    _after = _diff()
    _windows.append((_before, _runs, _after))
    if _before == _after:
        break
print(json.dumps({"windows": _windows}))
""",
    # The verdict slot after the fill and the 1000 runs that followed it.
    "02-xdp-chain-experiments.ipynb": """
import json
_slots = %bpf slots chain
print(json.dumps({r.key: [int(r.calls), int(r.taken), int(r.missed)] for r in _slots.itertuples()}))
""",
    # The events frame the notebook made (df), looked at row by row.
    "04-events-into-dataframes.ipynb": """
import collections, json, threading
import bpfmagic
_main = threading.main_thread().native_id
with open(f"/proc/self/task/{_main}/comm") as _f:
    _comm = _f.read().strip()
_getppid = df[df["nr"] == NR_GETPPID]
_mine = df[df["tid"] == _main]
_writes = _mine[_mine["nr"] == NR_WRITE]
_unhandled = bpfmagic.session().stream("unhandled").df()
print(json.dumps({
    "main_comm": _comm, "nrs": sorted(int(n) for n in set(df["nr"])),
    "getppid_rows": len(_getppid), "getppid_rows_of_main": int((_getppid["tid"] == _main).sum()),
    "getppid_args": sorted(int(a) for a in set(_getppid["arg"])), "getppid_comms": sorted(set(_getppid["comm"])),
    "main_write_sizes": {int(k): v for k, v in collections.Counter(_writes["arg"]).items()},
    "write_comms_of_main": sorted(set(_writes["comm"])),
    "unhandled_rows": len(_unhandled),
    "unhandled_with_handler": int(_unhandled["nr"].isin([NR_WRITE, NR_GETPPID]).sum()),
}))
""".replace("NR_GETPPID", str(syscall_nr("getppid"))).replace("NR_WRITE", str(syscall_nr("write"))),
}


def execute(path, tmp_path):
    """Run the notebook (with its probe, if any, before the final `%bpf reset`)."""
    nb = nbformat.read(path, as_version=4)
    probe = PROBES.get(os.path.basename(path))
    if probe:
        # The probe reads the modules the notebook made: it goes before the first %bpf reset.
        resets = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.startswith("%bpf reset")]
        assert resets, "the probe goes before the notebook's %bpf reset"
        cell = nbformat.v4.new_code_cell(probe.strip())
        cell.metadata["tags"] = ["test-probe"]
        nb.cells.insert(resets[0], cell)
    # The copy runs in tmp_path: the notebooks read no file beside them.
    source = tmp_path / ("probed-" + os.path.basename(path))
    nbformat.write(nb, str(source))
    before = kernel_objects()
    ok, out = run_notebook(str(source), output=str(tmp_path / os.path.basename(path)), timeout=300, echo=False)
    nb = nbformat.read(out, as_version=4)
    # Cells tagged raises-exception show an error on purpose (a tutorial's "when it goes wrong").
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code" and "raises-exception" not in c.get("metadata", {}).get("tags", [])
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert ok and not errors, f"{path} failed: {[e.get('ename') + ': ' + e.get('evalue', '') for e in errors]}"
    # The kernel process has exited: nothing it loaded may remain.
    assert leftovers(before) == {}
    return nb


def probe_result(nb) -> dict:
    return json.loads(text_outputs(tagged(nb, "test-probe")[0]).strip().splitlines()[-1])


class _TableParser(HTMLParser):
    """The cells of the first HTML table, row by row (pandas' to_html)."""

    def __init__(self):
        super().__init__()
        self.rows, self._cell, self._done = [], None, False

    def handle_starttag(self, tag, attrs):
        if self._done:
            return
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and not self._done:
            self.rows[-1].append(self._cell.strip())
            self._cell = None
        elif tag == "table":
            self._done = True

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def html_table(html: str) -> list[dict]:
    """The rows of a DataFrame's HTML rendering as dicts keyed by column
    (the index under ""); the index-name row pandas adds is skipped."""
    parser = _TableParser()
    parser.feed(html)
    header, *body = parser.rows
    columns = [""] + header[1:]
    return [dict(zip(columns, row)) for row in body if len(row) == len(columns) and any(row[1:])]


def cell_table(cell) -> list[dict]:
    """The rows of the DataFrame a cell displayed last."""
    [html] = [o["data"]["text/html"] for o in cell.outputs if "text/html" in o.get("data", {})][-1:]
    return html_table(html)


def code_cell(nb, *words):
    """The one code cell whose source holds every one of WORDS."""
    [cell] = [c for c in nb.cells if c.cell_type == "code" and all(w in c.source for w in words)]
    return cell


def text_outputs(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif "data" in o:  # computed prose (IPython's Markdown) by its text
            parts.append(o["data"].get("text/markdown", o["data"].get("text/plain", "")))
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
    nb = executed(os.path.basename(path))
    code = [c for c in nb.cells if c.cell_type == "code"]
    # every code cell ran, once, in order
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    for c in code:
        raised = [o for o in c.outputs if o.output_type == "error"]
        if "raises-exception" in c.metadata.get("tags", []):
            assert raised, f"a cell tagged raises-exception ran without error: {c.source[:60]!r}"
        # what the reader sees has no traceback noise, and no warning but the headers' (a cell's
        # kernel struct offsets from another kernel's headers)
        for o in c.outputs:
            if o.output_type == "stream" and o.name == "stderr":
                assert "Traceback" not in o.text, o.text
                assert all(("HeadersMismatchWarning" in ln or "KernelOffsetsWarning" in ln) for ln in o.text.splitlines() if "Warning" in ln)
    # the last cell frees, while the kernel still runs, every module the cells left loaded
    assert code[-1].source.startswith("%bpf reset")
    assert text_outputs(code[-1]).startswith(f"reset: unloaded {len(modules_left(code[:-1]))} module(s)\n")


def modules_left(cells) -> set[str]:
    """Modules the cells leave loaded, replayed from their sources: each `%%bpf NAME`
    cell that succeeded and each Session.load("NAME", ...) loads one, `%bpf unload
    NAME` frees it; `%bpf chain NAME --file/--stages` loads the chain's entry, NAME_entry."""
    loaded: set[str] = set()
    for c in cells:
        if c.source.startswith("%bpf reset"):
            loaded.clear()
            continue
        if c.source.startswith("%%bpf ") and "raises-exception" not in c.metadata.get("tags", []):
            loaded.add(c.source.split()[1])
            continue
        for m in re.finditer(r"^\s*%bpf unload (\w+)|\.load\(\s*[\"'](\w+)[\"']|^\s*%bpf chain (\w+) --(?:file|stages)", c.source, re.MULTILINE):
            if m[1]:
                loaded.discard(m[1])
            elif m[2]:
                loaded.add(m[2])
            else:
                loaded.add(m[3] + "_entry")
    return loaded


def test_syscall_dispatch_notebook_results(executed):
    nb = executed("01-syscall-dispatch.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    # the dispatcher counts only the thread that runs the cells: the workload's share is exact
    assert summary["workload_write_taken"] == 1000 and summary["workload_getppid_taken"] == 500
    assert summary["workload_handler_runs"] == {"write": 1000, "getppid": 500}
    explained = text_outputs(tagged(nb, "explained")[0])
    assert "**1000** tail calls taken during the workload" in explained and "**500** for its 500 calls" in explained
    assert "before the handlers cell filled the slot" in explained
    assert summary["write_runs"] >= 1000  # the workload's writes reached on_write
    assert summary["getppid_runs"] >= 1000  # 500 + 500 with the slot filled
    assert summary["runs_while_unslotted"] == 0  # empty slot: the calls fell through
    assert summary["runs_after_reslot"] >= 500
    assert summary["getppid_slot_missed"] >= 500
    assert summary["getppid_slot_calls"] >= 1500
    assert summary["fell_through"] > 0 and summary["dispatched"] > summary["fell_through"]
    # Every dispatched syscall either jumped to a handler or fell through: in a quiet window
    # (see PROBES) dispatched - fell_through is exactly the handlers' runs, and in every
    # window it brackets them.
    windows = probe_result(nb)["windows"]
    assert all(before <= runs <= after for before, runs, after in windows), windows
    before, runs, after = windows[-1]
    assert before == after == runs, f"no quiet window in {len(windows)} tries: {windows[-3:]}"
    everything = "\n".join(text_outputs(c) for c in nb.cells if c.cell_type == "code")
    assert "handlers.on_write" in everything and "progs[getppid] emptied" in everything
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])), (
        "the write-size plot is missing"
    )


def test_syscall_dispatch_notebook_histogram(executed):
    """The workload writes 100 times each of 1, 2, 4, ... 512 bytes: the histogram of its
    window (this thread only) holds exactly 100 in each log2 bucket and nothing else."""
    nb = executed("01-syscall-dispatch.ipynb")
    sizes = {int(row[""]): int(row["writes"]) for row in cell_table(tagged(nb, "write_sizes")[0])}
    assert sizes == {1 << k: 100 for k in range(10)}, sizes
    handled = {row[""]: int(row["handler runs"]) for row in cell_table(code_cell(nb, 'name="handler runs"'))}
    assert handled == {"write": 1000, "getppid": 500}


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
    # 1000 runs each of dns, web and v6 before the fill: dns and web go through ipv4
    # (dns is dropped there), web then calls the empty verdict slot, v6 the empty ipv6 one.
    before = {row["key"]: row for row in cell_table(tagged(nb, "slots-before")[0])}
    assert {k: (int(r["calls"]), int(r["taken"]), int(r["missed"])) for k, r in before.items()} == {
        "ipv4": (2000, 2000, 0),
        "ipv6": (1000, 0, 1000),
        "verdict": (1000, 0, 1000),
    }
    assert before["ipv4"]["program"] == "ipv4.parse_ipv4"
    assert before["ipv6"]["program"] == before["verdict"]["program"] == "NaN"
    # After the fill, 1000 more web runs: all taken into verdict, no new miss.
    stats = cell_table(tagged(nb, "stats")[0])
    programs = {row["program"]: row for row in stats if row["program"] != "(empty)"}
    assert (programs["verdict.verdict"]["tail_calls_in"], programs["ipv4.parse_ipv4"]["tail_calls_in"]) == ("1000", "3000")
    assert [(r["slots"], r["missed"]) for r in stats if r["program"] == "(empty)"] == [("chain[ipv6]", "1000")]
    assert probe_result(nb) == {"ipv4": [3000, 3000, 0], "ipv6": [1000, 0, 1000], "verdict": [2000, 1000, 1000]}
    graph = tagged(nb, "graph")[0]
    assert any("image/svg+xml" in o.get("data", {}) for o in graph.outputs), "the chain picture is missing"
    for tag in ("bench-const", "bench-var"):
        assert any("image/svg+xml" in o.get("data", {}) for o in tagged(nb, tag)[0].outputs)


def test_core_notebook_results(executed):
    nb = executed("03-core-and-bpf-to-bpf.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    reads = summary["reads"]
    assert reads["CO-RE"] == reads["real pid"]  # BPF_CORE_READ relocated to this kernel
    assert "BCC, 6.1 headers" in reads  # shown beside it (wrong where headers mismatch)
    # ... and the BCC cell said so when it loaded, the CO-RE one did not
    bcc_said = "".join(o.text for o in code_cell(nb, "%%bpf bcc_read").outputs if o.output_type == "stream" and o.name == "stderr")
    if reads["BCC, 6.1 headers"] != reads["real pid"]:
        assert "KernelOffsetsWarning" in bcc_said and re.search(r"task_struct\.tgid is at offset \d+ in those headers, at \d+", bcc_said)
        assert "--core" in bcc_said
    core_said = "".join(o.text for o in code_cell(nb, "%%bpf core_read").outputs if o.output_type == "stream")
    assert "KernelOffsetsWarning" not in core_said
    assert summary["mixed_retval"] == "XDP_DROP"  # BCC entry -> CO-RE stage -> BCC verdict
    assert summary["bytes"] == 100 * 100  # 100 runs of a 100-byte frame, via the subprogram
    [error] = [o for c in tagged(nb, "raises-exception") for o in c.outputs if o.output_type == "error"]
    assert error.ename == "BpfVerifierError"
    assert "tail_calls are not allowed when call stack of previous frames" in error.evalue
    # the why of the rules, measured: the 9th frame and a mix over 256 bytes refused, in the kernel's words
    limits = {r["experiment"]: r for r in cell_table(tagged(nb, "limits")[0])}
    assert limits["9 call frames (main + 8 nested calls)"]["loaded"] == "False"
    assert limits["9 call frames (main + 8 nested calls)"]["kernel_says"] == "the call stack of 9 frames is too deep"
    assert limits["a subprogram tail-calls, frames above it 240 B"]["loaded"] == "True"
    assert limits["a subprogram tail-calls, frames above it 264 B"]["loaded"] == "False"


def test_events_notebook_results(executed):
    nb = executed("04-events-into-dataframes.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    # exact: the dispatcher takes the cells' thread only, on_write the workload's fd only
    # (the kernel's other threads and the eventfd writes of its output do not count)
    assert summary["write_events"] == 2000 and summary["getppid_events"] == 2000
    assert summary["write_bytes"] == sum(i % 100 + 1 for i in range(2000))  # the count argument of each write
    assert summary["python_comm_rows"] == 4000  # char[16] decoded to str
    assert summary["rows_kept"] == 1000 and summary["dropped"] > 0  # max_rows bound
    assert summary["trace_lines"] >= 3
    nr_write, nr_getppid = syscall_nr("write"), syscall_nr("getppid")
    tail = cell_table(tagged(nb, "events")[0])
    assert list(tail[0]) == ["", "ts", "tid", "nr", "arg", "comm"] and len(tail) == 5
    assert {int(row["nr"]) for row in tail} <= {nr_write, nr_getppid}
    # The frame itself, row by row (see PROBES).
    rows = probe_result(nb)
    assert rows["nrs"] == sorted({nr_write, nr_getppid})  # only the handlers emit events
    # each getppid of the workload (the main thread's), once; ipykernel's parent poller thread
    # calls getppid too, now and then
    assert rows["getppid_rows_of_main"] == 2000 and rows["getppid_rows"] >= 2000
    assert rows["getppid_args"] == [0] and rows["getppid_comms"] == [rows["main_comm"]]
    sizes = {int(k): v for k, v in rows["main_write_sizes"].items()}
    assert all(sizes.get(n, 0) == 20 for n in range(1, 101) if n != 8), sizes  # write(2)'s count, i % 100 + 1
    assert sizes.get(8, 0) >= 20 and rows["write_comms_of_main"] == [rows["main_comm"]]
    assert rows["unhandled_rows"] > 0 and rows["unhandled_with_handler"] == 0  # handled calls never fall through
    per_syscall = {row[""]: row for row in cell_table(tagged(nb, "per-syscall")[0])}
    assert int(per_syscall["getppid"]["events"]) == rows["getppid_rows"] and int(per_syscall["getppid"]["bytes"]) == 0
    trace = cell_table(tagged(nb, "trace")[0])
    assert len(trace) >= 3 and {row["msg"] for row in trace} == {"getppid from the notebook"}
    # The live view, as the notebook left it after view.stop(): its output became the last
    # figures as plain HTML (a notebook reopened without widget state shows them, not an error).
    [frozen] = [o["data"] for o in code_cell(nb, "%bpf watch events").outputs if "data" in o]
    assert "application/vnd.jupyter.widget-view+json" not in frozen
    page = frozen["text/html"]
    [status] = [t for t in page.split("</div><div>") if " events · " in t]
    shown = int(re.search(r"<b>([\d,]+)</b> events", status)[1].replace(",", ""))
    assert "view stopped" in status and "lost 0" in status
    assert shown >= 2 * 2000 + 500  # the workload and the 500 during the view
    [groups] = [t for t in page.split("</div><div>") if "<th>count</th>" in t]  # the counts by syscall number
    by_nr = {int(row[""]): int(row["count"]) for row in html_table(groups)}
    assert by_nr == {nr_write: 2000, nr_getppid: 2000 + 500}  # the workload, then 500 getppid during the view
    assert sum(by_nr.values()) == shown  # one snapshot: the counts agree with the total
    # the executed notebook keeps the view's last state: reopened later, it shows its figures;
    # the workload (4,000 events, the cells' thread only) and the 500 getppid calls of the next cell
    assert shown == 4500


def test_limits_notebook_results(executed):
    nb = executed("05-limits.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    # MAX_TAIL_CALL_CNT: the entry run plus 33 tail calls; the 34th call falls through
    assert summary["limit"] == {"calls": 34, "taken": 33, "missed": 1, "runs": 34, "retval": "XDP_PASS"}
    assert summary["repeat_1000"] == {"calls": 34000, "missed": 1000, "runs": 34000}  # the budget is per run
    # two programs calling each other share the chain's budget
    assert summary["pingpong"] == {"ping": 17, "pong": 17, "taken": 33, "missed": 1, "retval": "XDP_DROP"}
    assert summary["empty_slot"] == {"calls": 1, "missed": 1, "runs": 1, "retval": "XDP_PASS"}
    # the budget across subprograms: one per run since 6.10, one per subprogram frame before
    from ..programs import shared_budget

    expected = [33, 0] if shared_budget(platform.release()) else [33, 33]
    assert summary["subprogram_runs"] == expected
    prose = "".join(o["data"].get("text/markdown", "") for o in tagged(nb, "subprogram-budget")[0].outputs if "data" in o)
    assert f"the first chain ran **{expected[0]}** times and the second **{expected[1]}**" in prose
    assert summary["kernel_says"].startswith("errno 22 ")  # the kernel's bare EINVAL
    assert summary["unload"] == {"before": "XDP_DROP", "after": "XDP_PASS", "missed_after": 1, "program_freed": True}
    assert "calls 34 / taken 33 / missed 1; loop ran 34 times" in text_outputs(tagged(nb, "limit-numbers")[0])
    [error] = [o for o in tagged(nb, "same-type")[0].outputs if o.output_type == "error"]
    assert error.ename == "SlotError"
    assert "jump holds xdp programs" in error.evalue and "classifier.classify is a sched_cls program" in error.evalue
    after = text_outputs(tagged(nb, "slots-after")[0])
    assert "verdict" in after and "verdict.drop" not in after  # the slot emptied with its module


def test_state_across_tail_calls_notebook_results(executed):
    nb = executed("06-state-across-tail-calls.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    # the stack: the caller's bytes at the same offset by accident of the JIT's frame reuse, not one local over
    assert summary["stack"]["peek"] == "0x1234abcd" and summary["stack"]["peek_shifted"] != "0x1234abcd"
    # per-CPU scratch: decide knew what parse read from each packet, in packet order
    scratch = summary["scratch"]
    assert scratch["dns"] == {"verdict": "XDP_DROP", "seq": 1, "src": "10.1.0.1", "dst": "10.1.0.53", "proto": 17, "l4_off": 34, "dport": 53}
    assert scratch["ntp"] == {"verdict": "XDP_PASS", "seq": 2, "src": "10.2.0.7", "dst": "10.2.0.123", "proto": 17, "l4_off": 34, "dport": 123}
    assert scratch["web"] == {"verdict": "XDP_PASS", "seq": 3, "src": "192.168.9.1", "dst": "192.168.9.80", "proto": 6, "l4_off": 34, "dport": 0}
    per_cpu = summary["scratch_per_cpu_seq"]
    assert max(per_cpu) == 3 and 1 <= sum(1 for v in per_cpu if v) <= 3
    # skb->cb in a sched_cls chain run on L2 frames
    for name, src, port, verdict in (("dns", "10.1.0.1", 53, "TC_ACT_SHOT"), ("ntp", "10.2.0.7", 123, "TC_ACT_OK")):
        assert summary["cb"][name] == {
            "verdict": verdict,
            "cb[0] l4_off": 34,
            "cb[1] proto": 17,
            "cb[2] saddr": src,
            "cb[3] magic": "0xcb0cb0",
            "port read via cb[0]": port,
        }


def _flow_from_frame(frame: bytes, repeat: int) -> dict | None:
    """What a frame's headers say, read by scapy (not by the notebook's own parsing)."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

    pkt = Ether(frame)
    tags = [layer.vlan for layer in pkt.iterpayloads() if isinstance(layer, (Dot1Q, Dot1AD))]
    if IP in pkt:
        family, l3 = 4, pkt[IP]
        proto = l3.proto
    elif IPv6 in pkt:
        family, l3 = 6, pkt[IPv6]
        proto = l3.nh
    else:
        return None
    l4 = pkt[TCP] if TCP in pkt else pkt[UDP] if UDP in pkt else None
    return {
        "family": family,
        "vlan": tags[-1] if tags else 0,
        "proto": {1: "icmp", 6: "tcp", 17: "udp"}[proto],
        "src": l3.src,
        "sport": l4.sport if l4 else 0,
        "dst": l3.dst,
        "dport": l4.dport if l4 else 0,
        "packets": repeat,
        "bytes": len(frame) * repeat,
    }


def test_packet_parser_notebook_results(executed):
    nb = executed("07-packet-parser.ipynb")  # scapy: a declared test dependency, imported below
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    key = lambda f: (f["family"], f["vlan"], f["dport"], f["src"])  # noqa: E731
    expected = sorted(filter(None, (_flow_from_frame(bytes.fromhex(f["hex"]), f["repeat"]) for f in summary["frames"])), key=key)
    assert len(summary["frames"]) == 8 and len(expected) == 7  # the ARP frame is no flow
    assert sorted(summary["flows"], key=key) == expected
    assert {f["vlan"] for f in expected} == {0, 100, 200, 20}  # 802.1Q and the inner tag of QinQ
    assert summary["matches"] is True
    stages = summary["stages"]
    assert stages["ARP"] == "eth" and stages["ping"] == "eth → ipv4×1"
    assert stages["syslog over IPv6 in QinQ 10/20"] == "eth → vlan×2 → ipv6×1 → udp×1"
    assert stages["ssh in VLAN 200"] == "eth → vlan×1 → ipv4×1 → tcp×1"
    # the udp stage taken out: the flow is still counted, without its ports
    assert summary["without_udp"] == {"src": "10.0.0.1", "dst": "10.0.0.53", "proto": "udp", "sport": 0, "dport": 0, "packets": 1}
    assert any("image/svg+xml" in o.get("data", {}) for o in tagged(nb, "graph")[0].outputs)
    # live on a veth pair: what was sent from the namespace, and the namespace gone afterwards
    live = {(f["proto"], f["dport"]): f for f in summary["live"]}
    udp = live[("udp", 9999)]
    assert (udp["src"], udp["dst"], udp["packets"], udp["bytes"]) == ("10.77.0.2", "10.77.0.1", 5, 5 * 42 + 10)
    assert live[("tcp", 8080)]["packets"] >= 1  # the SYN (a retry if the RST was slow)
    assert summary["netns_left"] is False
    import subprocess

    assert summary["netns"] not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_maps_notebook_results(executed):
    nb = executed("08-maps-into-dataframes.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    assert summary["dns_packets"] == 3 and summary["big_bytes"] == 2 * 1042  # counted by the program
    assert summary["runs"] >= 5  # per-CPU, summed
    assert summary["hist_buckets"] == [[64, 127, 3], [1024, 2047, 2]]  # 72- and 1042-byte frames
    assert summary["verdicts"] == ["XDP_PASS", "XDP_DROP"]  # a write seen by the program
    assert summary["watched_packets"] == 100
    # stopped, the map's live view left its last table as plain HTML in the notebook
    [frozen] = [o["data"] for o in code_cell(nb, "%bpf watch table").outputs if "data" in o]
    assert "application/vnd.jupyter.widget-view+json" not in frozen and "view stopped" in frozen["text/html"]
    assert "packets.rate" in frozen["text/html"]


def test_headers_mismatch_is_a_one_line_note_once(tmp_path):
    """In a notebook the headers warning is a short stdout note on the first
    bpfmagic cell, once: not a stderr block (shown pink, like an error)."""
    from bpfmagic.kernel import env

    info = env.kernel_headers_info()
    if not info.mismatch and info.kind not in ("available", "merged"):
        pytest.skip("the running kernel has its own headers")
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("%load_ext bpfmagic\n%bpf ls"),
            nbformat.v4.new_code_cell("%%bpf first -a f=raw_tracepoint:sys_enter\nint f(void *ctx) { return 0; }"),
            nbformat.v4.new_code_cell("%bpf reset\n%reload_ext bpfmagic\n%bpf ls"),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "headers.ipynb"
    nbformat.write(nb, str(path))
    ok, out = run_notebook(str(path), output=str(tmp_path / "out.ipynb"), timeout=120, echo=False)
    assert ok
    cells = nbformat.read(out, as_version=4).cells
    streams = [(o["name"], o["text"]) for c in cells for o in c.outputs if o.output_type == "stream"]
    assert not [t for name, t in streams if name == "stderr"], streams
    notes = [line for _, t in streams for line in t.splitlines() if line.startswith("note: BCC uses the headers")]
    if os.access("/sys/kernel/btf/vmlinux", os.R_OK):
        # with BTF each BCC cell's struct reads are checked instead (test_offsets): a cell that
        # reads none, like this one, gets no note at all
        assert notes == [], notes
        return
    assert len(notes) == 1 and len(notes[0]) < 200, notes
    assert info.running in notes[0] and "--core" in notes[0]
    assert "note: BCC uses" in "".join(o.get("text", "") for o in cells[0].outputs)


def _fnv1a_rounds(words, rounds):
    h = 14695981039346656037
    for _ in range(rounds):
        for w in words:
            h = ((h ^ int(w)) * 1099511628211) % 2**64
    return h


def test_split_to_verify_notebook_results(executed):
    nb = executed("09-split-to-verify.ipynb")
    [error] = [o for c in tagged(nb, "raises-exception") for o in c.outputs if o.output_type == "error"]
    assert error.ename == "BpfVerifierError"
    assert "it walked 1,000,000 instructions (the limit)" in " ".join(error.evalue.split())
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    costs = summary["verified_insns"]
    assert sorted(costs) == [f"split.stage{i}" for i in range(4)]
    # each stage within the budget, together over it: what the one program needed
    assert all(200_000 < n < summary["limit"] for n in costs.values()), costs
    assert summary["total"] == sum(costs.values()) > summary["limit"] == 1_000_000
    assert summary["retval"] == "XDP_PASS"
    assert summary["taken"] == {"split.stage1": 1, "split.stage2": 1, "split.stage3": 1}
    # the same result as the unsplit computation, done here in Python from the same table
    import numpy as np

    words = np.random.default_rng(summary["seed"]).integers(0, 2**32, summary["words"], dtype=np.uint64)
    assert summary["kernel_result"] == _fnv1a_rounds(words.astype(np.uint32).tolist(), summary["rounds"])
    assert summary["python_result"] == summary["kernel_result"]
    fdinfo = "".join(text_outputs(c) for c in nb.cells if c.cell_type == "code" and "fdinfo" in c.source)
    assert f"verified_insns:\t{costs['split.stage0']}" in fdinfo


def test_syscall_dispatch_notebook_tracex5_in_libbpf_style(executed):
    nb = executed("01-syscall-dispatch.ipynb")
    seen = json.loads(text_outputs(tagged(nb, "tracex5")[0]).strip().splitlines()[-1])
    # the handlers' own conditions (write of 512 bytes, 128 < read size <= 1024), every mmap, and the
    # two get* syscalls without a handler that fell through: 200 each, of the cells' thread only
    assert seen == {"write": 200, "read": 200, "mmap": 200, "getuid": 200, "getppid": 200}
    slots = text_outputs(tagged(nb, "tracex5-slots")[0])
    for name in ("bpf_func_SYS__NR_read", "bpf_func_SYS__NR_write", "bpf_func_SYS__NR_mmap"):
        assert f"tracex5.{name}" in slots  # the .values initializer's slots, as %bpf slots shows them
    index = {w[4]: int(w[2]) for w in (line.split() for line in slots.splitlines()) if len(w) > 4 and w[4].startswith("tracex5.")}
    assert index == {
        "tracex5.bpf_func_SYS__NR_read": 0,
        "tracex5.bpf_func_SYS__NR_write": 1,
        "tracex5.bpf_func_SYS__NR_mmap": 9,
    }  # [__NR_read], [__NR_write], [__NR_mmap]
    source = next(c.source for c in nb.cells if c.source.startswith("%%bpf tracex5"))
    assert 'SEC("raw_tp/sys_enter")' in source and "[__NR_write] = (void *)&bpf_func_SYS__NR_write" in source


def test_chains_as_data_notebook_results(executed):
    """A chain described in YAML, reordered, extended and cut while a thread sends frames
    through it: what a stage sees follows the file's order, no run mixes two orders, and
    every run ends exactly once."""
    nb = executed("11-chains-as-data.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    entry = "fw_entry.entry"
    # one run of each frame with --path, before the traffic (the first file) and after it (the last)
    whole = f"{entry} → count → block → accept ✗ fw[3] empty"
    assert summary["paths_before"] == {
        "web": {"retval": "XDP_PASS", "path": whole},
        "scanner": {"retval": "XDP_DROP", "path": f"{entry} → count → block"},
        "bulk": {"retval": "XDP_PASS", "path": whole},
    }
    whole = f"{entry} → cap → count → accept ✗ fw[19] empty"  # the other bank: its end is slot 19
    assert summary["paths_after"] == {
        "web": {"retval": "XDP_PASS", "path": whole},
        "scanner": {"retval": "XDP_PASS", "path": whole},
        "bulk": {"retval": "XDP_DROP", "path": f"{entry} → cap"},
    }
    # Each file's order, in the live paths of a window while it ran (the banks alternate: 0, 16, 0, 16).
    live = {v: set(paths) for v, paths in summary["live"].items()}
    assert live == {
        "v1": {f"{entry} → count → block → accept ✗ fw[3] empty", f"{entry} → count → block"},
        "v2": {f"{entry} → block → count → accept ✗ fw[19] empty", f"{entry} → block"},
        "v3": {f"{entry} → block → cap → count → accept ✗ fw[4] empty", f"{entry} → block", f"{entry} → block → cap"},
        "v4": {f"{entry} → cap → count → accept ✗ fw[19] empty", f"{entry} → cap"},
    }, live
    assert set(summary["live_picture"]) <= live["v1"]  # the magic's window of 1 s (with its picture)
    # The window across the reorder: runs of both orders, each whole, none a mix.
    assert set(summary["across_switch"]) == live["v1"] | live["v2"], summary["across_switch"]
    # What the counter counted per source in each window, against what was sent: every frame
    # that reaches it in that order, no frame stopped before it (not one: the order is exact).
    # The window's edges cut a batch of 1000 runs at each end, read at slightly different times.
    reaches = {"v1": {"web", "scanner", "bulk"}, "v2": {"web", "bulk"}, "v3": {"web"}, "v4": {"web", "scanner"}}
    assert set(summary["windows"]) == set(reaches)
    for v, frames in summary["windows"].items():
        for name, row in frames.items():
            assert row["sent"] >= 5000, (v, name, row)  # each window lasts 5,000 of each frame
            if name in reaches[v]:
                assert row["counted"] > 0 and abs(row["counted"] - row["sent"]) <= 2000, (v, name, row)
            else:
                assert row["counted"] == 0, (v, name, row)
    # %bpf chain fw after each file: the stages in the file's order, in the bank it went to
    for tag, stages, first in (
        ("runs-v1", ["counter.count", "blocklist.block", "verdict.accept"], 0),
        ("runs-v2", ["blocklist.block", "counter.count", "verdict.accept"], 16),
    ):
        rows = cell_table(tagged(nb, tag)[0])
        assert [r["stage"] for r in rows] == stages
        assert [r["slot"] for r in rows] == [f"fw[{first + i}]" for i in range(len(stages))]
        assert all(int(r["runs"]) > 0 for r in rows)
    # Traffic stopped, the last order's runs are exact: the counter ran as often as the verdict
    # after it, the size filter in front of both more often (it dropped the bulk frames).
    final = summary["final"]
    assert [(r["stage"], r["slot"]) for r in final] == [("sizecap.cap", "fw[16]"), ("counter.count", "fw[17]"), ("verdict.accept", "fw[18]")]
    cap, count, accept = (r["runs"] for r in final)
    assert cap > count == accept > 0 and summary["final_base"] == 16
    # Every run ended one way (dropped by the blocklist or the size filter, or accepted), through
    # four switches under traffic: the thread's runs and the 6 --path runs, none lost or doubled.
    sent = summary["sent"]
    assert sum(summary["blocklist_drops"].values()) + summary["sizecap_drops"] + summary["accepted"] == sum(sent.values()) + 6
    assert list(summary["blocklist_drops"]) == ["10.6.6.6"]
    assert summary["counter"]["10.0.0.1"] == sent["web"] + 2  # web passes every stage, in every order
    # what the reader sees: whole paths, not cut at pandas' default column width
    assert {r["path"] for r in cell_table(tagged(nb, "live-v3")[0])} == live["v3"]


def test_tail_call_cost_notebook_curves(executed):
    import numpy as np

    nb = executed("10-tail-call-cost.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    curves = summary["curves"]
    for index in ("const", "var"):
        c = curves[index]
        # the chain's own count: depth d took d tail calls, up to the kernel's 33
        assert c["tail_calls"] == [min(d, 33) for d in range(36)], c["tail_calls"]
        assert c["max_tail_calls"] == 33
        assert c["ns_per_tail_call"] > 0 and c["base_ns"] > 0, c
        ns = c["ns_per_run"]
        # the curve rises (single points may jump on a busy machine: means and a fit, not points)
        assert sum(ns[31:]) / 5 > sum(ns[:3]) / 3, ns
        assert np.polyfit(range(34), ns[:34], 1)[0] > 0, ns
    # a variable index costs no less than a constant one, within the noise of a shared VM
    assert curves["var"]["ns_per_tail_call"] >= 0.5 * curves["const"]["ns_per_tail_call"], curves
    fits = {row[""]: row for row in cell_table(tagged(nb, "curves")[0])}
    assert set(fits) == {"const", "var"}
    for index, row in fits.items():
        assert float(row["ns per tail call (10+)"]) == round(curves[index]["ns_per_tail_call"], 2)
        assert int(row["most tail calls taken"]) == 33
    outputs = lambda tag: [o for o in tagged(nb, tag)[0].outputs if "data" in o]  # noqa: E731
    assert any("image/png" in o["data"] for o in outputs("curves")), "the curves' plot is missing"
    for tag in ("bench-const", "bench-var"):
        assert any("image/svg+xml" in o["data"] for o in outputs(tag)), tag
        assert "ns per tail call" in text_outputs(tagged(nb, tag)[0])
    # section 4: two figures, whoever held the kernel's run stats on meanwhile
    stats = summary["stats_ns"]
    assert stats["off"] > 0 and stats["on"] > 0


def test_tail_call_cost_notebook_call_sites(executed):
    nb = executed("10-tail-call-cost.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    # the chain works: DNS is dropped two tail calls down, passed while the IPv4 slot is empty
    assert summary["retvals"] == {"filled": "XDP_DROP", "empty": "XDP_PASS", "refilled": "XDP_DROP"}
    dump = lambda tag: text_outputs(tagged(nb, tag)[0])  # noqa: E731
    # the translated BPF: the same helper call at both sites
    assert dump("dump-xlated").count("call bpf_tail_call#12  ◀ tail call") == 2
    # constant index: the counter against 33, then a direct jump the kernel patched in
    const = dump("dump-const")
    assert "direct jump the kernel patched in for a constant index, into ipv4.parse_ipv4" in const
    # (6.x kernels keep the count behind a pointer; older ones in the frame: `cmp eax, 0x21`)
    assert re.search(r"cmp (qword ptr \[rax\]|eax), 0x21", const) and "indirect jump" not in const
    # the slot emptied: the jump patched out again, the nop before it now jumps over it
    empty = dump("dump-empty")
    assert "stages[1] emptied" in empty and "into ipv4.parse_ipv4" not in empty
    assert "the slot is empty: jumps over the patch site below" in empty
    assert "patch site (a nop while the slot is empty" in empty
    # variable index: an indirect jump (through a register, or a retpoline where those are on)
    var = dump("dump-var")
    assert "stages[1] <- ipv4.parse_ipv4" in var
    assert re.search(r"indirect jump (to the slot's program|through the retpoline|through the ITS thunk)", var)
    assert "direct jump the kernel" not in var
    # two constant calls merged by the compiler into one site: the variable-index code, marked by its code
    merged = dump("dump-merged")
    assert "2 tail calls in the source, 1 call site(s) in the program" in merged
    assert merged.count("call bpf_tail_call#12") == 1 and "direct jump the kernel" not in merged
    assert sum("◀ tail call" in line and "variable index" in line for line in merged.splitlines()) == 1, merged
    # the branch this host takes, decided by its own sysfs: a thunk where retpolines (or ITS thunks) are on
    host = cpu.mitigations()
    thunked = "Retpolines" in host.get("spectre_v2", "") or "thunks" in host.get("indirect_target_selection", "")
    assert summary["host_branch"]["indirect"] == ("thunk" if thunked else "register"), (summary["host_branch"], host)
    jump = r"jmp 0x[0-9a-f]+\s+◀ tail call: indirect jump through the (retpoline|ITS thunk)" if thunked else r"jmp r[a-z0-9]+\s+◀ tail call"
    assert re.search(jump, var) and re.search(jump, merged), (var, merged)
    branch = text_outputs(tagged(nb, "var-branch")[0])
    assert host["spectre_v2"].split(";")[0] in branch
    # a return is a return: every function's last instruction is `ret` or a jump to a return thunk
    for text in (const, empty, var, merged):
        last = [line for line in text.splitlines() if re.match(r"^\s+[0-9a-f]+: ", line) and ": int3" not in line][-1]
        assert "tail call" not in last, last
        if summary["host_branch"]["return"] == "thunk":
            assert "◀ return, through the return thunk" in last, last
        else:
            assert last.rstrip().endswith(": ret"), last
    # bpf_tail_call_static keeps them apart: two sites, the filled one a direct jump
    static = dump("dump-static")
    assert "XDP_DROP; 2 call sites" in static
    assert "direct jump the kernel patched in for a constant index, into ipv4.parse_ipv4" in static


def test_tail_call_cost_notebook_prose_states_this_runs_figures(executed):
    """The figures in the prose are this run's (computed cells), not those of the host it was written on."""
    nb = executed("10-tail-call-cost.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    const, var = (summary["curves"][i]["ns_per_tail_call"] for i in ("const", "var"))
    figures = text_outputs(tagged(nb, "run-figures")[0])
    assert f"constant-index tail call **{const:.1f} ns**" in figures and f"variable-index one **{var:.1f} ns**" in figures
    assert figures.count("seen on another host") == 2  # the other hosts' figures are said to be theirs
    stats = text_outputs(tagged(nb, "run-stats")[0])
    assert f"the statistics add {summary['stats_ns']['on'] - summary['stats_ns']['off']} ns to each run" in stats
    compare = text_outputs(tagged(nb, "compare")[0])
    retpolines = "Retpolines" in summary["machine"]["spectre_v2"]
    assert ("*retpoline* rows" if retpolines else "*no retpoline* rows") in compare
    assert f"variable-index tail call cost {var:.1f} ns here" in compare
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for stale in ("1.1 and 2.4 ns", "70-90 ns", "not seen on this machine", "needs no retpoline, so"):
        assert stale not in prose, stale


def test_calls_vs_tail_calls_notebook(executed):
    """Notebook 12: the four mechanisms timed and sized, the limits in the kernel's words,
    33 tail calls taken, and prose made from this run's figures."""
    nb = executed("12-calls-vs-tail-calls.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    per_hop, stderr = summary["ns_per_hop"], summary["ns_per_hop_stderr"]
    assert set(per_hop) == set(stderr) == {"tail_call_const", "tail_call_var", "bpf2bpf", "inline"}
    # a hop costs something; where this run's noise hides it (an inlined stage is ~2 ns) the prose says so
    noisy = [m for m in per_hop if abs(per_hop[m]) < 2 * stderr[m]]
    assert all(per_hop[m] > 0 for m in per_hop if m not in noisy), (per_hop, stderr)
    size = {m: {int(k): v for k, v in d.items()} for m, d in summary["jited_bytes"].items()}
    # each mechanism's byte count: inlining copies the stage, a call adds an instruction, a
    # constant-index chain adds a program per hop, a variable-index chain reuses one program
    step = {m: (size[m][32] - size[m][16]) / 16 for m in size}
    assert 0 < step["bpf2bpf"] < step["inline"] < step["tail_call_const"], step
    assert size["tail_call_var"][1] == size["tail_call_var"][32]
    assert size["inline"][0] == size["bpf2bpf"][0]
    limits = summary["limits"]
    assert limits["8 call frames (main + 7 nested calls)"][0] is True
    assert limits["9 call frames (main + 8 nested calls)"] == [False, "the call stack of 9 frames is too deep"]
    assert limits["stack 256 + 320 B across two frames"] == [False, "combined stack size of 2 calls is 576. Too large"]
    assert "tail_calls are not allowed" in limits["a subprogram tail-calls, frames above it 264 B"][1]
    assert summary["mixing"] is True and summary["max_tail_calls"] == 33
    prose = text_outputs(tagged(nb, "time-prose")[0])
    assert f"a constant-index tail call cost **{per_hop['tail_call_const']:.1f} ns** (± {stderr['tail_call_const']:.1f})" in prose
    assert f"a BPF-to-BPF call **{per_hop['bpf2bpf']:.1f} ns**" in prose
    assert prose.count("which this run cannot tell from zero") == len(noisy)
    assert f"inlining made a **{size['inline'][32]}-byte** image" in text_outputs(tagged(nb, "sizes")[0])
    assert "8448 bytes (33 tail calls x 256 bytes)" in text_outputs(tagged(nb, "limits-prose")[0])
    # the bench's progress bar, updated in place while it ran, is left as one line (no widget)
    bars = [o["data"]["text/html"] for o in tagged(nb, "bench")[0].outputs if "bench calls" in o.get("data", {}).get("text/html", "")]
    assert len(bars) == 1 and "<progress" not in bars[0] and "<code>bench calls</code>: 140 steps in " in bars[0]
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def test_tail_call_cost_notebook_published_figures(executed):
    nb = executed("10-tail-call-cost.ipynb")
    rows = cell_table(tagged(nb, "published")[0])
    assert [r["source"] for r in rows] == ["Cloudflare, LPC 2020"] * 2 + ["pchaigno, 2021"] * 8 + ["this kernel"] * 2
    cloudflare = {r["kernel"]: r["ns per tail call"] for r in rows if r["source"].startswith("Cloudflare")}
    assert cloudflare == {"5.4": "20-30", "5.5": "under 10"}  # the talk's abstract
    # (cost of 33 direct tail calls - cost of none) / 33, from the post's plot data
    chaignon = {(r["kernel"], r["setup"].split(", ")[1]): float(r["ns per tail call"]) for r in rows if r["source"] == "pchaigno, 2021"}
    assert chaignon == {
        ("4.19", "retpoline"): 22.8,
        ("4.19", "no retpoline"): 12.5,
        ("5.4", "retpoline"): 18.4,
        ("5.4", "no retpoline"): 9.3,
        ("5.5", "retpoline"): 2.9,
        ("5.5", "no retpoline"): 2.7,
        ("5.10", "retpoline"): 9.2,
        ("5.10", "no retpoline"): 9.1,
    }
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    here = {r["setup"]: float(r["ns per tail call"]) for r in rows if r["source"] == "this kernel"}
    assert here == {f"this VM, {i} index": round(summary["curves"][i]["ns_per_tail_call"], 1) for i in ("const", "var")}
    assert {r["kernel"] for r in rows if r["source"] == "this kernel"} == {summary["machine"]["kernel"]}
