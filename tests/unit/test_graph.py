"""The chain graph against chains built here, and the three-cell experiment
through the magics: build a chain, run it on a packet, see slots, misses,
cost and the picture."""

from __future__ import annotations

import textwrap

from bpfmagic.experiments import graph as chain_graph


def test_call_sites_are_found_per_function():
    source = textwrap.dedent("""
        BPF_PROG_ARRAY(progs, 4);
        struct s { int a; };
        RAW_TRACEPOINT_PROBE(sys_enter) { progs.call(ctx, ctx->args[1]); return 0; }
        static int helper(void *ctx) { return 0; }
        int f(struct xdp_md *ctx) {
            if (1) { progs.call(ctx, (3)); }
            /* progs.call(ctx, 9); */
            bpf_tail_call(ctx, &other, SLOT(other, x));
            return 0;
        }
    """)
    sites = [(s.function, s.array, s.key) for s in chain_graph.call_sites(source)]
    assert sites == [("raw_tracepoint__sys_enter", "progs", "ctx->args[1]"), ("f", "progs", "(3)"), ("f", "other", "SLOT(other, x)")]
