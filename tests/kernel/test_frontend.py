"""Real-world C in cells as it is: libbpf-style and uapi-style --core files,
BCC's own table forms, --file includes, --cflags, and errors that point at
the cell. The programs are written here in the shapes those files have."""

from __future__ import annotations

import os

import pytest

from bpfmagic.c import analyse
from bpfmagic.errors import AttachError, BpfCompileError, BpfVerifierError, SlotError, UsageProblem
from bpfmagic.experiments import packets

from ..conftest import needs_root

pytestmark = needs_root

# The selftests' shape: a .maps prog array sized through an #ifdef'd macro, a
# self-tail-call through a macro, a counter in a map.
LIBBPF_SELF_TAIL_CALL = r"""// SPDX-License-Identifier: GPL-2.0
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#ifdef __mips__
#define MAX_JMP 6000
#else
#define MAX_JMP 4
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, MAX_JMP);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} jmp_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} runs SEC(".maps");

#define TAIL_CALL(ctx, idx) bpf_tail_call(ctx, &jmp_table, idx)

SEC("tc")
int classifier_0(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&runs, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
	TAIL_CALL(skb, 0);
	return 1;
}

char __license[] SEC("license") = "GPL";
"""


def test_libbpf_file_with_includes_ifdef_size_and_macro_tail_call(session):
    m = session.load("selftest", LIBBPF_SELF_TAIL_CALL, core=True, slots={"jmp_table[0]": "classifier_0"})
    assert session.array("jmp_table").size == 4  # the #else branch, as the compiler sees it
    result = session.test_run("selftest.classifier_0", data=packets.udp_packet())
    assert result.retval == 1
    assert m["runs"][0].value == 34  # the entry run and 33 tail calls: MAX_TAIL_CALL_CNT
    slot = session.slots("jmp_table").set_index("index").loc[0]
    # The call inside the macro is counted: 34 calls made, 33 taken, the 34th fell through.
    assert (slot["calls"], slot["taken"], slot["missed"]) == (34, 33, 1)


def test_tail_calls_through_a_map_pointer_and_bpf_tail_call_static_are_counted(session):
    session.load("target", 'SEC("xdp") int done(struct xdp_md *ctx) { return XDP_DROP; }', core=True)
    session.progarray("jt", 4)
    session.slot("jt[1]", "target.done")
    session.load(
        "callers",
        """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
BPF_PROG_ARRAY(jt, 4);
SEC("xdp") int via_pointer(struct xdp_md *ctx)
{
    void *table = &jt;
    bpf_tail_call(ctx, table, 1);
    return XDP_PASS;
}
SEC("xdp") int via_static(struct xdp_md *ctx)
{
    bpf_tail_call_static(ctx, &jt, 1);
    bpf_tail_call_static(ctx, &jt, 2);   /* never reached: slot 1 is filled */
    return XDP_PASS;
}
""",
        core=True,
    )
    assert session.test_run("callers.via_pointer").retval_name == "XDP_DROP"
    assert session.test_run("callers.via_static", repeat=5).retval_name == "XDP_DROP"
    slots = session.slots("jt").set_index("index")
    assert slots.loc[1, "calls"] == 6 and slots.loc[1, "taken"] == 6 and slots.loc[1, "missed"] == 0
    assert 2 not in slots.index or slots.loc[2, "calls"] == 0


UAPI_XDP = r"""
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int xdp_drop_udp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = data + sizeof(*eth);

	if ((void *)(iph + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	return iph->protocol == IPPROTO_UDP ? XDP_DROP : XDP_TX;
}
char _license[] SEC("license") = "GPL";
"""


def test_uapi_style_core_cell_compiles_without_vmlinux(session):
    session.load("uapi", UAPI_XDP, core=True)
    assert session.test_run("uapi.xdp_drop_udp", data=packets.udp_packet()).retval_name == "XDP_DROP"
    assert session.test_run("uapi.xdp_drop_udp", data=packets.tcp_packet()).retval_name == "XDP_TX"
    assert session.test_run("uapi.xdp_drop_udp", data=packets.udp_packet(src="fd00::1", dst="fd00::2")).retval_name == "XDP_PASS"


@pytest.mark.parametrize("core", [False, True])
def test_include_beside_the_file(session, tmp_path, core):
    (tmp_path / "verdicts.h").write_text("#define VERDICT 3 /* XDP_TX */\n")
    head = '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\nSEC("xdp") ' if core else ""
    (tmp_path / "prog.bpf.c").write_text(
        head.replace('SEC("xdp") ', "")
        + '#include "verdicts.h"\n'
        + ('SEC("xdp") ' if core else "")
        + "int f(struct xdp_md *ctx) { return VERDICT; }\n"
    )
    session.load("inc", file=str(tmp_path / "prog.bpf.c"), core=core)
    assert session.test_run("inc.f").retval == 3


