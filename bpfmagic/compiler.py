"""Compiling and loading BCC C: fd-2 capture, source preparation, program
types, and turning clang/verifier output into errors that point at the cell."""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from dataclasses import dataclass

from .errors import BpfCompileError, BpfError, BpfVerifierError, EnvironmentProblem
from .kernel_lock import NATIVE_LOCK

# Kernel enum bpf_prog_type values (== BCC's BPF.<TYPE> constants).
PROG_TYPES = {
    "socket_filter": 1,
    "kprobe": 2,
    "sched_cls": 3,
    "sched_act": 4,
    "tracepoint": 5,
    "xdp": 6,
    "perf_event": 7,
    "cgroup_skb": 8,
    "lwt_in": 10,
    "sk_skb": 14,
    "sk_msg": 16,
    "raw_tracepoint": 17,
    "flow_dissector": 22,
    "tracing": 26,
    "lsm": 29,
}
PROG_TYPE_NAMES = {v: k for k, v in PROG_TYPES.items()}
# Aliases people type.
PROG_TYPE_ALIASES = {"tc": "sched_cls", "socket": "socket_filter", "raw_tp": "raw_tracepoint",
                     "uprobe": "kprobe", "perf": "perf_event", "tp": "tracepoint"}

# The context parameter's struct says which program type a function is written for.
CONTEXT_TYPES = {
    "xdp_md": "xdp",
    "__sk_buff": "sched_cls",
    "bpf_raw_tracepoint_args": "raw_tracepoint",
    "pt_regs": "kprobe",
    "bpf_perf_event_data": "perf_event",
    "sk_msg_md": "sk_msg",
    "bpf_sock_ops": "sock_ops",
}

# BCC's naming conventions for auto-attached functions.
AUTO_PREFIXES = {
    "raw_tracepoint__": "raw_tracepoint",
    "tracepoint__": "tracepoint",
    "kprobe__": "kprobe",
    "kretprobe__": "kprobe",
    "kfunc__": "tracing",
    "kretfunc__": "tracing",
    "lsm__": "lsm",
}


def prog_type_name(value: int | str) -> str:
    if isinstance(value, int):
        return PROG_TYPE_NAMES.get(value, f"type {value}")
    return PROG_TYPE_ALIASES.get(value, value)


def prog_type_value(name: str) -> int:
    name = prog_type_name(name.lower())
    if name not in PROG_TYPES:
        raise ValueError(f"unknown program type {name!r}; known: {', '.join(sorted(PROG_TYPES))}")
    return PROG_TYPES[name]


# ---------------------------------------------------------------- fd 2 capture

@contextlib.contextmanager
def captured_fd2():
    """Redirect fd 2 into a temporary file for the duration of the block.

    libbcc, clang and the verifier write to fd 2 directly, bypassing
    sys.stderr; a file rather than a pipe because verifier logs can be
    megabytes and a pipe nobody drains would block the writer.
    Yields a list that holds the captured text once the block ends.
    Holds the process-wide NATIVE_LOCK: fd 2 is one per process, and every
    libbcc call that prints (compile, load, attach, cleanup) runs inside.
    """
    out: list[str] = []
    with NATIVE_LOCK, tempfile.TemporaryFile() as tmp:
        for stream in (sys.stderr, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            with contextlib.suppress(Exception):
                sys.__stderr__.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


# ----------------------------------------------------------- source analysis

_FUNC_RE = re.compile(
    r"^[ \t]*(?:static\s+)?(?:__attribute__\(\(.*?\)\)\s*)?"
    r"(?:int|u32|__u32|u64|__u64|long|unsigned\s+int)\s+([A-Za-z_]\w*)\s*\(\s*"
    r"(?:const\s+)?(?:struct\s+([A-Za-z_]\w*)\s*\*|void\s*\*)?",
    re.M,
)
# Public: graph.py, core.py and stream.py parse the same C with these.
MACRO_FUNCS = [
    (re.compile(r"\bRAW_TRACEPOINT_PROBE\s*\(\s*(\w+)\s*\)"), lambda m: f"raw_tracepoint__{m[1]}", "raw_tracepoint"),
    (re.compile(r"\bTRACEPOINT_PROBE\s*\(\s*(\w+)\s*,\s*(\w+)\s*\)"), lambda m: f"tracepoint__{m[1]}__{m[2]}", "tracepoint"),
]
_KFUNC_MACRO_RE = re.compile(r"\b(K(?:RET)?FUNC_PROBE|LSM_PROBE)\s*\(\s*(\w+)")
_PROG_ARRAY_RE = re.compile(r"\bBPF_PROG_ARRAY\s*\(\s*([A-Za-z_]\w*)\s*,\s*([^)]*?)\s*\)")
SLOT_RE = re.compile(r"\bSLOT\s*\(\s*([A-Za-z_]\w*)\s*,\s*([A-Za-z_0-9]\w*)\s*\)")
CALL_RE = re.compile(r"\b([A-Za-z_]\w*)\s*\.\s*call\s*\(")


def strip_comments(source: str) -> str:
    """The source with comments blanked out (same length and line breaks), so
    regexes don't find declarations inside comments."""
    def blank(m: re.Match) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))
    return re.sub(r"//[^\n]*|/\*.*?\*/", blank, source, flags=re.S)


