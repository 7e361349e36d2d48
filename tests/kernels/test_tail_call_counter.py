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

from bpfmagic.experiments import packets

from ..conftest import needs_root

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


def shared_budget(release: str) -> bool:
    """Whether this kernel counts tail calls per run across subprograms (6.10 and later)."""
    major, minor = (int(x) for x in release.split(".")[:2])
    return (major, minor) >= (6, 10)


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


def test_the_release_rule_reads_versions():
    assert shared_budget("6.18.44-fc-v1300") and shared_budget("6.10.0")
    assert shared_budget("6.12.118+deb12-amd64")
    assert not shared_budget("6.1.0-57-amd64") and not shared_budget("5.15.0-1")