@pytest.mark.parametrize("core", [False, True])
def test_several_cflags_in_one_string_and_repeated(session, core):
    src = ('SEC("xdp") ' if core else "") + "int f(struct xdp_md *ctx) { return A + B; }"
    session.load("flags", src, core=core, cflags="-DA=1 -DB=2")
    assert session.test_run("flags.f").retval == 3
    session.load("flags", src, core=core, cflags=["-DA=2", "-DB=2"])
    assert session.test_run("flags.f").retval == 4


@pytest.mark.parametrize("core", [False, True])
def test_a_parameter_named_like_a_session_array_is_not_the_array(session, core):
    session.progarray("jmp_table", 8)
    sec = 'SEC("xdp") ' if core else ""
    session.load(
        "shadow",
        f"""
static __attribute__((always_inline)) inline int is_set(void *jmp_table) {{ return jmp_table != 0; }}
{sec}int f(struct xdp_md *ctx) {{ return is_set(ctx) + 2; }}
""",
        core=core,
    )
    assert session.test_run("shadow.f").retval == 3


@needs_root
@pytest.mark.parametrize("declared", [True, False])
def test_a_subprogram_parameter_named_like_the_array_it_is_given(session, declared):
    # The parameter is not the map: the instrumentation names the array where the file declares it.
    session.progarray("jmp_table", 8)
    declaration = (
        'struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 8); __type(key, __u32); __type(value, __u32); } jmp_table SEC(".maps");'
        if declared
        else ""
    )
    session.load(
        "hops",
        f"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
{declaration}
static __noinline int hop(struct __sk_buff *skb, void *jmp_table)
{{
    bpf_tail_call(skb, jmp_table, 0);
    return skb->len; /* the slot was empty */
}}
SEC("tc") int entry(struct __sk_buff *skb) {{ return hop(skb, &jmp_table); }}
SEC("tc") int target(struct __sk_buff *skb) {{ return 7; }}
""",
        core=True,
    )
    assert session.test_run("hops.entry").retval == len(packets.udp_packet())
    session.slot("jmp_table[0]", "hops.target")
    taken = session.test_run("hops.entry")
    assert taken.retval == 7
    # the site is counted where the parameter turned out to be the array
    assert taken.tail_calls[["slot", "calls", "taken"]].values.tolist() == [["jmp_table[0]", 1, 1]]


@needs_root
def test_a_prog_array_sharing_its_line_with_a_function_is_counted(session):
    # bpfmagic's counting helper cannot go after this declaration's line (it would land in f's body)
    syntax = analyse(ONE_LINE_CHAIN)
    assert [(a.name, a.code_after) for a in syntax.arrays] == [("jt", True)]
    session.load("oneline", ONE_LINE_CHAIN, core=True)
    missed = session.test_run("oneline.f")
    assert missed.retval_name == "XDP_PASS"
    assert missed.tail_calls[["slot", "calls", "missed"]].values.tolist() == [["jt[0]", 1, 1]]


ONE_LINE_CHAIN = (
    'struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 2); __type(key, __u32); __type(value, __u32); } jt SEC(".maps"); '
    'SEC("xdp") int f(struct xdp_md *ctx) {\n'
    "    bpf_tail_call(ctx, &jt, 0);\n"
    "    return XDP_PASS;\n"
    "}\n"
)


def test_bcc_prog_table_is_a_session_array(session):
    # BCC's own test shape: BPF_TABLE("prog", int, int, NAME, N) and enum keys.
    session.load(
        "calls",
        """
BPF_TABLE("prog", int, int, jump, 8);
enum { PARSE = 1, VERDICT = 2 };
int entry(struct xdp_md *ctx) { jump.call(ctx, PARSE); return XDP_ABORTED; }
int parse(struct xdp_md *ctx) { jump.call(ctx, VERDICT); return XDP_PASS; }
int verdict(struct xdp_md *ctx) { return XDP_DROP; }
""",
        slots={"jump[1]": "parse", "jump[2]": "verdict"},
    )
    assert session.array("jump").size == 8
    assert session.test_run("calls.entry").retval_name == "XDP_DROP"
    slots = session.slots("jump").set_index("index")
    assert slots.loc[1, "taken"] == 1 and slots.loc[2, "taken"] == 1


def test_bcc_map_helper_by_address_gets_the_bcc_hint(session):
    with pytest.raises(BpfVerifierError) as err:
        session.load(
            "helper",
            """
BPF_ARRAY(counts, u64, 1);
int f(struct xdp_md *ctx) {
    u32 k = 0;
    u64 *v = bpf_map_lookup_elem(&counts, &k);
    return v ? XDP_PASS : XDP_DROP;
}""",
        )
    assert "counts.lookup(&key)" in str(err.value)


def test_skb_function_takes_the_type_of_a_socket_filter_array(session):
    session.progarray("sk", 4, type="socket_filter")
    session.load("sf", "int st2(struct __sk_buff *skb) { return skb->len; }", slots={"sk[1]": "st2"})
    assert session.program("sf.st2").type == "socket_filter"


def test_legacy_and_unservable_sections_say_what_to_write(session):
    with pytest.raises(BpfCompileError, match=r'SEC\("tc"\)'):
        session.load(
            "legacy",
            '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\nSEC("classifier/0") int c(struct __sk_buff *skb) { return 0; }\n',
            core=True,
        )
    from bpfmagic.kernel.attach import kprobes_available

    src = '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\nSEC("kprobe/do_unlinkat") int k(void *ctx) { return 0; }\n'
    if kprobes_available():
        session.load("kp", src, core=True)
    else:
        with pytest.raises(AttachError, match="kprobes are not available.*tracepoint"):
            session.load("kp", src, core=True)


def test_errors_name_the_cell_lines_and_columns_at_instrumented_call_sites(session):
    session.progarray("jt", 4)
    with pytest.raises(BpfCompileError) as err:
        session.load("cols", "int f(struct xdp_md *ctx) {\n    jt.call(ctx, 1); return undefined_name;\n}\n", origin="cell")
    text = str(err.value)
    # 'undefined_name' starts at column 29 of line 2 in the cell, whatever the counting wrapper added.
    assert "cell:2:29: error" in text and "__bm_" not in text


@needs_root
def test_compile_errors_after_tracepoint_probes_name_the_cell_lines(session):
    # BCC writes each probe's args struct (as many lines as the event has fields) in front of the probe.
    source = (
        "TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {\n"  # 1
        "    int x = ;\n"  # 2
        "    return 0;\n"  # 3
        "}\n"  # 4
        "TRACEPOINT_PROBE(syscalls, sys_enter_getpgid) { return args->pid + ; }\n"  # 5
        "TRACEPOINT_PROBE(syscalls, sys_enter_kill) {\n"  # 6
        "    return args->sig + undeclared;\n"  # 7
        "}\n"  # 8
        "int f(struct xdp_md *ctx) { int y = ; return 0; }\n"  # 9
    )
    with pytest.raises(BpfCompileError) as err:
        session.load("probes", source, origin="cell")
    located = [line.split(": error")[0] for line in str(err.value).splitlines() if ": error" in line]
    assert located == ["cell:2:13", "cell:5:68", "cell:7:24", "cell:9:37"]
    assert "       9 | int f(struct xdp_md *ctx) { int y = ; return 0; }" in str(err.value)


@needs_root
def test_dump_of_a_probe_after_another_names_the_cell_lines(session):
    source = (
        "BPF_ARRAY(seen, u64, 1);\n"  # 1
        "TRACEPOINT_PROBE(syscalls, sys_enter_getppid) { return 0; }\n"  # 2
        "TRACEPOINT_PROBE(syscalls, sys_enter_getpgid) {\n"  # 3
        "    int k = 0;\n"  # 4
        "    seen.atomic_increment(k);\n"  # 5
        "    return args->pid == 7;\n"  # 6
        "}\n"  # 7
    )
    m = session.load("probes", source, origin="cell")
    text = m.programs["tracepoint__syscalls__sys_enter_getpgid"].dump("xlated")
    cited = {line.rsplit("@ ", 1)[1] for line in text.splitlines() if line.startswith(";") and "helpers.h" not in line}
    assert {"cell:5", "cell:6"} <= cited <= {"cell:3", "cell:4", "cell:5", "cell:6"}, text


def test_header_errors_keep_the_include_stack(session, tmp_path):
    (tmp_path / "broken.h").write_text("int broken(void) { return }\n")
    (tmp_path / "prog.bpf.c").write_text('\n#include "broken.h"\nint f(struct xdp_md *ctx) { return 2; }\n')
    with pytest.raises(BpfCompileError) as err:
        session.load("hdr", file=str(tmp_path / "prog.bpf.c"))
    assert "In file included from prog.bpf.c:2:" in str(err.value) and "broken.h:1" in str(err.value)


def test_no_warning_from_bpfmagics_own_instrumentation(session):
    session.progarray("jt", 4)
    m = session.load("quiet", "int f(struct xdp_md *ctx) { jt.call(ctx, 1); return XDP_PASS; }")
    c = session.load("quietc", 'SEC("xdp") int g(struct xdp_md *ctx) { bpf_tail_call(ctx, &jt, 1); return 2; }', core=True)
    assert "warning" not in m.compile_log and "warning" not in c.compile_log


def test_size_mismatch_is_read_from_the_compiled_object(session):
    session.progarray("jmp_table", 8)
    with pytest.raises(SlotError, match="has 4 slots in this cell.*has 8 slots"):
        session.load("selftest", LIBBPF_SELF_TAIL_CALL, core=True)
    assert os.path.exists(session.array("jmp_table").pin)


SELFTEST_VALUES = r"""#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

int classifier_0(struct __sk_buff *skb);
int classifier_1(struct __sk_buff *skb);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__uint(key_size, sizeof(__u32));
	__array(values, int (void *));
} jmp_table SEC(".maps") = {
	.values = {
		[0] = (void *) &classifier_0,
		[1] = (void *) &classifier_1,
	},
};

