"""A first compile in a forked child, so that no BCC cell can end the process.

libbcc's LLVM ends some errors by ending the process instead of returning an
error: code-generation diagnostics exit(1) (the 512-byte stack limit, floating
point, unsupported builtins), and some checks abort() (an atomic whose result
is used where BPF v1 has no fetch form: "Invalid usage of the XADD return
value"). In a notebook that is "kernel died" with no message. libbcc 0.26
builds its code generator with no CPU setting (BPF v1, no ALU32) and offers no
way to choose another, and its LLVM context is out of reach, so no handler can
be installed either. What works is compiling once in a child process, which
may die, and reporting what LLVM said.

Each distinct (text, cflags) is tried once per process: re-running an
unchanged cell costs nothing more; a new cell costs one more compile."""

from __future__ import annotations

import ctypes as ct
import faulthandler
import hashlib
import os
import re
import resource
import signal
import tempfile

from ..errors import BpfCompileError
from ..kernel.lock import NATIVE_LOCK

COMPILE_FAILED = 2  # the child's exit status when libbcc returned an error the normal way
_passed: set[bytes] = set()  # digests of (text, cflags) that compiled in a child

ATOMICS_ADVICE = (
    "libbcc's code generator targets BPF v1, which has no 32-bit atomic that returns the old value "
    "(and no 8/16-bit atomics at all). Use a u64 (or s64) counter: __sync_fetch_and_add on 64 bits "
    "returns the old value correctly; or leave the result unused (lock_xadd(p, 1)); or write the cell "
    'as `%%bpf NAME --core --cflags "-mcpu=v3"` (clang, BPF v3 atomics).'
)
ADVICE = {
    "XADD return value": ATOMICS_ADVICE,
    "atomic": ATOMICS_ADVICE,
    "stack limit": "Keep big buffers out of the stack: a BPF_PERCPU_ARRAY(scratch, struct big, 1) lookup gives a per-CPU buffer of any size.",
    "__float": "BPF has no floating point: use integers (e.g. fixed point, values x 1000).",
    "__double": "BPF has no floating point: use integers (e.g. fixed point, values x 1000).",
}


def compile_in_child(text: bytes, cflags: list[str]) -> tuple[int | None, str]:
    """Compile TEXT with libbcc in a forked child (programs are not loaded;
    maps the child creates go with it). Returns (status, what the child
    wrote to fd 2): 0 compiled, COMPILE_FAILED for an error libbcc returned,
    another exit status when LLVM called exit(), -SIGNAL when it aborted,
    None when no child could be made (fork refused, e.g. for memory)."""
    from bcc.libbcc import lib

    flags = (ct.c_char_p * len(cflags))(*(f.encode() for f in cflags))
    with NATIVE_LOCK, tempfile.TemporaryFile() as log:
        try:
            pid = os.fork()
        except OSError as e:
            return None, f"no trial compile: fork failed ({e.strerror})"
        if pid == 0:  # the child: compile, then leave without running any of the parent's exit code
            status = COMPILE_FAILED
            try:
                os.dup2(log.fileno(), 2)
                # A death here is expected: no Python traceback dump (pytest, IPython) and no core file.
                faulthandler.disable()
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                module = lib.bpf_module_create_c_from_string(text, 0, flags, len(cflags), True, None)
                status = 0 if module else COMPILE_FAILED
            finally:
                os._exit(status)
        try:
            _, wait_status = os.waitpid(pid, 0)
        except BaseException:  # interrupted (Ctrl-C on a compile that hangs): the child goes too
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        log.seek(0)
        message = log.read().decode(errors="replace")
    if os.WIFSIGNALED(wait_status):
        return -os.WTERMSIG(wait_status), message
    return os.WEXITSTATUS(wait_status), message


def check_compile_survives(text: bytes, flags: list[str], origin: str, source: str, key=None) -> None:
    """Raise BpfCompileError when compiling TEXT (the instrumented SOURCE) with
    FLAGS would end the process; return when it would not (a plain compile
    error is left to the real compile, which reports it the normal way).
    KEY: what identifies the compile when FLAGS name temporary files (their
    contents, not their paths); default TEXT and FLAGS."""
    parts = [text.decode(errors="replace"), *(key if key is not None else flags)]
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    if digest in _passed:
        return
    status, message = compile_in_child(text, flags)
    if status == 0:
        _passed.add(digest)
    if status in (0, COMPILE_FAILED, None):  # None: no child to try in; compile as before rather than refuse
        return
    raise BpfCompileError(fatal_message(status, message, origin, source), message)


def fatal_message(status: int, message: str, origin: str, source: str) -> str:
    """What LLVM said before it ended the child, with what in the cell is known to cause it."""
    said = [_without_location(line) for line in message.splitlines() if line.startswith(("error:", "LLVM ERROR:")) or "fatal error" in line]
    if not said:
        how = f"killed by {signal.Signals(-status).name}" if status < 0 else f"exit status {status}"
        said = [f"libbcc ended without a message ({how})"]
    try:
        from ..c.hazards import codegen_hazards

        hazards = codegen_hazards(source)
    except Exception:  # the message must not fail over the explanation
        hazards = []
    advice = next((text for key, text in ADVICE.items() if any(key in s for s in said)), "")
    return (
        f"{origin}: libbcc cannot compile this cell, and would have ended the Python process over it "
        f"(it was compiled in a child process first):\n  "
        + "\n  ".join(said)
        + (f"\nin the cell: {'; '.join(hazards)}" if hazards else "")
        + (f"\n{advice}" if advice else "")
    )


def _without_location(line: str) -> str:
    """An LLVM line without libbcc's internal file and line ("/virtual/main.c:13:18:")
    and LLVM's function signature, which only name its own expanded text."""
    line = re.sub(r"^(error|LLVM ERROR):\s*(/virtual/main\.c:\d+:\d+:\s*|line \d+:\s*)?", "", line)
    return re.sub(r"in function (\w+) [^:]*\):", r"in function \1:", line).strip()
