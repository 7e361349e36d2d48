"""The verifier's statistics of every BCC load: libbcc's ``bcc_func_load`` is
wrapped (per thread, while a load collects) so that each load asks for log
level BPF_LOG_STATS (4) into a small buffer; experiments/verifier.py parses
what was collected."""

from __future__ import annotations

import contextlib
import ctypes as ct
import threading

BPF_LOG_STATS = 4

_local = threading.local()
_installed = False
_install_lock = threading.Lock()


def _install() -> None:
    global _installed
    with _install_lock:
        if _installed:
            return
        from bcc.libbcc import lib

        original = lib.bcc_func_load

        def bcc_func_load(module, prog_type, name, start, size, license, kern_version, log_level, log_buf, log_buf_size, dev_name, attach_type):
            logs = getattr(_local, "logs", None)
            if logs is None or log_buf is not None:
                return original(module, prog_type, name, start, size, license, kern_version, log_level, log_buf, log_buf_size, dev_name, attach_type)
            buf = ct.create_string_buffer(1 << 16)
            fd = original(module, prog_type, name, start, size, license, kern_version, BPF_LOG_STATS, buf, len(buf), dev_name, attach_type)
            if fd >= 0:
                key = name.decode() if isinstance(name, bytes) else str(name)
                logs[key] = buf.value.decode(errors="replace")
                if not log_level:
                    return fd
                import os

                os.close(fd)  # -v: load again as BCC asked, so its full log is printed
            # A failure: BCC's own load (and its retry with a log) gives the error as usual.
            return original(module, prog_type, name, start, size, license, kern_version, log_level, log_buf, log_buf_size, dev_name, attach_type)

        lib.bcc_func_load = bcc_func_load
        _installed = True


@contextlib.contextmanager
def collect_bcc():
    """Within the block, BCC loads on this thread record the verifier's
    statistics: yields a dict function name -> log."""
    _install()
    previous = getattr(_local, "logs", None)
    logs: dict[str, str] = {}
    _local.logs = logs
    try:
        yield logs
    finally:
        _local.logs = previous
