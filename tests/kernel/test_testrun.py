"""BPF_PROG_TEST_RUN through Session.test_run and `%bpf run`, and the packet
builders, on the real kernel."""

from __future__ import annotations

import struct

import pytest

from bpfmagic import UsageProblem
from bpfmagic.experiments import packets

from ..conftest import needs_root, prog_fdinfo

# ------------------------------------------------------------------ test_run

PROGRAMS = r"""
#include <linux/pkt_cls.h>
int pass(struct xdp_md *ctx) { return XDP_PASS; }
int drop(struct xdp_md *ctx) { return XDP_DROP; }
int aborted(struct xdp_md *ctx) { return XDP_ABORTED; }
int redirect(struct xdp_md *ctx) { return XDP_REDIRECT; }
/* Swap the MAC addresses and bounce the frame: data out must show it. */
int bounce(struct xdp_md *ctx) {
    u8 *p = (u8 *)(long)ctx->data;
    if ((void *)(p + 12) > (void *)(long)ctx->data_end)
        return XDP_ABORTED;
    for (int i = 0; i < 6; i++) { u8 t = p[i]; p[i] = p[i + 6]; p[i + 6] = t; }
    return XDP_TX;
}
/* The IP protocol byte (offset 23 in an Ethernet frame). */
int proto(struct xdp_md *ctx) {
    u8 *p = (u8 *)(long)ctx->data;
    if ((void *)(p + 24) > (void *)(long)ctx->data_end)
        return XDP_ABORTED;
    return p[23];
}
int tc_shot(struct __sk_buff *skb) { return TC_ACT_SHOT; }
int tc_unspec(struct __sk_buff *skb) { return -1; }
int tc_len(struct __sk_buff *skb) { return skb->len; }
/* Loaded as a socket filter: the kernel hands it the packet from the IP header on. */
int sf_proto(struct __sk_buff *skb) { return load_byte(skb, 9); }
int raw(struct bpf_raw_tracepoint_args *ctx) { return ctx->args[0] * 3 + ctx->args[1]; }
"""


@pytest.fixture
def progs(session):
    session.load("t", PROGRAMS)
    return session


@needs_root
def test_xdp_retvals_have_their_names(progs):
    expected = {"pass": (2, "XDP_PASS"), "drop": (1, "XDP_DROP"), "aborted": (0, "XDP_ABORTED"), "redirect": (4, "XDP_REDIRECT")}
    for func, (retval, name) in expected.items():
        r = progs.test_run(f"t.{func}")
        assert (r.type, r.retval, r.retval_name) == ("xdp", retval, name)
        assert r.data_in == packets.udp_packet()  # the default packet


@needs_root
def test_xdp_data_out_and_repeat(progs):
    frame = packets.udp_packet(src_mac="aa:bb:cc:dd:ee:01", dst_mac="aa:bb:cc:dd:ee:02", payload=b"ping")
    swapped = packets.mac("aa:bb:cc:dd:ee:01") + packets.mac("aa:bb:cc:dd:ee:02") + frame[12:]
    r = progs.test_run("t.bounce", data=frame)
    assert (r.retval_name, r.data_out) == ("XDP_TX", swapped)
    # The kernel runs every repeat on the same buffer: writes accumulate, an even number of swaps undoes them.
    r = progs.test_run("t.bounce", data=frame, repeat=1000)
    assert r.data_out == frame
    assert r.repeat == 1000 and r.ns_per_run > 0
    assert progs.test_run("t.bounce", data=frame, repeat=999).data_out == swapped
    assert progs.program("t.bounce").run_cnt == 1 + 1000 + 999
    assert progs.test_run("t.proto", data=packets.tcp_packet()).retval == packets.IPPROTO_TCP
    assert progs.test_run("t.proto", data=packets.udp_packet().hex()).retval == packets.IPPROTO_UDP  # hex text


@needs_root
def test_tc_retvals_are_signed_and_named(progs):
    r = progs.test_run("t.tc_shot")
    assert (r.type, r.retval, r.retval_name) == ("sched_cls", 2, "TC_ACT_SHOT")
    r = progs.test_run("t.tc_unspec")
    assert (r.retval, r.retval_name) == (-1, "TC_ACT_UNSPEC")
    frame = packets.udp_packet(payload=b"12345")
    r = progs.test_run("t.tc_len", data=frame, repeat=10)
    assert (r.retval, r.retval_name) == (len(frame), None)
    assert r.data_out == frame


@needs_root
def test_socket_filter_by_type_override(progs):
    r = progs.test_run("t.sf_proto", data=packets.tcp_packet(), type="socket_filter")
    assert (r.type, r.retval, r.retval_name) == ("socket_filter", packets.IPPROTO_TCP, "keep 6 bytes")
    with pytest.raises(Exception, match="loaded as socket_filter"):
        progs.test_run("t.sf_proto", type="sched_cls")


