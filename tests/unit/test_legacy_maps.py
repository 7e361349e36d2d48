"""Legacy map definitions (``struct bpf_map_def SEC("maps")``, the shape of
the kernel's samples before 5.x, pchaigno's tail-call-bench kern.c and older
xdp-tutorial) load in --core cells: the front end rewrites them into
BTF-defined maps, lines kept, and the cell says so (issue 18 item 4)."""

from __future__ import annotations

import pytest

from bpfmagic import UsageProblem
from bpfmagic.c import analyse
from bpfmagic.c.legacy_maps import rewrite_legacy_maps

from ..programs import LEGACY_CHAIN


def test_the_rewrite_keeps_every_line_and_each_value_on_its_own():
    text, found = rewrite_legacy_maps(LEGACY_CHAIN)
    assert [(m.name, m.line, m.map_type) for m in found] == [("jmp_table", 6, "BPF_MAP_TYPE_PROG_ARRAY")]
    before, after = LEGACY_CHAIN.split("\n"), text.split("\n")
    assert len(after) == len(before)
    assert [a for a, b in zip(after, before, strict=True) if a != b] == [  # only the declaration's lines changed
        '__attribute__((section(".maps"), used)) struct {',
        "int (*type)[BPF_MAP_TYPE_PROG_ARRAY];",
        "int (*key_size)[sizeof(__u32)];",
        "int (*value_size)[sizeof(__u32)];",
        "int (*max_entries)[NUM_STAGES];",
        "} jmp_table;",
    ]
    array = analyse(text).arrays[0]
    assert (array.name, array.size, array.line, array.end_line) == ("jmp_table", 8, 6, 11)


def test_positional_initializers_and_typed_keys_of_hash_maps():
    source = (
        'struct bpf_map_def SEC("maps") flows = { BPF_MAP_TYPE_HASH, sizeof(struct flow_key), sizeof(__u64), 1024, BPF_F_NO_PREALLOC };\n'
        'struct bpf_map_def SEC("maps") ids = {\n  BPF_MAP_TYPE_PERF_EVENT_ARRAY, sizeof(int), sizeof(__u32), 4 /* CPUs */ };\n'
        'int f(void *ctx) { struct bpf_map_def SEC("maps") *p; return 0; }\n'  # a function's own text is not a map
    )
    text, found = rewrite_legacy_maps(source)
    assert [m.name for m in found] == ["flows", "ids"]
    lines = text.split("\n")
    assert lines[0] == (
        '__attribute__((section(".maps"), used)) struct { int (*type)[BPF_MAP_TYPE_HASH]; __typeof__(struct flow_key) *key; '
        "__typeof__(__u64) *value; int (*max_entries)[1024]; int (*map_flags)[BPF_F_NO_PREALLOC]; } flows;"
    )
    # perf event arrays take no BTF key or value: sizes stay sizes
    assert lines[2] == (
        "int (*type)[BPF_MAP_TYPE_PERF_EVENT_ARRAY]; int (*key_size)[sizeof(int)]; int (*value_size)[sizeof(__u32)]; int (*max_entries)[4]; } ids;"
    )
    assert lines[3] == source.split("\n")[3]


def test_a_legacy_map_that_cannot_be_rewritten_says_why_on_its_line():
    with pytest.raises(UsageProblem, match=r"cell:3: legacy map m: struct bpf_map_def has no member 'size'"):
        rewrite_legacy_maps('\nstruct bpf_map_def SEC("maps") m = {\n .size = 4,\n .type = BPF_MAP_TYPE_HASH,\n};\n')
    with pytest.raises(UsageProblem, match=r"cell:1: legacy map m gives no \.max_entries"):
        rewrite_legacy_maps('struct bpf_map_def SEC("maps") m = { .type = BPF_MAP_TYPE_HASH };')
