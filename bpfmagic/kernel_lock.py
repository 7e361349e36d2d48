"""One process-wide lock for what is shared by every thread of the process
and not thread-safe: libbcc's compiler (LLVM/clang state; two BPF(text=...)
at once crash the process), fd 2 (redirected to capture what libbcc, clang
and the verifier print) and libbpf's print callback (one per process).

Two Sessions used from two threads take turns here; everything else they do
runs in parallel. Reentrant, because a BCC compile holds it and captures fd
2 inside."""
from __future__ import annotations

import threading

NATIVE_LOCK = threading.RLock()