@needs_root
def test_raw_tracepoint_runs_with_ctx_only(progs):
    r = progs.test_run("t.raw", ctx=struct.pack("<2Q", 5, 7))
    assert (r.type, r.retval, r.ns_per_run, r.data_out) == ("raw_tracepoint", 22, None, None)
    assert progs.test_run("t.raw").retval == 0  # default: zero args
    with pytest.raises(UsageProblem, match="repeat"):
        progs.test_run("t.raw", repeat=10)
    with pytest.raises(UsageProblem, match="no data"):
        progs.test_run("t.raw", data=b"\0" * 64)


@needs_root
def test_bad_input_says_why(progs):
    with pytest.raises(UsageProblem, match="at least an Ethernet header"):
        progs.test_run("t.pass", data=b"\x01\x02")
    with pytest.raises(UsageProblem, match="not hex"):
        progs.test_run("t.pass", data="zz")
    with pytest.raises(UsageProblem, match="MODULE.FUNC"):
        progs.test_run("pass")
    with pytest.raises(UsageProblem, match="positive"):
        progs.test_run("t.pass", repeat=0)


CHAIN = r"""
BPF_PROG_ARRAY(jt, 8);
int first(struct xdp_md *ctx) { jt.call(ctx, SLOT(jt, second)); return XDP_PASS; }
int second(struct xdp_md *ctx) { jt.call(ctx, 5); return XDP_DROP; }
"""


@needs_root
def test_result_shows_the_tail_calls_of_the_run(session):
    session.load("c", CHAIN, slots={"jt[second]": "second"})
    r = session.test_run("c.first", repeat=7)
    assert r.retval_name == "XDP_DROP"  # second ran, its call into empty slot 5 fell through
    rows = {(row.array, row.index): (row.calls, row.taken, row.missed) for row in r.tail_calls.itertuples()}
    assert rows == {("jt", 0): (7, 7, 0), ("jt", 5): (7, 0, 7)}
    assert "XDP_DROP" in repr(r) and "<table" in r._repr_html_()


@needs_root
def test_repeat_beyond_a_c_int_is_refused(progs):
    # libbpf's bpf_test_run_opts.repeat is an int: 2**32 + 1 used to wrap to 1 run reported as 4,294,967,297.
    for bad in (2**31, 2**32 + 1, -1, True, 2.0):
        with pytest.raises(UsageProblem, match="repeat"):
            progs.test_run("t.pass", repeat=bad)
    with pytest.raises(UsageProblem, match="2,147,483,647"):
        progs.test_run("t.pass", repeat=2**32 + 1)
    with pytest.raises(UsageProblem, match="2,147,483,647"):
        progs.bench_tailcalls(depth=1, repeat=2**32 + 1)
    assert progs.program("t.pass").run_cnt == 0  # refused before anything ran
    assert progs.test_run("t.pass", repeat=2**16).repeat == 2**16


def test_run_reports_only_the_tail_calls_its_chain_can_reach(session):
    import os

    session.load(
        "disp",
        "BPF_PROG_ARRAY(progs, 512);\nint d(struct bpf_raw_tracepoint_args *ctx) { progs.call(ctx, ctx->args[1]); return 0; }",
        attach={"d": "raw_tracepoint:sys_enter"},
    )
    session.load("entry", "BPF_PROG_ARRAY(chain, 4);\nint e(struct xdp_md *ctx) { chain.call(ctx, 0); return XDP_PASS; }")
    session.load("hop", "int h(struct xdp_md *ctx) { chain.call(ctx, 1); return XDP_DROP; }", slots={"chain[0]": "h"})
    os.getppid()  # the dispatcher counts syscalls all the while
    r = session.test_run("entry.e", repeat=10)
    assert set(r.tail_calls["array"]) == {"chain"}
    assert dict(zip(r.tail_calls["slot"], r.tail_calls["calls"])) == {"chain[0]": 10, "chain[1]": 10}


def test_result_says_when_kernel_run_stats_were_on(session):
    session.load("p", "int p(struct xdp_md *ctx) { return XDP_PASS; }")
    fd = session.program("p.p").fd

    def run_and_count():
        """A test run and how many of its runs the kernel's fdinfo counted."""
        before = prog_fdinfo(fd)["run_cnt"]
        result = session.test_run("p.p", repeat=10)
        return result, prog_fdinfo(fd)["run_cnt"] - before

    on, counted = run_and_count()
    assert counted == 10 and on.stats_on and "kernel run stats on" in on.summary()
    session.disable_stats()
    off, counted = run_and_count()
    # Another process may hold the stats on right now: the result must say what the kernel did.
    assert off.stats_on == (counted > 0)
    assert ("kernel run stats on" in off.summary()) == off.stats_on
