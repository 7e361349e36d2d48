"""Shapes real files have that corpus round 3 showed (issue 18), each written here in that shape."""

from __future__ import annotations

from ..conftest import needs_root

pytestmark = needs_root


def test_an_array_sized_by_a_local_header_that_includes_vmlinux_h(session, tmp_path):
    """L3AF's shape: the size macro lives in the project's own header, which itself
    includes vmlinux.h; the size is read through the preprocessor like any other."""
    (tmp_path / "sizes.h").write_text('#include "vmlinux.h"\n#define ROOT_ARRAY_SIZE 3\n')
    (tmp_path / "root.bpf.c").write_text(
        '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n#include "sizes.h"\n'
        "struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, ROOT_ARRAY_SIZE);\n"
        '         __type(key, __u32); __type(value, __u32); } root_array SEC(".maps");\n'
        'SEC("xdp") int xdp_root(struct xdp_md *ctx) { bpf_tail_call(ctx, &root_array, 0); return XDP_PASS; }\n'
        'char _license[] SEC("license") = "GPL";\n'
    )
    session.load("root", file=str(tmp_path / "root.bpf.c"), core=True)
    assert session.arrays["root_array"].size == 3
