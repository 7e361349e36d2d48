"""Maps as DataFrames (bpfmagic/maps.py), for both backends, against what a
program wrote during test runs with known packets, and writes from Python
read back by a program (its retval)."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from bpfmagic import NotFound, UsageProblem
from bpfmagic.experiments import packets
from bpfmagic.kernel import libbpf
from bpfmagic.widgets import MapWatch

from ..conftest import needs_root, wait_for
from ..paths import REPO

pytestmark = needs_root

XDP_DROP, XDP_PASS = 1, 2

BCC_SOURCE = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>
struct flow { u32 saddr; u32 daddr; u16 sport; u16 dport; u8 proto; char tag[6]; };
struct counts { u64 packets; u64 bytes; };
struct lpm_key { u32 prefixlen; u32 addr; };
BPF_HASH(flows, struct flow, struct counts, 64);
BPF_ARRAY(by_len, u64, 4);
BPF_TABLE("lru_hash", u16, u64, by_port, 4);
BPF_PERCPU_ARRAY(runs, u64, 2);
BPF_PERCPU_HASH(port_bytes, u16, struct counts, 16);
BPF_HISTOGRAM(sizes);
BPF_ARRAY(config, u32, 1);
BPF_HASH(allowed, u16, u8, 16);
BPF_LPM_TRIE(routes, struct lpm_key, u32, 16);
BPF_QUEUE(recent, u16, 8);
BPF_STACK(pushed, u32, 8);

static __always_inline struct udphdr *udp_of(struct xdp_md *ctx, struct iphdr **ip) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return 0;
    *ip = (void *)(eth + 1);
    if ((void *)(*ip + 1) > end) return 0;
    struct udphdr *udp = (void *)(*ip + 1);
    if ((void *)(udp + 1) > end) return 0;
    return udp;
}

int count(struct xdp_md *ctx) {
    struct iphdr *ip;
    struct udphdr *udp = udp_of(ctx, &ip);
    if (!udp) return XDP_ABORTED;
    u64 len = ctx->data_end - ctx->data;
    struct flow f;
    __builtin_memset(&f, 0, sizeof(f));
    f.saddr = ip->saddr; f.daddr = ip->daddr; f.proto = ip->protocol;
    f.sport = ntohs(udp->source); f.dport = ntohs(udp->dest);
    f.tag[0] = 'u'; f.tag[1] = 'd'; f.tag[2] = 'p';
    struct counts zero = {}, *c;
    flows.insert(&f, &zero);
    c = flows.lookup(&f);
    if (c) { __sync_fetch_and_add(&c->packets, 1); __sync_fetch_and_add(&c->bytes, len); }
    u32 slot = len < 100 ? 0 : len < 500 ? 1 : 2;
    u64 *n = by_len.lookup(&slot);
    if (n) __sync_fetch_and_add(n, 1);
    u16 port = f.dport;
    u64 one = 1, *p = by_port.lookup(&port);
    if (p) *p += 1; else by_port.update(&port, &one);
    u32 k = 0;
    u64 *r = runs.lookup(&k);
    if (r) *r += 1;
    struct counts *pb = port_bytes.lookup(&port);
    if (pb) { pb->packets += 1; pb->bytes += len; } else { struct counts first = {1, len}; port_bytes.update(&port, &first); }
    sizes.increment(bpf_log2l(len));
    recent.push(&port, BPF_EXIST);
    return XDP_PASS;
}

/* writes from Python, seen by the program: its retval */
int read_config(struct xdp_md *ctx) {
    u32 k = 0, *v = config.lookup(&k);
    return v ? *v : 99;
}

int check_allowed(struct xdp_md *ctx) {
    struct iphdr *ip;
    struct udphdr *udp = udp_of(ctx, &ip);
    if (!udp) return XDP_ABORTED;
    u16 port = ntohs(udp->dest);
    return allowed.lookup(&port) ? XDP_PASS : XDP_DROP;
}

int route(struct xdp_md *ctx) {
    struct iphdr *ip;
    if (!udp_of(ctx, &ip)) return XDP_ABORTED;
    struct lpm_key key = {32, ip->daddr};
    u32 *hop = routes.lookup(&key);
    return hop ? *hop : 0;
}

int pop_pushed(struct xdp_md *ctx) {
    u32 v = 0;
    return pushed.pop(&v) == 0 ? v : 0;
}
"""

