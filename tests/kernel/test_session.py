"""The Session on a real kernel: loading, attaching every target form this
kernel serves, session-wide prog arrays with named slots, tail-call chains
across modules, errors, re-runs and lifecycle."""

from __future__ import annotations

import os
import signal
import socket
import time

import pandas as pd
import pytest

from bpfmagic import AttachError, BpfCompileError, BpfVerifierError, Session, SlotError, UsageProblem
from bpfmagic.kernel import libbpf
from bpfmagic.progarray import syscall_numbers

from ..conftest import kernel_has_kprobes, kernel_loads_fentry, kernel_objects, needs_root, wait_for

HAS_KPROBES = kernel_has_kprobes()
LOADS_FENTRY = kernel_loads_fentry()

pytestmark = needs_root

COUNTER = "#include <asm/unistd.h>\nBPF_ARRAY(hits, u64, 8);\n"


def hits(module, index=0) -> int:
    return module["hits"][index].value


def xdp_run(session, spec, repeat=1, data=b"\x00" * 64) -> int:
    return libbpf.test_run(session.program(spec).fd, data=data, repeat=repeat)["retval"]


def udp_to_lo(count=5, port=9):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            s.sendto(b"bpfmagic", ("127.0.0.1", port))


# --------------------------------------------------------------- targets


def test_raw_tracepoint_attach_counts_real_syscalls(session):
    m = session.load(
        "rt",
        COUNTER
        + """
int on_enter(struct bpf_raw_tracepoint_args *ctx) {
    if (ctx->args[1] != __NR_getppid) return 0;   // args[1]: syscall number
    int k = 0; hits.atomic_increment(k); return 0;
}""",
        attach={"on_enter": "raw_tracepoint:sys_enter"},
    )
    before = hits(m)
    for _ in range(50):
        os.getppid()
    assert hits(m) - before >= 50
    assert m.programs["on_enter"].type == "raw_tracepoint"


def test_bcc_auto_attach_conventions_keep_working(session):
    m = session.load(
        "auto",
        COUNTER
        + """
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) { int k = 0; hits.atomic_increment(k); return 0; }
RAW_TRACEPOINT_PROBE(sys_enter) { int k = 1; hits.atomic_increment(k); return 0; }
""",
    )
    for _ in range(20):
        os.getppid()
    assert hits(m, 0) >= 20 and hits(m, 1) >= 20
    assert set(m.auto_attached) == {"tracepoint__syscalls__sys_enter_getppid", "raw_tracepoint__sys_enter"}


def test_tracepoint_attach(session):
    m = session.load(
        "tp",
        COUNTER
        + """
int on_tp(void *ctx) { int k = 0; hits.atomic_increment(k); return 0; }
""",
        attach={"on_tp": "tracepoint:syscalls:sys_enter_getppid"},
    )
    for _ in range(30):
        os.getppid()
    assert hits(m) >= 30


def test_uprobe_and_uretprobe_attach(session):
    m = session.load(
        "up",
        COUNTER
        + """
int on_call(struct pt_regs *ctx) { int k = 0; hits.atomic_increment(k); return 0; }
int on_return(struct pt_regs *ctx) { int k = 1; hits.atomic_increment(k); return 0; }
""",
        attach={"on_call": "uprobe:c:getpid", "on_return": "uretprobe:c:getpid"},
    )
    for _ in range(10):
        os.getpid()
    assert hits(m, 0) >= 10 and hits(m, 1) >= 10


def test_xdp_tc_and_socket_on_loopback(session):
    m = session.load(
        "net",
        COUNTER
        + """
int on_xdp(struct xdp_md *ctx) { int k = 0; hits.atomic_increment(k); return XDP_PASS; }
int on_tc_in(struct __sk_buff *skb) { int k = 1; hits.atomic_increment(k); return -1; /* TCX_NEXT */ }
int on_tc_out(struct __sk_buff *skb) { int k = 2; hits.atomic_increment(k); return -1; }
int on_sock(struct __sk_buff *skb) { int k = 3; hits.atomic_increment(k); return 0; }
""",
        attach={"on_xdp": "xdp:lo", "on_tc_in": "tc:lo", "on_tc_out": "tc:lo:egress", "on_sock": "socket:lo"},
    )
    assert m.programs["on_sock"].type == "socket_filter"
    udp_to_lo(5)
    wait_for(lambda: all(hits(m, i) >= 5 for i in range(4)), timeout=5)
    for index in range(4):
        assert hits(m, index) >= 5, f"hook {index} saw {hits(m, index)} packets"


