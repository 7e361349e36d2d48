"""The two backends a cell can be compiled and loaded with, behind one
interface: BCC (bcc.py: BCC's C dialect, libbcc's clang, programs loaded
one by one on demand) and libbpf (``--core``, libbpf.py: libbpf-style C,
clang against vmlinux.h, every program loaded with the object).

A loaded object answers the same questions whichever backend made it:

=============================================  ===============================================
``kind``                                       "bcc" or "core"
``functions()``                                function names the object holds (loaded or not)
``tables()``                                   the cell's maps (bpfmagic's own hidden)
``table(name)``                                a map as the backend exposes it (BCC table, CoreMap)
``map_fd(name)``                               the map's fd
``preloaded()``                                {function: (program type, fd, verifier stats)}
                                               loaded with the object
``convention_attached()``                      functions the backend attached by itself (BCC names)
``load_program(f, type, qualname)``            (fd, log, verifier stats) of function F loaded as TYPE
``left_unloaded(function, qualname)``          why the object holds F but did not load it (libbpf:
                                               SEC("?...")), or None; BCC: None
``eager(contexts, loaded)``                    [(function, type)] to load at once: their context
                                               names a type and they are not in LOADED yet
``attach_sections(module, attached, slotted)`` attachments SEC() names, but those in ATTACHED
                                               (by -a); libbpf only, BCC: none
``close()``                                    free everything the object holds
``map_handle(name)``                           a MapHandle of any map of the object (hidden ones too)
``btf()``                                      the object's BTF (kernel.btf.Btf), or None (BCC)
``event_fields(table)``                        libbcc's "name#ctype" fields of the record BCC inferred
                                               for an event table ([] none); None where the backend
                                               infers none (libbpf: the struct the cell writes, laid
                                               out by btf())
``perf_refusal(table)``                        why a perf event array is not streamed, or None
``open_perf_buffer(...)``                      (table, on_event, on_lost, page_cnt): a perf buffer
                                               with fds(), consume(), close()
``loss_counter(table)``                        (fd, slot, slots) of the per-CPU counter of records
                                               the event table lost, or None when not counted
``global_sections()``                          {"bss" / "data" / "rodata" / "data.NAME": map name}
``global_variables()``                         {name: (map name, kernel.btf.Variable)}, None when
                                               the backend has no globals (BCC)
``pins``                                       {path: made by this load} of the maps it pinned by
                                               name (LIBBPF_PIN_BY_NAME; BCC: {}, its pinned tables
                                               name their own paths)
``notes``                                      lines the cell shows besides its summary
``warnings``                                   what the cell warns of before any data is shown
                                               (KernelOffsetsWarning: BCC's kernel struct reads at
                                               another kernel's offsets; libbpf: none, CO-RE relocates)
``cell_lines``                                 whether the object's BTF line info numbers the
                                               cell's own lines (BCC compiles lines in front of it)
``cell_line(line)``                            the cell's line of a line number in the object's
                                               BTF line info (BCC: a tracepoint function's first
                                               line is numbered far away: c/instrument.REMAP_BASE)
=============================================  ===============================================

``Module`` and ``Session``, and the events, maps, globals and experiments
beside them, use only this interface (one exception: ``Module.bpf`` hands
out BCC's own object, ``BccObject.bpf``). tests/unit/test_architecture.py checks
that both objects have every name of the table. What a backend is handed for one
load is a ``LoadContext``, what it hands out of a map a ``MapHandle`` (both in
interface.py, which bcc.py and libbpf.py import: this package imports them only
when ``for_cell`` picks one)."""

from __future__ import annotations

from .interface import LoadContext, MapHandle

__all__ = ["LoadContext", "MapHandle", "for_cell"]


def for_cell(core: bool):
    """The backend module a cell is compiled with: ``read_source``, ``compile_cell``
    (``compile_cell(ctx, req, syntax)``, ctx a LoadContext),
    ``check_tools``, ``convention_targets``."""
    if core:
        from . import libbpf

        return libbpf
    from . import bcc

    return bcc
