"""Every %bpf command, in the order `%bpf help` lists them: the one list the dispatch, the
help, Tab completion and the reference read."""

from __future__ import annotations

from . import arrays, cell, chains, modules, runs, tables
from .registry import Registry

COMMANDS = Registry([*modules.COMMANDS, *cell.COMMANDS, *arrays.COMMANDS, *runs.COMMANDS, *chains.COMMANDS, *tables.COMMANDS])
CELL = cell.cell  # %%bpf: the cell magic's options (`%bpf load` takes them too)
