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
    NotFound,
    SlotError,
    UsageProblem,
)
from .experiments import packets  # frames for test runs: `from bpfmagic import packets`
from .session import Module, Program, Session

__all__ = [
    "Session",
    "Module",
    "Program",
    "session",
    "BpfError",
    "BpfCompileError",
    "BpfVerifierError",
    "AttachError",
    "SlotError",
    "EnvironmentProblem",
    "UsageProblem",
    "NotFound",
    "load_ipython_extension",
    "unload_ipython_extension",
    "packets",
]

from .shell import session


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (``%%bpf`` cells edited as C), for
    ``jupyter labextension develop``; a normal install puts it in place itself."""
    return [{"src": "labextension", "dest": "bpfmagic-cells"}]


def load_ipython_extension(ipython) -> None:
    from .magics import register

    register(ipython)


def unload_ipython_extension(ipython) -> None:
    from .magics import unregister
    from .shell import drop

    unregister(ipython)
    drop()
