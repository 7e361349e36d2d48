"""Tab completion for ``%bpf`` and ``%%bpf`` lines through IPython's completer
(matcher API v2), so every front end that asks the kernel (JupyterLab, the
terminal, VS Code) gets the same candidates: subcommands, their options and what
each value names (read from the magics' parsers: an argument declared with
``completes=KIND`` keeps KIND on its action), ``MODULE.FUNC``, arrays and ``ARRAY[KEY]``,
streams and maps, attach target kinds, tracepoints (tracefs) and interfaces.

It only reads: the shell's Session if there is one (completion never creates
one), tracefs and the interface list."""

from __future__ import annotations

import argparse
import functools
import os
import re
import socket
from dataclasses import dataclass

from IPython.core.completer import SimpleCompletion, context_matcher

from . import shell as shell_session
from .kernel.attach import TARGET_KINDS
from .kernel.env import TRACEFS

LINE_MAGIC = re.compile(r"^\s*(?:[A-Za-z_]\w*\s*=\s*)?%bpf\s+")  # `df = %bpf slots` too
CELL_MAGIC = re.compile(r"^%%bpf\s+")

# What a value can name: the kinds the magics' arguments declare (``completes=``), each
# served by BpfCompleter._value (a path is left to IPython's file matcher).
KINDS = frozenset(
    {"module", "array", "module_or_array", "program", "stream", "map", "stream_or_map", "chain"}
    | {"attach", "cell_slot", "slot_assignment", "slot_key", "path"}
)

# Raw tracepoints are the kernel's tracepoints by event name, but the per-syscall
# events (syscalls:sys_enter_*) are made by ftrace, not tracepoints: raw_tracepoint
# cannot attach to them (it serves raw_syscalls' sys_enter / sys_exit).
NOT_RAW_TRACEPOINTS = {"syscalls"}


@dataclass
class Candidates:
    """What to offer: ``texts`` replace ``fragment``, the end of the text before the cursor."""

    fragment: str
    texts: list[str]
    type: str  # "path": a file name, which IPython's file matcher offers


class BpfCompleter:
    """Candidates for a %bpf / %%bpf line; ``matcher`` is what IPython calls, ``guard``
    keeps IPython's own matchers out of those lines."""

    def __init__(self, line_parsers: dict[str, argparse.ArgumentParser], cell_parser: argparse.ArgumentParser):
        self.line_parsers = line_parsers
        self.cell_parser = cell_parser
        self._last: tuple[tuple[str, int, int], Candidates | None] | None = None

    # -- IPython's side
    # Runs before IPython's own matchers (all of priority 0): it reads the line afresh, and
    # the guards after it in the same request use what it read.
    @context_matcher(identifier="bpfmagic", priority=100)
    def matcher(self, context) -> dict:
        found = self.for_context(context, fresh=True)
        if found is None or found.type == "path":
            return {"completions": []}
        # suppress: a %bpf argument is never a magic (%debug), a Python name or a file
        return {
            "completions": [SimpleCompletion(text, type=found.type) for text in found.texts],
            "matched_fragment": found.fragment,
            "suppress": True,
            "ordered": True,
        }

    def for_context(self, context, fresh: bool = False) -> Candidates | None:
        """Candidates at the cursor, or None where this is no %bpf line. Remembered for
        the rest of the request (the guards ask too); FRESH: a new request."""
        key = (context.full_text, context.cursor_line, context.cursor_position)
        if fresh or self._last is None or self._last[0] != key:
            self._last = (key, self.candidates(context.full_text, context.cursor_line, context.text_until_cursor))
        return self._last[1]

    # -- the line
    def candidates(self, full_text: str, cursor_line: int, before: str) -> Candidates | None:
        """BEFORE: the cursor's line up to the cursor."""
        cell = cursor_line == 0 and CELL_MAGIC.match(before)
        line = None if cell else LINE_MAGIC.match(before)
        if not cell and not line:
            return None
        words = before[(cell or line).end() :].split()
        fragment = "" if before[-1].isspace() else words.pop()
        if cell:
            self._cell_functions = _cell_functions(full_text.partition("\n")[2])
            return self._arguments(self.cell_parser, words, fragment)
        if not words:
            return Candidates(fragment, _starting(fragment, self.line_parsers), "command")
        command, rest = words[0], words[1:]
        parser = self.line_parsers.get(command)
        if parser is None:
            return Candidates(fragment, [], "command")
        return self._arguments(parser, rest, fragment)

    def _arguments(self, parser, words: list[str], fragment: str) -> Candidates | None:
        action, used = _argument_at(parser, words)
        if action is None or (fragment.startswith("-") and not _takes_value(words, parser)):
            options = [
                opt
                for a in parser._actions
                if a.option_strings and (a not in used or isinstance(a, argparse._AppendAction))
                for opt in a.option_strings
                if opt not in ("-h", "--help")
            ]
            return Candidates(fragment, _starting(fragment, options), "option")
        if action.choices:
            return Candidates(fragment, _starting(fragment, [str(c) for c in action.choices]), "value")
        kind = getattr(action, "completes", None)  # what the magics declared the value names
        if kind == "path":
            return Candidates(fragment, [], "path")
        return self._value(kind, fragment)

    # -- values
    def _value(self, kind: str | None, fragment: str) -> Candidates:
        session = shell_session.current()
        functions = getattr(self, "_cell_functions", [])
        if kind == "attach":
            func, eq, _target = fragment.partition("=")
            if not eq:  # -a FUNC=: the functions the cell below defines
                return Candidates(fragment, _starting(fragment, [f"{f}=" for f in functions]), "function")
            return _attach(session, fragment)
        if kind == "cell_slot":  # ARRAY[KEY]=FUNC: the FUNC is the cell's, not loaded yet
            left, eq, right = fragment.partition("=")
            if eq:
                return Candidates(right, _starting(right, functions), "function")
            return Candidates(fragment, _slot_keys(session, fragment, suffix="="), "slot")
        if kind == "slot_assignment":
            left, eq, right = fragment.partition("=")
            if eq:
                return Candidates(right, _starting(right, _programs(session)), "program")
            return Candidates(fragment, _slot_keys(session, fragment, suffix="="), "slot")
        if kind == "slot_key":
            return Candidates(fragment, _slot_keys(session, fragment), "slot")
        names = {
            "module": lambda s: list(s.modules),
            "array": lambda s: list(s.arrays),
            "module_or_array": lambda s: [*s.modules, *(a for a in s.arrays if a not in s.modules)],
            "program": _programs,
            "stream": _streams,
            "map": _maps,
            "stream_or_map": lambda s: sorted({*_streams(s), *_maps(s)}),
            "chain": lambda s: list(s.chains),
        }.get(kind)
        if names is None or session is None:
            return Candidates(fragment, [], kind or "value")
        return Candidates(fragment, _starting(fragment, names(session)), kind)

    # -- guards
    def guard(self, matcher, files: bool = False):
        """MATCHER (one of IPython's own) with nothing to say on a line this completer
        serves. IPython drops competing matchers only when one has completions
        (IPCompleter._complete), so where %bpf has no candidate (`%bpf run de` with no
        such program) %debug and file names would be offered in its place. FILES: the
        file matcher, which still serves a path (--file)."""

        @functools.wraps(matcher)  # keeps the matcher's identifier, priority and API version
        def guarded(context):
            found = self.for_context(context)
            if found is not None and not (files and found.type == "path"):
                return {"completions": []}
            return matcher(context)

        return guarded