def function_contexts(source: str) -> dict[str, str | None]:
    """Function name -> the program type its context parameter implies (None
    when the parameter says nothing, e.g. ``void *ctx``)."""
    code = strip_comments(source)
    found: dict[str, str | None] = {}
    for m in _FUNC_RE.finditer(code):
        found[m[1]] = CONTEXT_TYPES.get(m[2]) if m[2] else None
    for regex, name, ptype in MACRO_FUNCS:
        for m in regex.finditer(code):
            found[name(m)] = ptype
    for m in _KFUNC_MACRO_RE.finditer(code):  # BCC's fentry/fexit/LSM macros
        prefix = {"KFUNC_PROBE": "kfunc__", "KRETFUNC_PROBE": "kretfunc__", "LSM_PROBE": "lsm__"}[m[1]]
        found[prefix + m[2]] = "tracing"
    return found


def auto_attach_type(func: str) -> str | None:
    for prefix, ptype in AUTO_PREFIXES.items():
        if func.startswith(prefix):
            return ptype
    return None


@dataclass
class ArrayDecl:
    name: str
    size: int
    line: int


def declared_prog_arrays(source: str) -> list[ArrayDecl]:
    code = strip_comments(source)
    out = []
    for m in _PROG_ARRAY_RE.finditer(code):
        try:
            size = int(m[2], 0)
        except ValueError:
            raise BpfCompileError(
                f"line {code.count(chr(10), 0, m.start()) + 1}: BPF_PROG_ARRAY({m[1]}, {m[2]}): "
                "the size must be an integer literal so cells can share the array") from None
        out.append(ArrayDecl(m[1], size, code.count("\n", 0, m.start()) + 1))
    return out


def slot_references(source: str) -> list[tuple[str, str]]:
    """(array, key) of every SLOT(array, key) in the code."""
    return [(m[1], m[2]) for m in SLOT_RE.finditer(strip_comments(source))]


def called_arrays(source: str) -> set[str]:
    """Names used as ``NAME.call(`` (tail-call sites)."""
    return {m[1] for m in CALL_RE.finditer(strip_comments(source))}


def _prelude_line(code: str) -> int:
    """Index of the first line that is code outside any #if/#ifdef block (not
    blank, not a preprocessor line or its continuation, not in a comment):
    declarations the prelude adds go in front of it on the same line, so line
    numbers stay those of the cell, and no conditional can hide them."""
    lines = strip_comments(code).split("\n")
    continued = False
    depth = 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        was_continued, continued = continued, stripped.endswith("\\")
        if was_continued or not stripped:
            continue
        if stripped.startswith("#"):
            directive = stripped[1:].lstrip()
            if directive.startswith(("if", "ifdef", "ifndef")):
                depth += 1
            elif directive.startswith("endif"):
                depth = max(depth - 1, 0)
            continue
        if depth == 0:
            return i
    return len(lines) - 1


def declare_first(text: str, declarations: list[str]) -> str:
    """Put DECLARATIONS in front of the first line of code (see _prelude_line),
    on that same line: every later line keeps its number."""
    if not declarations:
        return text
    lines = text.split("\n")
    i = _prelude_line(text)
    lines[i] = " ".join(declarations) + " " + lines[i]
    return "\n".join(lines)


def splice(text: str, edits) -> str:
    """TEXT with each (start, end, replacement) of EDITS applied; edits come in
    order and one that overlaps an earlier one is skipped."""
    out, last = [], 0
    for start, end, replacement in edits:
        if start < last:
            continue
        out += [text[last:start], replacement]
        last = end
    out.append(text[last:])
    return "".join(out)


