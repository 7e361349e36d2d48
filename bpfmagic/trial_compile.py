"""A first compile in a forked child for BCC cells that can make libbcc abort.

libbcc's LLVM ends some errors with abort() instead of an error return: an
atomic whose result is used where the BPF target has no fetch form ("Invalid
usage of the XADD return value"), atomics on 8- or 16-bit values. In-process
that kills the notebook's kernel with no message. libbcc 0.26 builds its code
generator with no CPU setting (BPF v1, no ALU32) and offers no way to pick
another, so these cells cannot be made to compile; what can be done is to
find out in a child process, which may die, and report what LLVM said.
Only cells that use atomic builtins pay for the extra compile."""
from __future__ import annotations

import ctypes as ct
import faulthandler
import os
import re
import resource
import signal
import tempfile

from .compiler import strip_comments
from .errors import BpfCompileError
from .kernel_lock import NATIVE_LOCK

_ATOMIC_BUILTIN_RE = re.compile(r"\b__(?:sync|atomic)_\w+\s*\(")

ATOMICS_ADVICE = (
    "libbcc's code generator targets BPF v1, which has no 32-bit atomic that returns the old value "
    "(and no 8/16-bit atomics at all). Use a u64 (or s64) counter: __sync_fetch_and_add on 64 bits "
    "returns the old value correctly; or leave the result unused (lock_xadd(p, 1)); or write the cell "
    "as `%%bpf NAME --core --cflags \"-mcpu=v3\"` (clang, BPF v3 atomics).")


def may_abort(source: str) -> bool:
    """Whether the cell uses an atomic builtin (the constructs that can abort libbcc)."""
    return bool(_ATOMIC_BUILTIN_RE.search(strip_comments(source)))


def compile_in_child(text: bytes, cflags: list[str]) -> tuple[int, str]:
    """Compile TEXT with libbcc in a forked child (programs are not loaded;
    maps the child creates go with it). Returns (status, what the child
    wrote to fd 2): status 0 compiled, 1 failed with an error, or -SIGNAL when
    the child was killed (libbcc aborted)."""
    from bcc.libbcc import lib
    flags = (ct.c_char_p * len(cflags))(*(f.encode() for f in cflags))
    with NATIVE_LOCK, tempfile.TemporaryFile() as log:
        pid = os.fork()
        if pid == 0:  # the child: compile, then leave without running any of the parent's exit code
            status = 1
            try:
                os.dup2(log.fileno(), 2)
                # An abort here is expected: no Python traceback dump (pytest, IPython) and no core file.
                faulthandler.disable()
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                module = lib.bpf_module_create_c_from_string(text, 0, flags, len(cflags), True, None)
                status = 0 if module else 1
            finally:
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        log.seek(0)
        message = log.read().decode(errors="replace")
    if os.WIFSIGNALED(wait_status):
        return -os.WTERMSIG(wait_status), message
    return os.WEXITSTATUS(wait_status), message


def check_compiles_without_abort(text: bytes, cflags: list[str], origin: str, source: str) -> None:
    """Raise BpfCompileError when compiling TEXT (the rewritten SOURCE) kills
    libbcc; return when it does not (a plain compile error is left to the
    real compile to report)."""
    status, message = compile_in_child(text, cflags)
    if status >= 0:
        return
    fatal = [line.strip() for line in message.splitlines() if "LLVM ERROR" in line]
    # LLVM's line counts libbcc's own expanded text: name the cell's lines with atomics instead.
    said = re.sub(r"^LLVM ERROR: (line \d+: )?", "", fatal[-1]) if fatal else f"killed by {signal.Signals(-status).name}"
    code = strip_comments(source).split("\n")
    lines = [i + 1 for i, line in enumerate(code) if _ATOMIC_BUILTIN_RE.search(line)]
    where = ""
    if lines:
        where = f"; atomics at {origin}:" + ", ".join(map(str, lines)) + ":\n" + "\n".join(
            f"    {n:4d} | {source.split(chr(10))[n - 1]}" for n in lines)
    advice = ATOMICS_ADVICE if lines else "change the construct LLVM names."
    raise BpfCompileError(f"libbcc aborts on this cell ({said}){where}\n"
                          f"(compiled in a child process first, so this process lives.) {advice}", message)