GUARDED = ("magic_matcher", "_jedi_matcher", "python_matcher", "python_func_kw_matcher", "dict_key_matcher", "file_matcher")


def _argument_at(parser, words: list[str]) -> tuple[argparse.Action | None, set]:
    """The argument the next word is for, after WORDS: an option's value, the next
    positional, or None (only options are left); and the actions already used."""
    by_option = {opt: a for a in parser._actions for opt in a.option_strings}
    positionals = [a for a in parser._actions if not a.option_strings]
    used: set = set()
    count = 0
    i = 0
    while i < len(words):
        word = words[i]
        action = by_option.get(word.split("=", 1)[0]) if word.startswith("-") else None
        if action is not None:
            used.add(action)
            if action.nargs != 0 and "=" not in word:
                if i + 1 == len(words):
                    return action, used  # the cursor is at its value
                i += 1
        elif not word.startswith("-"):
            count += 1
        i += 1
    return (positionals[count] if count < len(positionals) else None), used


def _takes_value(words: list[str], parser) -> bool:
    """The last word is an option whose value comes next (`--cflags -DX` takes -DX)."""
    if not words:
        return False
    action = next((a for a in parser._actions if words[-1] in a.option_strings), None)
    return action is not None and action.nargs != 0


def _starting(fragment: str, names) -> list[str]:
    return sorted(n for n in dict.fromkeys(names) if n.startswith(fragment))


def _cell_functions(body: str) -> list[str]:
    """The functions a cell's C defines (its syntax tree; macro-written ones included when
    the tree names them), for -a FUNC= and -s ARRAY[KEY]=FUNC on its %%bpf line."""
    if not body.strip():
        return []
    from .c import analyse

    try:
        return sorted(f for f in analyse(body).functions if f.isidentifier())
    except Exception:  # half-typed C: nothing to offer rather than an error in the completer
        return []


def _programs(session) -> list[str]:
    if session is None:
        return []
    return [f"{m.name}.{f}" for m in session.modules.values() for f in m.functions]


def _streams(session) -> list[str]:
    """A table's own name where it is the only one of that name, else MODULE.TABLE (as %bpf df takes them)."""
    qualified = session.streams.names()
    tables = [q.split(".", 1)[1] for q in qualified]
    return [*qualified, *(t for t in tables if tables.count(t) == 1)]


