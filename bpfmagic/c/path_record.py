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


def c_helpers(lookup_rec: str, lookup_ctl: str, lookup_count: str, update_count: str, bump_site: str) -> str:
    """The recording functions, on one line (BCC puts them on the cell's first line of code).
    The arguments are the backend's spelling of map access: ``lookup_rec`` yields the record
    pointer, ``lookup_ctl`` the collection switch, ``lookup_count(K)`` / ``update_count(K, V)``
    the path counts, ``bump_site(I)`` a site counter (each takes its key from ``__bm_z`` or K).

    What each hop costs is the entry's fast path (a tail call arriving: store its target)
    and the call site's hop; both are straight-line code with no value kept across a map
    lookup but the context. The x86 JIT saves every callee-saved register the program
    uses anywhere, in each program's prologue, and a tail call pops and the next program
    pushes them again: so the cold path (a run begins) keeps what it needs across helper
    calls on the stack or looks the record up again, instead of in registers, and the zero
    key is made afresh at each lookup (clang would otherwise keep one zero in a callee-saved
    register for them all). The fast path is marked likely, so clang puts the cold path out
    of line and a hop's code runs without a jump over it."""
    n3 = 3 * MAX_HOPS
    # a zero key clang cannot hoist into a register kept across calls (an asm result is opaque)
    zero = 'unsigned long long __bm_t; asm volatile("%0 = 0" : "=r"(__bm_t)); unsigned int __bm_z = __bm_t;'
    rec = f"{zero} struct __bm_path_rec *r = {lookup_rec}; if (!r) return;"
    return " ".join(
        f"""
static __attribute__((always_inline)) inline void __bm_path_begin(unsigned int fn) {{
  {zero} unsigned int *on = {lookup_ctl}; volatile unsigned int w = 0; if (on) w = *on;
  struct __bm_path_rec *r = {lookup_rec}; if (!r) return;
  unsigned int n = r->k.hops;
  if (r->window && r->window == (w & ~{CLOSING}u) && r->k.entry) {{
    for (unsigned int j = 0; j < {n3}; j++) {{ if (j >= n * 3) r->k.hop[j] = 0; }}
    unsigned long long *c = {lookup_count.replace("K", "&r->k")};
    if (c) __sync_fetch_and_add(c, 1);
    else {{ r = {lookup_rec}; if (!r) return; unsigned long long one = 1; {update_count.replace("K", "&r->k").replace("V", "&one")}; }}
    r = {lookup_rec}; if (!r) return; }}
  unsigned int v = w;
  r->k.hops = 0; r->k.entry = fn; r->taken = 0; r->pending = 0; r->window = (v & {CLOSING}u) ? 0 : v; r->serial += 1; }}
static __attribute__((always_inline)) inline void __bm_path_enter(void *ctx, unsigned int fn) {{
  {rec}
  if (__builtin_expect(r->pending == (unsigned long long)(long)ctx, 1)) {{
    unsigned long long j = (unsigned long long)r->k.hops * 3 - 1; if (j < {n3}) r->k.hop[j] = fn;
    r->taken += 1; r->pending = 0; return; }}
  __bm_path_begin(fn); }}
static __attribute__((always_inline)) inline void __bm_path_call(void *ctx, unsigned int site, unsigned int key) {{
  {rec}
  unsigned int n = r->k.hops;
  unsigned long long j = (unsigned long long)n * 3;
  if (j < {n3 - 2}) {{ unsigned int *h = &r->k.hop[j]; h[0] = site; h[1] = key; h[2] = 0; r->k.hops = n + 1; }}
  r->pending = (unsigned long long)(long)ctx; }}
static __attribute__((always_inline)) inline void __bm_path_miss(unsigned int site) {{
  {rec}
  r->pending = 0; unsigned int limit = r->taken >= 33; unsigned int n = r->k.hops;
  unsigned long long j = (unsigned long long)n * 3 - 1; if (n >= 1 && j < {n3}) r->k.hop[j] = limit ? {LIMIT}u : {EMPTY}u;
  if (limit) {{ {bump_site} }} }}
""".split()
    )
