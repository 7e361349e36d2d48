"""Reliability under threads, floods, special files and bad input: each test
is a fault that once crashed, hung or misled, run on the real kernel."""

from __future__ import annotations

import os

import pytest

from ..programs import XDP_PASS_C


def test_refused_config_value_does_not_break_reloading_the_extension(caplog):
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "bpfmagic")
    try:
        ip.run_cell("%config BpfMagics.max_rows = -5")
        assert "must be an integer >= 1" in caplog.text  # %config logs the refusal
        assert ip.config["BpfMagics"].get("max_rows") != -5  # not kept in the shell's config
        ip.run_line_magic("unload_ext", "bpfmagic")
        ip.run_line_magic("load_ext", "bpfmagic")
        assert ip.find_magic("bpf") is not None
        assert ip.run_cell("%config BpfMagics.max_rows = 500").success
        assert ip.magics_manager.registry["BpfMagics"].max_rows == 500
        # a refused value put in the config some other way does not stop %load_ext either
        ip.run_line_magic("unload_ext", "bpfmagic")
        ip.config.BpfMagics.max_rows = 0
        with pytest.warns(UserWarning, match=r"ignored BpfMagics.max_rows = 0"):
            ip.run_line_magic("load_ext", "bpfmagic")
        assert ip.find_magic("bpf") is not None
        assert ip.magics_manager.registry["BpfMagics"].max_rows == 1_000_000
    finally:
        ip.run_line_magic("unload_ext", "bpfmagic")
        ip.config.BpfMagics.pop("max_rows", None)


def test_interrupting_a_hung_trial_compile_ends_its_child(monkeypatch):
    """Ctrl-C while libbcc hangs in the trial child (simulated: the child's
    compile never returns) raises in the caller and leaves no child behind."""
    import signal
    import threading

    from bcc.libbcc import lib

    from bpfmagic.backends import trial_compile

    forked: list[int] = []
    real_fork = os.fork

    def recording_fork():
        pid = real_fork()
        forked.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", recording_fork)
    monkeypatch.setattr(lib, "bpf_module_create_c_from_string", lambda *args: threading.Event().wait())

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(KeyboardInterrupt):
            trial_compile.compile_in_child(XDP_PASS_C.encode(), [])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    [child] = forked
    with pytest.raises(ChildProcessError):  # already reaped: it was killed and waited for
        os.waitpid(child, os.WNOHANG)
