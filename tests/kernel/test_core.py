"""The CO-RE path (--core): clang + libbpf on the real kernel, sharing
session prog arrays with BCC cells."""

from __future__ import annotations

import os

import pytest

from bpfmagic import AttachError, BpfCompileError, BpfVerifierError, SlotError
from bpfmagic.kernel import libbpf

from ..conftest import kernel_loads_fentry, needs_root, syscall_nr

pytestmark = needs_root

COUNTERS = """struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 4); __type(key, u32); __type(value, u64); } hits SEC(".maps");
static __noinline int bump(int k) {          /* a BPF-to-BPF call: BCC cannot load these */
    u64 *v = bpf_map_lookup_elem(&hits, &k);
    if (v) __sync_fetch_and_add(v, 1);
    return k;
}
"""


def run_xdp(session, spec, repeat=1):
    return libbpf.test_run(session.program(spec).fd, data=b"\0" * 64, repeat=repeat)["retval"]


def test_bpf_to_bpf_calls_and_tail_calls_between_bcc_and_core_cells(session):
    session.load("entry", "BPF_PROG_ARRAY(chain, 8);\nint entry(struct xdp_md *ctx) { chain.call(ctx, SLOT(chain, parse)); return XDP_ABORTED; }")
    core = session.load(
        "parse",
        COUNTERS
        + """
SEC("xdp") int parse(struct xdp_md *ctx) {
    bump(0);
    bpf_tail_call(ctx, &chain, SLOT(chain, verdict));   /* the session's array, declared for us */
    return XDP_PASS;
}""",
        core=True,
        slots={"chain[parse]": "parse"},
    )
    assert run_xdp(session, "entry.entry", repeat=7) == 2  # verdict empty: parse returns XDP_PASS
    session.load("verdict", "int verdict(struct xdp_md *ctx) { return XDP_DROP; }", slots={"chain[verdict]": "verdict"})
    assert run_xdp(session, "entry.entry", repeat=5) == 1  # BCC -> CO-RE -> BCC
    assert core["hits"][0].value == 12
    slots = session.slots("chain").set_index("key")
    assert slots.loc["parse", "calls"] == 12 and slots.loc["parse", "taken"] == 12
    assert slots.loc["verdict", "calls"] == 12 and slots.loc["verdict", "missed"] == 7  # counted in the CO-RE cell too
    assert core.programs["parse"].type == "xdp"
    assert set(core.tables) == {"hits", "chain"}


def test_tp_btf_with_core_reads_gives_the_real_tgid(session):
    m = session.load(
        "who",
        """
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, u32); __type(value, u64); } seen SEC(".maps");
const volatile int target_tgid = 0;

SEC("tp_btf/sys_enter")
int BPF_PROG(on_enter, struct pt_regs *regs, long id) {
    struct task_struct *task = bpf_get_current_task_btf();
    if (id != NR_GETPPID || BPF_CORE_READ(task, tgid) != TGID) return 0;
    u32 k = 0;
    u64 v = BPF_CORE_READ(task, real_parent, tgid);   /* a kernel struct read, right offsets */
    bpf_map_update_elem(&seen, &k, &v, BPF_ANY);
    return 0;
}""",
        core=True,
        cflags=[f"-DTGID={os.getpid()}", f"-DNR_GETPPID={syscall_nr('getppid')}"],
    )
    assert m.auto_attached == ["on_enter"] and m.programs["on_enter"].type == "tracing"
    os.getppid()  # tp_btf runs inside the syscall: the map is written before it returns
    assert m["seen"][0].value == os.getppid()


def test_attach_option_and_auto_attach_sections(session):
    m = session.load(
        "rt",
        COUNTERS
        + """
SEC("raw_tp") int by_option(struct bpf_raw_tracepoint_args *ctx) { bump(0); return 0; }
SEC("raw_tp/sys_enter") int by_section(struct bpf_raw_tracepoint_args *ctx) { bump(1); return 0; }
""",
        core=True,
        attach={"by_option": "raw_tracepoint:sys_enter"},
    )
    for _ in range(20):
        os.getppid()
    assert m["hits"][0].value >= 20 and m["hits"][1].value >= 20
    assert m.auto_attached == ["by_section"]


def test_uprobes_attach_core_programs_by_fd(session):
    """-a uprobe:/uretprobe: attaches a --core program as it does a BCC one (by the
    program's fd; there is no BCC object to ask)."""
    m = session.load(
        "up",
        COUNTERS
        + """
SEC("uprobe") int on_call(struct pt_regs *ctx) { bump(0); return 0; }
SEC("uretprobe") int on_return(struct pt_regs *ctx) { bump(1); return 0; }
""",
        core=True,
        attach={"on_call": "uprobe:c:getpid", "on_return": "uretprobe:c:getpid"},
    )
    for _ in range(10):
        os.getpid()
    assert m["hits"][0].value >= 10 and m["hits"][1].value >= 10
    assert [a.target.kind for a in m.attachments] == ["uprobe", "uretprobe"]
    session.unload("up")
    assert not any("bpfmagic" in line for line in _uprobe_events())  # nothing left in tracefs


