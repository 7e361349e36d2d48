"""%bpf trace: bpf_trace_printk lines from trace_pipe into a DataFrame."""

from __future__ import annotations

import pytest

from bpfmagic import UsageProblem
from bpfmagic.events.trace import capture, parse_line


def test_parse_line_formats():
    new = "          python3-4242    [001] d..31  5123.456789: bpf_trace_printk: slot 3 taken"
    assert parse_line(new) == {"ts": 5123.456789, "cpu": 1, "pid": 4242, "comm": "python3", "msg": "slot 3 taken"}
    old = "  <idle>-0     [000] ..s1  12.000001: bpf_trace_printk: x=1"
    assert parse_line(old)["comm"] == "<idle>" and parse_line(old)["pid"] == 0
    tgid = "  my-prog-name-7 (   7) [003] .... 1.5: bpf_trace_printk: a: b"
    assert parse_line(tgid) == {"ts": 1.5, "cpu": 3, "pid": 7, "comm": "my-prog-name", "msg": "a: b"}
    assert parse_line("  bash-1 [000] .... 1.0: sys_enter: NR 0") is None  # not a printk line
    assert parse_line("CPU:1 [LOST 3 EVENTS]") is None


def test_bad_grep_is_a_usage_problem():
    with pytest.raises(UsageProblem, match=r"--grep '\(' is not a valid regular expression"):
        capture(seconds=0.1, grep="(")


def test_seconds_are_checked(session):
    for bad in (-1, 0, float("nan"), float("inf"), 1e9):
        with pytest.raises(UsageProblem, match="--seconds"):
            session.trace(seconds=bad)


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


def test_lines_lost_before_the_session_began_are_not_its_losses(tmp_path):
    """trace_pipe is shared by the machine: a backlog other programs overflowed before this
    session began reports its losses too; they come before lines older than the session."""
    import warnings

    from bpfmagic.events.trace import capture

    pipe = tmp_path / "trace_pipe"
    pipe.write_text(
        "CPU:0 [LOST 500 EVENTS]\n"
        "       spam-1111    [000] d..31  100.000000: bpf_trace_printk: old\n"
        "       true-4242    [001] d..31  1234.500000: bpf_trace_printk: exec seen\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = capture(seconds=0.2, path=str(pipe), since=1000.0)
    assert df["msg"].tolist() == ["exec seen"] and df.attrs["lost"] == 0 and df.attrs["older_lost"] == 500
