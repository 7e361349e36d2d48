"""What the tutorials teach about mixing BPF-to-BPF calls and tail calls, checked
on each kernel of the matrix: the 33-tail-call limit counts per run across the
subprograms since Linux 6.10 ("bpf: Fix tailcall hierarchy"); before, each
subprogram that tail-calls has a counter of its own. A program that calls two
subprograms, each starting a self-repeating tail-call chain, shows which: on a
6.10+ kernel the second chain finds the budget spent (33 and 0 runs), on 6.1
(Debian 12) each chain gets 33. Notebook 05 (limits) shows this kernel's.

Recorded: this host's 6.18 gave (33, 0), Debian's 6.1.0 under virtme-ng (33, 33)."""

from __future__ import annotations

from ..programs import shared_budget


def test_the_release_rule_reads_versions():
    assert shared_budget("6.18.44-fc-v1300") and shared_budget("6.10.0")
    assert shared_budget("6.12.118+deb12-amd64")
    assert not shared_budget("6.1.0-57-amd64") and not shared_budget("5.15.0-1")
