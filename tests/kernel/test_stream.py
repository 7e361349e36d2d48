"""Streams of real kernel events: ring and perf buffers filled by programs
run with BPF_PROG_TEST_RUN or by real syscalls, read back into DataFrames."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from bpfmagic import UsageProblem
from bpfmagic.events import StreamWarning
from bpfmagic.kernel import libbpf

from ..conftest import needs_root, stream_threads, syscall_nr, wait_for
from ..programs import PACKET, bpf_shell, produce, ring_producer

pytestmark = needs_root

NR_GETPPID = syscall_nr("getppid")


# ---------------------------------------------------------------- ring buffers


def test_ring_records_arrive_exactly_once_in_order(session):
    # 8 MiB: the ring holds all the records (40 bytes each with the header), so a consumer
    # slowed by a loaded machine cannot lose any (overflow has its own test)
    m = session.load("ring", ring_producer(pages=2048))
    st = session.stream("events")
    assert st is session.stream("ring.events") and m.streams == {"events": st}
    n = 200_000
    produce(m, "produce", n)
    assert wait_for(lambda: st.count == n), st
    df = st.df()
    assert list(df.columns) == ["seq", "ts", "cpu", "len", "tag"]
    assert [str(t) for t in df.dtypes] == ["uint64", "uint64", "uint32", "uint32", "uint64"]
    assert len(df) == n and st.lost == 0 and st.dropped == 0
    assert np.array_equal(df["seq"].to_numpy(), np.arange(n, dtype=np.uint64))
    assert (df["len"] == len(PACKET)).all() and (df["tag"] == 0xABCDEF).all()
    assert (np.diff(df["ts"].to_numpy().astype(np.int64)) >= 0).all()
    # Nothing arrives twice: a sentinel record produced now arrives after anything still
    # on its way, and it is the only record that came after the n.
    produce(m, "produce", 1)
    assert st.wait(n + 1, timeout=10), st
    assert st.count == n + 1 and st.df()["seq"].iloc[-2:].tolist() == [n - 1, n]


def test_events_of_real_syscalls_with_strings(session):
    """A raw tracepoint on sys_enter records getppid() calls of this process:
    exact count, the calling thread's id and comm (char[16] -> str)."""
    src = r"""
    struct call { u64 seq; u32 pid; u32 tid; char comm[16]; u8 nr_bytes[4]; s32 neg; };
    BPF_RINGBUF_OUTPUT(calls, 64);
    BPF_ARRAY(seqs, u64, 1);
    int on_enter(struct bpf_raw_tracepoint_args *ctx) {
        u64 id = bpf_get_current_pid_tgid();
        if ((id >> 32) != TGID || ctx->args[1] != NR_GETPPID) return 0;
        int k = 0;
        u64 *c = seqs.lookup(&k);
        if (!c) return 0;
        struct call e = {};
        e.seq = __sync_fetch_and_add(c, 1);
        e.pid = id >> 32;
        e.tid = (u32)id;
        bpf_get_current_comm(e.comm, sizeof(e.comm));
        e.nr_bytes[0] = 1;
        e.nr_bytes[3] = 0xff;
        e.neg = -7;
        calls.ringbuf_output(&e, sizeof(e), 0);
        return 0;
    }
    """
    session.load("sys", src, attach={"on_enter": "raw_tracepoint:sys_enter"}, cflags=[f"-DTGID={os.getpid()}", f"-DNR_GETPPID={NR_GETPPID}"])
    st = session.stream("calls")
    n = 1000
    for _ in range(n):
        os.getppid()
    assert wait_for(lambda: st.count >= n)
    os.getppid()  # a sentinel: once it is in, nothing of the n is still on its way
    assert st.wait(n + 1, timeout=10), st
    df = st.df().iloc[:n]
    assert st.count == n + 1 and st.lost == 0
    assert st.df()["seq"].tolist() == list(range(n + 1))  # each call once, in order, the sentinel last
    tid = threading.get_native_id()
    with open(f"/proc/self/task/{tid}/comm") as f:
        comm = f.read().strip()
    assert set(df["pid"]) == {os.getpid()} and set(df["tid"]) == {tid}
    assert set(df["comm"]) == {comm} and isinstance(df["comm"].iloc[0], str)
    assert df["nr_bytes"].iloc[0].tolist() == [1, 0, 0, 255]
    assert str(df["neg"].dtype) == "int32" and (df["neg"] == -7).all()
    # The rows are kept column by column; records() lays them out as the C struct again.
    raw = st.records()
    assert raw.dtype == st.rtype.dtype and raw["seq"].tolist() == list(range(n + 1))
    assert raw["comm"][0].split(b"\0")[0].decode() == comm and raw["nr_bytes"][0].tolist() == [1, 0, 0, 255]
    assert (raw["neg"] == -7).all() and set(raw["tid"][:n]) == {tid}
    session.unload("sys")


