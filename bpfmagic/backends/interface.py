"""What the backends and their callers hand each other, in a module of its own so that
bcc.py and libbpf.py import it without importing the package that picks between them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class MapHandle:
    """One map of a loaded object, as much as a reader of it needs: its fd and
    shape, and its key and value types: BCC's ctypes Key/Leaf, or (libbpf) the
    BTF type ids of the object's btf()."""

    name: str
    fd: int
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    key_ctype: object = None
    leaf_ctype: object = None
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0


@dataclass
class LoadContext:
    """What a backend needs of the session to compile and load one cell (load.py makes it):
    the session's arrays, the cell's slot names resolved, and the session's instruments."""

    arrays: dict  # name -> the session's ProgArray (pin, size, counter pin, fd)
    slot_index: Callable[[str, str], int]  # (array, key) -> index; a new name is kept only if the load commits
    resolved_slots: list  # (ProgArray, index, function) the cell's own slots
    site_base: int | None  # the first of this load's per-call-site counters; None: not counted
    sites: object  # the session's call-site kernel/counters.CounterTable when site_base is set, else None
    path_maps: object  # experiments.paths.PathMaps when the cell records paths, else None
    cursor: tuple[int, str] | None  # (fd, pin) of chains' per-CPU position, when a chain needs it
    can_load: bool  # the process may load programs (else BCC only compiles)
    name_pin_dir: Callable[[], str]  # the session's directory for LIBBPF_PIN_BY_NAME maps, made on call
    bound: dict  # function -> its fentry/fexit/freplace target (load.bound_targets)