def _uprobe_events() -> list[str]:
    try:
        with open("/sys/kernel/tracing/uprobe_events") as f:
            return f.read().splitlines()
    except OSError:
        return []


def test_core_errors_point_at_the_cell(session):
    with pytest.raises(BpfCompileError) as err:
        session.load("bad", 'SEC("xdp") int f(struct xdp_md *ctx) {\n  return XDP_PASS\n}\n', core=True, origin="cell")
    assert "cell:2:" in str(err.value) and "   2 |   return XDP_PASS" in str(err.value)
    with pytest.raises(BpfVerifierError) as err:
        session.load(
            "bad",
            COUNTERS
            + """SEC("xdp") int f(struct xdp_md *ctx) {
    u32 k = ctx->data_end - ctx->data;
    u64 *v = bpf_map_lookup_elem(&hits, &k);
    return *v;
}""",
            core=True,
            origin="cell",
        )
    text = str(err.value)
    assert "the verifier rejected bad.f" in text and "map_value_or_null" in text
    assert "; return *v; @ cell:10" in text and "HINT" in text
    assert "bad" not in session.modules


def test_core_type_mismatch_and_refused_program_types(session):
    session.progarray("jt", 4, type="raw_tracepoint")
    with pytest.raises(SlotError, match="jt holds raw_tracepoint programs.*xdp"):
        session.load("x", 'SEC("xdp") int f(struct xdp_md *ctx) { return XDP_PASS; }', core=True, slots={"jt[0]": "f"})


def test_fentry_sections_follow_the_kernel(session):
    """Where the kernel loads fentry programs, a CO-RE one attaches and counts
    this process's opens; where it refuses them (EPERM), the load says so."""
    source = (
        COUNTERS
        + """
SEC("fentry/do_sys_openat2") int BPF_PROG(on_open) {
    if ((bpf_get_current_pid_tgid() >> 32) == TGID) bump(0);
    return 0;
}"""
    )
    cflags = [f"-DTGID={os.getpid()}"]
    if kernel_loads_fentry():
        m = session.load("fe", source, core=True, cflags=cflags)
        assert m.auto_attached == ["on_open"]
        for _ in range(20):
            os.close(os.open(os.devnull, os.O_RDONLY))
        assert m["hits"][0].value >= 20
        return
    with pytest.raises(AttachError, match="refused by this kernel") as err:
        session.load("fe", source, core=True, cflags=cflags)
    assert 'SEC("tp_btf/' in str(err.value) and "fe" not in session.modules


def test_core_cell_through_the_magic(session):
    from IPython.testing.globalipapp import get_ipython

    import bpfmagic

    ip = get_ipython()
    ip.run_line_magic("load_ext", "bpfmagic")
    bpfmagic.shell.drop()
    try:
        res = ip.run_cell('%%bpf c --core -a f=xdp:lo\nSEC("xdp") int f(struct xdp_md *ctx) { return XDP_PASS; }\n')
        assert res.success, res.error_in_exec
        assert ip.user_ns["c"].programs["f"].type == "xdp"
        assert ip.run_line_magic("bpf", "ls").set_index("function").loc["f", "attached"] == "xdp:lo"
    finally:
        bpfmagic.shell.drop()


def test_core_program_without_sec_is_explained(session):
    with pytest.raises(BpfCompileError, match=r"c\.f has no SEC\(\)"):
        session.load("c", "int f(struct xdp_md *ctx) { return XDP_PASS; }", core=True)


# Two arrays whose names agree in the 15 characters the kernel keeps (xdp_rl_ingress_), as
# L3AF's rate limiter names its chain's next array.
LONG_NAMES = """%%bpf rl --core
struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 4);
    __type(key, u32);
    __type(value, u32);
} xdp_rl_ingress_next_prog SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 4);
    __type(key, u32);
    __type(value, u32);
} xdp_rl_ingress_drop_prog SEC(".maps");

SEC("xdp")
int xdp_ratelimiting_ingress_func(struct xdp_md *ctx)
{
    bpf_tail_call(ctx, &xdp_rl_ingress_drop_prog, 0);
    bpf_tail_call(ctx, &xdp_rl_ingress_next_prog, SLOT(xdp_rl_ingress_next_prog, verdict));
    return XDP_PASS;
}
"""


