"""Prog-array sizes the text alone cannot give (a macro, a conditional, a
-D flag): the cell is run through clang's preprocessor with the
declarations turned into plain C whose size the syntax tree then reads.
Only done when a size is not a literal: the common cell pays nothing."""

from __future__ import annotations

import os
import shutil
import subprocess

from .analysis import _parser, _text, analyse, constant_value

# Declarations rewritten by macros into forms whose sizes are plain expressions.
_MARKERS = """#define BPF_PROG_ARRAY(_n, _s) int __bm_size_##_n = (_s);
#define BPF_TABLE(_t, _k, _v, _n, _s) int __bm_size_##_n = (_s);
#define __uint(_name, _val) int (*_name)[_val]
#define SEC(_s)
"""


def blank_includes(source: str, keep_local: bool) -> str:
    """The cell with its system includes (and vmlinux.h) blanked, lines kept:
    what they declare is not needed to evaluate a size, and vmlinux.h is 3 MB."""
    cell = analyse(source)
    data = bytearray(source.encode())
    lines = source.split("\n")
    for inc in cell.includes:
        if inc.system or inc.path == "vmlinux.h" or not keep_local:
            text = lines[inc.line - 1]
            start = sum(len(line) + 1 for line in lines[: inc.line - 1])
            data[start : start + len(text.encode())] = b" " * len(text.encode())
    return data.decode(errors="replace")


def preprocessed_sizes(source: str, cflags: list[str], include_dirs=()) -> dict[str, int]:
    """name -> size of each prog array, as the preprocessor resolves it."""
    clang = shutil.which("clang")
    if clang is None:
        return {}
    import tempfile

    # A local header that includes vmlinux.h itself (L3AF's sizes header) finds an empty one
    # first: what it defines for sizes does not need the 3 MB of kernel types.
    with tempfile.TemporaryDirectory(prefix="bpfmagic-sizes-") as stub:
        open(os.path.join(stub, "vmlinux.h"), "w").close()
        for keep_local in (True, False):
            text = _MARKERS + "#line 1\n" + blank_includes(source, keep_local)
            dirs = [stub, *(os.path.abspath(d) for d in include_dirs)]
            cmd = [clang, "-E", "-P", "-target", "bpf", *(f"-I{d}" for d in dirs), *cflags, "-x", "c", "-"]
            res = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=30)
            if res.returncode == 0:
                return _sizes_in(res.stdout)
    return {}


def _sizes_in(expanded: str) -> dict[str, int]:
    root = _parser().parse(expanded.encode()).root_node
    out: dict[str, int] = {}
    for node in root.named_children:
        if node.type != "declaration":
            continue
        for d in node.children_by_field_name("declarator"):
            if d.type == "init_declarator":
                name_node = d.child_by_field_name("declarator")
                name = _text(name_node) if name_node is not None else ""
                if name.startswith("__bm_size_"):
                    value = constant_value(d.child_by_field_name("value"))
                    if value is not None:
                        out[name[len("__bm_size_") :]] = value
        # libbpf form: struct { int (*type)[BPF_MAP_TYPE_PROG_ARRAY]; int (*max_entries)[N]; ... } name;
        struct = node.child_by_field_name("type")
        names = [_text(x) for x in node.children_by_field_name("declarator")]
        if struct is None or struct.type != "struct_specifier" or not names:
            continue
        body = struct.child_by_field_name("body")
        if body is None or b"PROG_ARRAY" not in body.text:
            continue
        for field_decl in body.named_children:
            declarator = field_decl.child_by_field_name("declarator")
            if declarator is not None and declarator.type == "array_declarator" and b"max_entries" in declarator.text:
                value = constant_value(declarator.child_by_field_name("size"))
                if value is not None:
                    out[names[0].strip()] = value
    return out
