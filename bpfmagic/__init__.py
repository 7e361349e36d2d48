"""bpfmagic: eBPF tail-call experiments in Jupyter.

``%load_ext bpfmagic`` registers ``%%bpf`` (compile, load, attach, slot a C
cell) and ``%bpf`` (list, slots, stats, run, unload, ...). Everything loaded
belongs to a :class:`Session`; ``bpfmagic.session()`` is the shell's.
"""
from __future__ import annotations

from .errors import (
    AttachError,
    BpfCompileError,
    BpfError,
    BpfVerifierError,
    EnvironmentProblem,
    SlotError,
    UsageProblem,
)
from .session import Module, Program, Session

__all__ = ["Session", "Module", "Program", "session", "BpfError", "BpfCompileError",
           "BpfVerifierError", "AttachError", "SlotError", "EnvironmentProblem", "UsageProblem",
           "load_ipython_extension", "unload_ipython_extension"]

_session: Session | None = None
_session_hooks: list = []  # run with each new shell session: the magics apply their %config once


def session() -> Session:
    """The session of the running shell (created on first use)."""
    global _session
    if _session is None or _session.closed:
        _session = Session()
        for hook in list(_session_hooks):
            hook(_session)
    return _session


def _drop_session() -> None:
    global _session
    if _session is not None:
        _session.close()
        _session = None


def load_ipython_extension(ipython) -> None:
    from .magics import register
    register(ipython)


def unload_ipython_extension(ipython) -> None:
    from .magics import unregister
    unregister(ipython)
    _drop_session()
