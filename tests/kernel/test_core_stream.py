"""Streams of --core ring buffers: the record struct named by the cell's
bpf_ringbuf_output / bpf_ringbuf_reserve calls, its layout read from the
object's BTF, the same bulk reader as BCC rings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bpfmagic import UsageProblem
from bpfmagic.events import StreamWarning
from bpfmagic.kernel import libbpf

from ..conftest import needs_root, stream_threads, wait_for

pytestmark = needs_root

PACKET = bytes(64)

MAPS = r"""
struct event { u64 seq; u32 len; char tag[8]; s16 neg; u8 raw[3]; };
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, RING); } events SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, u32); __type(value, u64); } seqs SEC(".maps");
"""

OUTPUT = (
    MAPS
    + r"""
SEC("xdp") int produce(struct xdp_md *ctx) {
    u32 k = 0;
    u64 *seq = bpf_map_lookup_elem(&seqs, &k);
    if (!seq) return XDP_ABORTED;
    struct event rec = {.seq = (*seq)++, .len = ctx->data_end - ctx->data, .tag = "core", .neg = -3,
                        .raw = {1, 2, 3}};
    bpf_ringbuf_output(&events, &rec, sizeof(rec), 0);
    return XDP_PASS;
}"""
)

RESERVE = (
    MAPS
    + r"""
SEC("xdp") int produce(struct xdp_md *ctx) {
    u32 k = 0;
    u64 *seq = bpf_map_lookup_elem(&seqs, &k);
    if (!seq) return XDP_ABORTED;
    struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e) return XDP_DROP;
    e->seq = (*seq)++;
    e->len = ctx->data_end - ctx->data;
    __builtin_memcpy(e->tag, "reserved", 8);   /* all 8 bytes: no NUL */
    e->neg = -7;
    e->raw[0] = 9; e->raw[1] = 8; e->raw[2] = 7;
    bpf_ringbuf_submit(e, 0);
    return XDP_PASS;
}"""
)


def produce(module, runs: int) -> None:
    libbpf.test_run(module.program("produce").fd, data=PACKET, repeat=runs)


def test_core_ringbuf_output_records_arrive_exactly_in_order(session):
    m = session.load("co", OUTPUT, core=True, cflags=["-DRING=256*1024"])
    st = session.stream("events")
    assert st is session.stream("co.events") and m.streams == {"events": st}
    assert st.kind == "ringbuf" and st.loss_counted and st.rtype.itemsize == 32
    n = 5000
    produce(m, n)
    assert st.wait(n, timeout=10), st
    df = st.df()
    assert list(df.columns) == ["seq", "len", "tag", "neg", "raw"]
    assert [str(t) for t in df.dtypes[:2]] == ["uint64", "uint32"] and str(df.dtypes["neg"]) == "int16"
    assert len(df) == n and st.count == n and st.lost == 0
    assert np.array_equal(df["seq"].to_numpy(), np.arange(n, dtype=np.uint64))
    assert (df["len"] == len(PACKET)).all() and (df["neg"] == -3).all()
    assert set(df["tag"]) == {"core"} and df["raw"][0].tolist() == [1, 2, 3]
    assert sorted(m.tables) == ["events", "seqs"]  # __bm_lost and the .bss of the type anchors stay hidden


def test_core_reserve_submit_and_lost_count(session):
    m = session.load("co", RESERVE, core=True, cflags=["-DRING=4096"])
    st = session.stream("events")
    st.stop()  # nobody consumes: the 4 KiB ring fills up (40-byte slots: 102 fit)
    produce(m, 300)
    assert st.loss_counted and libbpf.percpu_u64_sums(m.object.map_fd("__bm_lost"), 1) == [300 - 4096 // 40]
    session.unload("co")
    m = session.load("co", RESERVE, core=True, cflags=["-DRING=4096"])
    st = session.stream("events")
    produce(m, 20_000)  # faster than any consumer: some are lost, none twice, none unaccounted
    assert wait_for(lambda: st.count + st.lost == 20_000), st
    assert st.lost > 0 and np.array_equal(np.diff(st.df()["seq"].to_numpy().astype(np.int64)) > 0, np.ones(st.count - 1, bool))
    session.unload("co")
    m = session.load("co", RESERVE, core=True, cflags=["-DRING=256*1024"])
    st = session.stream("events")
    produce(m, 1000)
    assert st.wait(1000, timeout=10), st
    df = st.df()
    assert df["seq"].tolist() == list(range(1000)) and st.lost == 0
    assert set(df["tag"]) == {"reserved"} and (df["neg"] == -7).all() and df["raw"][999].tolist() == [9, 8, 7]


def test_undeterminable_struct_says_why(session):
    session.load(
        "co",
        MAPS
        + r"""
SEC("xdp") int produce(struct xdp_md *ctx) {
    char buf[8] = {};
    bpf_ringbuf_output(&events, (void *)buf + 0, 8, 0);
    return XDP_PASS;
}""",
        core=True,
        cflags=["-DRING=4096"],
    )
    with pytest.raises(
        UsageProblem,
        match=r"co\.events is not streamed: cannot tell which struct goes into "
        r"events: use bpf_ringbuf_output\(&events, &rec, sizeof\(rec\), 0\) "
        r"with a struct variable",
    ):
        session.stream("events")


def test_bit_fields_are_refused_with_the_reason(session):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session.load(
            "co",
            r"""