def test_perf_cpu_clock(session):
    m = session.load(
        "perf",
        COUNTER
        + """
int on_tick(struct bpf_perf_event_data *ctx) { int k = 0; hits.atomic_increment(k); return 0; }
""",
        attach={"on_tick": "perf:cpu-clock:1000"},
    )
    # Keep a CPU busy until the samples come in; the deadline only guards against a hang.
    deadline = time.monotonic() + 30
    while hits(m) <= 10 and time.monotonic() < deadline:
        pass
    assert hits(m) > 10
    assert m.programs["on_tick"].type == "perf_event"


def open_devnull(times: int) -> None:
    for _ in range(times):
        os.close(os.open(os.devnull, os.O_RDONLY))


KPROBE_COUNTER = (
    COUNTER
    + """
int on_open(struct pt_regs *ctx) {
    if ((bpf_get_current_pid_tgid() >> 32) != TGID) return 0;
    int k = 0; hits.atomic_increment(k); return 0;
}"""
)


@pytest.mark.parametrize("kind", ["kprobe", "kretprobe"])
def test_kprobe_targets_follow_the_kernel(session, kind):
    """Where the kernel has kprobes, one attaches and counts this process's
    opens; where it has none, the load says so and names an alternative."""
    target = f"{kind}:do_sys_openat2"
    load = lambda: session.load(
        "kp",
        KPROBE_COUNTER,
        attach={"on_open": target},  # noqa: E731
        cflags=[f"-DTGID={os.getpid()}"],
    )
    if HAS_KPROBES:
        m = load()
        open_devnull(20)
        assert hits(m) >= 20
        return
    with pytest.raises(AttachError) as err:
        load()
    assert "kprobes are not available" in str(err.value)
    assert "raw_tracepoint:sys_enter" in str(err.value) and "tracepoint:" in str(err.value)
    assert "kp" not in session.modules


@pytest.mark.parametrize(
    "target, words",
    [
        ("fentry:do_sys_openat2", ["fentry", "raw_tracepoint"] + (["--core"] if LOADS_FENTRY else ["refused by this kernel"])),
        ("tracepoint:syscalls:sys_enter_wrte", ["no tracepoint syscalls:sys_enter_wrte", "sys_enter_write"]),
        ("xdp:nosuchif0", ["no network interface 'nosuchif0'", "lo"]),
        ("bogus:thing", ["bad attach target", "raw_tracepoint:EVENT"]),
        ("perf:cpu-clock:abc", ["perf:cpu-clock:99"]),
    ],
)
def test_targets_this_kernel_cannot_serve_say_so(session, target, words):
    with pytest.raises(AttachError) as err:
        session.load("bad", "int f(struct pt_regs *ctx) { return 0; }", attach={"f": target})
    for word in words:
        assert word in str(err.value)
    assert "bad" not in session.modules


# ---------------------------------------------------------- prog arrays

DISPATCHER = """#include <asm/unistd.h>
BPF_PROG_ARRAY(progs, 512);
BPF_ARRAY(hits, u64, 8);
int dispatch(struct bpf_raw_tracepoint_args *ctx) {
    long nr = ctx->args[1];
    if (nr != __NR_getppid && nr != __NR_getpgid && nr != __NR_getsid) return 0;
    int k = 0; hits.atomic_increment(k);
    progs.call(ctx, nr);
    k = 1; hits.atomic_increment(k);     /* only reached when the slot is empty */
    return 0;
}
"""


