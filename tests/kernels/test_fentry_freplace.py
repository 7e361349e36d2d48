"""fentry/fexit and freplace aimed at programs of the session, asserted for the branch the
running kernel takes: where it refuses these program types (EPERM at load, as this project's
6.18 build does), the cell's refusal and what serves instead; where it loads them (Debian's
6.1 in `make test-kernels`' virtual machine), the counts and return values they see.

The chain observed is one that was not instrumented for it: an XDP entry that calls a global
subprogram (classify) to pick a slot of a session prog array and tail-calls the stage there;
the stage calls a subprogram of its own (verdict)."""

from __future__ import annotations

import pytest

from bpfmagic import AttachError

from ..conftest import kernel_loads_fentry, kernel_loads_freplace, needs_root

pytestmark = needs_root
XDP_DROP, XDP_PASS, XDP_TX = 1, 2, 3
PACKET = bytes(100)  # longer than the 64 bytes verdict lets pass

CHAIN = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u32);
} stages SEC(".maps");

/* The slot of the stage for this packet: a BPF-to-BPF call, so it can be traced by itself. */
__noinline int classify(struct xdp_md *ctx)
{
    return ctx->data_end - ctx->data < 14;  /* runts to slot 1, the rest to slot 0 */
}

SEC("xdp") int entry(struct xdp_md *ctx)
{
    bpf_tail_call(ctx, &stages, classify(ctx));
    return XDP_ABORTED;  /* the slot was empty */
}

__noinline int verdict(struct xdp_md *ctx)
{
    return ctx->data_end - ctx->data >= 64 ? XDP_PASS : XDP_DROP;
}

SEC("xdp") int stage(struct xdp_md *ctx)
{
    return verdict(ctx);
}

char LICENSE[] SEC("license") = "GPL";
"""

# Counts calls and keeps the last return value of what it is attached to (-a below).
OBSERVER = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 classify_calls = 0, stage_calls = 0, verdict_calls = 0, packet_bytes = 0;
__s64 last_slot = -1, last_verdict = -1;

SEC("fentry") int BPF_PROG(on_classify, struct xdp_buff *xdp)
{
    classify_calls++;
    packet_bytes = xdp->data_end - xdp->data;  /* the traced program's context, typed by the kernel */
    return 0;
}

SEC("fexit") int BPF_PROG(classify_done, struct xdp_buff *xdp, int slot)
{
    last_slot = slot;
    return 0;
}

SEC("fentry") int BPF_PROG(on_stage, struct xdp_buff *xdp)
{
    stage_calls++;
    return 0;
}

SEC("fexit") int BPF_PROG(verdict_done, struct xdp_buff *xdp, int ret)
{
    verdict_calls++;
    last_verdict = ret;
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""
OBSERVER_TARGETS = {
    "on_classify": "fentry:chain.classify",  # a subprogram of the entry
    "classify_done": "fexit:chain.classify",
    "on_stage": "fentry:chain.stage",  # the tail-called program itself
    "verdict_done": "fexit:chain.verdict",  # a subprogram of the tail-called program
}


def _load_chain(session):
    return session.load("chain", CHAIN, core=True, slots={"stages[0]": "stage"})


def test_fentry_fexit_observe_a_tail_call_chain(session):
    _load_chain(session)
    assert session.test_run("chain.entry", data=PACKET).retval == XDP_PASS
    if not kernel_loads_fentry():
        with pytest.raises(AttachError, match=r'SEC\("fentry"\) programs are refused by this kernel') as err:
            session.load("obs", OBSERVER, core=True, attach=OBSERVER_TARGETS)
        assert "aimed at a BPF program (fentry:chain.classify)" in str(err.value) and "%bpf paths --on" in str(err.value)
        assert "obs" not in session.modules
        return
    obs = session.load("obs", OBSERVER, core=True, attach=OBSERVER_TARGETS)
    runs = 25
    assert session.test_run("chain.entry", data=PACKET, repeat=runs).retval == XDP_PASS
    seen = obs.globals
    assert (seen["classify_calls"], seen["packet_bytes"], seen["last_slot"]) == (runs, len(PACKET), 0)
    # The subprogram of the tail-called stage is traced on every run that reaches it ...
    assert (seen["verdict_calls"], seen["last_verdict"]) == (runs, XDP_PASS)
    # ... but the stage's own fentry is not: a tail call jumps past the trampoline that
    # fentry patches in at the program's entry (the kernel selftests' tailcall_bpf2bpf_fentry_entry).
    assert seen["stage_calls"] == 0
    # Run by itself, the stage does go through its trampoline.
    assert session.test_run("chain.stage", data=PACKET, repeat=3).retval == XDP_PASS
    assert (obs.globals["stage_calls"], obs.globals["verdict_calls"]) == (3, runs + 3)
    assert session.test_run("chain.entry", data=bytes(20)).retval == XDP_DROP
    assert (obs.globals["last_slot"], obs.globals["last_verdict"]) == (0, XDP_DROP)


def test_unloading_a_traced_module_asks_for_its_observers_first(session):
    _load_chain(session)
    if not kernel_loads_fentry():
        with pytest.raises(AttachError, match="refused by this kernel"):
            session.load("obs", OBSERVER, core=True, attach=OBSERVER_TARGETS)
        return
    session.load("obs", OBSERVER, core=True, attach=OBSERVER_TARGETS)
    with pytest.raises(Exception, match=r"chain is traced by obs .*unload obs first"):
        session.unload("chain")
    session.unload("obs")
    session.unload("chain")
    assert not session.modules


PICKER = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/* A global function: verified on its own, so an freplace program can take its place. It reads
   the packet: a function clang can compute at compile time loses its call. */
__noinline int stage(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
    return data + sizeof(struct ethhdr) > data_end ? XDP_ABORTED : XDP_PASS;
}

SEC("xdp") int root(struct xdp_md *ctx)
{
    return stage(ctx);
}

char LICENSE[] SEC("license") = "GPL";
"""

