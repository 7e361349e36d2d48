"""%bpf trace: bpf_trace_printk lines from trace_pipe into a DataFrame."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bpfmagic import UsageProblem
from bpfmagic.events.trace import capture, parse_line
from bpfmagic.kernel import libbpf

from .conftest import needs_root

SESSION_CLOCK_SLACK = 1.0  # Session.trace: the trace clock and CLOCK_MONOTONIC may drift this much


def test_parse_line_formats():
    new = "          python3-4242    [001] d..31  5123.456789: bpf_trace_printk: slot 3 taken"
    assert parse_line(new) == {"ts": 5123.456789, "cpu": 1, "pid": 4242, "comm": "python3", "msg": "slot 3 taken"}
    old = "  <idle>-0     [000] ..s1  12.000001: bpf_trace_printk: x=1"
    assert parse_line(old)["comm"] == "<idle>" and parse_line(old)["pid"] == 0
    tgid = "  my-prog-name-7 (   7) [003] .... 1.5: bpf_trace_printk: a: b"
    assert parse_line(tgid) == {"ts": 1.5, "cpu": 3, "pid": 7, "comm": "my-prog-name", "msg": "a: b"}
    assert parse_line("  bash-1 [000] .... 1.0: sys_enter: NR 0") is None  # not a printk line
    assert parse_line("CPU:1 [LOST 3 EVENTS]") is None


@needs_root
def test_capture_returns_the_printed_lines(session):
    marker = f"bm{os.getpid()}x{time.monotonic_ns() % 100000}"
    src = r"""
    BPF_ARRAY(seqs, u64, 1);
    int say(struct xdp_md *ctx) {
        int k = 0;
        u64 *c = seqs.lookup(&k);
        if (!c) return XDP_PASS;
        u64 n = *c;
        *c = n + 1;
        bpf_trace_printk("MARKER %llu\n", n);
        return XDP_PASS;
    }
    """.replace("MARKER", marker)
    m = session.load("say", src)
    libbpf.test_run(m.program("say").fd, data=bytes(64), repeat=25)
    df = session.trace(seconds=2, grep=marker)
    assert df.attrs["stopped_by"] == "seconds"  # no line limit: the deadline ended it
    assert list(df.columns) == ["ts", "cpu", "pid", "comm", "msg"]
    assert df["msg"].tolist() == [f"{marker} {i}" for i in range(25)]
    assert set(df["pid"]) == {os.getpid()} and (df["ts"].diff().dropna() >= 0).all()
    # a second capture finds nothing: trace_pipe reads consume
    assert session.trace(seconds=0.2, grep=marker).empty


@needs_root
def test_capture_stops_after_max_lines(session):
    src = r"""int say(struct xdp_md *ctx) { bpf_trace_printk("bmlimit\n"); return XDP_PASS; }"""
    m = session.load("lim", src)
    libbpf.test_run(m.program("say").fd, data=bytes(64), repeat=50)
    df = session.trace(seconds=5, max_lines=10, grep="^bmlimit$")
    assert len(df) == 10 and df.attrs["stopped_by"] == "max_lines"  # returned at 10 lines, not at the deadline
    session.trace(seconds=0.3, grep="bmlimit")  # leave nothing of ours in the pipe


def test_bad_grep_is_a_usage_problem():
    with pytest.raises(UsageProblem, match=r"--grep '\(' is not a valid regular expression"):
        capture(seconds=0.1, grep="(")


@needs_root
def test_unprivileged_capture_says_permission_denied():
    """As another user, tracefs (mode 700) is there but unreadable: the error
    says permission, not "mount it"."""
    from .namespaces import BECOME_NOBODY, child_env

    # Imported as root (the clone may sit under a 0700 directory), then user nobody.
    # pandas too: capture() imports it when it has lines to return, after the drop.
    code = (
        "import os, pandas, bpfmagic\nfrom bpfmagic.events.trace import capture\n" + BECOME_NOBODY + "try:\n    capture(seconds=0.1)\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
        "print('MODULE:', bpfmagic.__file__)\n"
    )
    import bpfmagic

    out = subprocess.run([sys.executable, "-c", code], cwd="/", env=child_env(), capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("EnvironmentProblem permission denied reading /sys/kernel/tracing/trace_pipe"), out.stdout + out.stderr
    assert f"MODULE: {bpfmagic.__file__}" in out.stdout
    assert "mount" not in out.stdout


def test_a_second_reader_gets_a_clear_error(session):
    import errno as errno_

    from bpfmagic import EnvironmentProblem
    from bpfmagic.events.trace import TRACE_PIPE

    try:
        holder = os.open(TRACE_PIPE, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno_.EBUSY:
            pytest.skip("another process reads trace_pipe right now")
        raise
    try:
        with pytest.raises(EnvironmentProblem, match="being read by another process"):
            session.trace(seconds=0.1)
    finally:
        os.close(holder)


def test_seconds_are_checked(session):
    for bad in (-1, 0, float("nan"), float("inf"), 1e9):
        with pytest.raises(UsageProblem, match="--seconds"):
            session.trace(seconds=bad)


@needs_root
def test_lines_older_than_the_session_are_skipped(session):
    from bpfmagic import Session

    src = r"""int say(struct xdp_md *ctx) { bpf_trace_printk("bmold\n"); return XDP_PASS; }"""
    m = session.load("old", src)
    libbpf.test_run(m.program("say").fd, data=bytes(64), repeat=3)  # printed before `later` began
    printed_by = time.monotonic()
    # A session skips lines older than its start minus a clock slack (1 s): `later` has to
    # begin more than that after the printing; only the clock can be waited for here.
    while time.monotonic() < printed_by + SESSION_CLOCK_SLACK + 0.1:
        time.sleep(0.05)
    later = Session()
    try:
        assert later.started - SESSION_CLOCK_SLACK > printed_by
        df = later.trace(seconds=0.5, grep="^bmold$")
        assert df.empty and df.attrs["older"] == 3
    finally:
        later.close()


def test_lines_the_kernel_lost_are_said_in_the_cell(tmp_path):
    """trace_pipe reports overwritten lines as "CPU:N [LOST M EVENTS]": a frame that misses
    them says so (a warning in the cell), not only in df.attrs."""
    from bpfmagic.events import StreamWarning
    from bpfmagic.events.trace import capture

    pipe = tmp_path / "trace_pipe"
    pipe.write_text(
        "CPU:1 [LOST 10620 EVENTS]\n"
        "       true-4242    [001] d..31  1234.500000: bpf_trace_printk: exec seen\n"
        "       true-4242    [001] d..31  1234.600000: bpf_trace_printk: other 12\n"
    )
    with pytest.warns(StreamWarning, match=r"10,620 trace lines were lost before they were read.*the rows are the lines that were left, filtered"):
        df = capture(seconds=0.2, grep="exec", path=str(pipe))
    assert df["msg"].tolist() == ["exec seen"] and df.attrs["lost"] == 10620