def test_tail_call_chain_across_three_cells_driven_by_syscalls(session):
    session.progarray("progs", 512, keys="syscalls")
    disp = session.load("disp", DISPATCHER, attach={"dispatch": "raw_tracepoint:sys_enter"})
    h1 = session.load(
        "h1",
        COUNTER
        + """
int on_getppid(struct bpf_raw_tracepoint_args *ctx) {
    int k = 0; hits.atomic_increment(k);
    progs.call(ctx, SLOT(progs, getsid));   /* chain on into the third cell */
    return 0;
}""",
        slots={"progs[getppid]": "on_getppid"},
    )
    h2 = session.load(
        "h2",
        COUNTER
        + """
int on_getsid(struct bpf_raw_tracepoint_args *ctx) { int k = 0; hits.atomic_increment(k); return 0; }
""",
        slots={"progs[getsid]": "on_getsid"},
    )
    for _ in range(40):
        os.getppid()
    for _ in range(7):
        os.getpgid(0)  # slot empty: falls through
    # Chain: dispatcher -> h1 (getppid slot) -> h2 (getsid slot); the dispatcher's own
    # getsid calls also land in h2.
    assert hits(h1) >= 40
    assert hits(h2) >= 40
    assert hits(disp, 1) >= 7  # fall-through counted by the dispatcher itself
    slots = session.slots("progs").set_index("key")
    nr = syscall_numbers()
    assert slots.loc["getppid", "index"] == nr["getppid"]
    assert slots.loc["getppid", "program"] == "h1.on_getppid"
    assert slots.loc["getsid", "program"] == "h2.on_getsid"
    assert slots.loc["getppid", "taken"] >= 40
    assert slots.loc["getpgid", "missed"] >= 7 and slots.loc["getpgid", "taken"] == 0
    assert pd.isna(slots.loc["getpgid", "program"])


def test_chain_in_xdp_with_test_run_exact_counts(session):
    session.load(
        "entry",
        """
BPF_PROG_ARRAY(chain, 8);
int entry(struct xdp_md *ctx) {
    chain.call(ctx, SLOT(chain, parse));
    return XDP_ABORTED;                    /* reached only if parse is missing */
}""",
    )
    session.load(
        "parse",
        """
int parse(struct xdp_md *ctx) {
    chain.call(ctx, SLOT(chain, verdict));
    return XDP_PASS;                       /* verdict missing: pass */
}""",
        slots={"chain[parse]": "parse"},
    )
    assert xdp_run(session, "entry.entry") == 2  # XDP_PASS: the verdict slot is still empty
    session.load("verdict", "int verdict(struct xdp_md *ctx) { return XDP_DROP; }", slots={"chain[verdict]": "verdict"})
    assert xdp_run(session, "entry.entry", repeat=100) == 1  # XDP_DROP: the whole chain ran
    slots = session.slots("chain").set_index("key")
    assert slots.loc["parse", "index"] == 0 and slots.loc["verdict", "index"] == 1
    assert slots.loc["parse", "calls"] == 101 and slots.loc["parse", "taken"] == 101
    assert slots.loc["verdict", "calls"] == 101
    assert slots.loc["verdict", "missed"] == 1 and slots.loc["verdict", "taken"] == 100
    # Hot swap and unslot: the next run sees the change at once.
    session.load("alt", "int pass_all(struct xdp_md *ctx) { return XDP_TX; }")
    session.slot("chain[verdict]", "alt.pass_all")
    assert xdp_run(session, "entry.entry") == 3
    assert session.slots("chain").set_index("key").loc["verdict", "program"] == "alt.pass_all"
    assert session.unslot("chain[parse]") is True
    assert xdp_run(session, "entry.entry") == 0  # XDP_ABORTED: fell through at parse
    assert session.unslot("chain[parse]") is False


def test_shared_array_size_mismatch_and_unknown_array(session):
    session.load("a", "BPF_PROG_ARRAY(jt, 4);\nint f(struct xdp_md *ctx) { jt.call(ctx, 0); return 0; }")
    with pytest.raises(SlotError, match="has 4 slots"):
        session.load("b", "\nBPF_PROG_ARRAY(jt, 8);\nint g(struct xdp_md *ctx) { return 0; }")
    with pytest.raises(SlotError, match="no prog array 'nope'") as err:
        session.load("c", "int g(struct xdp_md *ctx) { return 0; }", slots={"nope[0]": "g"})
    assert (err.value.array, err.value.hint) == ("nope", "%bpf progarray nope N")


def test_type_mismatch_names_both_types(session):
    session.load("disp", DISPATCHER, attach={"dispatch": "raw_tracepoint:sys_enter"})
    assert session.array("progs").owner_type == "raw_tracepoint"
    with pytest.raises(SlotError) as err:
        session.load("x", "int on_pkt(struct xdp_md *ctx) { return XDP_PASS; }", slots={"progs[3]": "on_pkt"})
    assert "raw_tracepoint" in str(err.value) and "xdp" in str(err.value)
    assert "x" not in session.modules
    assert session.slots("progs")["program"].isna().all()