CORE_SOURCE = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
struct flow { __u32 saddr; __u16 dport; __u8 proto; struct { __u8 ttl:5, tos_low:3; } ip; char tag[5]; };
struct stats { __u64 packets; __u64 bytes; __s32 last_len[2]; };
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 32); __type(key, struct flow); __type(value, struct stats); } flows SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 2); __type(key, __u32); __type(value, __u64); } runs SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH); __uint(max_entries, 8); __type(key, __u16); __type(value, struct stats); } per_port SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 8); __uint(key_size, 4); __uint(value_size, 8); } untyped SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u32); } settings SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, 8); __type(key, __u16); __type(value, __u64); } lru SEC(".maps");
struct lpm_key { __u32 prefixlen; __u32 addr; };
struct { __uint(type, BPF_MAP_TYPE_LPM_TRIE); __uint(max_entries, 8); __type(key, struct lpm_key); __type(value, __u32);
         __uint(map_flags, BPF_F_NO_PREALLOC); } routes SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_QUEUE); __uint(max_entries, 8); __type(value, __u32); } lens SEC(".maps");

SEC("xdp") int count(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return XDP_ABORTED;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end) return XDP_ABORTED;
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > end) return XDP_ABORTED;
    __u32 len = end - data;
    struct flow f;
    __builtin_memset(&f, 0, sizeof(f));
    f.saddr = ip->saddr; f.dport = bpf_ntohs(udp->dest); f.proto = ip->protocol;
    f.ip.ttl = ip->ttl & 31; f.ip.tos_low = 5;
    f.tag[0] = 'o'; f.tag[1] = 'k';
    struct stats zero = {}, *st;
    bpf_map_update_elem(&flows, &f, &zero, BPF_NOEXIST);
    st = bpf_map_lookup_elem(&flows, &f);
    if (st) { __sync_fetch_and_add(&st->packets, 1); __sync_fetch_and_add(&st->bytes, len); st->last_len[1] = -(int)len; }
    __u32 k = 1;
    __u64 *r = bpf_map_lookup_elem(&runs, &k);
    if (r) *r += 1;
    __u16 port = f.dport;
    struct stats *pp = bpf_map_lookup_elem(&per_port, &port);
    if (pp) { pp->packets += 1; pp->bytes += len; }
    else { struct stats first = {1, len}; bpf_map_update_elem(&per_port, &port, &first, BPF_ANY); }
    __u64 wide = (__u64)len << 32 | port;
    bpf_map_update_elem(&untyped, &k, &wide, BPF_ANY);
    __u64 one = 1, *l = bpf_map_lookup_elem(&lru, &port);
    if (l) *l += 1; else bpf_map_update_elem(&lru, &port, &one, BPF_ANY);
    bpf_map_push_elem(&lens, &len, BPF_EXIST);
    return XDP_PASS;
}

SEC("xdp") int read_settings(struct xdp_md *ctx) {
    __u32 z = 0, *v = bpf_map_lookup_elem(&settings, &z);
    return v ? *v : 99;
}

