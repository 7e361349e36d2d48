"""Exceptions of bpfmagic. Each carries a message meant for the notebook cell:
what went wrong and what to do. The full compiler or verifier output stays on
the exception (``.log``) because it can be megabytes. What Python code may
want to branch on is beside the text, as fields: ``array``, ``key``,
``program`` (MODULE.FUNC), ``errno`` (the kernel's) and ``hint`` (what to do),
each None where the error has none."""

from __future__ import annotations


class BpfError(Exception):
    """Base of every error bpfmagic reports in a cell without a Python traceback."""

    def __init__(self, message: str, log: str = "", *, array=None, key=None, program=None, errno=None, hint=None):
        super().__init__(message)
        self.message = message
        self.log = log
        self.array, self.key, self.program, self.errno, self.hint = array, key, program, errno, hint

    def __str__(self) -> str:
        return self.message


class BpfCompileError(BpfError):
    """The C did not compile: clang's messages, mapped to the cell's line numbers."""


class BpfVerifierError(BpfError):
    """The kernel refused a program: the tail of the verifier log and BCC's hint."""


class AttachError(BpfError):
    """A program could not be attached to its target."""


class SlotError(BpfError):
    """A prog-array slot request is wrong: unknown array or key, type mismatch, ..."""


class EnvironmentProblem(BpfError):
    """The machine lacks something (privileges, headers, mounts): says how to fix it."""


class UsageProblem(BpfError):
    """A name or argument given to bpfmagic is malformed."""


class ValueTypeError(UsageProblem, TypeError):
    """A value does not fit the C type of the variable or field it is written to
    (a TypeError to Python code, a clear message in a cell)."""


class NotFound(UsageProblem, KeyError):
    """A name bpfmagic looked up is not there (a module, table, stream, chain or variable):
    a clear message in a cell, a KeyError to Python code; ``kind``, ``name`` and ``known``
    (the names there are) beside the text."""

    def __init__(self, message: str, kind: str = "", name: str = "", known: tuple[str, ...] = ()):
        super().__init__(message)
        self.kind, self.name, self.known = kind, name, tuple(known)
