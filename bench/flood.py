"""Flood: a ring-buffer producer far faster than anyone can keep every row.

An XDP producer run by BPF_PROG_TEST_RUN writes one 32-byte record per run
(bpf/xdp_ring_producer.bpf.c) into a ring buffer streamed by bpfmagic with
max_rows 100,000, once without and once with ``to_parquet(follow=True)``.
Each run is a fresh process, so its peak RSS is its own. Prints, for each:
events produced / delivered (count) / lost (kernel: ring full) / dropped
(oldest rows beyond max_rows) / left out of the Parquet file, as ratios of
the events produced, and the RSS growth as a ratio of the memory bound
(max_rows rows, plus the Parquet queue's bytes when following). For the
Parquet run also: the share of the delivered events in the file, the rate
at which rows reached the file against the producer's rate in that run,
and that producer's rate against the producer's rate without Parquet (the
first run: the baseline measured in the same invocation).

Exits 1 when the accounting fails (produced == count + lost, rows kept ==
min(count, max_rows), dropped == count - rows kept, rows in the file ==
written, written + left out == count) or the target is missed: every
delivered event in the file (rows in the file == count) with the rows
queued for the writer at peak within its bound (queue_bytes / record size).

    .venv/bin/python bench/flood.py [--events N] [--max-rows R] [--queue-bytes B] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, as the tests import it

PACKET = bytes(64)
PRODUCER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bpf", "xdp_ring_producer.bpf.c")
RING_PAGES = 1024  # 4 MiB: the flood overflows it (that is the point), losses are counted
CHUNK = 1_000_000  # test_run repeats per call
TARGET_FILE_SHARE = 1.0  # of the delivered events (count), in the followed Parquet file
SMOKE_EVENTS = 300_000
SMOKE_QUEUE_BYTES = 256 << 10  # 8,192 rows: the smoke run's writer falls behind, so the reader must wait


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def run_flood(events: int, max_rows: int, parquet: bool, queue_bytes: int) -> dict:
    """One flood in this process; returns its figures."""
    from bpfmagic import Session
    from bpfmagic.kernel import libbpf

    warnings.simplefilter("ignore")  # the headers-mismatch note is irrelevant to this producer
    with open(PRODUCER_FILE) as f:
        source = f"#define PAGES {RING_PAGES}\n" + f.read()
    out: dict = {"events": events, "max_rows": max_rows, "parquet": parquet}
    with Session(stats=False) as session, tempfile.TemporaryDirectory() as tmp:
        session.streams.max_rows = max_rows
        module = session.load("flood", source)
        st = session.stream("flood.events")
        prog_fd = module.program("produce").fd
        path = os.path.join(tmp, "flood.parquet")
        if parquet:
            st.to_parquet(path, follow=True, queue_bytes=queue_bytes)
        base_kib = _status_kib("VmRSS")

        def produce():
            left = events
            while left:
                n = min(CHUNK, left)
                libbpf.test_run(prog_fd, data=PACKET, repeat=n)
                left -= n

        t0 = time.perf_counter()
        producer = threading.Thread(target=produce)
        producer.start()
        producer.join()
        out["producer_seconds"] = time.perf_counter() - t0
        deadline = time.monotonic() + 120
        while st.count + st.lost < events and time.monotonic() < deadline:
            st.wait(events - st.lost, timeout=0.2)  # woken per batch; lost moves only in the kernel
        out["seconds"] = time.perf_counter() - t0
        out.update(count=st.count, lost=st.lost, dropped=st.dropped, rows=len(st))
        if parquet:
            sink = st.parquet_sink
            st.close_parquet()
            out["file_seconds"] = time.perf_counter() - t0  # until the last row group is in the file
            import pyarrow.parquet as pq

            out.update(
                file_rows=pq.ParquetFile(path).metadata.num_rows,
                file_bytes=os.path.getsize(path),
                written=st.parquet_written,
                parquet_dropped=st.parquet_dropped,
                peak_queued_rows=sink.peak_queued_rows,
                max_queued_rows=sink.max_queued_rows,
                writer_waits=sink.waits,
            )
        out["itemsize"] = st.rtype.itemsize
        out["bound_bytes"] = max_rows * st.rtype.itemsize + (queue_bytes if parquet else 0)
        out["rss_growth_bytes"] = (_status_kib("VmHWM") - base_kib) * 1024
        out["peak_rss_bytes"] = _status_kib("VmHWM") * 1024
    return out


def accounting_errors(r: dict) -> list[str]:
    errors = []
    if r["count"] + r["lost"] != r["events"]:
        errors.append(f"count {r['count']:,} + lost {r['lost']:,} != produced {r['events']:,}")
    if r["rows"] != min(r["count"], r["max_rows"]):
        errors.append(f"rows kept {r['rows']:,} != min(count, max_rows)")
    if r["dropped"] != r["count"] - r["rows"]:
        errors.append(f"dropped {r['dropped']:,} != count - rows kept")
    if r["parquet"]:
        if r["file_rows"] != r["written"]:
            errors.append(f"rows in the file {r['file_rows']:,} != written {r['written']:,}")
        if r["written"] + r["parquet_dropped"] != r["count"]:
            errors.append(f"written {r['written']:,} + left out {r['parquet_dropped']:,} != count {r['count']:,}")
    return errors


def shortfalls(r: dict) -> list[str]:
    """The Parquet run's target, judged on its figures: every delivered event
    in the file, and the rows queued for the writer within the bound."""
    missed = []
    share = r["file_rows"] / r["count"] if r["count"] else 1.0
    if share < TARGET_FILE_SHARE:
        in_file = f"{r['file_rows']:,} of {r['count']:,}"
        missed.append(f"{share:.2%} of the delivered events in the Parquet file ({in_file}), target {TARGET_FILE_SHARE:.0%}")
    if r["peak_queued_rows"] > r["max_queued_rows"]:
        missed.append(f"{r['peak_queued_rows']:,} rows queued at peak, beyond the bound of {r['max_queued_rows']:,}")
    return missed


def report(r: dict, baseline: dict | None = None) -> None:
    n = r["events"]
    title = "with Parquet follow" if r["parquet"] else "without Parquet"
    produced_rate = n / r["producer_seconds"]
    print(f"{title}: {n:,} events in {r['seconds']:.1f} s ({produced_rate / 1e6:.2f} M/s produced)")
    print(
        f"  delivered (count) {r['count'] / n:8.2%}   lost (ring full) {r['lost'] / n:8.2%}   "
        f"dropped (beyond max_rows) {r['dropped'] / n:8.2%}   kept {r['rows']:,} rows"
    )
    if r["parquet"]:
        print(
            f"  in the Parquet file {r['written'] / n:8.2%}   left out of it {r['parquet_dropped'] / n:8.2%}   "
            f"peak queued {r['peak_queued_rows']:,} rows of {r['max_queued_rows']:,} at most; "
            f"the reader waited for the writer {r['writer_waits']:,} times"
        )
        share = r["file_rows"] / r["count"] if r["count"] else 1.0
        file_rate = r["file_rows"] / r["file_seconds"]
        print(
            f"  delivered events in the file {share:8.2%} ({r['file_rows']:,} of {r['count']:,}; "
            f"{r['file_bytes'] / max(r['file_rows'], 1):.2f} B per row on disk)"
        )
        against_baseline = ""
        if baseline:
            alone = baseline["events"] / baseline["producer_seconds"]
            against_baseline = f"; the producer ran at {produced_rate / alone:.2f} x its rate without Parquet"
        print(f"  rows into the file {file_rate / 1e6:.2f} M/s = {file_rate / produced_rate:.2f} x the producer's rate in this run{against_baseline}")
    bound = r["bound_bytes"]
    print(
        f"  peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB; growth during the flood "
        f"{r['rss_growth_bytes'] / 2**20:.1f} MiB = {r['rss_growth_bytes'] / bound:.2f} x the bound "
        f"({bound / 2**20:.1f} MiB: max_rows x {r['itemsize']} B"
        f"{' + the Parquet queue' if r['parquet'] else ''}); "
        f"{r['rss_growth_bytes'] / n:.2f} B per event"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000_000, help="records produced per run (default 20 M)")
    ap.add_argument("--max-rows", type=int, default=100_000, help="the stream's max_rows (default 100,000)")
    ap.add_argument("--queue-bytes", type=int, default=None, help="the followed file's queue_bytes (default: to_parquet's, 64 MiB)")
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_EVENTS:,} events and a {SMOKE_QUEUE_BYTES >> 10} KiB queue (the test suite)")
    ap.add_argument("--child", choices=["plain", "parquet"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.events, args.max_rows = SMOKE_EVENTS, 10_000
        args.queue_bytes = args.queue_bytes or SMOKE_QUEUE_BYTES
    if args.queue_bytes is None:
        from bpfmagic.events.parquet import DEFAULT_PARQUET_QUEUE_BYTES

        args.queue_bytes = DEFAULT_PARQUET_QUEUE_BYTES
    if args.child:
        print(json.dumps(run_flood(args.events, args.max_rows, args.child == "parquet", args.queue_bytes)))
        return 0
    failed, missed, baseline = False, [], None
    for mode in ("plain", "parquet"):
        child = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                *("--child", mode, "--events", str(args.events), "--max-rows", str(args.max_rows), "--queue-bytes", str(args.queue_bytes)),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if child.returncode != 0:
            print(f"{mode}: the run failed:\n{child.stderr[-3000:]}")
            failed = True
            continue
        r = json.loads(child.stdout.strip().splitlines()[-1])
        report(r, baseline)
        baseline = baseline or r
        for error in accounting_errors(r):
            print(f"  ACCOUNTING FAILED: {error}")
            failed = True
        if r["parquet"]:
            missed = shortfalls(r)
    print("accounting failed" if failed else "every event accounted for in both runs")
    for m in missed:
        print(f"TARGET MISSED: {m}", file=sys.stderr)
    if not missed and not failed:
        print("target met: every delivered event in the Parquet file, its queue within bound")
    return 1 if failed or missed else 0


if __name__ == "__main__":
    sys.exit(main())
