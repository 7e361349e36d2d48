"""The %bpf command table of docs/reference.md, made from the registry: each command's
usage, description and Session (Python API) equivalent. ``python -m
bpfmagic.magics.reference docs/reference.md`` rewrites the table between its two markers;
``--check`` only says whether it is current (tests/unit/test_commands.py runs the check)."""

from __future__ import annotations

import argparse
import sys

from .commands import COMMANDS
from .registry import Registry, synopsis

BEGIN = "<!-- %bpf commands: made from the parsers by `python -m bpfmagic.magics.reference docs/reference.md` -->"
END = "<!-- end of the %bpf commands -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a pipe ends a Markdown table cell, inside backticks too


def table(registry: Registry = COMMANDS) -> str:
    rows = ["| command | does | Python (`s = bpfmagic.session()` or a `Session()`) |", "|---|---|---|"]
    for each in registry.values():
        rows.append(f"| `{_cell(synopsis(each.parser))}` | {_cell(each.description)} | `{_cell(each.python)}` |")
    return "\n".join(rows)


def with_table(text: str, registry: Registry = COMMANDS) -> str:
    """TEXT with the table between its markers made anew."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the reference has no {BEGIN!r} ... {END!r} block")
    return text[: start + len(BEGIN)] + "\n\n" + table(registry) + "\n\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bpfmagic.magics.reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="the reference page (docs/reference.md)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the table is out of date")
    args = parser.parse_args(argv)
    with open(args.path) as f:
        text = f.read()
    made = with_table(text)
    if args.check:
        if made != text:
            print(f"{args.path}: the %bpf command table is out of date; run python -m bpfmagic.magics.reference {args.path}")
        return int(made != text)
    if made != text:
        with open(args.path, "w") as f:
            f.write(made)
    return 0


if __name__ == "__main__":
    sys.exit(main())