REPLACEMENT = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("freplace") int stage(struct xdp_md *ctx)
{
    return VERDICT;
}

char LICENSE[] SEC("license") = "GPL";
"""


def test_freplace_swaps_a_global_function_and_unload_restores_it(session):
    session.load("picker", PICKER, core=True)
    assert session.test_run("picker.root", data=PACKET).retval == XDP_PASS

    def replace(verdict: int):
        return session.load("drop", REPLACEMENT, core=True, cflags=f"-DVERDICT={verdict}", attach={"stage": "freplace:picker.stage"})

    if not kernel_loads_freplace():
        with pytest.raises(AttachError, match=r'SEC\("freplace"\) programs are refused by this kernel') as err:
            replace(XDP_DROP)
        assert "-s ARRAY[KEY]=FUNC" in str(err.value) and "drop" not in session.modules
        assert session.test_run("picker.root", data=PACKET).retval == XDP_PASS
        return
    assert replace(XDP_DROP).programs["stage"].type == "ext"
    assert session.test_run("picker.root", data=PACKET).retval == XDP_DROP
    replace(XDP_TX)  # a re-run: the new version takes the function over
    assert session.test_run("picker.root", data=PACKET).retval == XDP_TX
    session.unload("drop")
    assert session.test_run("picker.root", data=PACKET).retval == XDP_PASS


def test_trampoline_programs_need_a_target_in_the_cell(session):
    """On any kernel: SEC("fentry") / SEC("freplace") without -a names no target, and a cell
    cannot aim at its own programs (they load together)."""
    with pytest.raises(AttachError, match=r"names no target: attach it with -a stage=freplace:MODULE.FUNC"):
        session.load("drop", REPLACEMENT, core=True, cflags="-DVERDICT=1")
    with pytest.raises(Exception, match="a cell cannot fentry its own programs"):
        session.load("obs", OBSERVER, core=True, attach={"on_stage": "fentry:obs.on_classify"})
    with pytest.raises(Exception, match="no module 'chain' is loaded"):
        session.load("obs", OBSERVER, core=True, attach=OBSERVER_TARGETS)
    assert not session.modules