struct rec { u32 a:4, b:28; u64 c; };
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } bits SEC(".maps");
SEC("xdp") int produce(struct xdp_md *ctx) {
    struct rec r = {.a = 3, .b = 5};
    bpf_ringbuf_output(&bits, &r, sizeof(r), 0);
    return XDP_PASS;
}""",
            core=True,
        )
    assert any(issubclass(w.category, StreamWarning) for w in caught)
    with pytest.raises(UsageProblem, match=r"co\.bits is not streamed: .*struct rec has bit-fields \(a:4, b:28\)"):
        session.stream("bits")


def test_core_perf_event_arrays_stream_their_records(session):
    # libbpf-bootstrap's shape: 4-byte key and value sizes, a struct written with bpf_perf_event_output
    session.load(
        "co",
        r"""
struct bm_sample { u64 seq; u32 cpu_tag; };
struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); __uint(key_size, 4); __uint(value_size, 4); } pe SEC(".maps");
u64 next_seq = 0;
SEC("xdp") int produce(struct xdp_md *ctx) {
    struct bm_sample s = { .seq = __sync_fetch_and_add(&next_seq, 1), .cpu_tag = 77 };
    bpf_perf_event_output(ctx, &pe, BPF_F_CURRENT_CPU, &s, sizeof(s));
    return XDP_PASS;
}""",
        core=True,
    )
    assert not any("not streamed" in n for n in session.modules["co"].notes)
    session.test_run("co.produce", data=PACKET, repeat=200)
    stream = session.stream("pe")
    assert wait_for(lambda: len(stream.df()) == 200)
    df = stream.df()
    assert df["seq"].tolist() == list(range(200)) and set(df["cpu_tag"]) == {77}
    assert stream.lost == 0


def test_event_maps_typed_the_cilium_way_load_and_stream(session):
    # cilium/ebpf's examples declare the record as the value type of a ring buffer or a perf
    # event array; cilium/ebpf ignores it, the kernel refuses it
    session.load(
        "cil",
        r"""
