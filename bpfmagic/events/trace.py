"""bpf_trace_printk output: lines of tracefs' trace_pipe into a DataFrame.

trace_pipe is a consuming read shared by the whole machine: what one reader
takes, another does not see, and lines printed before the capture starts are
still there if nobody read them.
"""

from __future__ import annotations

import errno
import os
import re
import select
import time

from ..errors import EnvironmentProblem, UsageProblem
from ..kernel import env

TRACE_PIPE = "/sys/kernel/tracing/trace_pipe"
COLUMNS = ["ts", "cpu", "pid", "comm", "msg"]

# "  python3-1234    [001] d..31  1234.567890: bpf_trace_printk: hello"
# (with the record-tgid option a "(  1234)" column follows the pid; older
# kernels print 4 flag characters, newer ones 5; the flags can be absent)
_LINE_RE = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s:]{4,5})\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>[^:]+):\s?(?P<msg>.*)$"
)
_LOST_RE = re.compile(r"CPU:(\d+) \[LOST (\d+) EVENTS\]")


def parse_line(line: str) -> dict | None:
    """One trace_pipe line of bpf_trace_printk to {ts, cpu, pid, comm, msg}; None for other lines."""
    m = _LINE_RE.match(line)
    if m is None or m["event"].strip() != "bpf_trace_printk":
        return None
    return {"ts": float(m["ts"]), "cpu": int(m["cpu"]), "pid": int(m["pid"]), "comm": m["comm"], "msg": m["msg"]}


MAX_SECONDS = 3600.0


def capture(seconds: float = 1.0, max_lines: int | None = None, grep: str | None = None, path: str = TRACE_PIPE, since: float | None = None):
    """Read bpf_trace_printk lines for at most SECONDS (or until MAX_LINES),
    never blocking longer. ``grep``: keep messages matching this regex.
    DataFrame columns: ts (seconds since boot, as the trace clock), cpu, pid
    (the thread id), comm, msg. ``df.attrs["lost"]``: lines the kernel
    reported as overwritten before they were read (since SINCE; those lost
    before it, in ``older_lost``, are a backlog of other programs' lines); ``df.attrs["stopped_by"]``:
    "max_lines" or "seconds", what ended the capture. Reading consumes: lines
    read past MAX_LINES in the same read are gone for other readers too."""
    import math

    import pandas as pd

    if not isinstance(seconds, (int, float)) or math.isnan(seconds) or not 0 < seconds <= MAX_SECONDS:
        raise UsageProblem(f"--seconds must be a number of seconds in (0, {MAX_SECONDS:.0f}] (got {seconds!r})")
    if max_lines is not None and max_lines < 1:
        raise UsageProblem(f"--lines must be at least 1 (got {max_lines})")
    try:
        pattern = re.compile(grep) if grep else None
    except re.error as e:
        raise UsageProblem(f"--grep {grep!r} is not a valid regular expression: {e}") from None
    status = env.ensure_tracefs()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError:
        # tracefs is root-only by default (mode 700): the file exists but this process may not see it
        raise EnvironmentProblem(
            f"permission denied reading {path}: tracefs is readable by root only and "
            f"this process runs as uid {os.geteuid()}. Start Jupyter as root (or give "
            f"this user access to {os.path.dirname(path)})"
        ) from None
    except OSError as e:
        if e.errno == errno.EBUSY:  # trace_pipe takes one reader at a time
            raise EnvironmentProblem(
                f"{path} is being read by another process (a BCC script's trace_print, "
                "`cat trace_pipe`, another notebook): stop it and run this again"
            ) from None
        if e.errno != errno.ENOENT:
            raise
        raise EnvironmentProblem(f"no {path}: {status.reason}; mount it with `mount -t tracefs nodev /sys/kernel/tracing`") from None
    rows: list[dict] = []
    lost = older = older_lost = pending_lost = 0
    deadline = time.monotonic() + max(0.0, seconds)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        partial = b""
        while max_lines is None or len(rows) < max_lines:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not poller.poll(min(left, 0.1) * 1000):
                continue
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                continue
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()  # an unfinished line waits for the next read
            for raw in lines:
                text = raw.decode("utf-8", "replace")
                m = _LOST_RE.search(text)
                if m:
                    pending_lost += int(m[2])
                    continue
                row = parse_line(text)
                if row is not None and pending_lost:
                    # the lost lines came before this one: before the session began (a backlog
                    # other programs left in the shared buffer) they are none of its business
                    if since is None or row["ts"] >= since:
                        lost += pending_lost
                    else:
                        older_lost += pending_lost
                    pending_lost = 0
                if row is None or (pattern is not None and not pattern.search(row["msg"])):
                    continue
                if since is not None and row["ts"] < since:
                    older += 1  # printed before the session began (trace_pipe keeps unread lines)
                    continue
                rows.append(row)
                if max_lines is not None and len(rows) >= max_lines:
                    break
    finally:
        os.close(fd)
    lost += pending_lost  # nothing came after them: when they were printed is unknown
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.attrs["lost"] = lost
    frame.attrs["older_lost"] = older_lost
    frame.attrs["older"] = older
    frame.attrs["stopped_by"] = "max_lines" if max_lines is not None and len(rows) >= max_lines else "seconds"
    if lost:  # a frame missing lines must say so where it is shown, not only in attrs
        import warnings

        from . import StreamWarning

        size = _buffer_size(os.path.dirname(path))
        warnings.warn_explicit(  # shown as bpfmagic's, not as a line of its source
            f"{lost:,} trace lines were lost before they were read (the kernel overwrote them"
            f"{f'; its trace buffer holds {size} per CPU' if size else ''}): the rows are the lines that were left"
            f"{', filtered' if pattern is not None else ''}. Read while the program runs (`%bpf trace --seconds N` "
            "as it prints), print less often, or send events through a ring buffer (BPF_RINGBUF_OUTPUT / "
            "bpf_ringbuf_output), whose losses are counted exactly",
            StreamWarning,
            filename="bpfmagic",
            lineno=0,
        )
    return frame


def _buffer_size(tracefs: str) -> str | None:
    """The trace buffer's size per CPU in tracefs's own words ("7 (expanded: 1408)" KB)."""
    try:
        with open(os.path.join(tracefs, "buffer_size_kb")) as f:
            return f"{f.read().strip()} KB (tracefs's buffer_size_kb)"
    except OSError:
        return None