def test_char_arrays_end_at_the_first_nul(session):
    src = r"""
    struct rec { char name[8]; u32 n; _Bool flag; };
    BPF_RINGBUF_OUTPUT(events, 16);
    int produce(struct xdp_md *ctx) {
        struct rec r = {};
        __builtin_memcpy(r.name, "ab\0zzzz", 8);   /* garbage after the NUL must not show */
        r.n = 3;
        r.flag = 1;
        events.ringbuf_output(&r, sizeof(r), 0);
        __builtin_memcpy(r.name, "12345678", 8);   /* no NUL at all: all 8 bytes */
        events.ringbuf_output(&r, sizeof(r), 0);
        return XDP_PASS;
    }
    """
    m = session.load("strs", src)
    st = session.stream("events")
    produce(m, "produce", 2)
    assert wait_for(lambda: st.count == 4)
    df = st.df()
    assert df["name"].tolist() == ["ab", "12345678", "ab", "12345678"]
    assert df["flag"].tolist() == [True] * 4 and str(df["flag"].dtype) == "bool"
    assert st.counts("name").to_dict() == {"ab": 2, "12345678": 2}


def test_discarded_and_short_records(session):
    """Reserve/submit, reserve/discard and short outputs mixed in one ring:
    discarded records never show, short ones are zero-padded, order holds."""
    src = r"""
    struct rec { u64 seq; u64 a; u64 b; };
    BPF_RINGBUF_OUTPUT(events, 64);
    BPF_ARRAY(seqs, u64, 1);
    int produce(struct xdp_md *ctx) {
        int k = 0;
        u64 *c = seqs.lookup(&k);
        if (!c) return XDP_PASS;
        u64 seq = *c;
        *c = seq + 1;
        if (seq % 5 == 0) {            /* short: b is left out */
            struct rec r = {.seq = seq, .a = 1, .b = 99};
            events.ringbuf_output(&r, 16, 0);
            return XDP_PASS;
        }
        struct rec *p = events.ringbuf_reserve(sizeof(struct rec));
        if (!p) return XDP_PASS;
        p->seq = seq; p->a = 2; p->b = 3;
        if (seq % 5 == 1)
            events.ringbuf_discard(p, 0);
        else
            events.ringbuf_submit(p, 0);
        return XDP_PASS;
    }
    """
    m = session.load("mixed", src)
    st = session.stream("events")
    n = 5000
    expect = [s for s in range(n) if s % 5 != 1]
    with pytest.warns(StreamWarning, match="records of 16 bytes arrived"):
        produce(m, "produce", n)
        assert wait_for(lambda: st.count == len(expect))
    df = st.df()
    assert df["seq"].tolist() == expect
    short = df["seq"] % 5 == 0
    assert (df.loc[short, "b"] == 0).all() and (df.loc[short, "a"] == 1).all()
    assert (df.loc[~short, "b"] == 3).all()
    assert st.variable == n // 5 and st.discarded == n // 5 and st.lost == 0