struct event { u32 pid; u8 comm[16]; };
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 16); __type(value, struct event); } ring SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); __type(value, struct event); } perf SEC(".maps");
SEC("xdp") int produce(struct xdp_md *ctx) {
    struct event e = { .pid = 4242 };
    __builtin_memcpy(e.comm, "cilium", 7);
    bpf_ringbuf_output(&ring, &e, sizeof(e), 0);
    bpf_perf_event_output(ctx, &perf, BPF_F_CURRENT_CPU, &e, sizeof(e));
    return XDP_PASS;
}""",
        core=True,
        origin="cell",
    )
    notes = session.modules["cil"].notes
    assert any(n.startswith("ring (cell:3) has a 20-byte value: a ring buffer has no key or value") for n in notes)
    assert any(n.startswith("perf (cell:4) has no key size and a 20-byte value: a perf event array's keys and values are 4 bytes") for n in notes)
    session.test_run("cil.produce", data=PACKET, repeat=3)
    for table in ("ring", "perf"):
        stream = session.stream(table)
        assert wait_for(lambda stream=stream: len(stream.df()) == 3)
        assert stream.df()["pid"].tolist() == [4242] * 3


def test_unload_stops_the_core_stream(session):
    m = session.load("life", OUTPUT, core=True, cflags=["-DRING=4096"])
    st = session.stream("life.events")
    produce(m, 10)
    assert st.wait(10, timeout=10)
    assert st.running and stream_threads() == ["bpfmagic-stream-life.events"]
    session.unload("life")
    assert not st.running and stream_threads() == [] and st.count == 10
    assert session.streams.names() == [] and len(st.df()) == 10


def test_bpf_df_of_a_core_ring_through_the_magic():
    from ..programs import bpf_shell

    with bpf_shell() as ip:
        ip.run_cell_magic("bpf", 'mag --core --cflags "-DRING=4096"', OUTPUT)
        produce(ip.user_ns["mag"], 50)
        import bpfmagic

        assert bpfmagic.session().stream("mag.events").wait(50, timeout=10)
        df = ip.run_line_magic("bpf", "df events --last 3")
        assert df["seq"].tolist() == [47, 48, 49] and df["tag"].tolist() == ["core"] * 3
        ip.run_line_magic("bpf", "reset")
        assert stream_threads() == []


# libbpf-bootstrap's sockfilter record shape: an anonymous union (ports / port16) and, here, an anonymous struct.
ANONYMOUS_MEMBERS = r"""
struct flow_event {
    __u32 src_addr;
    union {
        __u32 ports;
        __u16 port16[2];
    };
    struct {
        __u8 ip_proto;
        __u8 ttl;
    };
    __u32 len;
};
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 16); } flows SEC(".maps");
SEC("xdp") int report(struct xdp_md *ctx) {
    struct flow_event *e = bpf_ringbuf_reserve(&flows, sizeof(*e), 0);
    if (!e) return XDP_DROP;
    e->src_addr = 0x0100000a;
    e->port16[0] = 53;
    e->port16[1] = 80;
    e->ip_proto = 17;
    e->ttl = 64;
    e->len = ctx->data_end - ctx->data;
    bpf_ringbuf_submit(e, 0);
    return XDP_PASS;
}
"""


def test_anonymous_union_and_struct_members_are_columns_as_c_names_them(session):
    m = session.load("flows", ANONYMOUS_MEMBERS, core=True)
    libbpf.test_run(m.program("report").fd, data=PACKET, repeat=3)
    st = session.stream("flows")
    assert st.wait(3, timeout=10), st
    df = st.df()
    assert list(df.columns) == ["src_addr", "ports", "port16", "ip_proto", "ttl", "len"]
    assert df["port16"][0].tolist() == [53, 80] and (df["ports"] == 53 | 80 << 16).all()  # the union's members share their bytes
    assert (df["ip_proto"] == 17).all() and (df["ttl"] == 64).all() and (df["len"] == len(PACKET)).all()
    assert st.rtype.itemsize == 16


def test_a_libbpf_tools_uretprobe_streams_what_bash_reads(session):
    """libbpf-tools' bashreadline shape: BPF_URETPROBE (libbpf 1.2's spelling; Debian 12's
    libbpf 1.1 lacks it) on readline, a perf event array written with bpf_perf_event_output."""
    import os
    import pty

    session.load(
        "br",
        r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
struct line_event { u32 pid; char str[32]; };
struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); __uint(key_size, sizeof(u32)); __uint(value_size, sizeof(u32)); } events SEC(".maps");
SEC("uretprobe//bin/bash:readline")
int BPF_URETPROBE(printret, const void *ret)
{
    struct line_event e = { .pid = bpf_get_current_pid_tgid() >> 32 };
    if (!ret)
        return 0;
    bpf_probe_read_user_str(&e.str, sizeof(e.str), ret);
    bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
    return 0;
}""",
        core=True,
    )
    # the section names the binary: attached from it, as libbpf's loaders do
    assert [str(a.target) for a in session.modules["br"].attachments] == ["uretprobe:/bin/bash:readline"]
    pid, fd = pty.fork()
    if pid == 0:
        os.execv("/bin/bash", ["bash", "--norc", "--noprofile", "-i"])
    try:
        stream = session.stream("events")
        os.write(fd, b"echo bpfmagic-typed-this\n")
        assert wait_for(lambda: "echo bpfmagic-typed-this" in stream.df()["str"].tolist(), timeout=10)
        os.write(fd, b"exit\n")
    finally:
        os.waitpid(pid, 0)
        os.close(fd)
    assert set(stream.df()["pid"]) == {pid}


def test_a_uprobe_section_without_its_binary_says_how_to_attach(session):
    m = session.load(
        "br2",
        'SEC("uretprobe/readline") int printret(struct pt_regs *ctx) { return 0; }',
        core=True,
    )
    assert m.attachments == []
    assert 'printret is not attached: SEC("uretprobe/readline") names no binary' in " ".join(m.notes)
    assert "-a printret=uretprobe:/PATH/TO/BINARY:readline" in " ".join(m.notes)


def test_a_perf_stream_counts_every_record_the_program_could_not_write(session):
    """The kernel reports a perf buffer's losses only at that CPU's next successful write;
    the cell's bpf_perf_event_output calls are counted where they fail, so count + lost is
    what was sent as soon as the reader has drained the buffer."""
    session.streams.perf_pages = 1  # a small buffer: the flood outruns the reader
    m = session.load(
        "pl",
        r"""
struct big { u64 seq; u64 pad[50]; };
struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); __uint(key_size, 4); __uint(value_size, 4); } pe SEC(".maps");
u64 sent = 0;
SEC("xdp") int produce(struct xdp_md *ctx) {
    struct big e = { .seq = sent++ };
    bpf_perf_event_output(ctx, &pe, BPF_F_CURRENT_CPU, &e, sizeof(e));
    return XDP_PASS;
}""",
        core=True,
    )
    libbpf.test_run(m.program("produce").fd, data=PACKET, repeat=100_000)
    stream = session.stream("pe")
    assert wait_for(lambda: stream.count + stream.lost == 100_000, timeout=20), stream
    assert stream.lost > 0 and m.globals["sent"] == 100_000


def test_a_uprobe_on_a_symbol_the_binary_lacks_says_which(session):
    from bpfmagic import AttachError

    with pytest.raises(AttachError, match=r"/bin/bash has no symbol 'bm_no_such_function'"):
        session.load("nos", 'SEC("uprobe//bin/bash:bm_no_such_function") int f(struct pt_regs *ctx) { return 0; }', core=True)
    with pytest.raises(AttachError, match=r"there is no file /bm/none"):
        session.load("nof", 'SEC("uprobe//bm/none:readline") int f(struct pt_regs *ctx) { return 0; }', core=True)
