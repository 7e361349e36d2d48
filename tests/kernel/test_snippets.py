"""The reusable C snippets in bpf/, loaded with --file as the README says."""

from __future__ import annotations

import os

from bpfmagic.experiments import packets
from bpfmagic.kernel import libbpf

from ..conftest import needs_root
from ..paths import REPO

pytestmark = needs_root
BPF_DIR = os.path.join(REPO, "bpf")


def test_syscall_dispatcher_snippet(session):
    session.progarray("progs", 512, keys="syscalls")
    disp = session.load(
        "disp",
        file=os.path.join(BPF_DIR, "syscall_dispatcher.bpf.c"),
        attach={"dispatch": "raw_tracepoint:sys_enter"},
        cflags=[f"-DTARGET_PID={os.getpid()}"],
    )
    h = session.load(
        "h",
        "BPF_ARRAY(n, u64, 1);\nint on_getppid(struct bpf_raw_tracepoint_args *ctx) { int k = 0; n.atomic_increment(k); return 0; }",
        slots={"progs[getppid]": "on_getppid"},
    )
    for _ in range(30):
        os.getppid()
    assert h["n"][0].value == 30  # only this process, every call reached the handler
    assert disp["dispatch_counts"][0].value >= 30
    assert disp["dispatch_counts"][1].value >= 1  # other syscalls of this process fell through


def test_xdp_ethertype_entry_snippet(session):
    session.load("entry", file=os.path.join(BPF_DIR, "xdp_ethertype_entry.bpf.c"))
    session.load("v6", "int drop_v6(struct xdp_md *ctx) { return XDP_DROP; }", slots={"chain[ipv6]": "drop_v6"})
    run = lambda pkt: libbpf.test_run(session.program("entry.entry").fd, data=pkt)["retval"]
    assert run(packets.udp_packet(src="fd00::1", dst="fd00::2")) == 1  # XDP_DROP via chain[ipv6]
    assert run(packets.udp_packet()) == 2  # ipv4 slot empty: XDP_PASS
    assert session.array("chain").names == {"ipv4": 0, "ipv6": 1}