def is_statement(code: str, start: int, close: int) -> bool:
    """Whether the call spanning code[start:close + 1] stands alone as a statement
    (its value unused): a wrapper then yields nothing, so clang has no
    "expression result unused" to warn about."""
    return code[close + 1:].lstrip().startswith(";") and code[:start].rstrip()[-1:] in ";{})"


def counter_pin(pin: str) -> str:
    """Where an array's call counters are pinned (bpffs refuses dots in names)."""
    return os.path.join(os.path.dirname(pin), "calls", os.path.basename(pin))


def counter_name(array: str) -> str:
    return f"__bm_calls_{array}"


def _count_tail_calls(text: str, names: set[str], sizes: dict[str, int]) -> str:
    """Wrap each ``ARRAY.call(ctx, key)`` so it counts the call at [key] and,
    when the helper returns (the slot was empty or the 33-call limit hit), the
    fall-through at [size + key] of the array's per-CPU counter map."""
    code_only = strip_comments(text)

    def edits():
        for m in CALL_RE.finditer(code_only):
            name = m[1]
            if name not in names:
                continue
            close = matching_paren(code_only, m.end() - 1)
            if close is None:
                continue
            args = split_args(code_only, m.end(), close)
            if len(args) != 2:
                continue
            (a0, a1), (b0, b1) = args
            ctx, key = text[a0:a1], text[b0:b1]
            counter, size = counter_name(name), sizes[name]
            bump = (f"__bm_v = {counter}.lookup(&__bm_i); if (__bm_v) *__bm_v += 1;")
            yield (m.start(), close + 1,
                   f"({{ u32 __bm_k = ({key}); u32 __bm_i = __bm_k; u64 *__bm_v; {bump} "
                   f"{name}.call({ctx}, __bm_k); __bm_i = __bm_k + {size}; {bump} }})")
    return splice(text, edits())


_CLOSERS = {"(": ")", "[": "]", "{": "}"}


def matching_paren(code: str, open_at: int) -> int | None:
    """Index of the bracket closing the one at code[open_at] ('(', '[' or '{'), None if unclosed."""
    open_, close = code[open_at], _CLOSERS[code[open_at]]
    depth = 0
    for i in range(open_at, len(code)):
        c = code[i]
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i
    return None