def test_small_ring_overflow_counts_every_lost_record(session):
    m = session.load("tiny", ring_producer(pages=1))  # 4 KiB: about 100 records
    st = session.stream("events")
    n = 50_000
    produce(m, "produce", n)
    assert wait_for(lambda: st.count + st.lost == n)
    assert st.lost > 0
    seq = st.df()["seq"].to_numpy()
    assert (np.diff(seq.astype(np.int64)) > 0).all()  # what arrived, arrived in order
    # The consumer is not stuck: it emptied the ring, so a later record (a sentinel) is
    # delivered, not lost; and nothing of the n came after it.
    count, lost = st.count, st.lost
    produce(m, "produce", 1)
    assert st.wait(count + 1, timeout=10), st
    assert (st.count, st.lost) == (count + 1, lost) and st.count + st.lost == n + 1
    assert st.df()["seq"].iloc[-1] == n


def test_max_rows_keeps_the_newest(session):
    session.streams.max_rows = 300  # the default of streams created from now on
    m = session.load("bounded", ring_producer())
    st = session.stream("events")
    assert st.max_rows == 300
    produce(m, "produce", 1000)
    assert wait_for(lambda: st.count == 1000)
    df = st.df()
    assert len(df) == len(st) == 300 and st.dropped == 700
    assert df["seq"].tolist() == list(range(700, 1000))
    st.max_rows = 100  # per stream; trims at once
    assert len(st) == 100 and st.dropped == 900 and st.df()["seq"].iloc[0] == 900
    assert session.streams.max_rows == 300
    st.clear()
    assert len(st) == 0 and st.count == 0 and st.dropped == 0 and st.lost == 0
    produce(m, "produce", 10)
    assert wait_for(lambda: st.count == 10)
    assert st.df()["seq"].tolist() == list(range(1000, 1010))


def test_memory_stays_bounded_under_a_flood(session):
    session.streams.max_rows = 10_000
    m = session.load("flood", ring_producer(pages=1024))
    st = session.stream("events")
    for _ in range(20):
        produce(m, "produce", 50_000)
    assert wait_for(lambda: st.count + st.lost == 1_000_000, timeout=30)
    assert len(st) == 10_000 and st.dropped == st.count - 10_000
    assert st.nbytes <= 10_000 * st.rtype.itemsize * 2  # a kept tail of a big batch is copied out


def test_two_streams_and_ambiguous_names(session):
    a = session.load("a", ring_producer())
    b = session.load("b", ring_producer())
    with pytest.raises(UsageProblem, match=r"a\.events, b\.events"):
        session.stream("events")
    with pytest.raises(UsageProblem, match="no stream 'nope'") as err:
        session.stream("nope")
    assert (err.value.kind, err.value.name) == ("stream", "nope")
    produce(a, "produce", 3000)
    produce(b, "produce", 5000)
    sa, sb = session.stream("a.events"), session.stream("b.events")
    assert wait_for(lambda: sa.count == 3000 and sb.count == 5000)
    assert sa.df()["seq"].tolist() == list(range(3000)) and sb.df()["seq"].tolist() == list(range(5000))
    summary = session.streams.summary()
    assert summary["stream"].tolist() == ["a.events", "b.events"] and summary["count"].tolist() == [3000, 5000]


def test_two_tables_in_one_module_count_losses_apart(session):
    src = r"""
    struct small { u32 v; };
    struct big { u64 v; char pad[256]; };
    BPF_RINGBUF_OUTPUT(ok, 64);
    BPF_RINGBUF_OUTPUT(full, 1);
    int produce(struct xdp_md *ctx) {
        struct small s = {.v = 1};
        struct big b = {.v = 2};
        ok.ringbuf_output(&s, sizeof(s), 0);
        full.ringbuf_output(&b, sizeof(b), 0);
        return XDP_PASS;
    }
    """
    m = session.load("two", src)
    ok, full = session.stream("ok"), session.stream("full")
    produce(m, "produce", 2000)
    assert wait_for(lambda: ok.count == 2000 and full.count + full.lost == 2000)
    assert ok.lost == 0 and full.lost > 0
    assert ok.columns == ["v"] and full.columns == ["v", "pad"]