def test_array_type_from_progarray_decides_function_type(session):
    session.progarray("jt", 4, type="xdp", slots="first,second")
    m = session.load("m", "int f(void *ctx) { return XDP_DROP; }", slots={"jt[second]": "f"})
    assert m.programs["f"].type == "xdp"
    assert session.slots("jt").set_index("key").loc["second", "index"] == 1


def test_slot_names_take_lowest_free_index(session):
    session.progarray("jt", 8, slots="a=2")
    session.load(
        "m",
        """
int f(struct xdp_md *ctx) { return SLOT(jt, x); }
int g(struct xdp_md *ctx) { return SLOT(jt, y); }""",
        slots={"jt[x]": "f", "jt[5]": "g"},
    )
    names = session.array("jt").names
    assert names == {"a": 2, "x": 0, "y": 1}
    assert xdp_run(session, "m.g") == 1  # SLOT(jt, y) compiled to its index


@pytest.mark.parametrize(
    "spec, match",
    [
        ("progs[999]", "out of range"),
        ("progs[nosuchsyscall]", "not a syscall"),
        ("progs[../x]", "not a syscall"),
        ("names[../x]", "bad slot name"),
        ("progs", "bad slot"),
    ],
)
def test_bad_slot_keys(session, spec, match):
    session.progarray("progs", 512, keys="syscalls")
    session.progarray("names", 8)
    with pytest.raises((SlotError, UsageProblem), match=match):
        session.load("m", "int f(struct bpf_raw_tracepoint_args *ctx) { return 0; }", slots={spec: "f"})


@pytest.mark.parametrize("name", ["../../etc", "a/b", "1abc", "", "x" * 80, "progs.x"])
def test_bad_names_never_reach_paths(session, name):
    own_pins = f"/sys/fs/bpf/bpfmagic/{os.getpid()}"  # other sessions on the machine pin concurrently
    before = _pins(own_pins, with_dirs=True)
    with pytest.raises(UsageProblem, match="bad"):
        session.load(name, "int f(struct xdp_md *ctx) { return 0; }")
    with pytest.raises(UsageProblem, match="bad"):
        session.progarray(name, 4)
    assert _pins(own_pins, with_dirs=True) == before  # the refused calls made no pin or directory, whatever the name
    if name:  # every path contains "": for it the snapshot above is the check
        # nowhere on bpffs either (a traversal such as ../../etc would land outside own_pins)
        assert not any(name in p for p in _pins("/sys/fs/bpf"))


def _pins(top: str = "/sys/fs/bpf/bpfmagic", with_dirs: bool = False) -> set[str]:
    """Every pinned object (and with WITH_DIRS every directory) under TOP."""
    out = set()
    for root, dirs, files in os.walk(top):
        out.update(os.path.join(root, f) for f in files + (dirs if with_dirs else []))
    return out


# --------------------------------------------------------------- errors


def test_compile_error_points_at_the_cell_line(session):
    with pytest.raises(BpfCompileError) as err:
        session.load("bad", "BPF_ARRAY(a, u64, 1);\nint f(struct xdp_md *ctx) {\n  int x = 1\n  return x;\n}", origin="cell")
    text = str(err.value)
    assert "cell:3:" in text and "expected ';'" in text
    assert "   3 |   int x = 1" in text
    assert "/virtual/main.c" not in text


def test_compile_error_line_numbers_survive_the_prelude(session):
    session.progarray("jt", 4)
    # jt is used but not declared: the prelude declares it on the same line.
    with pytest.raises(BpfCompileError) as err:
        session.load("bad", "int f(struct xdp_md *ctx) {\n  jt.call(ctx, 0);\n  return undefined_thing;\n}", origin="cell")
    assert "cell:3:" in str(err.value) and "undefined_thing" in str(err.value)


def test_verifier_rejection_shows_log_tail_and_keeps_full_log(session):
    with pytest.raises(BpfVerifierError) as err:
        session.load(
            "v",
            """BPF_ARRAY(a, u64, 4);
int f(struct xdp_md *ctx) {
    int k = ctx->data_end - ctx->data;   /* unknown key: the lookup may fail */
    u64 *p = a.lookup(&k);
    return *p;              /* no NULL check */
}""",
            attach={"f": "xdp:lo"},
            origin="cell",
        )
    text = str(err.value)
    assert "the verifier rejected v.f" in text
    assert "invalid mem access 'map_value_or_null'" in text
    assert "return *p; " in text and "@ cell:5" in text  # the verifier's source line mapped to the cell
    assert "HINT: The 'map_value_or_null' error" in text
    assert len(err.value.log) >= len(text) - 200
    assert "v" not in session.modules