SEC("xdp") int route(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct iphdr *ip = data + sizeof(struct ethhdr);
    if ((void *)(ip + 1) > end) return XDP_ABORTED;
    struct lpm_key key = {32, ip->daddr};
    __u32 *hop = bpf_map_lookup_elem(&routes, &key);
    return hop ? *hop : 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


def ip_int(address: str) -> int:
    """An IPv4 address as the u32 a program reads from the header (network order in memory)."""
    return struct.unpack("<I", socket.inet_aton(address))[0]


@contextlib.contextmanager
def on_cpu(cpu: int):
    """Run the block on CPU (a test run executes on the calling CPU)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def two_cpus() -> bool:
    return libbpf.num_possible_cpus() >= 2 and len(os.sched_getaffinity(0)) >= 2


def run_packets(session, spec: str, frames) -> None:
    for frame in frames:
        session.test_run(spec, data=frame)


DNS = packets.udp_packet("10.0.0.1", "192.0.2.53", 5353, 53, b"q" * 20)  # 62 bytes
BIG = packets.udp_packet("10.0.0.2", "192.0.2.80", 40000, 8080, b"x" * 400)  # 442 bytes


# ------------------------------------------------------------------ BCC


def test_bcc_maps_hold_what_the_program_counted(session):
    m = session.load("bm", BCC_SOURCE)
    run_packets(session, "bm.count", [DNS, DNS, DNS, BIG])

    flows = m.df("flows")
    assert list(flows.columns) == ["saddr", "daddr", "sport", "dport", "proto", "tag", "packets", "bytes"]
    flows = flows.sort_values("dport", ignore_index=True)
    assert flows["saddr"].tolist() == [ip_int("10.0.0.1"), ip_int("10.0.0.2")]
    assert flows["daddr"].tolist() == [ip_int("192.0.2.53"), ip_int("192.0.2.80")]
    assert flows["sport"].tolist() == [5353, 40000] and flows["dport"].tolist() == [53, 8080]
    assert flows["proto"].tolist() == [17, 17] and flows["tag"].tolist() == ["udp", "udp"]
    assert flows["packets"].tolist() == [3, 1] and flows["bytes"].tolist() == [3 * len(DNS), len(BIG)]
    assert flows.attrs["read"]["method"] == "batch" and flows.attrs["read"]["syscalls"] == 1

    by_len = m.df("by_len")  # an array: every index, in order
    assert by_len["key"].tolist() == [0, 1, 2, 3] and by_len["value"].tolist() == [3, 1, 0, 0]
    lru = session.map("by_port").df(sort="value")
    assert lru.to_dict("list") == {"key": [53, 8080], "value": [3, 1]}
    per_port = session.map("port_bytes").df(sum=True).sort_values("key", ignore_index=True)
    assert per_port.to_dict("list") == {"key": [53, 8080], "packets": [3, 1], "bytes": [3 * len(DNS), len(BIG)]}
    assert session.map("recent").df().to_dict("list") == {"value": [53]}  # a queue: its head (peek)
    assert session.map("recent").peek() == 53


def test_bcc_typed_views_of_single_entries(session):
    m = session.load("bm", BCC_SOURCE)
    run_packets(session, "bm.count", [DNS, BIG])
    flows = m.map("flows")
    key = {"saddr": ip_int("10.0.0.1"), "daddr": ip_int("192.0.2.53"), "sport": 5353, "dport": 53, "proto": 17, "tag": "udp"}
    assert flows[key] == {"packets": 1, "bytes": len(DNS)}
    assert flows[tuple(key.values())] == flows[key]
    assert key in flows and {**key, "dport": 54} not in flows
    assert m.map("by_len")[0] == 1 and session.map("port_bytes")[53][0]["bytes"] + session.map("port_bytes")[53][1]["bytes"] == len(DNS)


@pytest.mark.skipif(not two_cpus(), reason="needs two CPUs")
def test_per_cpu_values_are_per_cpu(session):
    m = session.load("bm", BCC_SOURCE)
    with on_cpu(0):
        run_packets(session, "bm.count", [DNS] * 3)
    with on_cpu(1):
        run_packets(session, "bm.count", [DNS] * 5 + [BIG])
    runs = m.df("runs")
    assert list(runs.columns) == ["key", "value.cpu0", "value.cpu1"]
    assert runs.loc[0, "value.cpu0"] == 3 and runs.loc[0, "value.cpu1"] == 6
    assert m.df("runs", sum=True).loc[0, "value"] == 9
    port_bytes = m.df("port_bytes").set_index("key")
    assert port_bytes.loc[53, "packets.cpu0"] == 3 and port_bytes.loc[53, "packets.cpu1"] == 5
    assert port_bytes.loc[8080, "packets.cpu0"] == 0 and port_bytes.loc[8080, "bytes.cpu1"] == len(BIG)
    assert m.map("runs")[0] == [3, 6]


def test_writes_and_deletes_are_seen_by_the_program(session):
    m = session.load("bm", BCC_SOURCE)
    config = m.map("config")
    assert session.test_run("bm.read_config", data=DNS).retval == 0
    config[0] = 7
    assert session.test_run("bm.read_config", data=DNS).retval == 7
    allowed = session.map("allowed")
    assert session.test_run("bm.check_allowed", data=DNS).retval == XDP_DROP
    allowed[53] = 1
    assert session.test_run("bm.check_allowed", data=DNS).retval == XDP_PASS
    del allowed[53]
    assert session.test_run("bm.check_allowed", data=DNS).retval == XDP_DROP
    with pytest.raises(KeyError):
        del allowed[53]
    allowed.from_df(pd.DataFrame({"key": [53, 8080, 9], "value": [1, 1, 1]}))
    assert session.test_run("bm.check_allowed", data=BIG).retval == XDP_PASS
    assert sorted(allowed.df()["key"]) == [9, 53, 8080]
    assert allowed.clear() == 3 and len(allowed) == 0
    assert session.test_run("bm.check_allowed", data=DNS).retval == XDP_DROP
    # LPM trie (no batch op: the get_next_key walk), written and read back by the program
    routes = m.map("routes")
    routes[(32, ip_int("192.0.2.53"))] = 4
    routes[{"prefixlen": 24, "addr": ip_int("198.51.100.0")}] = 5
    assert session.test_run("bm.route", data=DNS).retval == 4
    df = routes.df().sort_values("prefixlen", ignore_index=True)
    assert df.to_dict("list") == {"prefixlen": [24, 32], "addr": [ip_int("198.51.100.0"), ip_int("192.0.2.53")], "value": [5, 4]}
    assert routes.last_read.method == "get_next_key"
    assert routes.clear() == 2 and len(routes) == 0
    # a stack: pushed from Python, popped by the program; arrays clear to zero
    stack = m.map("pushed")
    stack.push(11)
    stack.push(12)
    assert stack.peek() == 12
    assert session.test_run("bm.pop_pushed", data=DNS).retval == 12
    assert stack.df()["value"].tolist() == [11]
    config.clear()
    assert session.test_run("bm.read_config", data=DNS).retval == 0


def test_write_errors_name_the_field(session):
    m = session.load("bm", BCC_SOURCE)
    flows, config = m.map("flows"), m.map("config")
    good = {"saddr": 1, "daddr": 2, "sport": 3, "dport": 4, "proto": 17, "tag": "x"}
    with pytest.raises(ValueError, match="field 'proto'.*out of range 0..255"):
        flows[{**good, "proto": 256}] = {"packets": 1, "bytes": 2}
    with pytest.raises(TypeError, match="field 'bytes'.*expects an int"):
        flows[good] = {"packets": 1, "bytes": "many"}
    with pytest.raises(ValueError, match="field 'tag'.*do not fit in 6"):
        flows[{**good, "tag": "toolongtag"}] = (1, 2)
    with pytest.raises(KeyError, match="no field 'port'"):
        flows[{"port": 1}] = (1, 2)
    with pytest.raises(TypeError, match="struct"):
        flows[1] = (1, 2)
    with pytest.raises(ValueError, match=r"-1 is out of range 0..4294967295"):
        config[0] = -1
    with pytest.raises(ValueError, match="column 'value'.*out of range"):
        config.from_df(pd.DataFrame({"key": [0], "value": [1 << 40]}))
    with pytest.raises(UsageProblem, match="no column 'bytes'"):
        flows.from_df(pd.DataFrame({k: [v] for k, v in {**good, "packets": 1}.items()}))
    with pytest.raises(UsageProblem, match="cannot be deleted"):
        del config[0]
    assert len(flows) == 0  # nothing half-written


def test_wrong_frames_and_writes_past_an_array_say_what_is_wrong(session):
    """issue 19 item 8: a list or an empty frame given to from_df (AttributeError, ValueError
    before), and a key past an array's end (the kernel's E2BIG, once called "full")."""
    m = session.load("bm", BCC_SOURCE)
    by_len, allowed = m.map("by_len"), m.map("allowed")
    with pytest.raises(UsageProblem, match=r"bm\.allowed\.from_df takes a pandas DataFrame with the columns df\(\) shows \(key, value\), not a list"):
        allowed.from_df([{"key": 53, "value": 1}])
    with pytest.raises(UsageProblem, match=r"bm\.allowed\.from_df: the frame has no columns \(and 0 rows\); it needs key, value"):
        allowed.from_df(pd.DataFrame())
    assert allowed.from_df(pd.DataFrame({"key": [], "value": []})) == 0  # the right columns and no rows: nothing to write
    with pytest.raises(UsageProblem, match=r"no column 'value'"):
        allowed.from_df(pd.DataFrame({"key": []}))  # an empty frame still has to have the columns
    with pytest.raises(UsageProblem, match=r"bm\.by_len\[4\]: past the end of bm\.by_len, an array of 4 elements \(keys 0 to 3\)") as err:
        by_len[4] = 1
    assert "full" not in str(err.value)
    with pytest.raises(UsageProblem, match=r"row 1 has key 9, past the end of bm\.by_len.*; nothing was written \(1 of 2 rows"):
        by_len.from_df(pd.DataFrame({"key": [2, 9], "value": [5, 6]}))
    assert by_len[2] == 0  # row 0 was not written either
    allowed.from_df(pd.DataFrame({"key": range(16), "value": 1}))
    with pytest.raises(UsageProblem, match=r"bm\.allowed is full \(16 entries\): 99 cannot be added"):
        allowed[99] = 1  # a hash does fill up


def test_from_df_round_trips_what_df_produces(session):
    m = session.load("bm", BCC_SOURCE)
    run_packets(session, "bm.count", [DNS, DNS, BIG])
    flows = m.map("flows")
    before = flows.df().sort_values("dport", ignore_index=True)
    flows.clear()
    assert len(flows) == 0
    doubled = before.assign(packets=before["packets"] * 2)
    assert flows.from_df(doubled) == 2
    after = flows.df().sort_values("dport", ignore_index=True)
    pd.testing.assert_frame_equal(after, doubled, check_dtype=False)
    run_packets(session, "bm.count", [DNS])  # the program finds the rows written from Python
    assert flows.df().set_index("dport").loc[53, "packets"] == 5
    runs = m.map("runs")  # per-CPU: one column per CPU, or one column for every CPU
    runs.from_df(pd.DataFrame({"key": [0, 1], "value.cpu0": [10, 20], "value.cpu1": [30, 40]}))
    assert runs[0] == [10, 30] and runs[1] == [20, 40]
    runs.from_df(pd.DataFrame({"key": [1], "value": [5]}))
    assert runs[1] == [5] * libbpf.num_possible_cpus()


def test_histogram_buckets_like_print_log2_hist(session):
    m = session.load("bm", BCC_SOURCE)
    run_packets(session, "bm.count", [DNS, DNS, BIG])  # 62 bytes: bucket 6 (32..63); 442: bucket 9 (256..511)
    hist = m.map("sizes").hist()
    assert list(hist.columns) == ["bucket", "low", "high", "count"]
    assert hist["bucket"].tolist() == [6, 7, 8, 9]  # from the lowest to the highest non-empty bucket
    assert hist["low"].tolist() == [32, 64, 128, 256] and hist["high"].tolist() == [63, 127, 255, 511]
    assert hist["count"].tolist() == [2, 0, 0, 1]
    fig = m.map("sizes").plot_hist(hist=hist)
    assert [round(p.get_height()) for p in fig.axes[0].patches] == [2, 0, 0, 1]


def test_prog_arrays_show_their_slots(session):
    session.load(
        "disp",
        """
        BPF_PROG_ARRAY(jumps, 4);
        int entry(struct xdp_md *ctx) { jumps.call(ctx, 1); return XDP_PASS; }
        int second(struct xdp_md *ctx) { return XDP_DROP; }
        """,
        slots={"jumps[1]": "second"},
    )
    df = session.map("jumps").df()
    pd.testing.assert_frame_equal(df, session.slots("jumps"))
    assert df["program"].tolist() == ["disp.second"]


# ------------------------------------------------------------------ --core (BTF)


def test_core_maps_typed_from_btf(session):
    m = session.load("cm", CORE_SOURCE, core=True)
    run_packets(session, "cm.count", [DNS, DNS, BIG])
    flows = m.df("flows").sort_values("dport", ignore_index=True)
    assert list(flows.columns) == ["saddr", "dport", "proto", "ip.ttl", "ip.tos_low", "tag", "packets", "bytes", "last_len"]
    assert flows["saddr"].tolist() == [ip_int("10.0.0.1"), ip_int("10.0.0.2")]
    assert flows["dport"].tolist() == [53, 8080] and flows["proto"].tolist() == [17, 17]
    assert flows["ip.ttl"].tolist() == [64 & 31] * 2 and flows["ip.tos_low"].tolist() == [5, 5]  # bit-fields
    assert flows["tag"].tolist() == ["ok", "ok"]
    assert flows["packets"].tolist() == [2, 1] and flows["bytes"].tolist() == [2 * len(DNS), len(BIG)]
    assert [a.tolist() for a in flows["last_len"]] == [[0, -len(DNS)], [0, -len(BIG)]]  # s32[2] as numpy
    # no BTF for the key or value: raw ints of 4 and 8 bytes
    assert m.df("untyped").to_dict("list") == {"key": [1], "value": [len(BIG) << 32 | 8080]}
    assert m.df("lru").sort_values("key").to_dict("list") == {"key": [53, 8080], "value": [2, 1]}
    per_port = m.df("per_port", sum=True).sort_values("key", ignore_index=True)
    assert per_port[["key", "packets", "bytes"]].to_dict("list") == {"key": [53, 8080], "packets": [2, 1], "bytes": [2 * len(DNS), len(BIG)]}
    assert m.df("lens").to_dict("list") == {"value": [len(DNS)]}  # the queue's head
    assert m.df("runs", sum=True)["value"].tolist() == [0, 3]


@pytest.mark.skipif(not two_cpus(), reason="needs two CPUs")
def test_core_per_cpu_values_are_per_cpu(session):
    m = session.load("cm", CORE_SOURCE, core=True)
    with on_cpu(1):
        run_packets(session, "cm.count", [DNS] * 2)
    with on_cpu(0):
        run_packets(session, "cm.count", [DNS])
    runs = m.df("runs")
    assert runs.loc[1, "value.cpu0"] == 1 and runs.loc[1, "value.cpu1"] == 2
    per_port = m.df("per_port").set_index("key")
    assert per_port.loc[53, "packets.cpu0"] == 1 and per_port.loc[53, "packets.cpu1"] == 2


def test_core_writes_are_seen_by_the_program(session):
    m = session.load("cm", CORE_SOURCE, core=True)
    m.map("settings")[0] = 3
    assert session.test_run("cm.read_settings", data=DNS).retval == 3
    routes = m.map("routes")
    routes[{"prefixlen": 32, "addr": ip_int("192.0.2.53")}] = 6
    assert session.test_run("cm.route", data=DNS).retval == 6
    del routes[(32, ip_int("192.0.2.53"))]
    assert session.test_run("cm.route", data=DNS).retval == 0
    flows = m.map("flows")
    key = {"saddr": ip_int("10.0.0.1"), "dport": 53, "proto": 17, "ip": {"ttl": 64 & 31, "tos_low": 5}, "tag": "ok"}
    flows[key] = {"packets": 100, "bytes": 0, "last_len": [1, 2]}
    run_packets(session, "cm.count", [DNS])  # the program found the struct key written from Python
    assert flows[key]["packets"] == 101 and flows[key]["last_len"].tolist() == [1, -len(DNS)]


# ------------------------------------------------------------------ names, lifecycle, watch


def test_names_and_unloaded_modules(session):
    session.load("a1", "BPF_ARRAY(counts, u64, 2); int f(struct xdp_md *c) { return XDP_PASS; }")
    view = session.map("counts")
    session.load("a2", "BPF_ARRAY(counts, u64, 2); int f(struct xdp_md *c) { return XDP_PASS; }")
    with pytest.raises(UsageProblem, match="several modules have a table 'counts'.*a1.counts"):
        session.map("counts")
    assert session.map("a2.counts").name == "a2.counts"
    with pytest.raises(UsageProblem, match="no map 'nope'") as err:
        session.map("nope")
    assert (err.value.kind, err.value.name) == ("map", "nope")
    session.unload("a1")
    with pytest.raises(UsageProblem, match="module a1 was unloaded"):
        view.df()
    with pytest.raises(UsageProblem, match="module a1 was unloaded"):
        view[0] = 1
    with pytest.raises(UsageProblem, match="no module 'a1'") as err:
        session.map("a1.counts")
    assert (err.value.kind, err.value.name) == ("module", "a1") and "a2" in err.value.known


def test_event_tables_point_at_the_stream(session):
    m = session.load(
        "ev",
        """
        BPF_RINGBUF_OUTPUT(events, 8);
        struct ev { u32 n; };
        int f(struct xdp_md *c) { struct ev e = {1}; events.ringbuf_output(&e, sizeof(e), 0); return XDP_PASS; }
        """,
    )
    with pytest.raises(UsageProblem, match="event table"):
        m.df("events")


def test_map_watch_numbers_agree(session):
    m = session.load("bm", BCC_SOURCE)
    run_packets(session, "bm.count", [DNS])
    view = MapWatch(m.map("by_port"), top=5, interval=0.05)
    try:
        run_packets(session, "bm.count", [DNS] * 4 + [BIG] * 2)
        assert wait_for(lambda: view.values.get("totals", {}).get("value") == 7)
        # a refresh later with no traffic: deltas fall to zero
        first = view.values
        assert wait_for(lambda: view.values is not first and view.values["deltas"]["value"] == 0)
        run_packets(session, "bm.count", [BIG] * 3)
        assert wait_for(lambda: view.values["totals"]["value"] == 10)
        frame, values = view.frame, view.values
        # one read per refresh: the table, deltas and rates shown together agree
        assert frame["value"].sum() == values["totals"]["value"]
        assert frame["value.delta"].sum() == values["deltas"]["value"]
        assert np.allclose(frame["value.rate"], frame["value.delta"] / values["interval"])
        assert frame["key"].iloc[0] == 8080 or values["deltas"]["value"] == 0  # sorted by rate
        assert "by_port" in view.status.value and "<td>8080</td>" in view.table.value
    finally:
        view.stop()
    assert not view.running


def test_map_watch_stops_when_the_module_is_unloaded(session):
    m = session.load("bm", BCC_SOURCE)
    view = MapWatch(m.map("by_len"), interval=0.05)
    session.unload("bm")
    assert wait_for(lambda: not view.running)
    assert "unloaded" in view.status.value and isinstance(view.error, UsageProblem)
    view.stop()


def test_stream_view_counts_agree_with_its_count(session):
    from bpfmagic.widgets import Watch

    from ..programs import PACKET, ring_producer

    m = session.load("w", ring_producer())
    st = session.stream("events")
    view = Watch(st, by="len", rows=3, interval=0.01)
    try:
        producer = m.program("produce").fd
        deadline, seen = time.monotonic() + 1.0, set()
        while time.monotonic() < deadline:  # refreshes while events arrive
            libbpf.test_run(producer, data=PACKET, repeat=200)
            values = view.values
            assert values["counted"] == values["rows"] == values["count"] - values["dropped"]
            seen.add(values["count"])
        assert len(seen) > 3  # the view refreshed many times meanwhile
    finally:
        view.stop()


# ------------------------------------------------------------------ the magics


def test_bpf_map_magic(fresh, capsys):
    ip = fresh

    def run(ip, code):
        return ip.run_cell(textwrap.dedent(code))

    res = run(
        ip,
        """\
        %%bpf mm
        BPF_PERCPU_ARRAY(hits, u64, 4);
        BPF_HISTOGRAM(sizes);
        int count(struct xdp_md *ctx) {
            u32 k = 2; u64 *v = hits.lookup(&k); if (v) *v += 1;
            sizes.increment(bpf_log2l(ctx->data_end - ctx->data));
            return XDP_PASS;
        }
        """,
    )
    assert res.success, res.error_in_exec
    for _ in range(3):
        assert run(ip, f"%bpf run mm.count --data {DNS.hex()}").success
    df = ip.run_line_magic("bpf", "map hits --sum --top 1")
    assert df.to_dict("list") == {"key": [2], "value": [3]}
    df = ip.run_line_magic("bpf", "map mm.hits --sort value.cpu0")
    assert list(df.columns) == ["key"] + [f"value.cpu{i}" for i in range(libbpf.num_possible_cpus())]
    hist = ip.run_line_magic("bpf", "map sizes --hist")
    assert hist.to_dict("list") == {"bucket": [6], "low": [32], "high": [63], "count": [3]}
    res = run(ip, "%bpf map hits --sort nope")
    assert "no column 'nope'" in str(res.error_in_exec)
    view = ip.run_line_magic("bpf", "watch hits --top 2 --interval 0.05")
    try:
        assert isinstance(view, MapWatch) and view.values["totals"]["value"] == 3
    finally:
        view.stop()
    assert "%bpf map [MODULE.]TABLE" in ip.find_magic("bpf").__doc__
    res = run(ip, "%bpf map --help")
    assert res.success
    assert "--sum" in capsys.readouterr().out


def test_histogram_of_small_values_starts_at_zero(session):
    m = session.load(
        "hz",
        """
        BPF_HISTOGRAM(h);
        int f(struct xdp_md *ctx) {
            h.increment(bpf_log2l(0)); h.increment(bpf_log2l(1)); h.increment(bpf_log2l(3));
            return XDP_PASS;
        }
        """,
    )
    session.test_run("hz.f", data=DNS)
    hist = m.map("h").hist()
    assert hist[["low", "high", "count"]].values.tolist() == [[0, 1, 2], [2, 3, 1]]


def test_histogram_with_sections(session):
    """BCC's BPF_HISTOGRAM(name, struct {...; u64 slot;}): one histogram per value of the other key fields."""
    m = session.load(
        "hs",
        """
        struct key_t { u32 port; u64 slot; };
        BPF_HISTOGRAM(by_port, struct key_t);
        int f(struct xdp_md *ctx) {
            struct key_t k = {};
            k.port = 53; k.slot = bpf_log2l(5); by_port.increment(k);      /* 4..7 */
            k.port = 80; k.slot = bpf_log2l(300); by_port.increment(k);    /* 256..511 */
            by_port.increment(k);
            return XDP_PASS;
        }
        """,
    )
    session.test_run("hs.f", data=DNS)
    hist = m.map("by_port").hist()
    assert list(hist.columns) == ["port", "bucket", "low", "high", "count"]
    rows = hist[hist["count"] > 0][["port", "low", "high", "count"]].values.tolist()
    assert rows == [[53, 4, 7, 1], [80, 256, 511, 2]]
    # each section spans the same buckets, the empty ones as 0 (as print_log2_hist prints them)
    assert hist.groupby("port")["bucket"].apply(list).tolist() == [list(range(3, 10))] * 2
    assert hist["count"].sum() == 3


