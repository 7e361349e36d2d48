"""The magics through IPython's testing shell, on the real kernel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pandas as pd
import pytest

import bpfmagic
from bpfmagic import BpfCompileError, BpfVerifierError, Module, SlotError

from ..conftest import kernel_objects, leftovers, needs_root
from ..helpers import run


@needs_root
def test_three_cell_syscall_dispatch_with_named_slots(fresh, capsys):
    ip = fresh
    assert run(ip, "%bpf progarray progs 512 --keys syscalls").success
    res = run(
        ip,
        """\
        %%bpf disp -a dispatch=raw_tracepoint:sys_enter
        BPF_PROG_ARRAY(progs, 512);
        int dispatch(struct bpf_raw_tracepoint_args *ctx) {
            progs.call(ctx, ctx->args[1]);
            return 0;
        }
        """,
    )
    assert res.success, res.error_in_exec
    res = run(
        ip,
        """\
        %%bpf handlers -s progs[getppid]=on_getppid -s progs[getpgid]=on_getpgid
        BPF_ARRAY(seen, u64, 2);
        int on_getppid(struct bpf_raw_tracepoint_args *ctx) { int k = 0; seen.atomic_increment(k); return 0; }
        int on_getpgid(struct bpf_raw_tracepoint_args *ctx) { int k = 1; seen.atomic_increment(k); return 0; }
        """,
    )
    assert res.success, res.error_in_exec
    out = capsys.readouterr().out
    assert "on_getppid (raw_tracepoint: progs[getppid])" in out
    handlers = ip.user_ns["handlers"]
    assert isinstance(handlers, Module) and isinstance(ip.user_ns["disp"], Module)
    for _ in range(25):
        os.getppid()
    os.getpgid(0)
    assert handlers["seen"][0].value >= 25 and handlers["seen"][1].value >= 1
    slots = ip.run_line_magic("bpf", "slots progs").set_index("key")
    assert slots.loc["getppid", "program"] == "handlers.on_getppid"
    assert slots.loc["getppid", "taken"] >= 25
    ls = ip.run_line_magic("bpf", "ls")
    assert set(ls["module"]) == {"disp", "handlers"}
    assert ls.set_index("function").loc["dispatch", "attached"] == "raw_tracepoint:sys_enter"
    # hot swap and unslot through the line magic
    run(ip, "%bpf slot progs[getpgid]=handlers.on_getppid")
    assert ip.run_line_magic("bpf", "slots").set_index("key").loc["getpgid", "program"] == "handlers.on_getppid"
    run(ip, "%bpf unslot progs[getpgid]")
    assert pd.isna(ip.run_line_magic("bpf", "slots").set_index("key").loc["getpgid", "program"])
    run(ip, "%bpf unload handlers")
    assert "handlers" not in ip.user_ns and "handlers" not in bpfmagic.session().modules


@needs_root
def test_compile_error_is_shown_in_the_cell_without_traceback(fresh, capsys):
    res = run(
        fresh,
        """\
        %%bpf broken
        int f(struct xdp_md *ctx) {
            return XDP_PASS
        }
        """,
    )
    assert isinstance(res.error_in_exec, BpfCompileError)
    out = capsys.readouterr()
    shown = out.out + out.err
    assert "BpfCompileError" in shown and "cell:2:" in shown and "   2 |     return XDP_PASS" in shown
    assert "Traceback" not in shown and "site-packages" not in shown and "/virtual/main.c" not in shown


@needs_root
def test_verifier_error_is_shown_in_the_cell(fresh, capsys):
    res = run(
        fresh,
        """\
        %%bpf v -a f=xdp:lo
        BPF_ARRAY(a, u64, 4);
        int f(struct xdp_md *ctx) {
            int k = ctx->data_end - ctx->data;
            u64 *p = a.lookup(&k);
            return *p;
        }
        """,
    )
    assert isinstance(res.error_in_exec, BpfVerifierError)
    shown = "".join(capsys.readouterr())
    assert "invalid mem access 'map_value_or_null'" in shown and "HINT" in shown
    assert "Traceback" not in shown


@needs_root
def test_failed_rerun_says_the_old_version_runs(fresh, capsys):
    good = """\
        %%bpf m -a f=xdp:lo
        int f(struct xdp_md *ctx) { return XDP_PASS; }
        """
    assert run(fresh, good).success
    first = fresh.user_ns["m"]
    res = run(fresh, good.replace("XDP_PASS;", "XDP_PASS"))
    assert isinstance(res.error_in_exec, BpfCompileError)
    shown = " ".join("".join(capsys.readouterr()).split())
    assert "the previous version is still loaded, attached and slotted" in shown
    assert fresh.user_ns["m"] is first and not first.closed
    assert bpfmagic.session().modules["m"] is first


@needs_root
def test_type_mismatch_and_bad_args_in_cells(fresh, capsys):
    run(fresh, "%bpf progarray jt 4 --type xdp")
    res = run(
        fresh,
        """\
        %%bpf r -s jt[0]=f
        int f(struct bpf_raw_tracepoint_args *ctx) { return 0; }
        """,
    )
    assert isinstance(res.error_in_exec, SlotError)
    assert "jt holds xdp programs" in str(res.error_in_exec) and "raw_tracepoint" in str(res.error_in_exec)
    res = run(fresh, "%%bpf r -a nothing\nint f(void *c) { return 0; }\n")
    assert type(res.error_in_exec).__name__ == "UsageError"
    res = run(fresh, "%%bpf ../evil\nint f(struct xdp_md *c) { return 0; }\n")
    assert "bad module name" in str(res.error_in_exec)


@needs_root
def test_doctor_and_reset(fresh):
    report = fresh.run_line_magic("bpf", "doctor")
    assert isinstance(report, pd.DataFrame) and "fix" in report.columns
    assert run(fresh, "%%bpf a\nint f(struct xdp_md *c) { return XDP_PASS; }\n").success
    run(fresh, "%bpf reset")
    assert "a" not in fresh.user_ns and not bpfmagic.session().modules


@needs_root
def test_unload_ext_frees_everything(ip):
    bpfmagic.shell.drop()
    before = kernel_objects()
    assert ip.run_cell("%%bpf u -a f=xdp:lo\nint f(struct xdp_md *c) { return XDP_PASS; }\n").success
    assert kernel_objects()["prog"] - before["prog"]
    ip.run_line_magic("unload_ext", "bpfmagic")
    assert leftovers(before) == {}
    ip.run_line_magic("load_ext", "bpfmagic")  # the module-scoped shell fixture expects it loaded


def test_process_exit_frees_everything():
    """A kernel process that exits (even without unloading) leaves nothing behind."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    before = kernel_objects()
    code = textwrap.dedent("""
        from IPython.testing.globalipapp import start_ipython
        ip = start_ipython()
        ip.run_line_magic("load_ext", "bpfmagic")
        ok = ip.run_cell('''%%bpf p -a f=xdp:lo -s jt[0]=g
        BPF_PROG_ARRAY(jt, 4);
        int f(struct xdp_md *c) { jt.call(c, 0); return XDP_PASS; }
        int g(struct xdp_md *c) { return XDP_PASS; }
        ''').success
        print("LOADED" if ok else "FAILED", flush=True)
    """)
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120)
    assert "LOADED" in out.stdout, out.stdout + out.stderr
    assert leftovers(before) == {}


