"""Tab completion of %bpf and %%bpf lines, asked of IPython's own completer the way
JupyterLab, the terminal and VS Code ask it, with a real session behind it."""

from __future__ import annotations

from IPython.core.completer import provisionalcompleter

from bpfmagic import completion

from ..helpers import offered


def test_subcommands_and_their_options_from_the_parsers(ip):
    assert offered(ip, "%bpf sl") == ["slot", "slots"]
    assert offered(ip, "%bpf s") == ["slot", "slots", "stats", "streams"]
    assert offered(ip, "%bpf watch events --") == ["--by", "--interval", "--rows", "--sort", "--top"]
    assert offered(ip, "%bpf run x.y --r") == ["--repeat"]
    assert offered(ip, "%bpf bench ") == ["calls", "instruments", "limits", "tailcalls"]  # the parser's choices
    assert offered(ip, "%bpf bench tailcalls --index ") == ["const", "var"]
    assert offered(ip, "%bpf stats --o") == ["--off", "--on"]
    assert offered(ip, "%%bpf m --co") == ["--core"]
    assert offered(ip, "%%bpf m -a f=raw_tracepoint:sys_enter --n") == ["--no-count"]
    # an option given once is not offered again; repeatable ones are
    assert offered(ip, "%bpf trace --grep x --") == ["--lines", "--older", "--seconds"]
    assert "--attach" in offered(ip, "%%bpf m --attach f=xdp:lo --")


def test_every_subcommand_is_offered(ip):
    from bpfmagic.magics import COMMANDS

    assert offered(ip, "%bpf ") == sorted(COMMANDS.parsers())


def test_tracefs_is_read_once():
    completion.tracepoints.cache_clear()
    completion.tracepoints()
    completion.tracepoints()
    assert completion.tracepoints.cache_info().misses == 1


def test_a_bpf_line_never_offers_magics_or_python_names(ip):
    assert offered(ip, "%bpf run de") == []  # no module: nothing, and not %debug
    assert offered(ip, "%bpf slots pr") == []  # not %prun
    assert offered(ip, "%bpf run --repeat ") == []
    assert "%debug" in offered(ip, "de")  # elsewhere IPython answers as before
    assert "ls" in offered(ip, "df = %bpf l")


def test_a_path_argument_is_left_to_the_file_matcher(ip, tmp_path):
    (tmp_path / "chain.yaml").write_text("stages: []\n")
    path = str(tmp_path / "cha")
    assert offered(ip, f"%bpf chain fw --file {path}") == [str(tmp_path / "chain.yaml")]
    assert offered(ip, f"%bpf load m --file {path}") == [str(tmp_path / "chain.yaml")]


def test_unloading_the_extension_removes_completion(ip):
    matchers = list(ip.Completer.custom_matchers)
    ip.run_line_magic("unload_ext", "bpfmagic")
    try:
        assert offered(ip, "%bpf sl") == []
        assert "%debug" in offered(ip, "%bpf run de")  # IPython's own matchers, unguarded again
        assert [k for k in vars(ip.Completer) if k.endswith("_matcher")] == []  # no guard left on IPython's matchers
        assert len(ip.Completer.custom_matchers) == len(matchers) - 1
    finally:
        ip.run_line_magic("load_ext", "bpfmagic")
    assert offered(ip, "%bpf sl") == ["slot", "slots"]
    ip.run_line_magic("reload_ext", "bpfmagic")  # registered once, however often it is loaded
    assert len(ip.Completer.custom_matchers) == len(matchers)


def test_functions_of_the_cell_below_complete_on_its_line(ip):
    """-a FUNC= and -s ARRAY[KEY]=FUNC name functions of the cell being written, before it is loaded."""
    body = (
        '\n#include "vmlinux.h"\nSEC("xdp") int xdp_entry(struct xdp_md *ctx) { return XDP_PASS; }\n'
        "static __noinline int helper_sub(int x) { return x; }\n"
        '#define STAGE(X) SEC("xdp") int stage_##X(struct xdp_md *ctx) { return XDP_PASS; }\n'
    )
    line = "%%bpf m --core -a x"
    assert offered(ip, line + body, cursor=len(line)) == ["xdp_entry="]
    line = "%%bpf m --core -a "
    assert offered(ip, line + body, cursor=len(line)) == ["helper_sub=", "xdp_entry="]
    line = "%%bpf m --core -s jt[1]=he"
    assert offered(ip, line + body, cursor=len(line)) == ["helper_sub"]
    with provisionalcompleter():  # the function's name replaces what was typed after `=`, not the slot
        [c] = ip.Completer.completions(line + body, len(line))
    assert (line + body)[c.start : c.end] == "he" and c.text == "helper_sub"
    assert offered(ip, "%%bpf m --core -a f") == []  # no cell below: nothing to name
