"""The IPython side: the ``bpf`` line/cell magic, which finds the command in the registry
and runs it, its ``%config`` (``BpfMagics.max_rows``), and loading and unloading the
extension (completion, the error display, the config IPython keeps)."""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Integer, TraitError, observe, validate

from .. import completion
from .. import shell as shell_session  # the shell's Session (not IPython's shell object)
from ..errors import BpfError
from ..session import Module
from .cell import CELL_TEXT, run_cell
from .commands import CELL, COMMANDS
from .help import commands_help, magic_docstring
from .registry import Notebook, plain_help
from .words import asks_help, option_words, split

MAX_ROWS_TEXT = """\
Streams keep at most ``BpfMagics.max_rows`` rows each (``%config
BpfMagics.max_rows = N``; per stream: ``stream.max_rows = N``)."""


def _documented(func):
    """The magic's docstring (%bpf?, %%bpf?), made from the parsers."""
    func.__doc__ = magic_docstring(COMMANDS, CELL, CELL_TEXT, MAX_ROWS_TEXT)
    return func


@magics_class
class BpfMagics(Magics):
    """The bpfmagic magics; the state lives in shell_session.session()."""

    max_rows = Integer(1_000_000, help="rows each event stream keeps (the oldest are dropped); `%config BpfMagics.max_rows = N`").tag(config=True)

    @validate("max_rows")
    def _check_max_rows(self, proposal):
        value = proposal["value"]
        if not valid_max_rows(value):  # %config must refuse it: a stream cannot keep fewer than one row
            raise TraitError(max_rows_refusal(value))
        return value

    @observe("max_rows")
    def _max_rows_changed(self, change):
        # only when the config changes: streams.max_rows set from Python stays until then
        if shell_session.current() is not None:
            shell_session.current().streams.max_rows = change["new"]

    def _configure_session(self, session) -> None:
        """Run once for each new shell session (shell_session.session())."""
        session.streams.max_rows = self.max_rows

    def __init__(self, shell):
        super().__init__(shell)
        shell_session.hooks.append(self._configure_session)
        self.notebook = Notebook(shell)

    @line_cell_magic
    @_documented
    def bpf(self, line: str, cell: str | None = None):
        # A BpfError propagates: the custom exception handler shows it without a traceback.
        if cell is None:
            return self._line_command(line)
        return run_cell(line, cell, self.notebook)

    def _line_command(self, line: str):
        words = split(line)
        if words and (words[0] == "load" or "--file" in words):  # `%bpf load ...` takes %%bpf's options
            words = option_words(line)
        comment = next((i for i, w in enumerate(words) if w.startswith("#")), None)
        if comment is not None:  # `%bpf slots   # what this shows` reads naturally in a cell
            words = words[:comment]
        if not words:
            raise UsageError("%bpf needs a command: " + ", ".join(COMMANDS) + " (see %bpf?)")
        name, rest = words[0], words[1:]
        if name in ("-h", "--help", "help"):
            return print(commands_help(COMMANDS))
        command = COMMANDS.get(name)
        if command is not None and asks_help(command.parser, rest):  # before parsing: a missing argument is no error here
            return print(plain_help(command.parser))
        if command is None and "--file" in rest:  # `%bpf NAME --file PATH`: IPython's hint for a body-less %%bpf
            command, rest = COMMANDS["load"], words
        if command is None:
            raise UsageError(f"unknown %bpf command {name!r}; commands: {', '.join(COMMANDS)} (see %bpf?)")
        return command.run(command.parser.parse_args(rest), self.notebook)


# ------------------------------------------------------------ registration


def _show_bpf_error(shell, etype, value, tb, tb_offset=None):
    """BpfError: the message in the cell, no Python traceback (it is the
    user's C or arguments that are wrong, not Python code)."""
    stb = [f"\x1b[0;31m{etype.__name__}\x1b[0m: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


_saved_custom_exc = None
_registered_shell = None


def valid_max_rows(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def max_rows_refusal(value) -> str:
    return f"BpfMagics.max_rows must be an integer >= 1 (rows each stream keeps), not {value!r}"


def _drop_refused_config(ipython, keep=None) -> str | None:
    """Take out of the shell's config a BpfMagics.max_rows the magics refuse;
    returns what was taken out ("BpfMagics.max_rows = -5") or None.
    %config stores a value in the shell's config even when BpfMagics rejects
    it; left there, the next %load_ext bpfmagic would fail on it (TraitError)
    and %bpf would be gone. KEEP: the value to put back (the one in force)."""
    config = getattr(ipython, "config", None)
    if config is None or "BpfMagics" not in config or "max_rows" not in config["BpfMagics"]:
        return None
    value = config["BpfMagics"]["max_rows"]
    if valid_max_rows(value):
        return None
    if keep is None:
        del config["BpfMagics"]["max_rows"]
    else:
        config["BpfMagics"]["max_rows"] = keep
    return f"BpfMagics.max_rows = {value!r}"


def _after_cell(result=None) -> None:
    """post_run_cell: a refused %config value does not stay in the shell's config."""
    ipython = _registered_shell
    if ipython is None:
        return
    magics = ipython.magics_manager.registry.get("BpfMagics")
    _drop_refused_config(ipython, keep=magics.max_rows if magics is not None else None)


def register(ipython) -> None:
    global _saved_custom_exc, _registered_shell
    dropped = _drop_refused_config(ipython)
    if dropped:
        import warnings

        warnings.warn_explicit(
            f"bpfmagic: ignored {dropped} from the config (it must be an integer >= 1); streams keep the default",
            UserWarning,
            filename="bpfmagic",
            lineno=0,
        )
    magics = BpfMagics(ipython)
    ipython.register_magics(magics)
    _registered_shell = ipython
    completion.register(ipython, COMMANDS.parsers(), CELL.parser)  # candidates from the same parsers
    if _after_cell not in ipython.events.callbacks["post_run_cell"]:
        ipython.events.register("post_run_cell", _after_cell)
    _saved_custom_exc = (ipython.custom_exceptions, getattr(ipython, "CustomTB", None))
    ipython.set_custom_exc((BpfError,), _show_bpf_error)


def unregister(ipython) -> None:
    global _saved_custom_exc, _registered_shell
    if _after_cell in ipython.events.callbacks["post_run_cell"]:
        ipython.events.unregister("post_run_cell", _after_cell)
    _registered_shell = None
    completion.unregister(ipython)
    if _saved_custom_exc is not None:
        exceptions, handler = _saved_custom_exc
        ipython.custom_exceptions = exceptions
        if handler is not None:
            ipython.CustomTB = handler
        _saved_custom_exc = None
    shell_session.hooks[:] = [h for h in shell_session.hooks if not isinstance(getattr(h, "__self__", None), BpfMagics)]
    magics = ipython.magics_manager.magics
    for kind in ("line", "cell"):
        magics[kind].pop("bpf", None)
    # An unloaded instance would still be configured (and refuse values) by every later %config.
    if hasattr(ipython, "configurables"):
        ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, BpfMagics)]
    ipython.magics_manager.registry.pop("BpfMagics", None)
    # The modules are freed with the session: don't leave dead objects under their names.
    for name, value in list(ipython.user_ns.items()):
        if isinstance(value, Module):
            del ipython.user_ns[name]
