"""Flood: a ring-buffer producer far faster than anyone can keep every row.

An XDP producer run by BPF_PROG_TEST_RUN writes one 32-byte record per run
(bpf/xdp_ring_producer.bpf.c) into a ring buffer streamed by bpfmagic with
max_rows 100,000, once without and once with ``to_parquet(follow=True)``.
Each run is a fresh process, so its peak RSS is its own. Prints, for each:
events produced / delivered (count) / lost (kernel: ring full) / dropped
(oldest rows beyond max_rows) / left out of the Parquet file, as ratios of
the events produced, and the RSS growth as a ratio of the memory bound
(max_rows rows, plus the Parquet queue's bytes when following).

Exits non-zero when the accounting fails: produced == count + lost,
rows kept == min(count, max_rows), dropped == count - rows kept, and with
Parquet: rows in the file == written, written + left out == count.

    .venv/bin/python bench/flood.py [--events N] [--max-rows R]
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


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def run_flood(events: int, max_rows: int, parquet: bool) -> dict:
    """One flood in this process; returns its figures."""
    from bpfmagic import Session
    from bpfmagic.events.parquet import DEFAULT_PARQUET_QUEUE_BYTES
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
            st.to_parquet(path, follow=True)
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
        deadline = time.monotonic() + 120
        while st.count + st.lost < events and time.monotonic() < deadline:
            st.wait(events - st.lost, timeout=0.2)  # woken per batch; lost moves only in the kernel
        out["seconds"] = time.perf_counter() - t0
        out.update(count=st.count, lost=st.lost, dropped=st.dropped, rows=len(st))
        if parquet:
            peak_queued = st._parquet.peak_queued_rows
            st.close_parquet()
            import pyarrow.parquet as pq

            out.update(
                file_rows=pq.ParquetFile(path).metadata.num_rows,
                written=st.parquet_written,
                parquet_dropped=st.parquet_dropped,
                peak_queued_rows=peak_queued,
            )
        out["itemsize"] = st.rtype.itemsize
        out["bound_bytes"] = max_rows * st.rtype.itemsize + (DEFAULT_PARQUET_QUEUE_BYTES if parquet else 0)
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


def report(r: dict) -> None:
    n = r["events"]
    title = "with Parquet follow" if r["parquet"] else "without Parquet"
    print(f"{title}: {n:,} events in {r['seconds']:.1f} s ({n / r['seconds'] / 1e6:.2f} M/s produced)")
    print(
        f"  delivered (count) {r['count'] / n:8.2%}   lost (ring full) {r['lost'] / n:8.2%}   "
        f"dropped (beyond max_rows) {r['dropped'] / n:8.2%}   kept {r['rows']:,} rows"
    )
    if r["parquet"]:
        print(
            f"  in the Parquet file {r['written'] / n:8.2%}   left out of it {r['parquet_dropped'] / n:8.2%}   "
            f"peak queued {r['peak_queued_rows']:,} rows"
        )
    bound = r["bound_bytes"]
    print(
        f"  peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB; growth during the flood "
        f"{r['rss_growth_bytes'] / 2**20:.1f} MiB = {r['rss_growth_bytes'] / bound:.2f} x the bound "
        f"({bound / 2**20:.1f} MiB: max_rows x {r['itemsize']} B"
        f"{' + the 64 MiB Parquet queue' if r['parquet'] else ''}); "
        f"{r['rss_growth_bytes'] / n:.2f} B per event"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000_000, help="records produced per run (default 20 M)")
    ap.add_argument("--max-rows", type=int, default=100_000, help="the stream's max_rows (default 100,000)")
    ap.add_argument("--child", choices=["plain", "parquet"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_flood(args.events, args.max_rows, args.child == "parquet")))
        return 0
    failed = False
    for mode in ("plain", "parquet"):
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", mode, "--events", str(args.events), "--max-rows", str(args.max_rows)],
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
        report(r)
        for error in accounting_errors(r):
            print(f"  ACCOUNTING FAILED: {error}")
            failed = True
    print("accounting failed" if failed else "every event accounted for in both runs")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
