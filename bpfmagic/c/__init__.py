"""The C front end: a cell's C read on a syntax tree (tree-sitter-c), and the
text each backend compiles, instrumented through the preprocessor.

tree-sitter rather than libclang: it parses a cell in about a millisecond
without its headers (vmlinux.h is 3 MB), is error-tolerant (BCC's macros and
libbpf's SEC() are not valid C to a parser that has not seen their
definitions), and ships as a wheel; the compiler itself (clang, in BCC or
for --core) stays the authority on what the code means."""

from .analysis import ArrayDecl, CellSyntax, Function, SlotRef, TailCall, analyse
from .instrument import bcc_text, core_text

__all__ = ["ArrayDecl", "CellSyntax", "Function", "SlotRef", "TailCall", "analyse", "bcc_text", "core_text"]
