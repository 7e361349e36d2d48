"""The %bpf commands as data: each is declared once, beside the function that runs it, with
IPython's ``magic_arguments`` decorators (as Cython's ``%%cython`` declares its options), and
everything else is read from that declaration: the dispatch, ``%bpf COMMAND --help``,
``%bpf help``, ``%bpf?``, Tab completion (completion.py) and the command table of
docs/reference.md (reference.py).

A command module writes::

    @command("slots", python="s.slots(ARRAY, all_keys=False)")
    @argument("array", nargs="?", completes="array")
    @argument("--all", action="store_true", help="every index, empty ones too")
    def slots(args, notebook):
        \"\"\"slots of every array (or ARRAY)\"\"\"   # the command's description
        return notebook.session.slots(args.array, all_keys=args.all)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from IPython.core import magic_arguments
from IPython.core.magic_arguments import ArgDecorator, MagicArgumentParser

from .. import shell as shell_session  # the shell's Session (not IPython's shell object)


class argument(magic_arguments.argument):  # noqa: N801 (a decorator, named like IPython's)
    """IPython's ``argument``, and what its value names for Tab: COMPLETES is one of
    completion.py's value kinds ("module", "array", "program", "path", ...), kept on the
    parser's action as ``action.completes``."""

    def __init__(self, *args, completes: str | None = None, **kwds):
        super().__init__(*args, **kwds)
        self.completes = completes

    def add_to_parser(self, parser, group):
        action = (group if group is not None else parser).add_argument(*self.args, **self.kwds)
        action.completes = self.completes


class one_of(ArgDecorator):  # noqa: N801
    """Options of which at most one may be given (argparse's mutually exclusive group,
    which IPython's decorators do not offer)."""

    def __init__(self, *options: argument):
        self.options = options

    def add_to_parser(self, parser, group):
        exclusive = parser.add_mutually_exclusive_group()
        for option in self.options:
            option.add_to_parser(exclusive, None)


class with_arguments(ArgDecorator):  # noqa: N801
    """Several ``argument``s declared once and given to more than one command (the cell's
    options, which ``%bpf load`` takes too)."""

    def __init__(self, *arguments: argument):
        self.arguments = arguments

    def add_to_parser(self, parser, group):
        for each in self.arguments:
            each.add_to_parser(parser, group)


def plain_help(parser: argparse.ArgumentParser) -> str:
    """`%bpf COMMAND --help`: the parser's help (its usage line plain: every parser here
    formats with argparse's own formatter, not IPython's reStructuredText one)."""
    return parser.format_help().rstrip()


def synopsis(parser: argparse.ArgumentParser) -> str:
    """The usage on one line, the positionals first as a person types them (``%bpf unload
    NAME``, ``[-a FUNC=TARGET]...``, ``[--on | --off]``): for %bpf? and the reference."""
    exclusive = {id(action): group for group in parser._mutually_exclusive_groups for action in group._group_actions}
    actions = [a for a in parser._actions if not a.option_strings] + [a for a in parser._actions if a.option_strings]
    words, shown = [parser.prog], set()
    for action in actions:
        group = exclusive.get(id(action))
        if group is not None:
            if id(group) not in shown:
                shown.add(id(group))
                words.append("[" + " | ".join(_option_usage(a) for a in group._group_actions) + "]")
        elif not action.option_strings:
            words.append(f"[{_value_usage(action)}]" if action.nargs == "?" else _value_usage(action))
        else:
            words.append(f"[{_option_usage(action)}]" + ("..." if isinstance(action, argparse._AppendAction) else ""))
    return " ".join(words)


def _value_usage(action: argparse.Action) -> str:
    if action.metavar:
        return action.metavar
    if action.choices:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper()


def _option_usage(action: argparse.Action) -> str:
    option = action.option_strings[0]
    return option if action.nargs == 0 else f"{option} {_value_usage(action)}"


@dataclass(frozen=True)
class Command:
    """One %bpf command: its parser, the function that runs it (ARGS, the Notebook) and
    the Session call that does the same from Python (for the reference)."""

    name: str
    parser: MagicArgumentParser
    run: Callable[[argparse.Namespace, object], object]
    python: str

    @property
    def description(self) -> str:
        return self.parser.description or ""


def command(name: str, python: str, prog: str | None = None) -> Callable[[Callable], Command]:
    """Make the decorated function a Command NAME. Its docstring is the description (the
    help's, `%bpf help`'s and the reference's); PYTHON is its Session equivalent; PROG the
    usage's name (default ``%bpf NAME``)."""

    def make(run: Callable) -> Command:
        description = " ".join((run.__doc__ or "").split())
        magic_arguments.kwds(description=description, formatter_class=argparse.HelpFormatter)(run)
        magic_arguments.magic_arguments(name=prog or f"%bpf {name}")(run)
        return Command(name, run.parser, run, python)

    return make


class Registry(dict):
    """Command name -> Command, in the order `%bpf help` lists them."""

    def __init__(self, commands: Iterable[Command]):
        super().__init__()
        for each in commands:
            if each.name in self:
                raise ValueError(f"%bpf {each.name} is declared twice")
            self[each.name] = each

    def parsers(self) -> dict[str, MagicArgumentParser]:
        return {name: each.parser for name, each in self.items()}


class Notebook:
    """What a command reaches: the shell's Session (made on first use) and the notebook's
    namespace, where a loaded module takes its name."""

    def __init__(self, shell):
        self._shell = shell  # IPython's shell: its namespace is read when a command runs

    @property
    def namespace(self) -> dict:
        return self._shell.user_ns

    @property
    def session(self):
        return shell_session.session()