def test_reload_and_unload_stop_the_consumer(session):
    m = session.load("life", ring_producer())
    old = session.stream("events")
    assert old.running and stream_threads() == ["bpfmagic-stream-life.events"]
    produce(m, "produce", 10)
    m2 = session.load("life", ring_producer())  # re-run of the cell: a new stream
    new = session.stream("events")
    assert new is not old and not old.running and new.running
    assert old.count == 10 and old.df()["seq"].tolist() == list(range(10))  # rows survive the stop
    assert stream_threads() == ["bpfmagic-stream-life.events"]
    produce(m2, "produce", 4)
    assert wait_for(lambda: new.count == 4)
    session.unload("life")
    assert not new.running and stream_threads() == [] and new.count == 4
    with pytest.raises(UsageProblem) as err:
        session.stream("events")
    assert (err.value.kind, err.value.name, err.value.known) == ("stream", "events", ())
    session.load("again", ring_producer())
    session.reset()
    assert stream_threads() == []


def test_stop_releases_the_ring_for_bcc(session):
    m = session.load("own", ring_producer())
    st = session.stream("events")
    st.stop()
    assert not st.running and stream_threads() == []
    got = []
    m["events"].open_ring_buffer(lambda ctx, data, size: got.append(m["events"].event(data).seq))
    produce(m, "produce", 5)
    m.bpf.ring_buffer_consume()
    assert got == [0, 1, 2, 3, 4] and st.count == 0


def test_a_stopped_stream_goes_with_its_module(session):
    """stop() drops the stream's module; unload and reset must still remove it."""
    session.load("a1", ring_producer())
    session.stream("events").stop()
    session.unload("a1")
    assert session.streams.names() == []
    m2 = session.load("a2", ring_producer())
    st = session.stream("events")  # not "several modules have a table 'events'"
    assert st.name == "a2.events" and m2.streams == {"events": st}
    st.stop()
    assert m2.streams == {"events": st}  # stopped, still the module's until it goes
    session.reset()
    assert session.streams.names() == [] and stream_threads() == []


def test_reader_failure_stops_the_stream_and_wakes_waiters(session, monkeypatch):
    """A consumer thread that dies must not leave wait() hanging nor die
    silently. The failure is the one a negative max_rows once caused (an
    IndexError trimming the rows, on the consumer thread; the setter refuses
    such a bound now): here the ring's reader raises it."""
    from bpfmagic.events.readers import RingReader

    def broken(reader):
        raise IndexError("deque index out of range")

    m = session.load("dies", ring_producer())
    st = session.stream("events")
    with pytest.warns(StreamWarning, match=r"dies\.events stopped: its reader failed with IndexError") as caught:
        monkeypatch.setattr(RingReader, "read", broken)  # the thread's next read fails
        produce(m, "produce", 10)
        # No timeout: only the stream's stop can end this wait (the join is a guard against a hang).
        reached = []
        waiter = threading.Thread(target=lambda: reached.append(st.wait(11, timeout=None)), daemon=True)
        waiter.start()
        waiter.join(60)
        assert not waiter.is_alive(), "wait() was not woken by the failure"
        assert reached == [False]
    assert len([w for w in caught if issubclass(w.category, StreamWarning)]) == 1
    assert st.stopped.is_set() and not st.running and isinstance(st.error, IndexError)
    assert "failed" in repr(st) and "IndexError" in repr(st)
    assert "IndexError" in session.streams.summary().loc[0, "error"]
    session.unload("dies")
    assert stream_threads() == []


def test_max_rows_must_be_a_positive_integer(session):
    m = session.load("rows", ring_producer())
    st = session.stream("events")
    for bad in (-5, 0, 2.5, True, "10"):
        with pytest.raises(UsageProblem, match="max_rows must be an integer >= 1"):
            st.max_rows = bad
        with pytest.raises(UsageProblem, match="max_rows must be an integer >= 1"):
            session.streams.max_rows = bad
    assert st.max_rows == session.streams.max_rows == 1_000_000
    st.max_rows = np.int64(5)
    assert st.max_rows == 5
    produce(m, "produce", 20)
    assert st.wait(20, timeout=10) and st.running and len(st) == 5


