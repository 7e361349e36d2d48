"""Compiler and verifier output turned into errors that point at the cell:
clang's `/virtual/main.c` locations and the verifier's `@ main.c:N` source
lines relabelled to the cell's lines and columns, with a hint from the
reason line where one is known."""

from __future__ import annotations

import re

from ..errors import BpfCompileError, BpfVerifierError, EnvironmentProblem
from .instrument import ColumnMap
from .records import ring_pages

_LOC_RE = re.compile(r"/virtual/main\.c:(\d+):(\d+):")
_INCLUDED_FROM_RE = re.compile(r"/virtual/main\.c:(\d+):(?!\d)")
_VERIFIER_LOC_RE = re.compile(r"@ main\.c:(\d+)")
_VERIFIER_SRC_RE = re.compile(r"^; (.*?) @ main\.c:(\d+)$", re.M)


def _relabel(text: str, origin: str, source: str | None = None, columns: ColumnMap | None = None) -> str:
    """Point clang's and the verifier's locations at the cell: every line keeps
    its number in what BCC compiles (#line), columns are shifted back where a
    call site was instrumented, and the verifier's source snippets (of the
    compiled text) are replaced by the cell's own line."""

    def cell_line(number: str) -> int:
        return columns.cell_line(int(number)) if columns is not None else int(number)

    def location(m: re.Match) -> str:
        line, column = cell_line(m[1]), int(m[2])
        if columns is not None:
            column = columns.cell_column(line, column)
        return f"{origin}:{line}:{column}:"

    text = _LOC_RE.sub(location, text)
    text = _INCLUDED_FROM_RE.sub(lambda m: f"{origin}:{cell_line(m[1])}:", text)
    if source is None:
        return _VERIFIER_LOC_RE.sub(lambda m: f"@ {origin}:{cell_line(m[1])}", text)
    lines = source.split("\n")

    def quote(m: re.Match) -> str:
        n = cell_line(m[2])
        return f"; {lines[n - 1].strip()} @ {origin}:{n}" if 1 <= n <= len(lines) else f"; {m[1]}"

    text = _VERIFIER_SRC_RE.sub(quote, text)
    return _BARE_SRC_RE.sub(lambda m: _cell_line(m[1], lines, origin), text)


_BARE_SRC_RE = re.compile(r"^; (.+)$", re.M)
_IDENT_RE = re.compile(r"[A-Za-z_]\w*")
# Words BCC's own rewrite of table methods adds (x.lookup(&k) -> bpf_map_lookup_elem((void *)bpf_pseudo_fd(1, -1), &k)).
_BCC_REWRITE_WORDS = {
    "bpf_pseudo_fd",
    "void",
    "bpf_map_lookup_elem",
    "bpf_map_update_elem",
    "bpf_map_delete_elem",
    "bpf_tail_call_",
    "bpf_perf_event_output",
    "bpf_ringbuf_output",
    "bpf_ringbuf_reserve",
    "__bm_k",
    "__bm_i",
    "__bm_v",
    "u32",
    "u64",
}


def _cell_line(snippet: str, lines: list[str], origin: str) -> str:
    """A source line BCC quotes without a location, from the text it compiled
    (its own rewrites and bpfmagic's included): the cell's line it came from,
    when one line of the cell shares its words best; else left out."""
    if " @ " in snippet:
        return f"; {snippet}"
    words = set(_IDENT_RE.findall(snippet)) - _BCC_REWRITE_WORDS
    if not words:
        return ";"
    scores = [(len(words & set(_IDENT_RE.findall(line))), i) for i, line in enumerate(lines)]
    best = max(scores, default=(0, -1))
    if best[0] and best[0] >= 0.6 * len(words) and sum(1 for s, _ in scores if s == best[0]) == 1:
        n = best[1] + 1
        return f"; {lines[n - 1].strip()} @ {origin}:{n}"
    return ";"


def _libbpf_style_hint(syntax) -> str:
    """A BCC cell that is libbpf-style C (SEC(), vmlinux.h, libbpf's headers) wants --core."""
    if syntax is None:
        return ""
    libbpf_headers = any(i.path in ("vmlinux.h", "bpf/bpf_helpers.h") for i in syntax.includes)
    if libbpf_headers or any(f.section for f in syntax.functions.values()):
        return (
            "\n\nHINT: this is libbpf-style C (SEC(), vmlinux.h or <bpf/bpf_helpers.h>); BCC compiles its own "
            "dialect: load it with --core (%%bpf NAME --core)."
        )
    return ""