SEC("tc") int classifier_0(struct __sk_buff *skb) { bpf_tail_call_static(skb, &jmp_table, 1); return 0; }
SEC("tc") int classifier_1(struct __sk_buff *skb) { return 7; }
SEC("tc") int entry(struct __sk_buff *skb) { bpf_tail_call_static(skb, &jmp_table, 0); return 3; }
char __license[] SEC("license") = "GPL";
"""


def test_values_initialized_prog_array_is_seen_and_freed(session):
    m = session.load("vals", SELFTEST_VALUES, core=True)
    assert session.test_run("vals.entry", data=packets.udp_packet()).retval == 7
    slots = session.slots("jmp_table").set_index("index")
    assert slots.loc[0, "program"] == "vals.classifier_0" and slots.loc[1, "program"] == "vals.classifier_1"
    assert slots.loc[0, "taken"] == 1 and slots.loc[1, "taken"] == 1
    session.unload("vals")
    from bpfmagic.kernel import libbpf

    array = session.array("jmp_table")
    assert array.entries == {} and libbpf.map_lookup_u32(array.fd, 0) is None  # the kernel's slots emptied too
    assert m.closed


GLOBALS = r"""#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile __u32 verdict_on_hit = XDP_PASS;   /* .rodata: set before load */
__u64 runs = 0;                                   /* .bss */
__u32 selector = 1;                               /* .data */
char tag[8] = "abc";
struct limits { __u32 lo; __u32 hi; } window = { 10, 20 };
__u32 seen[4];