def test_bit_fields_and_alignment_attributes_are_refused_with_the_reason(session):
    """BCC reports field types only: bit-fields and aligned fields would
    decode wrong (a=83 b=0 for a=3 b=5), so such tables are not streamed and
    the stream lookups say why."""
    bits = r"""
    struct rec { u32 a:4; u32 b:28; u64 c; };
    BPF_RINGBUF_OUTPUT(events, 16);
    int produce(struct xdp_md *ctx) {
        struct rec r = {.a = 3, .b = 5, .c = 7};
        events.ringbuf_output(&r, sizeof(r), 0);
        return XDP_PASS;
    }
    """
    with pytest.warns(StreamWarning, match=r"bit-fields \(a:4, b:28\)"):
        session.load("bits", bits)
    with pytest.raises(UsageProblem, match=r"bits\.events is not streamed: .*bit-fields \(a:4, b:28\)"):
        session.stream("events")
    aligned = bits.replace("u32 a:4; u32 b:28; u64 c;", "u32 a; u32 b; u64 c __attribute__((aligned(16)));")
    with pytest.warns(StreamWarning, match="alignment/packing attributes on c"):
        session.load("al", aligned)
    with pytest.raises(UsageProblem, match="alignment/packing attributes on c"):
        session.stream("al.events")
    # a struct packed as a whole is laid out exactly: streamed
    packed = bits.replace("struct rec { u32 a:4; u32 b:28; u64 c; }", "struct __attribute__((packed)) rec { u8 a; u64 b; u16 c; }")
    m = session.load("pk", packed)
    st = session.stream("pk.events")
    produce(m, "produce", 2)
    assert st.wait(2, timeout=10) and st.rtype.itemsize == 11 and st.variable == 0
    assert st.df()[["a", "b", "c"]].values.tolist() == [[3, 5, 7], [3, 5, 7]]


def test_records_of_another_size_warn_once(session):
    src = r"""
    struct rec { u64 seq; u64 a; u64 b; };
    BPF_RINGBUF_OUTPUT(events, 64);
    int produce(struct xdp_md *ctx) {
        struct rec r = {.seq = 1, .a = 2};
        events.ringbuf_output(&r, 16, 0);     /* 16 bytes of a 24-byte struct */
        return XDP_PASS;
    }
    """
    m = session.load("short", src)
    st = session.stream("events")
    with pytest.warns(StreamWarning, match=r"short\.events: records of 16 bytes arrived where its struct has 24") as caught:
        produce(m, "produce", 5)
        assert st.wait(5, timeout=10)
        produce(m, "produce", 5)
        assert st.wait(10, timeout=10)
    assert len([w for w in caught if issubclass(w.category, StreamWarning)]) == 1
    assert st.variable == 10 and st.df()["b"].tolist() == [0] * 10


def test_core_ring_buffers_are_streamed_too(session):
    """More in test_core_stream.py: the struct comes from the object's BTF."""
    m = session.load(
        "co",
        r"""
struct event { u64 seq; };
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } events SEC(".maps");
SEC("xdp") int produce(struct xdp_md *ctx) {
    struct event e = {.seq = 1};
    bpf_ringbuf_output(&events, &e, sizeof(e), 0);
    return XDP_PASS;
}""",
        core=True,
    )
    st = session.stream("events")
    assert st is session.stream("co.events") and st.columns == ["seq"]
    produce(m, "produce", 3)
    assert st.wait(3, timeout=10) and st.df()["seq"].tolist() == [1, 1, 1]


# ---------------------------------------------------------------- perf buffers

PERF_PRODUCER = r"""
struct rec { u64 seq; u32 cpu; u32 pad; };
BPF_PERF_OUTPUT(events);
BPF_ARRAY(seqs, u64, 1);
int produce(struct xdp_md *ctx) {
    int k = 0;
    u64 *c = seqs.lookup(&k);
    if (!c) return XDP_PASS;
    struct rec r = {};
    r.seq = *c;
    *c = r.seq + 1;
    r.cpu = bpf_get_smp_processor_id();
    events.perf_submit(ctx, &r, sizeof(r));
    return XDP_PASS;
}
"""


def test_perf_buffer_records_arrive_exactly_once(session):
    m = session.load("perf", PERF_PRODUCER)
    st = session.stream("events")
    assert st.kind == "perf"
    n = 3000
    produce(m, "produce", n)
    assert wait_for(lambda: st.count == n)
    df = st.df()
    assert sorted(df["seq"].tolist()) == list(range(n)) and st.lost == 0
    for _cpu, group in df.groupby("cpu"):  # order holds per CPU buffer
        assert group["seq"].is_monotonic_increasing


