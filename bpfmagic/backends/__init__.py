"""The two backends a cell can be compiled and loaded with, behind one
interface: BCC (bcc.py: BCC's C dialect, libbcc's clang, programs loaded
one by one on demand) and libbpf (``--core``, libbpf.py: libbpf-style C,
clang against vmlinux.h, every program loaded with the object).

A loaded object answers the same questions whichever backend made it:

=========================  ===============================================
``kind``                   "bcc" or "core"
``functions()``            function names the object holds (loaded or not)
``tables()``               the cell's maps (bpfmagic's own hidden)
``table(name)``            a map as the backend exposes it (BCC table, CoreMap)
``map_fd(name)``           the map's fd
``preloaded()``            {function: (program type, fd)} loaded with the object
``convention_attached()``  functions the backend attached by itself (BCC names)
``load_program(f, type)``  (fd, log) of function F loaded as TYPE
``eager(contexts)``        functions to load at once (their context names a type)
``attach_sections(...)``   attachments SEC() names (libbpf)
``attach_handle``          what attach.attach needs (the BCC object, or None)
``close()``                free everything the object holds
=========================  ===============================================

``Module`` and ``Session`` use only this interface."""
from __future__ import annotations


def for_cell(core: bool):
    """The backend module a cell is compiled with: ``compile_cell``, ``check_tools``,
    ``convention_targets``."""
    if core:
        from . import libbpf
        return libbpf
    from . import bcc
    return bcc