SEC("xdp")
int count(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;

	runs++;
	seen[runs & 3] = len;
	if (len >= window.lo && len <= window.hi)
		return verdict_on_hit;
	return selector;
}
"""


def test_core_globals_read_write_and_set_before_load(session):
    m = session.load("g", GLOBALS, core=True, globals={"verdict_on_hit": 1})  # XDP_DROP
    assert m.globals["runs"] == 0 and m.globals["tag"] == "abc" and m.globals["window"] == {"lo": 10, "hi": 20}
    assert session.test_run("g.count", data=b"x" * 14).retval_name == "XDP_DROP"  # 14 bytes: in the window
    assert session.test_run("g.count", data=b"x" * 64).retval == 1  # selector
    m.globals["selector"] = 3
    m.globals["window"] = {"lo": 60, "hi": 70}
    assert session.test_run("g.count", data=b"x" * 64, repeat=3).retval_name == "XDP_DROP"
    assert session.test_run("g.count", data=b"x" * 40).retval_name == "XDP_TX"  # selector 3, written
    assert m.globals["runs"] == 6
    assert list(m.globals["seen"]) == [64, 64, 40, 64]  # runs 1..6 wrote slots 1,2,3,0,1,2
    with pytest.raises(Exception, match="frozen when the module loaded.*--set verdict_on_hit"):
        m.globals["verdict_on_hit"] = 2
    with pytest.raises(TypeError, match="window: struct limits has no field 'mid'"):
        m.globals["window"] = {"mid": 1}
    df = m.globals.df().set_index("name")
    assert df.loc["verdict_on_hit", "section"] == ".rodata" and df.loc["verdict_on_hit", "value"] == 1
    assert df.loc["runs", "section"] == ".bss" and df.loc["selector", "type"] == "__u32"


def test_object_cache_follows_included_files_and_distrusts_others(session, tmp_path, monkeypatch):
    (tmp_path / "cache").mkdir(mode=0o700)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    (src_dir / "verdict.h").write_text("#define VERDICT 1\n")
    (src_dir / "p.bpf.c").write_text(
        '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n#include "verdict.h"\nSEC("xdp") int f(struct xdp_md *ctx) { return VERDICT; }\n'
    )
    session.load("cached", file=str(src_dir / "p.bpf.c"), core=True)
    objects = tmp_path / "cache" / "bpfmagic" / "objects"
    assert len(list(objects.glob("*.o"))) == 1 and (objects.stat().st_mode & 0o777) == 0o700
    assert session.test_run("cached.f").retval == 1
    import bpfmagic.backends.libbpf as core_module

    compiles = []
    real_run = core_module.subprocess.run
    monkeypatch.setattr(core_module.subprocess, "run", lambda *a, **k: compiles.append(a) or real_run(*a, **k))
    session.load("cached", file=str(src_dir / "p.bpf.c"), core=True)  # unchanged: nothing compiled
    assert compiles == [] and session.test_run("cached.f").retval == 1
    monkeypatch.setattr(core_module.subprocess, "run", real_run)
    (src_dir / "verdict.h").write_text("#define VERDICT 3\n")  # same size, new content: the cache must see it
    session.load("cached", file=str(src_dir / "p.bpf.c"), core=True)
    assert session.test_run("cached.f").retval == 3
    # a header changed with its size and mtime kept (`cp -p`, `rsync -t`): the content decides
    header = src_dir / "verdict.h"
    kept = header.stat()
    header.write_text("#define VERDICT 4\n")
    os.utime(header, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    assert header.stat().st_size == kept.st_size and header.stat().st_mtime_ns == kept.st_mtime_ns
    session.load("cached", file=str(src_dir / "p.bpf.c"), core=True)
    assert session.test_run("cached.f").retval == 4
    header.write_text("#define VERDICT 3\n")
    session.load("cached", file=str(src_dir / "p.bpf.c"), core=True)
    for obj in objects.glob("*.o"):  # a damaged object is compiled again, not loaded
        obj.write_bytes(b"\0" * 64)
    session.load("cached", file=str(src_dir / "p.bpf.c"), core=True)
    assert session.test_run("cached.f").retval == 3
    # A cache directory others can write is not read: it is rebuilt, and what was planted in it is gone.
    objects.chmod(0o777)
    (objects / "planted.json").write_text("{}")
    (src_dir / "verdict.h").write_text("#define VERDICT 2\n")
    session.load("cached", file=str(src_dir / "p.bpf.c"), core=True)
    assert session.test_run("cached.f").retval == 2
    assert (objects.stat().st_mode & 0o777) == 0o700 and not (objects / "planted.json").exists()


def test_test_run_of_an_skb_function_takes_its_chains_type(session):
    session.progarray("sk", 4, type="socket_filter")
    session.load("tail", "int st2(struct __sk_buff *skb) { return 2; }", slots={"sk[1]": "st2"})
    session.load("head", "int st1(struct __sk_buff *skb) { sk.call(skb, 1); return 1; }")
    result = session.test_run("head.st1", data=packets.udp_packet())
    assert result.type == "socket_filter" and result.retval == 2


@pytest.mark.parametrize(
    "source, core, expected",
    [
        (
            "BPF_PROG_ARRAY(jt, 4);\nstatic __attribute__((noinline)) void sub(struct xdp_md *ctx) "
            '{ bpf_tail_call(ctx, &jt, 0); }\nSEC("xdp") int f(struct xdp_md *ctx) { sub(ctx); return 0; }\n',
            True,
            "must return int",
        ),
        (
            "int f(struct bpf_raw_tracepoint_args *ctx) { int x = 0; bpf_probe_write_user((void *)ctx->args[0], &x, 4); return 0; }\n",
            False,
            "may not call that helper",
        ),
        (
            "BPF_ARRAY(a, u64, 4);\nint f(struct xdp_md *ctx) { int k = 0; u64 *v = a.lookup(&k); if (!v) return 0; "
            "u32 i = ctx->data_end - ctx->data; return *(v + i); }\n",
            False,
            "no upper bound",
        ),
        ("int f(struct xdp_md *ctx) { ctx++; return ctx->data; }\n", False, "read fields through the ctx"),
        ('SEC("xdp") int f(struct xdp_md *ctx) { volatile int i = 0; while (1) { i++; } return 0; }\n', True, "loop"),
    ],
)
def test_verifier_hints_only_where_the_log_says_so(session, source, core, expected):
    with pytest.raises(BpfVerifierError) as err:
        session.load("e", source, core=core)
    text = str(err.value)
    assert expected in text
    assert "can return NULL" not in text and "after the verifier accepted" not in text


def test_libbpf_refusals_are_not_called_verifier_rejections(session):
    with pytest.raises(BpfCompileError) as err:
        session.load(
            "e",
            '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n#include <bpf/bpf_tracing.h>\n'
            'SEC("tp_btf/no_such_event") int BPF_PROG(h) { return 0; }\n',
            core=True,
        )
    assert "libbpf refused to load e" in str(err.value) and "no 'no_such_event'" in str(err.value)
    assert "verifier rejected" not in str(err.value)


def test_a_slotted_program_keeps_its_section_attachment(session):
    import os as _os

    session.progarray("rt", 4)
    m = session.load(
        "both",
        """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); } hits SEC(".maps");