def test_unprivileged_extension_loads_and_cell_says_what_is_missing():
    """Run as user nobody (a real unprivileged process): the extension loads,
    %%bpf explains what is missing, the process lives on."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    code = textwrap.dedent("""
        from IPython.testing.globalipapp import start_ipython
        import bpfmagic
        print("MODULE:", bpfmagic.__file__)
        ip = start_ipython()
        ip.run_line_magic("load_ext", "bpfmagic")
        res = ip.run_cell("%%bpf m\\nint f(struct xdp_md *c) { return 2; }\\n")
        print("ERROR:", type(res.error_in_exec).__name__, res.error_in_exec)
        print("ALIVE")
    """)
    from ..namespaces import WITHOUT_CAPABILITIES, child_env

    # Root without capabilities, not user nobody: it reaches a clone under a 0700 directory.
    home = tempfile.mkdtemp(prefix="bpfmagic-uncapable-")
    env = child_env(dict(os.environ, HOME=home, XDG_CACHE_HOME=home, IPYTHONDIR=os.path.join(home, ".ipython")))
    try:
        out = subprocess.run(
            [*WITHOUT_CAPABILITIES, sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=home
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert "ALIVE" in out.stdout, out.stdout + out.stderr
    assert f"MODULE: {bpfmagic.__file__}" in out.stdout  # the code under test, not another installed copy
    assert "ERROR: EnvironmentProblem" in out.stdout
    assert "CAP_BPF" in out.stdout and "setcap" in out.stdout


@needs_root
def test_load_line_command_takes_a_file(fresh, tmp_path):
    path = tmp_path / "drop.bpf.c"
    path.write_text("int f(struct xdp_md *ctx) { return XDP_DROP; }\n")
    assert run(fresh, f"%bpf load dropper --file {path}").success
    from bpfmagic.kernel import libbpf

    assert libbpf.test_run(fresh.user_ns["dropper"].programs["f"].fd, data=bytes(64))["retval"] == 1
    res = run(fresh, "%bpf load nofile")
    assert type(res.error_in_exec).__name__ == "UsageError"


@needs_root
def test_bad_cell_arguments_are_usage_errors(fresh, capsys, tmp_path):
    import builtins

    missing = object()
    print_before = fresh.user_ns.get("print", missing)
    for line, words in [('%%bpf e --cflags "-DX=1', "cannot parse"), ("%%bpf print", "builtin"), ("%%bpf twice -a f=xdp:lo -a f=xdp:lo", "twice")]:
        res = run(fresh, line + "\nint f(struct xdp_md *c) { return XDP_PASS; }\n")
        assert res.error_in_exec is not None and words in str(res.error_in_exec), (line, res.error_in_exec)
        assert "Traceback" not in "".join(capsys.readouterr())
    # The refused `%%bpf print` bound nothing: `print` is still the builtin.
    assert fresh.user_ns.get("print", missing) is print_before and fresh.ev("print") is builtins.print
    assert "print" not in bpfmagic.session().modules
    binary = tmp_path / "blob.bpf.c"
    binary.write_bytes(b"\x7fELF\xd0\xff\x00")
    res = run(fresh, f"%bpf blob --file {binary}")
    assert "not a C source file" in str(res.error_in_exec)


@needs_root
def test_line_form_with_file_and_new_slot_names_shown(fresh, capsys, tmp_path):
    path = tmp_path / "e.bpf.c"
    path.write_text("BPF_PROG_ARRAY(jt, 4);\nint e(struct xdp_md *ctx) { jt.call(ctx, SLOT(jt, parsee)); return 2; }\n")
    assert run(fresh, f"%bpf entry --file {path}").success  # IPython's hint for a %%bpf without a body
    out = capsys.readouterr().out
    assert "new slot names: jt[parsee]=0" in out  # a typo in SLOT() would show here
    assert isinstance(fresh.user_ns["entry"], Module)


@needs_root
def test_cflags_with_inner_quotes_reach_the_compiler(fresh):
    # BCC's xdp_drop_count shape: the map type comes in as a C string through -DMAPTYPE="percpu_array".
    res = run(
        fresh,
        """\
        %%bpf dropcount --cflags '-DMAPTYPE="percpu_array"' --cflags "-DVERDICT=XDP_DROP -DKEY=3"
        BPF_TABLE(MAPTYPE, u32, long, dropcnt, 8);
        int count(struct xdp_md *ctx) {
            u32 key = KEY;
            long *value = dropcnt.lookup(&key);
            if (value)
                *value += 1;
            return VERDICT;
        }
        """,
    )
    assert res.success, res.error_in_exec
    assert fresh.run_line_magic("bpf", "run dropcount.count --repeat 5").retval_name == "XDP_DROP"
    counts = fresh.run_line_magic("bpf", "map dropcount.dropcnt --sum").set_index("key")
    assert counts.loc[3].iloc[0] == 5
    assert fresh.run_line_magic("bpf", "map dropcount.dropcnt").shape[1] > 2  # per-CPU: a column per CPU


@needs_root
def test_trace_grep_takes_a_quoted_pattern(fresh):
    marker = f"Hello ping {os.getpid()}"
    res = run(fresh, f'%%bpf hello\nint say(struct xdp_md *ctx) {{ bpf_trace_printk("{marker}\\n"); return XDP_PASS; }}\n')
    assert res.success, res.error_in_exec
    fresh.run_line_magic("bpf", "run hello.say --repeat 3")
    lines = fresh.run_line_magic("bpf", f'trace --grep "{marker}" --seconds 1')
    assert lines["msg"].tolist() == [marker] * 3


CHAIN_CELL = """\
BPF_PROG_ARRAY(jt, 4);
int entry(struct xdp_md *ctx) { jt.call(ctx, 1); return XDP_PASS; }
int stage(struct xdp_md *ctx) { return XDP_DROP; }
"""


@needs_root
def test_no_count_loads_without_counters_and_run_says_when_they_are_timed(fresh):
    assert run(fresh, "%%bpf counted -s jt[1]=stage\n" + CHAIN_CELL).success
    counted = fresh.run_line_magic("bpf", "run counted.entry --repeat 50")
    assert counted.retval_name == "XDP_DROP" and counted.tail_calls["calls"].tolist() == [50]
    assert "note: per-slot tail-call counters are in this chain's timed path (counted)" in counted.summary()
    assert "--no-count" in counted.summary()
    fresh.run_line_magic("bpf", "reset")

    assert run(fresh, "%%bpf bare --no-count -s jt[1]=stage\n" + CHAIN_CELL).success
    bare = fresh.run_line_magic("bpf", "run bare.entry --repeat 50")
    assert bare.retval_name == "XDP_DROP"  # the tail call was taken, and nothing counted it
    # 50 tail calls that no counter saw: unknown, and said so (not a count of 0)
    assert bare.tail_calls.empty and bare.not_counted == {"jt": ["bare"]}
    assert "tail calls not counted in jt (by bare)" in bare.summary()
    assert pd.isna(fresh.run_line_magic("bpf", "slots jt").set_index("index").loc[1, "calls"])
    assert "counters" not in bare.summary()