def _maps(session) -> list[str]:
    """As %bpf map takes them: MODULE.TABLE, TABLE where only one module has it, and the session's arrays."""
    qualified = [f"{m.name}.{t}" for m in session.modules.values() for t in m.tables]
    tables = [q.split(".", 1)[1] for q in qualified]
    return [*qualified, *(t for t in tables if tables.count(t) == 1), *session.arrays]


def _slot_keys(session, fragment: str, suffix: str = "") -> list[str]:
    """``ARRAY[`` while the array is typed; then ``ARRAY[KEY]``: every key name (syscall
    names for a --keys syscalls array), the index of every filled slot that has no name,
    and, once the key starts with a digit, every index it begins."""
    if session is None:
        return []
    name, bracket, key = fragment.partition("[")
    if not bracket:
        return _starting(fragment, [f"{a}[" for a in session.arrays])
    array = session.arrays.get(name)
    if array is None:
        return []
    if array.keys == "syscalls":
        from .progarray import syscall_numbers

        names = [n for n, i in syscall_numbers().items() if i < array.size]
    else:
        names = list(array.names)
    indexes = [str(i) for i in sorted(array.entries) if array.key_name(i) is None]
    if key[:1].isdigit():
        indexes = [str(i) for i in range(array.size)]
    return [f"{name}[{k}]{suffix}" for k in _starting(key, [*names, *indexes])]


def _attach(session, fragment: str) -> Candidates:
    """-a FUNC=TARGET: kinds after `=`, then what each kind attaches to."""
    func, eq, target = fragment.partition("=")
    if not eq:
        return Candidates(fragment, [], "attach")
    kind, colon, rest = target.partition(":")
    if not colon:
        return Candidates(target, _starting(target, [f"{k}:" for k in TARGET_KINDS]), "attach")
    if kind == "tracepoint":
        category, colon2, _event = rest.partition(":")
        events = tracepoints()
        if not colon2:
            return Candidates(target, _starting(target, [f"tracepoint:{c}:" for c in events]), "tracepoint")
        return Candidates(target, _starting(target, [f"tracepoint:{category}:{e}" for e in events.get(category, [])]), "tracepoint")
    if kind == "raw_tracepoint":
        names = {e for c, evs in tracepoints().items() if c not in NOT_RAW_TRACEPOINTS for e in evs}
        return Candidates(target, _starting(target, [f"raw_tracepoint:{e}" for e in names]), "tracepoint")
    if kind in ("xdp", "socket"):
        return Candidates(target, _starting(target, [f"{kind}:{i}" for i in interfaces()]), "interface")
    if kind == "tc":
        iface, colon2, _direction = rest.partition(":")
        if colon2:
            return Candidates(target, _starting(target, [f"tc:{iface}:ingress", f"tc:{iface}:egress"]), "interface")
        return Candidates(target, _starting(target, [f"tc:{i}" for i in interfaces()]), "interface")
    if kind in ("fentry", "fexit", "freplace"):
        return Candidates(target, _starting(target, [f"{kind}:{p}" for p in _programs(session)]), "program")
    if kind == "perf":
        return Candidates(target, _starting(target, ["perf:cpu-clock:"]), "attach")
    return Candidates(target, [], "attach")


@functools.lru_cache(maxsize=1)
def tracepoints(events_dir: str = os.path.join(TRACEFS, "events")) -> dict[str, list[str]]:
    """Category -> event names, read from tracefs on the first completion that needs them
    (a few thousand directories) and kept: the kernel's tracepoints do not change while
    it runs, but for modules loaded later."""
    out: dict[str, list[str]] = {}
    try:
        categories = [e for e in os.scandir(events_dir) if e.is_dir()]
    except OSError:
        return out
    for category in categories:
        try:
            out[category.name] = sorted(e.name for e in os.scandir(category.path) if e.is_dir())
        except OSError:
            continue
    return out


def interfaces() -> list[str]:
    """The network interfaces now (not cached: veths come and go)."""
    try:
        return [name for _index, name in socket.if_nameindex()]
    except OSError:
        return []


# ------------------------------------------------------------ registration

_installed: dict[int, tuple[BpfCompleter, list[str]]] = {}


def register(ipython, line_parsers, cell_parser) -> None:
    completer = getattr(ipython, "Completer", None)
    if completer is None:
        return
    unregister(ipython)
    bpf = BpfCompleter(line_parsers, cell_parser)
    completer.custom_matchers.append(bpf.matcher)
    guarded = []
    for name in GUARDED:
        if hasattr(completer, name):
            # an instance attribute over the class's method: unregister deletes it
            setattr(completer, name, bpf.guard(getattr(completer, name), files=name == "file_matcher"))
            guarded.append(name)
    _installed[id(completer)] = (bpf, guarded)


def unregister(ipython) -> None:
    completer = getattr(ipython, "Completer", None)
    if completer is None or id(completer) not in _installed:
        return
    bpf, guarded = _installed.pop(id(completer))
    completer.custom_matchers[:] = [m for m in completer.custom_matchers if getattr(m, "__self__", None) is not bpf]
    for name in guarded:
        completer.__dict__.pop(name, None)  # the class's own method again