SEC("raw_tp/sys_enter") int on_enter(void *ctx)
{ __u32 k = 0; __u64 *v = bpf_map_lookup_elem(&hits, &k); if (v) __sync_fetch_and_add(v, 1); return 0; }
""",
        core=True,
        slots={"rt[0]": "on_enter"},
    )
    for _ in range(10):
        _os.getppid()
    assert m.auto_attached == ["on_enter"] and m["hits"][0].value >= 10
    assert session.array("rt").entries[0] is m.programs["on_enter"]


def test_a_program_over_the_verifiers_budget_says_so(session):
    with pytest.raises(BpfVerifierError) as err:
        session.load(
            "big",
            """
BPF_ARRAY(a, u64, 1);
int f(struct xdp_md *ctx) {
    u64 sum = 0;
    #pragma clang loop unroll(disable)
    for (u32 i = 0; i < 200000; i++) { int k = 0; u64 *v = a.lookup(&k); if (v) sum += *v + i; }
    return sum & 1;
}""",
        )
    text = str(err.value)
    assert "1,000,000 instructions" in text and "tail calls" in text and "at most 4096" not in text


EXACT_GLOBALS = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct cfg { __u32 a; __u32 b; __u32 c; };
float fa = 1.5;
float fb = 7.0;
__u32 quad[4] = {1, 2, 3, 4};
__u32 after_quad = 9;
struct cfg conf = {1, 2, 3};
const volatile float ra = 0.5;
const volatile __u32 rb = 11;
SEC("xdp") int f(struct xdp_md *ctx) { return rb == 11 ? XDP_PASS : XDP_DROP; }  /* floats: no BPF arithmetic */
char LICENSE[] SEC("license") = "GPL";
"""


