"""The JIT annotator on code recorded on hosts unlike this one (tests/data/jit/,
written by tests/data/jit/record.py): a return is never a tail call, and every
site is found whatever the host's mitigations. The live dump on this host is
checked against the branch this host has."""

from __future__ import annotations

import re

from bpfmagic.kernel import cpu

from ..conftest import needs_root
from ..helpers import last_instruction

LIVE = r"""
BPF_PROG_ARRAY(lj, 4);
int entry(struct xdp_md *ctx) {
  lj.call(ctx, 1);
  u32 k = ctx->rx_queue_index;
  lj.call(ctx, k);
  return XDP_PASS; }
int leaf(struct xdp_md *ctx) { return XDP_DROP; }
"""


@needs_root
def test_live_dump_follows_this_hosts_mitigations(session):
    """Whatever this host has, its returns are returns and its sites are found; which branch
    it took is decided by the host's own sysfs and kallsyms, not by the test's author's host."""
    session.load("live", LIVE, slots={"lj[1]": "leaf"})
    text = session.program("live.entry").dump("jited")
    spectre_v2 = cpu.mitigations().get("spectre_v2", "")
    assert text.splitlines()[0].startswith("; host CPU: ")
    marks = [r for r in text.splitlines() if "◀ tail call" in r]
    assert len(marks) == 3, text
    var = next(m for m in marks if "variable index" in m)
    if "Retpolines" in spectre_v2 or "thunks" in cpu.mitigations().get("indirect_target_selection", ""):
        assert re.search(r"jmp 0x[0-9a-f]+\s+◀ tail call: indirect jump through the (retpoline|ITS thunk) __x86_indirect_", var), var
    else:
        assert re.search(r"jmp r[a-z0-9]+\s+◀ tail call", var), var
    last = last_instruction(text, "entry")
    assert "tail call" not in last
    assert last.rstrip().endswith(": ret") or "◀ return, through the return thunk" in last, last