def compile_error(stderr: str, source: str, origin: str, columns: ColumnMap | None = None, syntax=None) -> BpfCompileError:
    """clang's diagnostics relabelled with the cell's lines and columns, each
    error followed by the offending line of the cell as the user wrote it; an
    error in a header keeps the include stack that leads there from the cell."""
    lines = source.split("\n")
    shown: list[str] = []
    stack: list[str] = []
    for raw in stderr.splitlines():
        if raw.startswith("In file included from") or (stack and raw.lstrip().startswith("from ")):
            stack.append(_relabel(raw, origin, columns=columns))
            continue
        m = _LOC_RE.search(raw)
        if m:
            shown += stack
            shown.append(_relabel(raw, origin, columns=columns))
            n = columns.cell_line(int(m[1])) if columns is not None else int(m[1])
            if 1 <= n <= len(lines) and ": error:" in raw:
                shown.append(f"    {n:4d} | {lines[n - 1]}")
        elif raw.strip() and not raw.startswith(" ") and "error" in raw:
            shown += stack
            shown.append(raw)
        stack = []
    errors = [s for s in shown if ": error:" in s or "fatal error" in s]
    ring = re.search(r"could not open bpf map: (\w+), error: Invalid argument", stderr)
    pages = ring and ring_pages(source).get(ring[1])
    if not errors and pages is not None:
        return BpfCompileError(ring_size_message(ring[1], *pages), stderr)
    if not errors:
        msg = stderr.strip() or "BCC could not compile the program (no message)"
        if "Unable to find kernel headers" in stderr or re.search(r"chdir\(/lib/modules/[^)]*/build\)", stderr):
            from ..kernel.env import missing_headers_message

            raise EnvironmentProblem(missing_headers_message(), stderr)
        return BpfCompileError(_relabel(msg, origin, columns=columns), stderr)
    # Keep the diagnostics compact: the errors with their lines, then clang's count.
    return BpfCompileError("\n".join(shown).rstrip() + _libbpf_style_hint(syntax), stderr)


MAX_RING_PAGES = 1 << 19  # BCC passes PAGES x 4 KiB as a u32: 2 GiB is the largest power of two that fits


def ring_size_message(table: str, pages_text: str, pages: int | None) -> str:
    """Why the kernel refused BPF_RINGBUF_OUTPUT(TABLE, PAGES_TEXT) (PAGES its value, if known)."""
    rule = (
        f"PAGES must be a power of two from 1 to {MAX_RING_PAGES:,} (the ring is PAGES x 4 KiB, at most "
        "2 GiB: BCC passes its size as a 32-bit number), e.g. 64 for 256 KiB"
    )
    said = ""
    if pages is not None:
        size = pages * 4096
        human = f"{size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{size / (1 << 20):g} MiB" if size >= 1 << 20 else f"{size / 1024:g} KiB"
        if pages > MAX_RING_PAGES:
            said = f" {pages_text} is {pages:,} pages = {human}, above the 2 GiB limit;"
        elif pages < 1 or pages & (pages - 1):
            said = f" {pages_text} is {pages:,} pages, not a power of two;"
    return f"BPF_RINGBUF_OUTPUT({table}, {pages_text}): the kernel refused the ring;{said} {rule}"


def _verified_then_refused(body: list[str]) -> bool:
    """Whether the log ends as a successful verification does ("processed ..."
    after an instruction or state line, no error message before it): the
    kernel refused the program after the verifier had accepted it."""
    if not body or not body[-1].startswith("processed "):
        return False
    before = [line for line in body[:-1] if not line.startswith(("verification time", "stack depth", "func#"))]
    return not before or bool(re.match(r"^\s*(\d+: |from \d+ to \d+|; )", before[-1]))