def test_globals_writes_are_exact_in_type_and_size(session):
    """A value of the wrong shape never spills into the next variable or guesses: a list into
    a float, None, [] or a str into a u32[4], a list into .rodata before load are refused;
    a partial dict keeps the struct's other fields through every door."""
    from bpfmagic.errors import ValueTypeError

    m = session.load("ex", EXACT_GLOBALS, core=True)
    for name, bad, said in [
        ("fa", [3.0, 2.0], "takes a number, not list"),
        ("fa", None, "takes a number, not NoneType"),
        ("quad", [], "takes exactly 4 values, not 0"),
        ("quad", "ab", "takes a sequence of 4 values, not str"),
        ("quad", [1, 2, 3, 4, 5], "takes exactly 4 values, not 5"),
        ("conf", 5, "takes a dict of its fields"),
    ]:
        with pytest.raises(ValueTypeError, match=said):
            m.globals[name] = bad
    assert m.globals["fb"] == 7.0 and list(m.globals["quad"]) == [1, 2, 3, 4] and m.globals["after_quad"] == 9
    m.globals["conf"] = {"a": 42}
    assert m.globals["conf"] == {"a": 42, "b": 2, "c": 3}  # the fields not named are kept
    with pytest.raises(ValueTypeError, match="takes a number, not list"):
        session.load("ex2", EXACT_GLOBALS, core=True, globals={"ra": [3.0, 2.0]})
    assert "ex2" not in session.modules
    m2 = session.load("ex3", EXACT_GLOBALS, core=True, globals={"ra": 0.5, "conf": {"b": 5}})
    assert m2.globals["rb"] == 11 and m2.globals["conf"] == {"a": 1, "b": 5, "c": 3}
    assert session.test_run("ex3.f").retval_name == "XDP_PASS"


def test_set_and_globals_in_the_magics(fresh):
    res = fresh.run_cell(
        '%%bpf cfg --core --set verdict=1 --cflags "-DA=1 -DB=1"\n'
        '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n'
        "const volatile __u32 verdict = 2;\n__u64 runs;\n"
        'SEC("xdp") int f(struct xdp_md *ctx) { runs += A + B; return verdict; }\n'
    )
    assert res.success, res.error_in_exec
    assert fresh.run_line_magic("bpf", "run cfg.f").retval == 1  # XDP_DROP: set before load
    df = fresh.run_line_magic("bpf", "globals cfg").set_index("name")
    assert df.loc["runs", "value"] == 2 and df.loc["verdict", "section"] == ".rodata"


SELF_CALL_WITH_GLOBAL = r"""// SPDX-License-Identifier: GPL-2.0
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

int classifier_0(struct __sk_buff *skb);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__array(values, int (void *));
} jmp_table SEC(".maps") = {
	.values = { [0] = (void *) &classifier_0 },
};

int count = 0;

SEC("tc")
int classifier_0(struct __sk_buff *skb)
{
	count++;
	bpf_tail_call_static(skb, &jmp_table, 0);
	return 1;
}

SEC("tc")
int entry(struct __sk_buff *skb)
{
	bpf_tail_call_static(skb, &jmp_table, 0);
	return 0;
}

char __license[] SEC("license") = "GPL";
"""


def test_uapi_includes_values_init_and_a_bss_count_as_the_selftests_check(session):
    m = session.load("tc3", SELF_CALL_WITH_GLOBAL, core=True)
    result = session.test_run("tc3.entry", data=packets.udp_packet())
    assert result.retval == 1 and m.globals["count"] == 33  # 33 tail calls reach classifier_0, the 34th falls through
    slot = session.slots("jmp_table").set_index("index").loc[0]
    assert slot["program"] == "tc3.classifier_0" and (slot["calls"], slot["taken"], slot["missed"]) == (34, 33, 1)


