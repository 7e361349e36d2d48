"""IPython magics: ``%%bpf`` and ``%bpf``. They only parse arguments and display results;
every kernel object belongs to the Session.

One module per command group, each holding its commands' options (declared beside the
function, IPython's ``magic_arguments``), the call into the Session and what is printed:
cell.py (``%%bpf``, ``%bpf load``), modules.py, arrays.py, runs.py, chains.py, tables.py.
commands.py lists them (registry.py: what a command is); help.py makes ``%bpf help`` and
``%bpf?`` from the parsers, reference.py the command table of docs/reference.md;
display.py the text and figures shown; words.py splits a line; magic.py is IPython's side."""

from __future__ import annotations

from .commands import CELL, COMMANDS
from .magic import BpfMagics, register, unregister

__all__ = ["BpfMagics", "COMMANDS", "CELL", "register", "unregister"]
