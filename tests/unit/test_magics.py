"""The magics through IPython's testing shell, on the real kernel."""

from __future__ import annotations

import pandas as pd

import bpfmagic

from ..helpers import run


def test_help_is_usable(ip):
    doc = ip.find_magic("bpf").__doc__
    for text in ("%%bpf NAME", "-a FUNC=TARGET", "-s ARRAY[KEY]=FUNC", "%bpf slots", "%bpf unload NAME", "%bpf progarray", "raw_tracepoint:EVENT"):
        assert text in doc


def test_unknown_command_is_a_usage_error(fresh, capsys):
    res = run(fresh, "%bpf frobnicate")
    assert type(res.error_in_exec).__name__ == "UsageError"
    assert "unknown %bpf command 'frobnicate'" in capsys.readouterr().err + str(res.error_in_exec)


def test_line_magic_ignores_a_trailing_comment(fresh):
    ls = fresh.run_line_magic("bpf", "ls          # modules, programs and tables")
    assert isinstance(ls, pd.DataFrame) and list(ls.columns)[:2] == ["module", "function"]


def test_module_names_cannot_clobber_the_namespace(fresh):
    res = run(fresh, "%%bpf get_ipython\nint f(struct xdp_md *c) { return XDP_PASS; }\n")
    assert type(res.error_in_exec).__name__ == "UsageError" and "already a" in str(res.error_in_exec)
    assert callable(fresh.user_ns["get_ipython"])
    assert "get_ipython" not in bpfmagic.session().modules