@pytest.mark.parametrize("core", [False, True])
def test_array_declared_in_if_branches_takes_the_branch_the_compiler_keeps(session, core):
    if core:
        src = (
            '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\nstruct {\n'
            "\t__uint(type, BPF_MAP_TYPE_PROG_ARRAY);\n#if 0\n\t__uint(max_entries, 4);\n#else\n"
            "\t__uint(max_entries, 9);\n#endif\n\t__type(key, __u32);\n\t__type(value, __u32);\n"
            '} progs SEC(".maps");\nSEC("xdp") int f(struct xdp_md *ctx) { bpf_tail_call(ctx, &progs, 1); return 2; }\n'
        )
    else:
        src = (
            "#if 0\nBPF_PROG_ARRAY(progs, 4);\n#else\nBPF_PROG_ARRAY(progs, 9);\n#endif\n"
            "int f(struct xdp_md *ctx) { progs.call(ctx, 1); return 2; }\n"
        )
    session.load("branches", src, core=core)
    assert session.array("progs").size == 9
    assert session.test_run("branches.f").retval == 2
    slot = session.slots("progs").set_index("index").loc[1]
    assert (slot["calls"], slot["missed"]) == (1, 1)  # counted through the declaration the compiler kept


def test_set_a_char_array_global_from_digits(session):
    m = session.load(
        "pid",
        '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n'
        'const volatile char pid_to_hide[8] = "";\nconst volatile int len = 0;\n'
        "SEC(\"xdp\") int f(struct xdp_md *ctx) { return pid_to_hide[0] == '1' ? len : 0; }\n",
        core=True,
        globals={"pid_to_hide": "123", "len": "3"},
    )
    assert m.globals["pid_to_hide"] == "123" and session.test_run("pid.f").retval == 3
    with pytest.raises(TypeError, match="pid_to_hide"):
        session.load("pid2", m.source, core=True, globals={"pid_to_hide": 5})


def test_a_slotted_program_with_a_placeholder_section_runs_through_its_slot(session):
    m = session.load(
        "ph",
        """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 4); __type(key, __u32); __type(value, __u32); } progs SEC(".maps");
SEC("tp/unused") int patch(void *ctx) { return 0; }
SEC("tp/sched/sched_switch") int enter(void *ctx) { bpf_tail_call(ctx, &progs, 2); return 0; }
""",
        core=True,
        slots={"progs[2]": "patch"},
    )
    assert m.auto_attached == ["enter"] and session.array("progs").entries[2] is m.programs["patch"]
    assert any(n.startswith("patch runs through its slot only") for n in m.notes)
    with pytest.raises(AttachError, match="unused"):  # not slotted: attaching is its only use, so it must work
        session.load("ph2", '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\nSEC("tp/unused") int patch(void *ctx) { return 0; }\n', core=True)


def test_uapi_header_reaching_glibc_stubs_compiles(session):
    session.load(
        "ifh",
        "#include <linux/bpf.h>\n#include <linux/if.h>\n#include <bpf/bpf_helpers.h>\n"
        'SEC("xdp") int f(struct xdp_md *ctx) { return IFNAMSIZ == 16 ? XDP_PASS : XDP_DROP; }\n',
        core=True,
    )
    assert session.test_run("ifh.f").retval_name == "XDP_PASS"


def test_macro_notes_stay_with_the_error(session):
    with pytest.raises(BpfCompileError) as err:
        session.load(
            "note",
            '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n#define BAD(x) (x +)\nSEC("xdp") int f(struct xdp_md *ctx) { return BAD(1); }\n',
            core=True,
            origin="cell",
        )
    assert "cell:4:" in str(err.value) and "expanded from macro 'BAD'" in str(err.value)


def test_libbpf_style_c_without_core_says_to_use_core(session):
    with pytest.raises(BpfCompileError, match="load it with --core"):
        session.load("nocore", '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\nSEC("xdp") int f(struct xdp_md *ctx) { return XDP_PASS; }\n')


def test_size_mismatch_advice_names_the_modules_to_unload_first(session):
    session.load("user", "BPF_PROG_ARRAY(jt, 4);\nint f(struct xdp_md *ctx) { jt.call(ctx, 0); return 2; }")
    with pytest.raises(SlotError) as err:
        session.load("other", "BPF_PROG_ARRAY(jt, 8);\nint g(struct xdp_md *ctx) { return 2; }")
    assert "`%bpf unload user`, `%bpf unload jt`" in str(err.value)
    session.unload("user")
    session.unload("jt")  # the advice works
    session.load("other", "BPF_PROG_ARRAY(jt, 8);\nint g(struct xdp_md *ctx) { return 2; }")
    assert session.array("jt").size == 8


