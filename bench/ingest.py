"""Event ingest: kernel ring buffer -> pandas DataFrame.

An XDP producer run by BPF_PROG_TEST_RUN writes one fixed 32-byte record
per run into a ring buffer. The same producer feeds, in this one run:

  (a) plain BCC: ``open_ring_buffer`` with a Python callback per event,
      rows collected and turned into a DataFrame (the usual BCC way),
      end to end (production included);
  (b) a bpfmagic stream (bulk numpy decode of the mmap'ed ring, background
      thread), until ``Stream.df()`` returns every row, end to end;
  (a0) BCC's callbacks alone: records already in the ring consumed into a
      DataFrame (production excluded);
  (c) the bulk consumer alone: records already in the ring decoded into
      DataFrame columns (production excluded);
  (c0) its anchor, libbpf's own consumer in C (bench/ring_consumer.c, built
      here with clang against libbpf): ring_buffer__consume with a callback
      copying each record's fields into columns (production excluded).

(b) is compared with (a), (c) with (a0) and (c0): end to end with end to
end, consumer alone with consumer alone. The paths take turns within each round
(as bench/compile.py does), so the machine's drift spreads over all of them.
Every path must deliver every record, in order (checked: a failure exits 1).
Exit status 1 also when a target falls short; ``--smoke`` (a few thousand
events, one round) checks only delivery, for the test suite.

    .venv/bin/python bench/ingest.py [--events N] [--rounds R] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, as the tests import it

from bpfmagic import Session  # noqa: E402
from bpfmagic.events.readers import RingReader  # noqa: E402
from bpfmagic.kernel import libbpf

PACKET = bytes(64)
COLUMNS = ["seq", "ts", "cpu", "len", "tag"]
PRODUCER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bpf", "xdp_ring_producer.bpf.c")
ANCHOR_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ring_consumer.c")


def ring_pages(events: int) -> int:
    """Pages for a ring that holds every record (40 bytes each with its header)."""
    need = events * 40 // os.sysconf("SC_PAGESIZE") + 1
    return 1 << (need - 1).bit_length()


def check_in_order(seq: np.ndarray, start: int, events: int, what: str) -> None:
    if len(seq) != events or not np.array_equal(seq, np.arange(start, start + events, dtype=seq.dtype)):
        raise SystemExit(f"{what}: expected seq {start}..{start + events - 1} in order, got {len(seq)} rows starting {seq[:3].tolist()}")


def producer_thread(prog_fd: int, events: int) -> threading.Thread:
    t = threading.Thread(target=libbpf.test_run, args=(prog_fd,), kwargs={"data": PACKET, "repeat": events})
    t.start()
    return t


def bcc_callbacks(source: str, events: int, start: int) -> float:
    """(a): seconds from the start of production to the DataFrame, plain BCC."""
    import pandas as pd
    from bcc import BPF

    b = BPF(text=source)
    try:
        fn = b.load_func("produce", BPF.XDP)
        table = b["events"]
        rows = []

        def on_event(ctx, data, size):
            e = table.event(data)
            rows.append((e.seq, e.ts, e.cpu, e.len, e.tag))

        table.open_ring_buffer(on_event)
        t0 = time.perf_counter()
        producer = producer_thread(fn.fd, events)
        while len(rows) < events:
            b.ring_buffer_poll(100)
        df = pd.DataFrame(rows, columns=COLUMNS)
        elapsed = time.perf_counter() - t0
        producer.join()
        check_in_order(df["seq"].to_numpy(), start, events, "BCC callbacks")
        return elapsed
    finally:
        b.cleanup()


def bcc_callbacks_alone(source: str, events: int, start: int) -> float:
    """(a0): fill the ring with nobody reading, then time BCC's callbacks
    consuming it into a DataFrame alone (like (c), production excluded)."""
    import pandas as pd
    from bcc import BPF

    b = BPF(text=source)
    try:
        fn = b.load_func("produce", BPF.XDP)
        table = b["events"]
        rows = []

        def on_event(ctx, data, size):
            e = table.event(data)
            rows.append((e.seq, e.ts, e.cpu, e.len, e.tag))

        table.open_ring_buffer(on_event)
        libbpf.test_run(fn.fd, data=PACKET, repeat=events)
        t0 = time.perf_counter()
        while len(rows) < events:
            had = len(rows)
            b.ring_buffer_consume()
            if len(rows) == had:
                break  # the ring is empty: the check below says what is missing
        df = pd.DataFrame(rows, columns=COLUMNS)
        elapsed = time.perf_counter() - t0
        check_in_order(df["seq"].to_numpy(), start, events, "BCC callbacks alone")
        return elapsed
    finally:
        b.cleanup()


def bpfmagic_stream(session: Session, module, events: int, start: int) -> float:
    """(b): seconds from the start of production to Stream.df() with every row."""
    st = session.stream("bench.events")
    st.clear()
    prog_fd = module.program("produce").fd
    t0 = time.perf_counter()
    producer = producer_thread(prog_fd, events)
    if not st.wait(events, timeout=60):
        raise SystemExit(f"bpfmagic stream did not get every record: {st}")
    df = st.df()
    elapsed = time.perf_counter() - t0
    producer.join()
    check_in_order(df["seq"].to_numpy(), start, events, "bpfmagic stream")
    return elapsed


def bulk_consumer(module, rtype, events: int, start: int) -> tuple[float, float]:
    """(c): fill the ring with nobody reading, then time the decode into
    DataFrame columns alone. Returns (production s, consumer s)."""
    prog_fd = module.program("produce").fd
    t0 = time.perf_counter()
    libbpf.test_run(prog_fd, data=PACKET, repeat=events)
    produced = time.perf_counter() - t0
    reader = RingReader(module["events"].map_fd, rtype)
    try:
        t0 = time.perf_counter()
        df = rtype.frame(reader.read())
        consumed = time.perf_counter() - t0
    finally:
        reader.close()
    check_in_order(df["seq"].to_numpy(), start, events, "bulk consumer")
    return produced, consumed


def build_anchor(directory: str) -> str:
    """(c0)'s program, compiled into DIRECTORY; SystemExit saying why when it cannot be."""
    binary = os.path.join(directory, "ring_consumer")
    cc = shutil.which("clang") or shutil.which("cc")
    if cc is None:
        raise SystemExit("(c0) needs a C compiler (clang, from `make setup`)")
    r = subprocess.run([cc, "-O2", "-o", binary, ANCHOR_FILE, "-lbpf"], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"(c0) did not build (libbpf-dev is in `make setup`'s packages):\n{r.stderr}")
    return binary


