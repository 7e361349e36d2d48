"""Cost of a %%bpf cell against plain BCC on the same source, measured in one
run (interleaved, median of many rounds) so the machine's noise cancels out.

Both sides compile, load and attach the same program: plain BCC with
``BPF(text=...)`` (RAW_TRACEPOINT_PROBE auto-attaches), bpfmagic with a
``%%bpf`` cell through IPython (source rewriting, fd-2 capture, registry).
Target: ratio <= 1.1x.
"""
from __future__ import annotations

import contextlib
import io
import statistics
import sys
import time
import warnings

SOURCES = {
    "raw tracepoint counter": r"""
BPF_ARRAY(hits, u64, 1);
RAW_TRACEPOINT_PROBE(sys_enter) { int k = 0; hits.atomic_increment(k); return 0; }
""",
    "dispatcher with tail call": r"""
BPF_PROG_ARRAY(jt, 8);
BPF_ARRAY(hits, u64, 2);
RAW_TRACEPOINT_PROBE(sys_enter) {
    int k = 0; hits.atomic_increment(k);
    jt.call(ctx, 1);
    k = 1; hits.atomic_increment(k);
    return 0;
}
""",
}


def main(rounds: int = 15) -> int:
    warnings.simplefilter("ignore")
    from bcc import BPF
    from IPython.testing.globalipapp import get_ipython

    import bpfmagic
    ip = get_ipython()
    ip.run_line_magic("load_ext", "bpfmagic")
    bpfmagic.session()  # environment preparation happens once, outside the timings

    print(f"{'source':28s} {'plain BCC':>11s} {'%%bpf cell':>11s} {'ratio':>7s}")
    worst = 0.0
    for label, source in SOURCES.items():
        plain, magic = [], []
        for i in range(rounds + 1):
            t0 = time.perf_counter()
            b = BPF(text=source)
            plain_s = time.perf_counter() - t0
            b.cleanup()

            with contextlib.redirect_stdout(io.StringIO()):  # the cells' summaries
                t0 = time.perf_counter()
                res = ip.run_cell(f"%%bpf bench{i}\n{source}")
                magic_s = time.perf_counter() - t0
                ip.run_line_magic("bpf", f"unload bench{i}")
            if not res.success:
                print(f"cell failed: {res.error_in_exec}", file=sys.stderr)
                return 1
            if i:  # the first round warms caches on both sides
                plain.append(plain_s)
                magic.append(magic_s)
        p, m = statistics.median(plain), statistics.median(magic)
        worst = max(worst, m / p)
        print(f"{label:28s} {p * 1e3:9.1f}ms {m * 1e3:9.1f}ms {m / p:6.2f}x")
    print(f"\nworst ratio {worst:.2f}x (target <= 1.10x), median of {rounds} interleaved rounds")
    ip.run_line_magic("unload_ext", "bpfmagic")
    return 0


if __name__ == "__main__":
    sys.exit(main())
