"""What the tutorials teach about mixing BPF-to-BPF calls and tail calls, checked
on each kernel of the matrix: the 33-tail-call limit counts per run across the
subprograms since Linux 6.10 ("bpf: Fix tailcall hierarchy"); before, each
subprogram that tail-calls has a counter of its own. A program that calls two
subprograms, each starting a self-repeating tail-call chain, shows which: on a
6.10+ kernel the second chain finds the budget spent (33 and 0 runs), on 6.1
(Debian 12) each chain gets 33. Notebook 05 (limits) shows this kernel's.

Recorded: this host's 6.18 gave (33, 0), Debian's 6.1.0 under virtme-ng (33, 33) and
Debian's 6.12.118 (bookworm-security) under virtme-ng (33, 0)."""

from __future__ import annotations

import platform

import pytest

from bpfmagic import AttachError
from bpfmagic.experiments import packets

from ..conftest import kernel_loads_fentry, needs_root
from ..programs import shared_budget

pytestmark = needs_root

TWO_CHAINS = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u32);
} chains SEC(".maps");

__u64 first_runs = 0, second_runs = 0;

static __noinline int into_first(struct __sk_buff *skb)
{
    bpf_tail_call_static(skb, &chains, 0);
    return 0;
}

static __noinline int into_second(struct __sk_buff *skb)
{
    bpf_tail_call_static(skb, &chains, 1);
    return 0;
}

/* each stage counts itself and tail-calls itself again, through the subprogram */
SEC("tc") int first(struct __sk_buff *skb) { first_runs++; return into_first(skb); }
SEC("tc") int second(struct __sk_buff *skb) { second_runs++; return into_second(skb); }

SEC("tc") int entry(struct __sk_buff *skb)
{
    into_first(skb);
    into_second(skb);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


def test_the_tail_call_budget_across_subprograms_follows_the_kernel(session):
    m = session.load("hier", TWO_CHAINS, core=True, slots={"chains[0]": "first", "chains[1]": "second"})
    session.test_run("hier.entry", data=packets.udp_packet())
    runs = (m.globals["first_runs"], m.globals["second_runs"])
    if shared_budget(platform.release()):
        assert runs == (33, 0)  # one budget per run: the first chain spent it
    else:
        assert runs == (33, 33)  # a budget per subprogram frame
    # the session's own counters agree with the program's
    taken = session.slots("chains").set_index("index")["taken"]
    assert (taken.loc[0], taken.loc[1]) == runs


# A program that calls one subprogram twice, the subprogram tail-calling back into the program:
# every run that gets a tail call in still returns into its caller, which calls the subprogram
# again, so the chain branches at each level and only a budget shared by the whole run ends it
# (the kernel selftests' tailcall_bpf2bpf_hierarchy_* shape). Where each frame keeps a budget
# of its own it would run about 2^34 times in one test run: it is not run there.
HIERARCHY = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} back SEC(".maps");

__u64 entry_runs = 0;

static __noinline int hop(struct __sk_buff *skb)
{
    bpf_tail_call_static(skb, &back, 0);
    return 0;
}

SEC("tc") int entry(struct __sk_buff *skb)
{
    entry_runs++;
    hop(skb);
    hop(skb);
    return 1;
}

char LICENSE[] SEC("license") = "GPL";
"""

HOP_OBSERVER = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 hop_entries = 0, hop_exits = 0;

SEC("fentry") int BPF_PROG(into_hop, struct sk_buff *skb) { hop_entries++; return 0; }
SEC("fexit") int BPF_PROG(out_of_hop, struct sk_buff *skb, int ret) { hop_exits++; return 0; }

char LICENSE[] SEC("license") = "GPL";
"""


def test_fentry_fexit_on_a_subprogram_that_tail_calls_back(session):
    """fentry/fexit on the static subprogram of a branching tail-call chain: 33 tail calls
    in all give 34 runs of the program, each calling the subprogram twice (68), and the
    observer's trampoline does not reset the run's budget."""
    if not shared_budget(platform.release()):
        # The budget per frame, measured: why the branching chain is not run on this kernel.
        m = session.load("two", TWO_CHAINS, core=True, slots={"chains[0]": "first", "chains[1]": "second"})
        session.test_run("two.entry", data=packets.udp_packet())
        assert (m.globals["first_runs"], m.globals["second_runs"]) == (33, 33)
        return
    m = session.load("hier", HIERARCHY, core=True, slots={"back[0]": "entry"})
    targets = {"into_hop": "fentry:hier.hop", "out_of_hop": "fexit:hier.hop"}
    if not kernel_loads_fentry():
        with pytest.raises(AttachError, match="refused by this kernel"):
            session.load("obs", HOP_OBSERVER, core=True, attach=targets)
        assert session.test_run("hier.entry", data=packets.udp_packet()).retval == 1
        assert m.globals["entry_runs"] == 34
        return
    obs = session.load("obs", HOP_OBSERVER, core=True, attach=targets)
    assert session.test_run("hier.entry", data=packets.udp_packet()).retval == 1
    assert (m.globals["entry_runs"], obs.globals["hop_entries"], obs.globals["hop_exits"]) == (34, 68, 68)
    session.unslot("back[0]")  # no tail call in: one run, two calls of the subprogram
    assert session.test_run("hier.entry", data=packets.udp_packet()).retval == 1
    assert (m.globals["entry_runs"], obs.globals["hop_entries"], obs.globals["hop_exits"]) == (35, 70, 70)
    session.unload("obs")