def split_args(code: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of the top-level comma-separated arguments in code[start:end]."""
    spans, depth, begin = [], 0, start
    for i in range(start, end):
        c = code[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            spans.append((begin, i))
            begin = i + 1
    spans.append((begin, end))
    return spans


def rewrite_source(source: str, arrays: dict[str, tuple[str, int]], slot_index,
                   count_calls: bool = True) -> str:
    """Rewrite the cell's C for BCC, keeping every line where it was.

    ``arrays`` maps each session array to (pin path, size).
    - ``BPF_PROG_ARRAY(name, n)`` of a session array becomes a pinned table, so
      every cell shares the session's map;
    - a session array used (``name.call``) but not declared gets declared;
    - ``SLOT(array, key)`` becomes the key's index, ``slot_index(array, key)``;
    - with ``count_calls``, tail calls into session arrays are counted per key.
    """
    def pinned(name: str) -> str:
        pin, size = arrays[name]
        return f'BPF_TABLE_PINNED("prog", u32, u32, {name}, {size}, "{pin}")'

    def sub_code(regex, repl, text):
        # Substitute only real code: the match must survive comment stripping.
        code_only = strip_comments(text)
        return splice(text, ((m.start(), m.end(), repl(m)) for m in regex.finditer(text)
                             if code_only[m.start():m.end()] == m.group(0)))

    declared = {d.name for d in declared_prog_arrays(source)}
    text = sub_code(_PROG_ARRAY_RE, lambda m: pinned(m[1]) if m[1] in arrays else m.group(0), source)
    text = sub_code(SLOT_RE, lambda m: str(slot_index(m[1], m[2])), text)
    called = {n for n in called_arrays(source) if n in arrays}
    if count_calls:
        text = _count_tail_calls(text, called, {n: arrays[n][1] for n in called})

    prelude = [pinned(n) + ";" for n in sorted(called - declared)]
    if count_calls:
        prelude += [f'BPF_TABLE_PINNED("percpu_array", u32, u64, {counter_name(n)}, {2 * arrays[n][1]}, '
                    f'"{counter_pin(arrays[n][0])}");' for n in sorted(called)]
    return declare_first(text, prelude)


# ------------------------------------------------------------ error mapping

_LOC_RE = re.compile(r"/virtual/main\.c:(\d+):(\d+):")
_VERIFIER_LOC_RE = re.compile(r"@ main\.c:(\d+)")


_VERIFIER_SRC_RE = re.compile(r"^; (.*?) @ main\.c:(\d+)$", re.M)


def _relabel(text: str, origin: str, source: str | None = None) -> str:
    """Point clang's and the verifier's locations at the cell. The verifier's
    line numbers count BCC's rewritten text, so its source snippets are looked
    up in the cell instead (and left without a number when not found once)."""
    text = _LOC_RE.sub(lambda m: f"{origin}:{m[1]}:{m[2]}:", text)
    if source is None:
        return _VERIFIER_LOC_RE.sub(lambda m: f"@ {origin}:{m[1]}", text)
    lines = [line.strip() for line in source.split("\n")]

    def locate(m: re.Match) -> str:
        snippet = m[1].strip()
        hits = [i + 1 for i, line in enumerate(lines) if snippet and snippet in line]
        return f"; {snippet} @ {origin}:{hits[0]}" if len(hits) == 1 else f"; {snippet}"
    return _VERIFIER_SRC_RE.sub(locate, text)


def compile_error(stderr: str, source: str, origin: str) -> BpfCompileError:
    """clang's diagnostics relabelled with the cell's line numbers, each error
    followed by the offending line of the cell as the user wrote it."""
    lines = source.split("\n")
    shown: list[str] = []
    for raw in stderr.splitlines():
        m = _LOC_RE.search(raw)
        if m:
            shown.append(_relabel(raw, origin))
            n = int(m[1])
            if 1 <= n <= len(lines) and ": error:" in raw:
                shown.append(f"    {n:4d} | {lines[n - 1]}")
        elif raw.strip() and not raw.startswith(" ") and "error" in raw:
            shown.append(raw)
    errors = [s for s in shown if ": error:" in s or "fatal error" in s]
    ring = re.search(r"could not open bpf map: (\w+), error: Invalid argument", stderr)
    declared = ring and re.search(rf"BPF_RINGBUF_OUTPUT\s*\(\s*{ring[1]}\s*,\s*([^)]*?)\s*\)", source)
    if not errors and declared:
        return BpfCompileError(ring_size_message(ring[1], declared[1]), stderr)
    if not errors:
        msg = stderr.strip() or "BCC could not compile the program (no message)"
        if "Unable to find kernel headers" in stderr or re.search(r"chdir\(/lib/modules/[^)]*/build\)", stderr):
            raise EnvironmentProblem(
                "BCC found no kernel headers. Run `bpfmagic doctor`; usually "
                "`apt-get install -y linux-headers-amd64` fixes it (bpfmagic then "
                "builds a merged header tree by itself).", stderr)
        return BpfCompileError(_relabel(msg, origin), stderr)
    # Keep the diagnostics compact: the errors with their lines, then clang's count.
    return BpfCompileError("\n".join(shown).rstrip(), stderr)


MAX_RING_PAGES = 1 << 19  # BCC passes PAGES x 4 KiB as a u32: 2 GiB is the largest power of two that fits


def ring_size_message(table: str, pages_text: str) -> str:
    """Why the kernel refused BPF_RINGBUF_OUTPUT(TABLE, PAGES_TEXT)."""
    rule = (f"PAGES must be a power of two from 1 to {MAX_RING_PAGES:,} (the ring is PAGES x 4 KiB, at most "
            "2 GiB: BCC passes its size as a 32-bit number), e.g. 64 for 256 KiB")
    pages = _constant(pages_text)
    said = ""
    if pages is not None:
        size = pages * 4096
        human = f"{size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{size / (1 << 20):g} MiB" if size >= 1 << 20 \
            else f"{size / 1024:g} KiB"
        if pages > MAX_RING_PAGES:
            said = f" {pages_text} is {pages:,} pages = {human}, above the 2 GiB limit;"
        elif pages < 1 or pages & (pages - 1):
            said = f" {pages_text} is {pages:,} pages, not a power of two;"
    return f"BPF_RINGBUF_OUTPUT({table}, {pages_text}): the kernel refused the ring;{said} {rule}"


def _constant(text: str) -> int | None:
    """The value of a C integer constant expression made of literals and + - * << | ( ), else None."""
    import ast
    try:
        tree = ast.parse(re.sub(r"(?<=\d)[uUlL]+\b", "", text.strip()), mode="eval")
    except SyntaxError:
        return None
    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.LShift: lambda a, b: a << b if 0 <= b < 64 else None, ast.BitOr: lambda a, b: a | b}

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            left, right = value(node.left), value(node.right)
            return None if left is None or right is None else ops[type(node.op)](left, right)
        return None
    return value(tree.body)


def verifier_error(func: str, stderr: str, reason: str, origin: str, source: str | None = None,
                   tail: int = 30) -> BpfVerifierError:
    """The end of the verifier log (where the reason is) plus BCC's HINT lines."""
    log = _relabel(stderr, origin, source)
    lines = [line for line in log.splitlines() if line.strip()]
    hints = [line for line in lines if line.startswith("HINT:")]
    body = [line for line in lines if not line.startswith("HINT:")]
    cut = body[-tail:]
    head = f"the verifier rejected {func} ({reason})"
    if len(body) > tail:
        head += f"; last {tail} of {len(body)} log lines (full log: exception .log)"
    parts = [head + ":", *("  " + line for line in cut)]
    if body and body[-1].startswith("processed ") and "Invalid argument" in reason:
        parts.append("The program verified, but the kernel refused it: a prog array it uses already holds "
                     "programs of another type or attach type (a map's programs must all match).")
    if not hints:  # BCC adds hints of its own; libbpf (--core) does not
        hints = [f"HINT: {text}" for key, text in VERIFIER_HINTS.items() if key in log]
    if hints:
        parts += ["", *hints]
    return BpfVerifierError("\n".join(parts), log)


VERIFIER_HINTS = {
    "map_value_or_null": "a map lookup can return NULL: check the pointer before using it.",
    "invalid mem access 'scalar'": "a pointer the verifier cannot trust is dereferenced: read kernel memory "
                                   "with bpf_probe_read_kernel() or BPF_CORE_READ().",
    "unreachable insn": "code after an unconditional return or jump; compile with -O2.",
    "back-edge": "a loop the verifier cannot bound: give it a constant bound or use bpf_loop().",
    "invalid access to packet": "check packet bounds (data + N > data_end) before reading the packet.",
    "tail_calls are not allowed when call stack": "a tail call from a subprogram needs the frames above it "
        "to use less than 256 bytes of stack: shrink the callers' locals (a per-CPU array map makes good scratch space).",
}


def fd_limit_problem(what: str, text: str) -> EnvironmentProblem | None:
    """EMFILE said as what it is: the process's open-file limit, not the verifier."""
    if "Too many open files" not in text:
        return None
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_now = soft
    raise_to = hard if hard != resource.RLIM_INFINITY else 1 << 20
    return EnvironmentProblem(
        f"{what}: this process reached its open-file limit ({open_now} files open, `ulimit -n` is {soft}); "
        f"every loaded program, map and link holds one. Unload modules (`%bpf unload NAME`, `%bpf reset`), "
        f"or raise the limit: `ulimit -n {raise_to}` in the shell that starts Jupyter, or in the notebook "
        f"`import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({raise_to}, {raise_to}))` "
        f"(up to the hard limit, {hard if hard != resource.RLIM_INFINITY else 'unlimited'})", text)


# ------------------------------------------------------------ BCC loading

def load_bcc(source: str, origin: str, arrays: dict[str, tuple[str, int]], slot_index, cflags: list[str],
             count_calls: bool, verbose: bool, can_load: bool = True):
    """Rewrite the cell for the session (shared arrays, SLOT, call and loss
    counters) and compile it with BCC; BCC also loads and attaches the
    functions its naming conventions name. Returns (BPF object, what
    libbcc/clang wrote to fd 2); failures raise errors that point at the cell."""
    from bcc import BPF

    from .stream import count_output_failures
    text = rewrite_source(source, arrays, slot_index, count_calls=count_calls)
    text = count_output_failures(text)  # failed ring/perf outputs bump a counter: Stream.lost
    debug = 0x10 if verbose else 0  # BCC's DEBUG_BPF_REGISTER_STATE: the full verifier log
    from . import trial_compile
    # libbcc's LLVM ends the process on some errors (exit, abort): find out in a child first.
    trial_compile.check_compile_survives(text.encode(), cflags, origin, source)
    with captured_fd2() as log:
        try:
            bpf = BPF(text=text.encode(), cflags=cflags, debug=debug)
            error = None
        except Exception as e:  # BCC raises bare Exception
            bpf, error = None, e
    if error is not None:
        raise bcc_error(error, log[0], source, origin, can_load) from None
    return bpf, log[0]


# Program types the kernel loads only with CAP_PERFMON, or CAP_NET_ADMIN, besides CAP_BPF (bpf_prog_load).
PERFMON_PROG_TYPES = {"kprobe", "tracepoint", "raw_tracepoint", "perf_event", "tracing", "lsm"}
NET_ADMIN_PROG_TYPES = {"sched_cls", "sched_act", "xdp", "lwt_in", "sk_skb", "sk_msg", "flow_dissector",
                        "sock_ops"}
_GRANT = ("run Jupyter as root, or grant the capabilities to the interpreter: "
          "setcap cap_bpf,cap_perfmon,cap_net_admin+ep $(readlink -f $(which python3))")


def privilege_problem(what: str, ptype: str | None, text: str) -> EnvironmentProblem | None:
    """When TEXT (an exception and what went to fd 2) says the kernel refused
    WHAT for lack of privilege: which capability is missing, for what. None
    when the refusal is not about privileges, or this process has CAP_SYS_ADMIN
    (then EPERM is the kernel's policy, not a missing capability)."""
    if not re.search(r"Operation not permitted|Need super-user|Permission denied", text):
        return None
    from . import env
    p = env.privileges()
    if p.has("CAP_SYS_ADMIN"):
        return None
    have = f"this process has {p.describe()}"
    pinned = re.search(r"could not open bpf map: (\w+), error: Operation not permitted", text)
    if not p.has("CAP_BPF"):
        why = f"{what}: loading BPF programs and creating maps needs CAP_BPF (or root)"
    elif ptype in PERFMON_PROG_TYPES and not p.has("CAP_PERFMON"):
        why = f"{what}: {ptype} programs (tracing) need CAP_PERFMON besides CAP_BPF"
    elif ptype in NET_ADMIN_PROG_TYPES and not p.has("CAP_NET_ADMIN"):
        why = f"{what}: {ptype} programs (networking) need CAP_NET_ADMIN besides CAP_BPF"
    elif pinned:
        why = (f"{what}: map {pinned[1]} is shared through a pin, and BCC opens pinned maps by id "
               "(BPF_MAP_GET_FD_BY_ID), which the kernel allows only with CAP_SYS_ADMIN; session prog "
               "arrays (BPF_PROG_ARRAY, slots, tail-call counters) therefore need root")
        return EnvironmentProblem(f"{why}; {have}. To fix: run Jupyter as root (or with CAP_SYS_ADMIN)", text)
    elif ptype is None and not p.has("CAP_PERFMON"):
        why = (f"{what}: the kernel refused it with EPERM; tracing programs, bpf_trace_printk and reads of "
               "kernel memory need CAP_PERFMON besides CAP_BPF")
    else:
        why = (f"{what}: the kernel refused it with EPERM; some helpers and program types are for "
               "CAP_SYS_ADMIN (root) only")
    return EnvironmentProblem(f"{why}; {have}. To fix: {_GRANT}", text)


def bcc_error(error: Exception, stderr: str, source: str, origin: str, can_load: bool = True) -> BpfError:
    """The error a failed BPF(text=...) means, from BCC's exception and fd-2 output."""
    from .errors import AttachError
    text = str(error)
    auto = re.search(r"Failed to load BPF program b?'?(\w+)", text)
    problem = privilege_problem(f"module {origin}" + (f", function {auto[1]}" if auto else ""),
                                auto_attach_type(auto[1]) if auto else None, f"{text}\n{stderr}")
    if problem is not None:
        return problem
    fd_limit = fd_limit_problem(f"module {origin}", f"{text}\n{stderr}")
    if fd_limit is not None:
        return fd_limit
    if "Failed to load BPF program" in text:
        func = re.search(r"program b?'?([\w]+)", text)
        return verifier_error(func[1] if func else "a program", stderr, text.split(": ")[-1], origin, source)
    if "attach" in text.lower():
        return AttachError(f"{text}\n{stderr.strip()}".strip(), stderr)
    if "Need super-user" in text and not can_load:
        return EnvironmentProblem("loading BPF programs needs root or CAP_BPF", stderr)
    return compile_error(stderr, source, origin)