def test_failed_rerun_keeps_previous_version_running(session):
    src = (
        COUNTER
        + """
int on_enter(struct bpf_raw_tracepoint_args *ctx) { int k = 0; hits.atomic_increment(k); return 0; }"""
    )
    old = session.load("m", src, attach={"on_enter": "raw_tracepoint:sys_enter"})
    session.progarray("jt", 4, type="raw_tracepoint")
    session.slot("jt[0]", "m.on_enter")
    with pytest.raises(BpfCompileError) as err:
        session.load("m", src.replace("return 0;", "return oops;"), attach={"on_enter": "raw_tracepoint:sys_enter"})
    assert "the previous version is still loaded, attached and slotted" in " ".join(str(err.value).split())
    assert session.modules["m"] is old
    before = hits(old)
    for _ in range(10):
        os.getppid()
    assert hits(old) >= before + 10
    assert session.slots("jt").loc[0, "program"] == "m.on_enter"
    # A re-run failing at attach time also leaves the old one in place.
    with pytest.raises(AttachError):
        session.load("m", src, attach={"on_enter": "raw_tracepoint:no_such_tracepoint"})
    assert session.modules["m"] is old and not old.closed


def test_successful_rerun_switches_slots_and_frees_old(session):
    session.load("entry", "BPF_PROG_ARRAY(jt, 4);\nint entry(struct xdp_md *ctx) { jt.call(ctx, 0); return XDP_ABORTED; }")
    v1 = session.load("h", "int h(struct xdp_md *ctx) { return XDP_DROP; }", slots={"jt[0]": "h"})
    assert xdp_run(session, "entry.entry") == 1
    old_id = v1.programs["h"].prog_id
    v2 = session.load("h", "int h(struct xdp_md *ctx) { return XDP_PASS; }", slots={"jt[0]": "h"})
    assert xdp_run(session, "entry.entry") == 2
    assert v1.closed and not v2.closed
    deadline = time.time() + 5  # the kernel frees the old program after an RCU grace period
    while old_id in kernel_objects()["prog"] and time.time() < deadline:
        time.sleep(0.1)
    assert old_id not in kernel_objects()["prog"]


def test_rerun_of_xdp_module_retargets_its_link(session):
    src = "BPF_ARRAY(hits, u64, 8);\nint f(struct xdp_md *ctx) { int k = %d; hits.atomic_increment(k); return XDP_PASS; }"
    v1 = session.load("x", src % 0, attach={"f": "xdp:lo"})
    v2 = session.load("x", src % 1, attach={"f": "xdp:lo"})  # a second XDP link on lo would be EBUSY
    udp_to_lo(3)
    assert wait_for(lambda: hits(v2, 1) >= 3, timeout=5) and hits(v2, 0) == 0
    assert v1.closed


def test_file_option_loads_a_bpf_file(session, tmp_path):
    path = tmp_path / "pass.bpf.c"
    path.write_text("int f(struct xdp_md *ctx) {\n  return XDP_PASS\n}\n")
    with pytest.raises(BpfCompileError, match="pass.bpf.c:2:"):
        session.load("f", file=str(path))
    path.write_text("int f(struct xdp_md *ctx) { return XDP_PASS; }\n")
    session.load("f", file=str(path))
    assert xdp_run(session, "f.f") == 2


def test_unload_and_reset_free_everything(session):
    before = kernel_objects()
    session.load("disp", DISPATCHER, attach={"dispatch": "raw_tracepoint:sys_enter"})
    session.load("h", "int h(struct bpf_raw_tracepoint_args *ctx) { return 0; }", slots={"progs[1]": "h"})
    assert kernel_objects()["prog"] - before["prog"]
    session.unload("h")
    assert "h" not in session.modules
    assert session.slots("progs")["program"].isna().all()
    session.reset()
    assert not session.arrays and not session.modules
    from ..conftest import leftovers

    assert leftovers(before) == {}
    assert not _pins_of(session)


def _pins_of(session) -> list[str]:
    made = session.pin_space.path  # None until the session first needed its directory
    return [p for p in _pins() if made and p.startswith(made)]


