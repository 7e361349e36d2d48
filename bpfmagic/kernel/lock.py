"""One process-wide lock for what is shared by every thread of the process
and not thread-safe: libbcc's compiler (LLVM/clang state; two BPF(text=...)
at once crash the process), fd 2 (redirected to capture what libbcc, clang
and the verifier print) and libbpf's print callback (one per process).

Two Sessions used from two threads take turns here; everything else they do
runs in parallel. Reentrant, because a BCC compile holds it and captures fd
2 inside."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading

NATIVE_LOCK = threading.RLock()


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