def test_names_longer_than_the_kernel_keeps_are_used_whole():
    from IPython.testing.globalipapp import get_ipython

    import bpfmagic

    ip = get_ipython()
    ip.run_line_magic("load_ext", "bpfmagic")
    bpfmagic.shell.drop()
    try:
        res = ip.run_cell(LONG_NAMES)
        assert res.success, res.error_in_exec
        res = ip.run_cell(
            "%%bpf verdict -s xdp_rl_ingress_next_prog[verdict]=verdict_drop_every_frame\n"
            "BPF_PROG_ARRAY(xdp_rl_ingress_next_prog, 4);\n"
            "int verdict_drop_every_frame(struct xdp_md *ctx) { return XDP_DROP; }\n"
        )
        assert res.success, res.error_in_exec
        assert ip.run_line_magic("bpf", "run rl.xdp_ratelimiting_ingress_func").retval == 1  # XDP_DROP through the long-named array
        slots = ip.run_line_magic("bpf", "slots xdp_rl_ingress_next_prog")
        assert slots[["array", "key", "program", "calls", "taken"]].values.tolist() == [
            ["xdp_rl_ingress_next_prog", "verdict", "verdict.verdict_drop_every_frame", 1, 1]
        ]
        drop = ip.run_line_magic("bpf", "slots xdp_rl_ingress_drop_prog")
        assert drop[["index", "calls", "missed"]].values.tolist() == [[0, 1, 1]]  # its own counters, not the other's
        assert sorted(ip.user_ns["rl"].tables) == ["xdp_rl_ingress_drop_prog", "xdp_rl_ingress_next_prog"]
        ls = ip.run_line_magic("bpf", "ls").set_index("function")
        assert ls.loc["verdict_drop_every_frame", "slots"] == "xdp_rl_ingress_next_prog[verdict]"
        assert ip.run_line_magic("bpf", "map xdp_rl_ingress_next_prog")["program"].tolist() == ["verdict.verdict_drop_every_frame"]
    finally:
        bpfmagic.shell.drop()


def test_a_raw_tp_section_without_a_target_says_how_to_name_one(session):
    source = 'SEC("raw_tp/") int on_enter(struct bpf_raw_tracepoint_args *ctx) { return 0; }'
    with pytest.raises(AttachError) as err:
        session.load("rt", source, core=True)
    text = str(err.value)
    assert 'rt.on_enter is SEC("raw_tp/"), which names no raw tracepoint' in text
    assert 'SEC("raw_tp/sys_enter")' in text and "-a on_enter=raw_tracepoint:EVENT" in text
    m = session.load("rt", source, core=True, attach={"on_enter": "raw_tracepoint:sys_enter"})
    assert [str(a.target) for a in m.attachments] == ["raw_tracepoint:sys_enter"]
    with pytest.raises(AttachError) as err:  # a target this kernel lacks: its errno, ENOENT, named
        session.load("missing", source.replace("raw_tp/", "raw_tp/bm_no_such_event"), core=True)
    assert "No such file or directory: this kernel has no raw tracepoint 'bm_no_such_event'" in str(err.value)
    assert "libbpf:" not in str(err.value)


def test_a_ring_buffer_with_a_value_type_loads_as_cilium_ebpf_loads_it(session):
    source = """struct event { u32 pid; };
struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4096);
    __type(value, struct event);
} events SEC(".maps");

SEC("xdp") int f(struct xdp_md *ctx) {
    struct event e = { .pid = 1 };
    bpf_ringbuf_output(&events, &e, sizeof(e), 0);
    return XDP_PASS;
}
"""
    m = session.load("rb", source, core=True, origin="cell")
    assert any(n.startswith("events (cell:2) has a ") and "a ring buffer has no key or value" in n for n in m.notes)
    assert "events" in m.streams


def test_custom_section_names_take_their_type_from_the_context_or_the_use(session):
    """Files written for cilium/ebpf, libxdp or tc name sections libbpf has no type for."""
    root = session.load("root", 'SEC("xdp-root") int xdp_root(struct xdp_md *ctx) { return XDP_DROP; }', core=True)
    assert root.programs["xdp_root"].type == "xdp"
    assert run_xdp(session, "root.xdp_root") == 1
    assert any('SEC("xdp-root")' in note and "loaded as xdp (its context, struct xdp_md *)" in note for note in root.notes)

    skb = 'SEC("xdp_stats") int stats(struct __sk_buff *skb) { return 0; }'  # tc or socket filter: its use says
    with pytest.raises(BpfCompileError, match=r'stats is SEC\("xdp_stats"\), a section name that gives no program type.*-a stats=tc:IFACE'):
        session.load("st", skb, core=True)
    session.progarray("filters", 4, type="socket_filter")
    assert session.load("st", skb, core=True, slots={"filters[0]": "stats"}).programs["stats"].type == "socket_filter"

    # tc's `bpf da sec action`: libbpf calls SEC("action") sched_act; attached as a classifier it loads as one.
    tc = session.load("tc", 'SEC("action") int act(struct __sk_buff *skb) { return 0; }', core=True, attach={"act": "tc:lo"})
    assert tc.programs["act"].type == "sched_cls"
    assert [str(a.target) for a in tc.attachments] == ["tc:lo"]