def test_dead_session_pins_are_cleaned(tmp_path):
    import subprocess
    import sys

    # A process that pins an array and dies without closing, its reaper killed
    # first (stopped, so it cannot clean up): only the next session's cleanup
    # can free the pins. (With its reaper, tests/kernel/test_lifecycle.py.)
    code = (
        "import os, signal, bpfmagic; from bpfmagic.kernel import pins; s = bpfmagic.Session(); s.progarray('jt', 4); "
        "os.kill(pins.process_dir().reaper_pid, signal.SIGSTOP); "
        "print(pins.process_dir().reaper_pid, s.pin_dir(), flush=True); os._exit(0)"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    reaper, pin_dir = out.stdout.strip().splitlines()[-1].split()
    try:
        assert os.path.exists(os.path.join(pin_dir, "jt"))
        s = Session()
        try:
            assert not os.path.exists(os.path.dirname(pin_dir))
        finally:
            s.close()
    finally:
        os.kill(int(reaper), signal.SIGKILL)


def test_syscall_keys_can_be_set_after_the_array_is_declared(session):
    """DESIGN's API example loads the dispatcher first, then asks for syscall keys."""
    session.load("disp", DISPATCHER, attach={"dispatch": "raw_tracepoint:sys_enter"})
    session.progarray("progs", 512, keys="syscalls")
    session.load(
        "h",
        COUNTER + "int on(struct bpf_raw_tracepoint_args *ctx) { int k = 0; hits.atomic_increment(k); return 0; }",
        slots={"progs[getppid]": "on"},
    )
    assert session.slots("progs").set_index("key").loc["getppid", "index"] == syscall_numbers()["getppid"]
    for _ in range(5):
        os.getppid()
    assert hits(session.modules["h"]) >= 5


def test_syscall_keys_refused_once_names_are_taken(session):
    session.progarray("jt", 8, slots="a,b")
    with pytest.raises(SlotError, match="already has keys") as err:
        session.progarray("jt", 8, keys="syscalls")
    assert err.value.array == "jt"


# ------------------------------------------------------- review regressions


def test_prelude_is_not_hidden_by_a_leading_conditional(session):
    session.progarray("jt", 4)
    session.load(
        "cond",
        """#ifdef NOT_DEFINED
#define UNUSED 1
#endif
#if 0
int never(struct xdp_md *ctx) { return 0; }
#endif
int f(struct xdp_md *ctx) { jt.call(ctx, 0); return XDP_PASS; }
""",
    )
    assert xdp_run(session, "cond.f") == 2


@pytest.mark.parametrize(
    "source, words",
    [
        ("TRACEPOINT_PROBE(syscalls, sys_enter_wrte) { return 0; }", ["no tracepoint syscalls:sys_enter_wrte", "sys_enter_write"]),
        ("RAW_TRACEPOINT_PROBE(sys_entr) { return 0; }", ["no raw tracepoint sys_entr", "sys_enter"]),
        # BCC cells cannot declare fentry programs on any kernel; the reason given follows this one
        ("KFUNC_PROBE(do_sys_openat2) { return 0; }", ["fentry", "--core"] if LOADS_FENTRY else ["fentry", "refused by this kernel"]),
    ],
)
def test_bcc_naming_conventions_get_the_target_checks(session, source, words):
    with pytest.raises(AttachError) as err:
        session.load("conv", source)
    for word in words:
        assert word in str(err.value)


def test_kprobe_naming_convention_follows_the_kernel(session):
    source = KPROBE_COUNTER.replace("int on_open(", "int kprobe__do_sys_openat2(")
    if HAS_KPROBES:
        m = session.load("conv", source, cflags=[f"-DTGID={os.getpid()}"])
        assert m.auto_attached == ["kprobe__do_sys_openat2"]
        open_devnull(20)
        assert hits(m) >= 20
        return
    with pytest.raises(AttachError) as err:
        session.load("conv", source, cflags=[f"-DTGID={os.getpid()}"])
    assert "kprobes are not available" in str(err.value) and "raw_tracepoint" in str(err.value)


def test_progarray_bad_arguments_create_nothing(session):
    for kwargs in ({"slots": "a=x"}, {"type": "bogus"}, {"keys": "nope"}, {"size": 0}):
        args = {"name": "p", "size": 8, **kwargs}
        with pytest.raises((UsageProblem, SlotError)):
            session.progarray(**args)
        assert "p" not in session.arrays


def test_slot_of_a_missing_function_keeps_no_name(session):
    session.progarray("jt", 4, type="xdp")
    session.load("t", "int real(struct xdp_md *ctx) { return XDP_PASS; }")
    with pytest.raises(UsageProblem, match="t has no function 'nosuch'"):
        session.slot("jt[typo]", "t.nosuch")
    assert "typo" not in session.array("jt").names
    with pytest.raises(UsageProblem, match="has no function 'nosuch'"):
        session.load("u", "int real(struct xdp_md *ctx) { return XDP_PASS; }", slots={"jt[0]": "nosuch"})


def test_an_array_used_by_a_core_module_cannot_be_unloaded(session):
    session.progarray("jt", 4)
    session.load("c", 'SEC("xdp") int f(struct xdp_md *ctx) { bpf_tail_call(ctx, &jt, 0); return XDP_PASS; }', core=True)
    with pytest.raises(UsageProblem, match="used by c") as err:  # the users are named only in the text
        session.unload("jt")
    assert err.value.array == "jt"


def test_file_with_a_comment_only_body(session, tmp_path):
    path = tmp_path / "p.bpf.c"
    path.write_text("int f(struct xdp_md *ctx) { return XDP_DROP; }\n")
    session.load("p", "// loaded from the file\n", file=str(path))
    assert xdp_run(session, "p.f") == 1


def test_design_example_order_slots_first_then_syscall_keys(session):
    """DESIGN.md's API example: load with slots={"progs[write]": ...}, then
    progarray("progs", 512, keys="syscalls"): the handler ends up at write's number."""
    source = (
        COUNTER
        + """BPF_PROG_ARRAY(progs, 512);
int dispatch(struct bpf_raw_tracepoint_args *ctx) {
    if ((bpf_get_current_pid_tgid() >> 32) != ME) return 0;
    progs.call(ctx, ctx->args[1]);
    return 0;
}
int on_getppid(struct bpf_raw_tracepoint_args *ctx) { int k = 0; hits.atomic_increment(k); return 0; }"""
    )
    m = session.load(
        "disp", source, attach={"dispatch": "raw_tracepoint:sys_enter"}, slots={"progs[getppid]": "on_getppid"}, cflags=[f"-DME={os.getpid()}"]
    )
    session.progarray("progs", 512, keys="syscalls")
    before = hits(m)  # until now the handler sat at index 0 (read) and counted this process's reads
    for _ in range(20):
        os.getppid()
    assert hits(m) - before == 20
    slots = session.slots("progs", all_keys=True).set_index("key")
    assert slots.loc["getppid", "index"] == syscall_numbers()["getppid"]
    assert slots.loc["getppid", "program"] == "disp.on_getppid"
    assert pd.isna(slots.loc["read", "program"])  # index 0 emptied
    session.unload("disp")
    assert session.slots("progs")["program"].isna().all()


def test_duplicate_slot_names_and_ring_size_hint(session):
    with pytest.raises(UsageProblem, match="given twice"):
        session.progarray("p", 8, slots="a,a,b")
    assert "p" not in session.arrays
    with pytest.raises(BpfCompileError, match="power of two"):
        session.load(
            "odd",
            """struct e { u32 x; };
BPF_RINGBUF_OUTPUT(oddring, 3);
int f(struct xdp_md *ctx) { struct e v = {1}; oddring.ringbuf_output(&v, sizeof(v), 0); return XDP_PASS; }""",
        )


def test_a_name_not_found_is_a_usage_problem_and_a_key_error_with_fields(session):
    """One error for every lookup that misses: a cell shows its text, Python code can catch it as
    a KeyError, and its fields say what was looked for among what is there."""
    from bpfmagic import NotFound, UsageProblem

    session.load("nf", "BPF_ARRAY(counts, u64, 2);\nint f(struct xdp_md *ctx) { return XDP_PASS; }")
    cases = [
        (lambda: session.module("nope"), "module", "nope", ("nf",)),
        (lambda: session.map("nope"), "map", "nope", ("nf.counts",)),
        (lambda: session.map("nf.nope"), "table", "nope", ("counts",)),
        (lambda: session.modules["nf"]["nope"], "table", "nope", ("counts",)),
        (lambda: session.stream("nope"), "stream", "nope", ()),
    ]
    for lookup, kind, name, known in cases:
        with pytest.raises(NotFound) as err:
            lookup()
        assert isinstance(err.value, UsageProblem) and isinstance(err.value, KeyError)
        assert (err.value.kind, err.value.name, err.value.known) == (kind, name, known)
        assert str(err.value).startswith(("no ", "nf has no")) and "'" in str(err.value)