def libbpf_consumer(module, binary: str, events: int, start: int) -> float:
    """(c0): fill the ring with nobody reading, then time libbpf's C consumer
    copying it into columns (its own clock, around ring_buffer__consume)."""
    libbpf.test_run(module.program("produce").fd, data=PACKET, repeat=events)
    fd = module["events"].map_fd
    r = subprocess.run([binary, str(fd), str(events), str(start)], pass_fds=[fd], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"(c0) failed: {r.stderr.strip()}")
    consumed, ns, ordered = (int(x) for x in r.stdout.split())
    if consumed != events or not ordered:
        raise SystemExit(
            f"libbpf C consumer: expected seq {start}..{start + events - 1} in order, got {consumed} records (in order: {bool(ordered)})"
        )
    return ns / 1e9


TARGET_STREAM_VS_BCC = 8.0  # (b) / (a), end to end
TARGET_BULK_RATE = 40e6  # (c), events per second (issue 24: near cilium/ebpf's Go reader, 45.6 M/s); (c0) printed beside it


def shortfalls(stream_vs_bcc: float, bulk_rate: float) -> list[str]:
    """The targets this run missed, one line each (empty: all met)."""
    missed = []
    if stream_vs_bcc < TARGET_STREAM_VS_BCC:
        missed.append(f"(b) is {stream_vs_bcc:.1f}x (a), below the target {TARGET_STREAM_VS_BCC:.0f}x")
    if bulk_rate < TARGET_BULK_RATE:
        missed.append(f"(c) decodes {bulk_rate / 1e6:.1f} M events/s, below the target {TARGET_BULK_RATE / 1e6:.0f} M/s")
    return missed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="records per round (default 1,000,000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per path; medians are reported")
    ap.add_argument("--smoke", action="store_true", help="5,000 events, one round, delivery checks only")
    args = ap.parse_args(argv)
    n, rounds = (5_000, 1) if args.smoke else (args.events, args.rounds)
    warnings.simplefilter("ignore")  # the headers-mismatch note is irrelevant to this producer
    with open(PRODUCER_FILE) as f:
        source = f"#define PAGES {ring_pages(n)}\n" + f.read()

    with Session(stats=False) as session:  # kernel run stats cost ~70 ns per producer run here
        # (b) reads "bench" through its stream; (c) reads "bulk" itself, its stream stopped
        # once, so the two can take turns in every round.
        module = session.load("bench", source)
        bulk = session.load("bulk", source)
        bulk_stream = session.stream("bulk.events")
        rtype = bulk_stream.rtype
        bulk_stream.stop()
        anchor = session.load("anchor", source)  # (c0) reads its ring from another process: no stream here
        session.stream("anchor.events").stop()
        build_dir = tempfile.mkdtemp(prefix="bpfmagic-bench-")
        binary = build_anchor(build_dir)
        print(
            f"producer: XDP test_run, one 32-byte record per run, {n:,} records per round, "
            f"ring {ring_pages(n) * os.sysconf('SC_PAGESIZE') >> 10:,} KiB, {rounds} rounds "
            f"(paths interleaved), {os.cpu_count()} CPUs"
        )

        t_bcc, t_bcc_alone, t_stream, produced, consumed, t_libbpf = [], [], [], [], [], []
        try:
            for r in range(rounds):
                t_bcc.append(bcc_callbacks(source, n, 0))
                t_stream.append(bpfmagic_stream(session, module, n, r * n))
                t_bcc_alone.append(bcc_callbacks_alone(source, n, 0))
                t_libbpf.append(libbpf_consumer(anchor, binary, n, r * n))
                p, c = bulk_consumer(bulk, rtype, n, r * n)
                produced.append(p)
                consumed.append(c)
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)

    rate = lambda seconds: n / statistics.median(seconds)  # noqa: E731
    a, b, a0, c, p, c0 = rate(t_bcc), rate(t_stream), rate(t_bcc_alone), rate(consumed), rate(produced), rate(t_libbpf)
    print("end to end (production included):")
    print(f"(a)  BCC open_ring_buffer callbacks -> DataFrame             : {a / 1e6:7.2f} M events/s")
    print(
        f"(b)  bpfmagic stream -> Stream.df()                          : {b / 1e6:7.2f} M events/s"
        f"   {b / a:6.1f}x (a)    target >= {TARGET_STREAM_VS_BCC:.0f}x"
    )
    # Timed in (c)'s rounds, a test_run with nobody reading: not the same conditions as (b)'s
    # producer thread, so (b) can come out above it; a reference, not a bound.
    print(f"     producer alone (test_run, nobody reading, in (c)'s rounds): {p / 1e6:7.2f} M events/s   (b) / producer alone {b / p:.0%}")
    print("consumer alone (records already in the ring):")
    print(f"(a0) BCC callbacks: ring -> DataFrame                        : {a0 / 1e6:7.2f} M events/s")
    print(f"(c0) libbpf C consumer: ring -> columns (the anchor)          : {c0 / 1e6:7.2f} M events/s")
    print(
        f"(c)  bulk consumer: ring -> DataFrame columns                : {c / 1e6:7.2f} M events/s"
        f"   {c / a0:6.1f}x (a0)  {c / c0:5.2f}x (c0)   target >= {TARGET_BULK_RATE / 1e6:.0f} M/s"
    )
    print("every record arrived, in order, on every path")
    if args.smoke:
        print("smoke run: the targets are not judged")
        return 0
    missed = shortfalls(b / a, c)
    for line in missed:
        print(f"TARGET MISSED: {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
