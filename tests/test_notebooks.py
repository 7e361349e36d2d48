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


def test_limits_notebook_results(executed):
    nb = executed("05-limits.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    # MAX_TAIL_CALL_CNT: the entry run plus 33 tail calls; the 34th call falls through
    assert summary["limit"] == {"calls": 34, "taken": 33, "missed": 1, "runs": 34, "retval": "XDP_PASS"}
    assert summary["repeat_1000"] == {"calls": 34000, "missed": 1000, "runs": 34000}  # the budget is per run
    # two programs calling each other share the chain's budget
    assert summary["pingpong"] == {"ping": 17, "pong": 17, "taken": 33, "missed": 1, "retval": "XDP_DROP"}
    assert summary["empty_slot"] == {"calls": 1, "missed": 1, "runs": 1, "retval": "XDP_PASS"}
    assert summary["kernel_says"].startswith("errno 22 ")                     # the kernel's bare EINVAL
    assert summary["unload"] == {"before": "XDP_DROP", "after": "XDP_PASS", "missed_after": 1,
                                 "program_freed": True}
    assert "calls 34 / taken 33 / missed 1; loop ran 34 times" in text_outputs(tagged(nb, "limit-numbers")[0])
    [error] = [o for o in tagged(nb, "same-type")[0].outputs if o.output_type == "error"]
    assert error.ename == "SlotError"
    assert "jump holds xdp programs" in error.evalue and "classifier.classify is a sched_cls program" in error.evalue
    after = text_outputs(tagged(nb, "slots-after")[0])
    assert "verdict" in after and "verdict.drop" not in after                 # the slot emptied with its module


def test_state_across_tail_calls_notebook_results(executed):
    nb = executed("06-state-across-tail-calls.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    # the stack: the caller's bytes at the same offset by accident of the JIT's frame reuse, not one local over
    assert summary["stack"]["peek"] == "0x1234abcd" and summary["stack"]["peek_shifted"] != "0x1234abcd"
    # per-CPU scratch: decide knew what parse read from each packet, in packet order
    scratch = summary["scratch"]
    assert scratch["dns"] == {"verdict": "XDP_DROP", "seq": 1, "src": "10.1.0.1", "dst": "10.1.0.53", "proto": 17,
                              "l4_off": 34, "dport": 53}
    assert scratch["ntp"] == {"verdict": "XDP_PASS", "seq": 2, "src": "10.2.0.7", "dst": "10.2.0.123", "proto": 17,
                              "l4_off": 34, "dport": 123}
    assert scratch["web"] == {"verdict": "XDP_PASS", "seq": 3, "src": "192.168.9.1", "dst": "192.168.9.80",
                              "proto": 6, "l4_off": 34, "dport": 0}
    per_cpu = summary["scratch_per_cpu_seq"]
    assert max(per_cpu) == 3 and 1 <= sum(1 for v in per_cpu if v) <= 3
    # skb->cb in a sched_cls chain run on L2 frames
    for name, src, port, verdict in (("dns", "10.1.0.1", 53, "TC_ACT_SHOT"), ("ntp", "10.2.0.7", 123, "TC_ACT_OK")):
        assert summary["cb"][name] == {"verdict": verdict, "cb[0] l4_off": 34, "cb[1] proto": 17, "cb[2] saddr": src,
                                       "cb[3] magic": "0xcb0cb0", "port read via cb[0]": port}


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
    return {"family": family, "vlan": tags[-1] if tags else 0, "proto": {1: "icmp", 6: "tcp", 17: "udp"}[proto],
            "src": l3.src, "sport": l4.sport if l4 else 0, "dst": l3.dst, "dport": l4.dport if l4 else 0,
            "packets": repeat, "bytes": len(frame) * repeat}


def test_packet_parser_notebook_results(executed):
    pytest.importorskip("scapy")
    nb = executed("07-packet-parser.ipynb")
    summary = json.loads(text_outputs(tagged(nb, "summary")[0]).strip().splitlines()[-1])
    key = lambda f: (f["family"], f["vlan"], f["dport"], f["src"])  # noqa: E731
    expected = sorted(filter(None, (_flow_from_frame(bytes.fromhex(f["hex"]), f["repeat"])
                                    for f in summary["frames"])), key=key)
    assert len(summary["frames"]) == 8 and len(expected) == 7                # the ARP frame is no flow
    assert sorted(summary["flows"], key=key) == expected
    assert {f["vlan"] for f in expected} == {0, 100, 200, 20}               # 802.1Q and the inner tag of QinQ
    assert summary["matches"] is True
    stages = summary["stages"]
    assert stages["ARP"] == "eth" and stages["ping"] == "eth → ipv4×1"
    assert stages["syslog over IPv6 in QinQ 10/20"] == "eth → vlan×2 → ipv6×1 → udp×1"
    assert stages["ssh in VLAN 200"] == "eth → vlan×1 → ipv4×1 → tcp×1"
    # the udp stage taken out: the flow is still counted, without its ports
    assert summary["without_udp"] == {"src": "10.0.0.1", "dst": "10.0.0.53", "proto": "udp", "sport": 0,
                                      "dport": 0, "packets": 1}
    assert any("image/svg+xml" in o.get("data", {}) for o in tagged(nb, "graph")[0].outputs)
    # live on a veth pair: what was sent from the namespace, and the namespace gone afterwards
    live = {(f["proto"], f["dport"]): f for f in summary["live"]}
    udp = live[("udp", 9999)]
    assert (udp["src"], udp["dst"], udp["packets"], udp["bytes"]) == ("10.77.0.2", "10.77.0.1", 5, 5 * 42 + 10)
    assert live[("tcp", 8080)]["packets"] >= 1                               # the SYN (a retry if the RST was slow)
    assert summary["netns_left"] is False
    import subprocess
    assert summary["netns"] not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
