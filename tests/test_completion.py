"""Tab completion of %bpf and %%bpf lines, asked of IPython's own completer the way
JupyterLab, the terminal and VS Code ask it, with a real session behind it."""

from __future__ import annotations

import os
import textwrap

import pytest
from IPython.core.completer import provisionalcompleter

from bpfmagic import completion

from .conftest import needs_root

CELL = textwrap.dedent(
    """\
    %%bpf demo -s jt[parse_ip]=parse_ip
    BPF_PROG_ARRAY(jt, 8);
    struct rec { u64 ts; u32 pid; };
    BPF_RINGBUF_OUTPUT(events, 8);
    BPF_HASH(counts, u32, u64);
    int entry(struct xdp_md *ctx) { jt.call(ctx, SLOT(jt, parse_ip)); return XDP_PASS; }
    int parse_ip(struct xdp_md *ctx) {
        struct rec r = {.ts = bpf_ktime_get_ns()};
        events.ringbuf_output(&r, sizeof(r), 0);
        u32 k = 0;
        counts.increment(k);
        return XDP_DROP;
    }
    """
)


def offered(ip, text: str, cursor: int | None = None) -> list[str]:
    """What IPython's completer offers with the cursor at the end of TEXT (or at CURSOR)."""
    with provisionalcompleter():
        return [c.text for c in ip.Completer.completions(text, len(text) if cursor is None else cursor)]


def replaced(ip, text: str) -> set[str]:
    """The text each completion replaces (what the front end overwrites)."""
    with provisionalcompleter():
        return {text[c.start : c.end] for c in ip.Completer.completions(text, len(text))}


@pytest.fixture
def demo(fresh):
    """A session with a BCC cell (an XDP entry, a named slot, a ring buffer, a hash) and a syscall-keyed array."""
    assert fresh.run_cell(CELL).success
    assert fresh.run_cell("%bpf progarray progs 512 --keys syscalls").success
    return fresh


def test_subcommands_and_their_options_from_the_parsers(ip):
    assert offered(ip, "%bpf sl") == ["slot", "slots"]
    assert offered(ip, "%bpf s") == ["slot", "slots", "stats", "streams"]
    assert offered(ip, "%bpf watch events --") == ["--by", "--interval", "--rows", "--sort", "--top"]
    assert offered(ip, "%bpf run x.y --r") == ["--repeat"]
    assert offered(ip, "%bpf bench ") == ["calls", "limits", "tailcalls"]  # the parser's choices
    assert offered(ip, "%bpf bench tailcalls --index ") == ["const", "var"]
    assert offered(ip, "%bpf stats --o") == ["--off", "--on"]
    assert offered(ip, "%%bpf m --co") == ["--core"]
    assert offered(ip, "%%bpf m -a f=raw_tracepoint:sys_enter --n") == ["--no-count"]
    # an option given once is not offered again; repeatable ones are
    assert offered(ip, "%bpf trace --grep x --") == ["--lines", "--older", "--seconds"]
    assert "--attach" in offered(ip, "%%bpf m --attach f=xdp:lo --")


def test_every_subcommand_is_offered(ip):
    from bpfmagic.magics import _line_parsers

    assert offered(ip, "%bpf ") == sorted(_line_parsers())


def test_attach_kinds_tracepoints_and_interfaces(ip):
    assert offered(ip, "%%bpf m -a f=tr") == ["tracepoint:"]
    assert offered(ip, "%%bpf m -a f=raw") == ["raw_tracepoint:"]
    assert offered(ip, "%%bpf m -a f=k") == ["kprobe:", "kretprobe:"]
    assert offered(ip, "%%bpf m --attach=f=x") == []  # --attach=VALUE: not read as FUNC=TARGET yet
    assert offered(ip, "%%bpf m -a f=raw_tracepoint:sys_e") == ["raw_tracepoint:sys_enter", "raw_tracepoint:sys_exit"]
    assert offered(ip, "%%bpf m -a f=tracepoint:raw_sys") == ["tracepoint:raw_syscalls:"]
    assert offered(ip, "%%bpf m -a f=tracepoint:raw_syscalls:") == ["tracepoint:raw_syscalls:sys_enter", "tracepoint:raw_syscalls:sys_exit"]
    sched = sorted(e.name for e in os.scandir("/sys/kernel/tracing/events/sched") if e.is_dir())
    assert offered(ip, "%%bpf m -a f=tracepoint:sched:") == [f"tracepoint:sched:{e}" for e in sched]
    # per-syscall events are not raw tracepoints: raw_tracepoint cannot attach to them
    assert offered(ip, "%%bpf m -a f=raw_tracepoint:sys_enter_o") == []
    assert offered(ip, "%%bpf m -a f=xdp:l") == ["xdp:lo"]
    assert offered(ip, "%%bpf m -a f=tc:lo:") == ["tc:lo:egress", "tc:lo:ingress"]
    assert replaced(ip, "%%bpf m -a f=tracepoint:sch") == {"tracepoint:sch"}  # the target, not `f=`


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


@needs_root
def test_programs_arrays_and_slots_of_the_session(demo):
    ip = demo
    assert offered(ip, "%bpf run de") == ["demo.entry", "demo.parse_ip"]
    assert not any(t.startswith("%") for t in offered(ip, "%bpf run de"))
    assert offered(ip, "%bpf run zz") == []
    assert offered(ip, "%bpf dump demo.e") == ["demo.entry"]
    assert offered(ip, "%bpf slots ") == ["jt", "progs"]
    assert offered(ip, "%bpf graph j") == ["jt"]
    assert offered(ip, "%bpf slot ") == ["jt[", "progs["]
    assert offered(ip, "%bpf slot jt[") == ["jt[parse_ip]="]  # names, and filled slots without one
    assert offered(ip, "%bpf slot jt[parse_ip]=demo.") == ["demo.entry", "demo.parse_ip"]
    assert replaced(ip, "%bpf slot jt[parse_ip]=demo.") == {"demo."}
    assert offered(ip, "%bpf unslot progs[writ") == ["progs[write]", "progs[writev]"]  # syscall names
    assert offered(ip, "%bpf unslot jt[") == ["jt[parse_ip]"]
    assert ip.run_cell("%bpf slot jt[5]=demo.entry").success
    assert offered(ip, "%bpf unslot jt[") == ["jt[5]", "jt[parse_ip]"]  # a filled slot without a name: its index
    assert offered(ip, "%bpf unslot jt[1") == ["jt[1]"]  # a digit: every index it begins
    assert offered(ip, "%bpf unload ") == ["demo", "jt", "progs"]
    assert offered(ip, "%bpf globals ") == ["demo"]
    assert offered(ip, "%%bpf ") == ["demo"]  # re-running a cell
    assert offered(ip, "%%bpf demo2 -a f=fentry:demo.p") == ["fentry:demo.parse_ip"]


@needs_root
def test_streams_and_maps_by_the_names_they_are_read_by(demo):
    ip = demo
    assert offered(ip, "%bpf df ") == ["demo.events", "events"]
    assert offered(ip, "%bpf map c") == ["counts"]
    assert offered(ip, "%bpf map ") == ["counts", "demo.counts", "demo.events", "demo.jt", "events", "jt", "progs"]
    assert offered(ip, "%bpf watch ev") == ["events"]


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
        "#define STAGE(X) SEC(\"xdp\") int stage_##X(struct xdp_md *ctx) { return XDP_PASS; }\n"
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
