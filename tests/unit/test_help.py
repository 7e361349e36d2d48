"""Every %bpf subcommand, and the cell magic, answer --help with their own
help rather than a complaint about missing arguments. Needs no root."""

from __future__ import annotations


def commands(ip):
    """The line commands' parsers of the magics registered in IP."""
    from bpfmagic.magics import COMMANDS

    assert "BpfMagics" in ip.magics_manager.registry
    return COMMANDS.parsers()


def test_every_subcommand_answers_help(ip, capsys):
    parsers = commands(ip)
    assert {"watch", "run", "slots", "progarray", "trace", "df", "bench"} <= set(parsers)
    for name, parser in parsers.items():
        for flag in ("--help", "-h"):
            res = ip.run_cell(f"%bpf {name} {flag}")
            out, err = capsys.readouterr()
            assert res.error_in_exec is None, (name, flag, res.error_in_exec)
            assert "the following arguments are required" not in out + err
            assert f"usage: %bpf {name}" in out, (name, out)  # the usage line of that command
            if parser.description:
                assert " ".join(parser.description.split())[:40] in " ".join(out.split()), name


def test_watch_help_names_its_options(ip, capsys):
    ip.run_cell("%bpf watch --help")
    out = capsys.readouterr().out
    for option in ("table", "--by", "--rows", "--interval"):
        assert option in out


def test_help_after_other_arguments_and_not_as_a_value(ip, capsys):
    ip.run_cell("%bpf run some.prog --repeat 5 --help")
    assert "%bpf run" in capsys.readouterr().out
    # `-h` as the value of --grep is a pattern, not a request for help: the command runs (and
    # fails for its own reason, here: nothing is loaded / no privileges), it does not print help
    from bpfmagic.magics.words import asks_help

    assert not asks_help(commands(ip)["trace"], ["--grep", "-h"])


def test_command_list_and_cell_magic_help(ip, capsys):
    for line in ("--help", "help", "-h"):
        assert ip.run_cell(f"%bpf {line}").error_in_exec is None
        out = capsys.readouterr().out
        assert "watch" in out and "progarray" in out and "--help" in out
    res = ip.run_cell("%%bpf --help\nint x;\n")
    out = capsys.readouterr().out
    assert res.error_in_exec is None and "usage: %%bpf" in out and "--attach" in out and "--slot" in out


def test_magic_docstring_matches_the_parsers():
    """`%bpf?` lists every option each line command takes (load refers to the cell magic's)."""
    from bpfmagic import magics

    doc = magics.BpfMagics.bpf.__doc__
    for name, parser in magics.COMMANDS.parsers().items():
        lines = " ".join(ln.strip() for ln in doc.splitlines() if ln.strip().startswith(f"%bpf {name}"))
        assert lines, f"%bpf? has no line for {name}"
        if name == "load":
            continue
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--"):
                    assert option in lines, f"%bpf? does not show {name} {option}"
    cell = magics.CELL.parser.format_help() + doc.split("Line magic")[0]
    # kprobes are offered only with the caveat that the kernel may lack them
    assert "kprobe:SYM only where the kernel" in " ".join(doc.split())
    assert "only where the kernel has kprobes" in " ".join(cell.split())