def test_perf_buffer_overflow_is_counted(session):
    """Records of 3 KB in one-page per-CPU buffers: the second record finds
    the buffer full unless the consumer got there in the few microseconds
    perf_submit takes."""
    src = r"""
    struct big { u64 seq; char pad[3000]; };
    BPF_PERF_OUTPUT(events);
    BPF_PERCPU_ARRAY(scratch, struct big, 1);   /* too big for the 512-byte stack */
    BPF_ARRAY(seqs, u64, 1);
    int produce(struct xdp_md *ctx) {
        int k = 0;
        u64 *c = seqs.lookup(&k);
        struct big *b = scratch.lookup(&k);
        if (!c || !b) return XDP_PASS;
        b->seq = *c;
        *c = b->seq + 1;
        events.perf_submit(ctx, b, sizeof(*b));
        return XDP_PASS;
    }
    """
    session.streams.perf_pages = 1
    m = session.load("perfsmall", src)
    st = session.stream("events")
    n = 5000
    produce(m, "produce", n)
    assert wait_for(lambda: st.count + st.lost == n), st
    assert st.lost > 0
    seq = st.df()["seq"].to_numpy()
    assert len(seq) == st.count and len(np.unique(seq)) == len(seq)


# ---------------------------------------------------------------- export


def test_to_parquet_snapshot_and_follow(session, tmp_path):
    import pandas as pd
    import pyarrow  # noqa: F401  (to_parquet needs it; a declared dependency)

    m = session.load("pq", ring_producer())
    st = session.stream("events")
    st.max_rows = 1000
    produce(m, "produce", 500)
    assert wait_for(lambda: st.count == 500)
    snap = st.to_parquet(str(tmp_path / "snap.parquet"))
    assert pd.read_parquet(snap)["seq"].tolist() == list(range(500))
    follow = st.to_parquet(str(tmp_path / "all.parquet"), follow=True)
    for _ in range(10):
        produce(m, "produce", 10_000)
    assert wait_for(lambda: st.count == 100_500), st
    assert len(st) == 1000 and st.lost == 0
    session.unload("pq")  # stopping closes the file
    back = pd.read_parquet(follow)
    assert back["seq"].tolist() == list(range(100_500))
    assert back.dtypes["seq"] == "uint64" and back.dtypes["cpu"] == "uint32"


# ---------------------------------------------------------------- the magics


def test_magics_df_streams_and_max_rows_config(tmp_path):
    import bpfmagic

    with bpf_shell() as ip:
        ip.run_line_magic("config", "BpfMagics.max_rows = 123")
        ip.run_cell_magic("bpf", "mag", ring_producer())
        assert bpfmagic.session().stream("events").max_rows == 123
        produce(ip.user_ns["mag"], "produce", 200)
        st = bpfmagic.session().stream("mag.events")
        assert wait_for(lambda: st.count == 200)
        df = ip.run_line_magic("bpf", "df events")
        assert df["seq"].tolist() == list(range(77, 200))
        assert ip.run_line_magic("bpf", "df mag.events --last 3")["seq"].tolist() == [197, 198, 199]
        assert ip.run_line_magic("bpf", "df events --counts len").to_dict() == {64: 123}
        summary = ip.run_line_magic("bpf", "streams")
        assert summary.loc[0, "count"] == 200 and summary.loc[0, "dropped"] == 77
        ip.run_line_magic("bpf", "reset")
        assert stream_threads() == []