def verifier_error(
    func: str, stderr: str, reason: str, origin: str, source: str | None = None, tail: int = 30, columns: ColumnMap | None = None, syntax=None
) -> BpfVerifierError:
    """The end of the verifier log (where the reason is) plus the hints that
    the reason itself calls for (not every word the register dumps contain)."""
    log = _relabel(stderr, origin, source, columns)
    too_large = re.search(r"Program\s+too large \((\d+) insns\)", log)
    if too_large and "processed " not in log:
        # BCC loads without a log first and, on E2BIG, reports the program's own length: the
        # kernel's reason is the verifier's budget of processed instructions.
        return BpfVerifierError(
            f"the verifier rejected {func}: it walked 1,000,000 instructions (the limit) along the "
            f"program's paths before finishing; the program itself has {too_large[1]} instructions, but "
            f"every loop iteration and branch path counts.\n\nHINT: {VERIFIER_HINTS['is too large']}\n"
            f"(-v shows the verifier's log.)",
            log,
        )
    lines = [line for line in log.splitlines() if line.strip()]
    hints = list(dict.fromkeys(line for line in lines if line.startswith("HINT:")))  # BCC repeats them
    body = [line for line in lines if not line.startswith("HINT:")]
    cut = body[-tail:]
    head = f"the verifier rejected {func} ({reason})"
    if len(body) > tail:
        head += f"; last {tail} of {len(body)} log lines (full log: exception .log)"
    parts = [head + ":", *("  " + line for line in cut)]
    if _verified_then_refused(body) and "Invalid argument" in reason:
        parts[0] = f"the kernel refused {func} after the verifier accepted it ({reason}):"
        parts.append("A prog array it uses already holds programs of another type or attach type (a map's programs must all match).")
    # The reason is in the last lines before "processed ..."; register dumps above it mention everything.
    reason_lines = "\n".join(line for line in body[-4:] if not line.startswith("processed "))
    if not hints:  # BCC adds hints of its own; libbpf (--core) does not
        hints = [f"HINT: {text}" for key, text in VERIFIER_HINTS.items() if key in reason_lines]
    if "expected=map_ptr" in reason_lines and syntax is not None and "bpf_map_" in (source or ""):
        hints.append(
            "HINT: in a BCC cell a map is used through its methods (counts.lookup(&key), "
            "counts.update(&key, &value), counts.delete(&key)), not bpf_map_lookup_elem(&counts, ...): "
            "BCC gives the map no address; or load the cell with --core."
        )
    if hints:
        parts += ["", *hints]
    return BpfVerifierError("\n".join(parts), log)


VERIFIER_HINTS = {
    "map_value_or_null": "a map lookup can return NULL: check the pointer before using it.",
    "invalid mem access 'scalar'": "a pointer the verifier cannot trust is dereferenced: read kernel memory "
    "with bpf_probe_read_kernel() or BPF_CORE_READ().",
    "unreachable insn": "code after an unconditional return or jump; compile with -O2.",
    "back-edge": "a loop the verifier cannot bound: give it a constant bound or use bpf_loop().",
    "is too large": "bound loops tighter, use bpf_loop() for long loops, or split the work into stages "
    "chained by tail calls (each stage is verified on its own budget).",
    "is too complex": "the verifier tracks too many branch states: fewer branches per loop iteration, bpf_loop(), or stages chained by tail calls.",
    "infinite loop detected": "a loop whose state never changes from the verifier's point of view: give it a "
    "bound that the loop variable reaches, or use bpf_loop().",
    "tail_call is only allowed in functions that return 'int'": "a subprogram that tail-calls must return int: "
    "declare it `static __noinline int ...` and return the tail call's result (or 0) from it.",
    "cannot use helper": "this program type may not call that helper (bpf_probe_write_user is refused by "
    "this kernel); see `bpftool feature probe` for the helpers each type can call.",
    "min value is negative": "a size or offset may be negative as the verifier sees it: make it unsigned and "
    "bound it (n &= MASK, or if (n > N) return ...) before the call or access.",
    "unbounded memory access": "a size or offset has no upper bound the verifier can see (a helper's size "
    "argument, or an index added to a pointer): bound it first (n &= MASK, or if (n > N) return ...).",
    "invalid bpf_context access": "the context is read at an offset its type does not have (moved or cast ctx "
    "pointer?): read fields through the ctx the program was given.",
    "invalid access to packet": "check packet bounds (data + N > data_end) before reading the packet.",
    "tail_calls are not allowed when call stack": "a tail call from a subprogram needs the frames above it "
    "to use less than 256 bytes of stack: shrink the callers' locals (a per-CPU array map makes good scratch space).",
}
