"""The %bpf watch view: its widgets' values follow a real stream, and it
stops with the stream."""

from __future__ import annotations

import re
import threading
import time

import pytest

from bpfmagic import UsageProblem
from bpfmagic.kernel import libbpf
from bpfmagic.widgets import Watch

from ..conftest import needs_root, wait_for
from ..programs import PACKET, ring_producer

pytestmark = needs_root


def watch_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("bpfmagic-watch-")]


def test_watch_values_change_while_events_arrive(session):
    m = session.load("w", ring_producer())
    st = session.stream("events")
    view = Watch(st, by="len", rows=3, interval=0.05)
    assert view.running and view.values["count"] == 0
    first_status = view.status.value
    libbpf.test_run(m.program("produce").fd, data=PACKET, repeat=1000)
    assert wait_for(lambda: view.values.get("count") == 1000)
    assert view.status.value != first_status and "1,000</b> events" in view.status.value
    assert view.values["lost"] == 0 and view.values["rows"] == 1000
    # the last three rows, and the counts by len (every packet is 64 bytes)
    assert all(f"<td>{seq}</td>" in view.table.value for seq in (997, 998, 999))
    assert "<td>996</td>" not in view.table.value
    assert "<td>64</td>" in view.groups.value and "<td>1000</td>" in view.groups.value
    libbpf.test_run(m.program("produce").fd, data=PACKET, repeat=500)
    assert wait_for(lambda: view.values.get("count") == 1500)
    view.clear_button.click()
    assert st.count == 0 and view.values["count"] == 0
    view.stop_button.click()
    assert not view.running and st.running  # Stop stops the view, not the stream
    assert watch_threads() == []


def test_watch_shows_ts_as_wall_clock_time(session):
    """A u64 column named ts (bpf_ktime_get_ns) shows as local time of day, never as ns
    since boot, and the view says how it got there; other u64 columns stay numbers."""
    m = session.load("wt", ring_producer())
    st = session.stream("events")
    view = Watch(st, by="len", rows=3, interval=0.05)
    libbpf.test_run(m.program("produce").fd, data=PACKET, repeat=5)
    assert wait_for(lambda: view.values.get("count") == 5)
    view.update()
    df = st.df()
    page = view.table.value
    for ns in df["ts"].tail(3):
        assert f"<td>{ns}</td>" not in page  # the raw ns since boot is gone
    shown = re.findall(r"<td>(\d\d:\d\d:\d\d\.\d{6})</td>", page)
    assert len(shown) == 3
    # each is the event's own time: CLOCK_MONOTONIC ns + the realtime offset, in local time
    offset = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    expected = [time.strftime("%H:%M:%S", time.localtime((int(ns) + offset) / 1e9)) for ns in df["ts"].tail(3)]
    assert [t[:8] for t in shown] == expected
    assert "ts: local time of day" in page and "CLOCK_MONOTONIC" in page
    assert f"<td>{0xABCDEF}</td>" in page  # tag is a u64 too, but not a timestamp: a number
    assert view.values["count"] == 5  # the figures are not touched
    view.stop()


def test_rows_and_counts_side_by_side_are_top_aligned(session):
    session.load("wl", ring_producer())
    view = Watch(session.stream("events"), by="cpu", rows=3, interval=0.05)
    try:
        assert list(view.tables.children) == [view.table, view.groups]
        layout = view.tables.layout
        assert (layout.display, layout.flex_flow, layout.align_items) == ("flex", "row nowrap", "flex-start")
        assert view.groups.layout.margin == "0 0 0 24px"  # a gap between the two tables
        # one header row in each table, so the rows beside each other line up
        for html_table in (view.table.value, view.groups.value):
            assert html_table.split("</thead>")[0].count("<tr") == 1
    finally:
        view.stop()


def test_watch_stops_when_the_module_is_unloaded(session):
    session.load("w2", ring_producer())
    view = Watch(session.stream("events"), interval=0.05)
    assert watch_threads() == ["bpfmagic-watch-w2.events"]
    session.unload("w2")
    assert not view.running and watch_threads() == []
    assert "stopped" in view.status.value


def test_one_live_view_per_stream(session):
    """Re-running a %bpf watch cell must not pile up updater threads: a new
    view of a stream stops the previous one; closing a view stops it."""
    session.load("w4", ring_producer())
    st = session.stream("events")
    views = [Watch(st, interval=0.05) for _ in range(5)]
    assert len(watch_threads()) <= 1 and views[-1].running
    assert not any(v.running for v in views[:-1])
    assert len(st._listeners) == 1  # stopped views are not kept alive by the stream
    views[-1].close()
    assert watch_threads() == [] and st.running
    closed = Watch(st, interval=0.05)
    closed.widget.close()  # as the front end closing it: the thread notices at its next tick
    assert wait_for(lambda: not closed.running, timeout=2) and watch_threads() == []


def test_watch_rejects_unknown_columns(session):
    session.load("w3", ring_producer())
    with pytest.raises(UsageProblem, match="no column 'nope'"):
        Watch(session.stream("events"), by="nope")
    assert watch_threads() == []


def test_watch_magic_returns_a_displayable_view():
    from IPython.testing.globalipapp import get_ipython

    import bpfmagic

    ip = get_ipython()
    ip.run_line_magic("load_ext", "bpfmagic")
    try:
        ip.run_cell_magic("bpf", "wm", ring_producer())
        view = ip.run_line_magic("bpf", "watch events --by cpu --rows 5 --interval 0.05")
        assert isinstance(view, Watch) and view.by == "cpu" and view.rows == 5
        bundle = view._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        ip.run_line_magic("bpf", "unload wm")
        assert wait_for(lambda: not view.running, timeout=5)
    finally:
        bpfmagic.shell.drop()
        ip.run_line_magic("unload_ext", "bpfmagic")


def test_a_stopped_view_leaves_its_last_figures_as_plain_html(session, ip):
    """A notebook saved without widget state shows a widget output as an error when opened
    again: the stopped view's output is replaced (update_display_data) by its last figures."""
    from IPython.utils.capture import capture_output

    m = session.load("wf", ring_producer())
    with capture_output() as shown:
        view = Watch(session.stream("events"), by="len", rows=2, interval=0.05)
        view._ipython_display_()
        libbpf.test_run(m.program("produce").fd, data=PACKET, repeat=300)
        assert wait_for(lambda: view.values.get("count") == 300)
        view.stop()
    first, last = shown.outputs[0], shown.outputs[-1]
    # shown: the widget where widgets render, its figures as HTML elsewhere
    assert "application/vnd.jupyter.widget-view+json" in first.data and "events" in first.data["text/html"]
    # stopped: the same output (its display id), now without the widget
    assert last.update and last.transient["display_id"] == first.transient["display_id"]
    assert "application/vnd.jupyter.widget-view+json" not in last.data
    page = last.data["text/html"]
    assert "<b>300</b> events" in page and "view stopped" in page and "<td>64</td>" in page and "<td>299</td>" in page