def test_magics_config_applies_once_and_rejects_bad_values():
    """%config BpfMagics.max_rows reaches the session when the session is
    created and when the config changes, not on every cell (that would undo
    what the Python API set); values below 1 are refused by %config."""
    import bpfmagic

    with bpf_shell() as ip:
        ip.run_line_magic("config", "BpfMagics.max_rows = 123")
        ip.run_cell_magic("bpf", "cfg", ring_producer())
        streams = bpfmagic.session().streams
        assert streams.max_rows == 123
        streams.max_rows = 50  # the Python API
        ip.run_cell_magic("bpf", "other", "int noop(struct xdp_md *ctx) { return XDP_PASS; }")
        assert streams.max_rows == 50 and bpfmagic.session().stream("events").max_rows == 50
        ip.run_line_magic("config", "BpfMagics.max_rows = 77")  # a change of the config applies
        assert streams.max_rows == 77
        ip.run_line_magic("config", "BpfMagics.max_rows = -5")  # refused (IPython logs the error)
        magics = ip.magics_manager.registry["BpfMagics"]
        assert magics.max_rows == 77 and streams.max_rows == 77
        st = bpfmagic.session().stream("events")
        produce(ip.user_ns["cfg"], "produce", 100)
        assert st.wait(100, timeout=10) and st.running and len(st) == 77
        bpfmagic.shell.drop()
        ip.run_line_magic("bpf", "ls")  # a new session gets the config once
        assert bpfmagic.session().streams.max_rows == 77


def test_to_parquet_keeps_string_columns(session, tmp_path):
    """char[N] fields are str columns: the Parquet schema must type them as strings."""
    import pandas as pd
    import pyarrow  # noqa: F401  (to_parquet needs it; a declared dependency)

    m = session.load(
        "named",
        r"""
struct rec { u64 seq; char tag[8]; };
BPF_RINGBUF_OUTPUT(events, 16);
BPF_ARRAY(next_seq, u64, 1);
int produce(struct xdp_md *ctx) {
    int k = 0;
    u64 *seq = next_seq.lookup(&k);
    if (!seq) return XDP_ABORTED;
    struct rec r = {.seq = (*seq)++};
    __builtin_memcpy(r.tag, "pkt", 4);
    events.ringbuf_output(&r, sizeof(r), 0);
    return XDP_PASS;
}""",
    )
    st = session.stream("events")
    follow = st.to_parquet(str(tmp_path / "follow.parquet"), follow=True)
    libbpf.test_run(m.programs["produce"].fd, data=bytes(64), repeat=300)
    assert wait_for(lambda: st.count == 300)
    snap = pd.read_parquet(st.to_parquet(str(tmp_path / "snap.parquet")))
    assert snap["tag"].tolist() == ["pkt"] * 300 and snap["seq"].tolist() == list(range(300))
    session.unload("named")
    assert pd.read_parquet(follow)["tag"].tolist() == ["pkt"] * 300


def test_ring_declared_inside_a_conditional_counts_its_losses(session):
    """`#if 1 BPF_RINGBUF_OUTPUT(...) #else BPF_PERF_OUTPUT(...) #endif`: the table is found in
    the branch the preprocessor keeps, so every record is delivered or counted lost."""
    src = ring_producer(pages=1).replace(
        "BPF_RINGBUF_OUTPUT(events, PAGES);", "#if 1\nBPF_RINGBUF_OUTPUT(events, PAGES);\n#else\nBPF_PERF_OUTPUT(events);\n#endif"
    )
    assert "#else" in src
    m = session.load("cond", src)
    st = session.stream("events")
    n = 50_000
    produce(m, "produce", n)
    assert wait_for(lambda: st.count + st.lost == n), (st.count, st.lost)
    assert st.lost > 0 and st.loss_counted


def test_ring_declared_in_an_included_header_says_losses_are_not_counted(session, tmp_path):
    """A table declared in an #included file is not seen by the front end, so its output calls
    are not rewritten: the stream says its losses are not counted, never a plausible 0."""
    (tmp_path / "ring.h").write_text("BPF_RINGBUF_OUTPUT(events, 1);\n")
    src = ring_producer(pages=1).replace("BPF_RINGBUF_OUTPUT(events, PAGES);", '#include "ring.h"')
    m = session.load("included", src, cflags=f"-I{tmp_path}")
    st = session.stream("events")
    produce(m, "produce", 50_000)
    assert wait_for(lambda: st.count > 0)
    assert not st.loss_counted and st.lost is None
    assert session.streams.summary().set_index("stream").loc[st.name, "lost"] == "not counted"
    assert "losses not counted" in repr(st)
