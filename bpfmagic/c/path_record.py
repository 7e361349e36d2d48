"""The C side of paths (experiments/paths.py reads what it records): the
per-CPU record's layout and the recording functions the front end puts in
a cell loaded with paths on. Here because the front end writes it; the
layout constants are shared with the reader."""

from __future__ import annotations

MAX_HOPS = 34  # 33 tail calls taken, and the one past the limit
EMPTY = 0xFFFFFFFF
LIMIT = 0xFFFFFFFE
KEY_WORDS = 2 + 3 * MAX_HOPS  # hops, entry, (site, key, target) x 34
# + taken, serial, pending (the ctx of the call in flight), window (the collection window the run
# began in, 0 if none; the record is counted once, by the next run on its CPU or by the reader) and 4 spare
REC_SIZE = 4 * KEY_WORDS + 4 + 4 + 8 + 4 + 4
CLOSING = 0x80000000  # the collection switch's bit for "window closing": runs no longer join it
PATH_COUNTS = 4096

C_TYPES = (
    f"struct __bm_path_key {{ unsigned int hops; unsigned int entry; unsigned int hop[{3 * MAX_HOPS}]; }}; "
    "struct __bm_path_rec { struct __bm_path_key k; unsigned int taken; unsigned int serial; "
    "unsigned long long pending; unsigned int window; unsigned int spare; };"
)


def record_at(base: str, rows: int) -> str:
    """C yielding this CPU's record (NULL past ROWS) in the array element at BASE, which holds
    ROWS records in a row (experiments/paths.PathMaps: no per-CPU lookup per hop)."""
    return (
        f"({{ unsigned long long __bm_cpu = ((unsigned long long (*)(void))8)(); "  # bpf_get_smp_processor_id
        f"__bm_cpu < {rows} ? (struct __bm_path_rec *)((char *)({base}) + __bm_cpu * sizeof(struct __bm_path_rec)) : "
        "(struct __bm_path_rec *)0; })"
    )


def c_helpers(lookup_rec: str, lookup_ctl: str, lookup_count: str, update_count: str, bump_site: str) -> str:
    """The recording functions, on one line (BCC puts them on the cell's first line of code).
    The arguments are the backend's spelling of map access: ``lookup_rec`` yields the record
    pointer, ``lookup_ctl`` the collection switch, ``lookup_count(K)`` / ``update_count(K, V)``
    the path counts, ``bump_site(I)`` a site counter.

    A hop costs the call site's lookup and stores and the entry's fast path (a tail call
    arriving: store its target). That path is marked likely so clang lays the cold path (a
    run begins: the counts map's helper calls) out of line and a hop's code is one block.
    The entry needs no n >= 1 test: pending == ctx only after a call site recorded a hop, and
    the index's bound check guards the store regardless. (Keeping the cold path's values off
    callee-saved registers, so that the JIT pushes and pops one register per hop instead of
    four, was tried: ~2 ns slower per hop on 6.18 in interleaved runs, so not kept.)"""
    n3 = 3 * MAX_HOPS
    return " ".join(
        f"""
static __attribute__((always_inline)) inline void __bm_path_enter(void *ctx, unsigned int fn) {{
  unsigned int __bm_z = 0; struct __bm_path_rec *r = {lookup_rec}; if (!r) return;
  unsigned int n = r->k.hops;
  if (__builtin_expect(r->pending == (unsigned long long)(long)ctx, 1)) {{
    unsigned long long j = (unsigned long long)n * 3 - 1; if (j < {n3}) r->k.hop[j] = fn;
    r->taken += 1; r->pending = 0; return; }}
  unsigned int *on = {lookup_ctl}; unsigned int w = on ? *on : 0;
  if (r->window && r->window == (w & ~{CLOSING}u) && r->k.entry) {{
    for (unsigned int j = 0; j < {n3}; j++) {{ if (j >= n * 3) r->k.hop[j] = 0; }}
    unsigned long long *c = {lookup_count.replace("K", "&r->k")};
    if (c) __sync_fetch_and_add(c, 1); else {{ unsigned long long one = 1; {update_count.replace("K", "&r->k").replace("V", "&one")}; }} }}
  r->k.hops = 0; r->k.entry = fn; r->taken = 0; r->pending = 0; r->window = (w & {CLOSING}u) ? 0 : w; r->serial += 1; }}
static __attribute__((always_inline)) inline void __bm_path_call(void *ctx, unsigned int site, unsigned int key) {{
  unsigned int __bm_z = 0; struct __bm_path_rec *r = {lookup_rec}; if (!r) return;
  unsigned int n = r->k.hops;
  unsigned long long j = (unsigned long long)n * 3;
  if (j < {n3 - 2}) {{ unsigned int *h = &r->k.hop[j]; h[0] = site; h[1] = key; h[2] = 0; r->k.hops = n + 1; }}
  r->pending = (unsigned long long)(long)ctx; }}
static __attribute__((always_inline)) inline void __bm_path_miss(unsigned int site) {{
  unsigned int __bm_z = 0; struct __bm_path_rec *r = {lookup_rec}; if (!r) return;
  r->pending = 0; unsigned int limit = r->taken >= 33; unsigned int n = r->k.hops;
  unsigned long long j = (unsigned long long)n * 3 - 1; if (n >= 1 && j < {n3}) r->k.hop[j] = limit ? {LIMIT}u : {EMPTY}u;
  if (limit) {{ {bump_site} }} }}
""".split()
    )