def test_a_core_program_over_the_budget_keeps_the_whole_log(session):
    # The log is tens of megabytes; the reason is at its end (libbpf's messages are formatted whole).
    with pytest.raises(BpfVerifierError) as err:
        session.load(
            "big",
            '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n'
            "struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); "
            '__type(value, __u64); } a SEC(".maps");\n'
            'SEC("xdp") int f(struct xdp_md *ctx) {\n    __u64 sum = 0;\n'
            "    #pragma clang loop unroll(disable)\n    for (__u32 i = 0; i < 200000; i++) "
            "{ __u32 k = 0; __u64 *v = bpf_map_lookup_elem(&a, &k); if (v) sum += *v + i; }\n"
            "    return sum & 1;\n}\n",
            core=True,
        )
    text = str(err.value)
    assert "BPF program is too large" in text and "tail calls" in text and len(err.value.log) > 1 << 20


def test_an_empty_cell_says_it_has_no_code(session):
    with pytest.raises(UsageProblem, match="has no C code"):
        session.load("empty", "  // nothing yet\n")


def test_core_compiles_for_the_isa_the_kernel_runs(session):
    # A 32-bit fetch-and-add whose old value is used needs BPF v3 atomics.
    m = session.load(
        "atom",
        '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n__u32 counter = 5;\n'
        'SEC("xdp") int f(struct xdp_md *ctx) { __u32 old = __sync_fetch_and_add(&counter, 1); '
        "return old == 5 ? XDP_DROP : XDP_PASS; }\n",
        core=True,
    )
    assert session.test_run("atom.f").retval_name == "XDP_DROP"
    assert session.test_run("atom.f").retval_name == "XDP_PASS" and m.globals["counter"] == 7


UNBOUNDED_READ = """#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
SEC("raw_tp/sys_enter") int peek(struct bpf_raw_tracepoint_args *ctx) {
    char buf[64];
    __u64 n = ctx->args[1];                       /* a size the verifier cannot bound */
    bpf_probe_read_kernel(buf, n, (void *)ctx->args[0]);
    return 0;
}
char LICENSE[] SEC("license") = "GPL";
"""


def test_a_bounds_refusal_of_a_core_cell_names_the_isa_it_was_compiled_for(session):
    """--core builds for BPF v3; code written for clang's older default can lose its bounds
    there, so a bounds refusal says how to try v1 (and not when the cell chose its ISA)."""
    from bpfmagic import BpfVerifierError

    with pytest.raises(BpfVerifierError) as info:
        session.load("peek", UNBOUNDED_READ, core=True)
    text = str(info.value)
    assert "R2 min value is negative" in text and "make it unsigned and bound it" in text
    assert '--cflags "-mcpu=v1"' in text
    with pytest.raises(BpfVerifierError) as info:
        session.load("peek", UNBOUNDED_READ, core=True, cflags="-mcpu=v1")
    assert "-mcpu=v1" not in str(info.value)


def test_each_hint_is_shown_once(session):
    with pytest.raises(BpfVerifierError) as err:
        session.load(
            "null",
            "BPF_HASH(last, u32, u64);\nint f(struct xdp_md *ctx) { u32 k = 0; u64 *v = last.lookup(&k); "
            "*v = bpf_ktime_get_ns(); return XDP_PASS; }\n",
        )
    hints = [line for line in str(err.value).splitlines() if line.startswith("HINT:")]
    assert hints and len(hints) == len(set(hints)), hints


# Old kernel samples and Katran declare the helpers themselves, bpf_tail_call returning void.
OWN_HELPERS_H = """\
#define SEC(NAME) __attribute__((section(NAME), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
static void (*bpf_tail_call)(void *ctx, void *map, int index) = (void *) 12;
"""
OWN_HELPERS_CORE = """\
#include <linux/bpf.h>
#include "own_helpers.h"

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u32);
} root_array SEC(".maps");

SEC("xdp") int xdp_root(struct xdp_md *ctx) { bpf_tail_call(ctx, &root_array, 1); return XDP_PASS; }
SEC("xdp") int xdp_stage(struct xdp_md *ctx) { return XDP_DROP; }
"""
OWN_HELPERS_BCC = """\
#include "own_helpers.h"
BPF_PROG_ARRAY(root_array, 4);
int xdp_root(struct xdp_md *ctx) { root_array.call(ctx, 1); return XDP_PASS; }
int xdp_stage(struct xdp_md *ctx) { return XDP_DROP; }
"""


@needs_root
@pytest.mark.parametrize("core", [False, True])
def test_a_header_that_declares_bpf_tail_call_itself_is_counted(session, tmp_path, core):
    (tmp_path / "own_helpers.h").write_text(OWN_HELPERS_H)
    (tmp_path / "root.bpf.c").write_text(OWN_HELPERS_CORE if core else OWN_HELPERS_BCC)
    session.load("root", file=str(tmp_path / "root.bpf.c"), core=core, slots={"root_array[1]": "xdp_stage"})
    result = session.test_run("root.xdp_root", repeat=3)
    assert result.retval_name == "XDP_DROP"
    assert result.tail_calls[["slot", "calls", "taken"]].values.tolist() == [["root_array[1]", 3, 3]]
