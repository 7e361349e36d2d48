"""The help texts, all made from the commands' parsers: `%bpf help` (the list), `%bpf?` and
`%%bpf?` (the magic's docstring). `%bpf COMMAND --help` is the parser's own."""

from __future__ import annotations

import argparse
import copy
import functools
import textwrap

from .registry import Command, Registry, synopsis

WIDTH = 100  # the docstring's width: the same whatever terminal imports the package


def commands_help(registry: Registry) -> str:
    """`%bpf help`: every command with its description."""
    width = max(map(len, registry))
    lines = ["%bpf COMMAND [...]; `%bpf COMMAND --help` for one command, `%%bpf?` for the cell magic:", ""]
    lines += [f"  {name:<{width}}  {each.description}" for name, each in registry.items()]
    return "\n".join(lines)


def options_help(parser: argparse.ArgumentParser) -> str:
    """The parser's help without its usage line (the synopsis says it), wrapped at WIDTH."""
    fixed = copy.copy(parser)  # shares the arguments; only the formatter and the usage differ
    fixed.formatter_class = functools.partial(argparse.HelpFormatter, width=WIDTH)
    fixed.usage = argparse.SUPPRESS
    return fixed.format_help().strip()


def command_lines(each: Command) -> str:
    """A command's usage on one line (every option on it), its description under it."""
    description = textwrap.fill(each.description, WIDTH - 8, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False)
    return f"{synopsis(each.parser)}\n{description}"


def magic_docstring(registry: Registry, cell: Command, cell_text: str, epilogue: str) -> str:
    """%bpf? and %%bpf?: the cell magic's help and CELL_TEXT, then every line command."""
    lines = "\n".join(command_lines(each) for each in registry.values())
    return "\n".join(
        [
            "eBPF tail-call experiments with BCC.",
            "",
            "Cell magic::",
            "",
            "    " + synopsis(cell.parser),
            "",
            textwrap.indent(options_help(cell.parser), "    "),
            "",
            cell_text,
            "",
            "Line magic (`%bpf COMMAND --help` for one command)::",
            "",
            textwrap.indent(lines, "    "),
            "",
            epilogue,
        ]
    )