def test_a_view_follows_its_re_run_cell(session):
    cell = """
        BPF_ARRAY(counts, u64, N);
        int f(struct xdp_md *ctx) { u32 k = 0; counts.increment(k); return XDP_PASS; }
        """
    session.load("rr", cell, cflags=["-DN=2"])
    view = session.map("counts")
    session.test_run("rr.f", data=DNS)
    assert view.df()["value"].tolist() == [1, 0]
    session.load("rr", cell, cflags=["-DN=3"])  # replaced: a new map, empty
    assert view.df()["value"].tolist() == [0, 0, 0] and view.max_entries == 3


def test_core_globals_as_one_row(session):
    m = session.load(
        "gl",
        r"""
        struct pair { __u32 a; __u16 b; };
        __u64 counter;
        __u32 selector = 3;
        char label[8] = "hi";
        struct pair p = {1, 2};
        int arr[3] = {4, 5, 6};
        const volatile __u32 limit = 10;
        SEC("xdp") int f(struct xdp_md *ctx) { counter++; return selector + limit; }
        char LICENSE[] SEC("license") = "GPL";
        """,
        core=True,
    )
    assert m.df("data").drop(columns="arr").to_dict("records") == [{"selector": 3, "label": "hi", "p.a": 1, "p.b": 2}]
    assert m.df("data")["arr"][0].tolist() == [4, 5, 6]
    session.test_run("gl.f", data=DNS, repeat=1)
    session.test_run("gl.f", data=DNS, repeat=1)
    assert session.map("gl.bss")["counter"] == 2 and m.df(".bss").to_dict("list") == {"counter": [2]}
    data = m.map("data")
    data["selector"] = 7  # one variable written, the others kept
    assert session.test_run("gl.f", data=DNS).retval == 17
    assert data["label"] == "hi" and data["p.a"] == 1
    data[0] = {"p": {"b": 9}}
    assert data["p.b"] == 9 and data["selector"] == 7
    with pytest.raises(UsageProblem, match="frozen at load"):
        m.map("rodata")["limit"] = 1
    with pytest.raises(KeyError) as err:
        data["nope"]
    assert isinstance(err.value, NotFound) and (err.value.kind, err.value.name) == ("variable", "nope") and "label" in err.value.known
    with pytest.raises(UsageProblem) as err:
        m.map("nothing")
    assert (err.value.kind, err.value.name) == ("table", "nothing") and any(t.endswith(".bss") for t in err.value.known)


def test_bench_maps_runs_and_checks_its_frames():
    """bench/maps.py at a small size: every DataFrame matches what was written (the
    figures themselves, and whether the targets hold, are for a full-size run)."""
    import subprocess
    import sys

    bench = os.path.join(REPO, "bench", "maps.py")
    res = subprocess.run(
        [sys.executable, bench, "--entries", "50000", "--baseline", "5000", "--rounds", "1"], capture_output=True, text=True, timeout=300, check=False
    )
    out = res.stdout + res.stderr
    assert "does not hold" not in out, out
    assert "1 syscalls: BPF_MAP_LOOKUP_BATCH" in out and ("targets met" in out or "targets missed" in out), out
