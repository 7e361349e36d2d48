"""The words of a %bpf / %%bpf line, as a shell splits them, and the X=Y pairs of its options."""

from __future__ import annotations

import shlex

from IPython.core.error import UsageError

from ..c.source_files import split_cflags


def split(text: str, what: str = "the arguments") -> list[str]:
    """The words as a shell splits them (quotes group and go: `--grep "Hello ping"` is the
    pattern Hello ping); an unclosed quote is a usage error, not a traceback."""
    try:
        return shlex.split(text)
    except ValueError as e:
        raise UsageError(f"cannot parse {what}: {e} ({text!r})") from None


def option_words(line: str) -> list[str]:
    """The words of a %%bpf / %bpf load line, shell-quoted. ``--cflags X`` is
    joined into ``--cflags=X`` so that a value starting with '-' (every
    compiler flag) is taken as the value, not as an option of its own."""
    words = split(line, "the line")
    out: list[str] = []
    i = 0
    while i < len(words):
        if words[i] == "--cflags" and i + 1 < len(words):
            out.append(f"--cflags={words[i + 1]}")
            i += 2
            continue
        out.append(words[i])
        i += 1
    return out


def cflags(values: list[str]) -> list[str]:
    """Every --cflags value split into its flags, in order (their inner quotes kept: see split_cflags)."""
    return [flag for value in values for flag in split_cflags(value)]


def pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    """FUNC=TARGET, ARRAY[KEY]=FUNC, VAR=VALUE: each item split at its first '='."""
    out = []
    for item in items:
        left, eq, right = item.partition("=")
        if not eq or not left.strip() or not right.strip():
            raise UsageError(f"{what}: expected X=Y, got {item!r}")
        out.append((left.strip(), right.strip()))
    return out


def asks_help(parser, words: list[str]) -> bool:
    """-h or --help among WORDS as an option of its own: not after `--`, not
    the value of an option that takes one (`%bpf trace --grep -h`)."""
    takes_value = {opt for action in parser._actions for opt in action.option_strings if action.nargs != 0}
    for i, w in enumerate(words):
        if w == "--":
            return False
        if w in ("-h", "--help") and not (i and words[i - 1] in takes_value):
            return True
    return False
