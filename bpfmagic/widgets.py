"""A live ipywidgets view of a Stream (``%bpf watch``).

A background thread sets the widgets' trait values (``HTML.value``), which
is how the ipywidgets docs say to update widgets from a thread: the kernel
sends each change to the front end; no ``with output:`` from the thread.
"""

from __future__ import annotations

import html
import threading
import time

from .errors import UsageProblem

# Columns the stream view shows as time: these names, and only as u64, which is what
# bpf_ktime_get_ns() returns (a u32 "ts" or a counter named otherwise is left as it is).
TIME_COLUMNS = ("ts", "timestamp", "time_ns")
TIME_NOTE = (
    "{cols}: local time of day (HH:MM:SS.µs) = bpf_ktime_get_ns() (CLOCK_MONOTONIC, ns since boot) "
    "+ this host's CLOCK_REALTIME − CLOCK_MONOTONIC; <code>%bpf df</code> keeps the ns"
)


def time_columns(frame) -> list[str]:
    """The columns of FRAME the view shows as time (TIME_COLUMNS of dtype uint64)."""
    return [c for c in frame.columns if c in TIME_COLUMNS and str(frame[c].dtype) == "uint64"]


def as_wall_clock(frame):
    """FRAME with its time columns (time_columns) as local time of day, microseconds.
    bpf_ktime_get_ns() is CLOCK_MONOTONIC; the offset to CLOCK_REALTIME is read now,
    so a clock step (NTP) shows in the next refresh."""
    import datetime

    import pandas as pd

    columns = time_columns(frame)
    if not columns:
        return frame
    offset = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    zone = datetime.datetime.now().astimezone().tzinfo
    shown = frame.copy()
    for col in columns:
        wall = pd.to_datetime(shown[col].astype("int64") + offset, unit="ns", utc=True)
        shown[col] = wall.dt.tz_convert(zone).dt.strftime("%H:%M:%S.%f")
    return shown


class _LiveView:
    """What both live views share: a refresh thread and a widget (``stop()`` is each view's own).

    A notebook saved without its widget state shows a widget's output as an error on reopening:
    the view is displayed with a display id, and once it stops its output is replaced by the
    last figures as plain HTML, which every notebook viewer shows; the bundle carries that HTML
    too, for renderers without widgets (nbconvert, the site, GitHub)."""

    _handle = None  # the DisplayHandle of the output the view was shown in

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self.stop()
        self.widget.close()

    def snapshot_html(self) -> str:
        """The view as it stands, as HTML without widgets."""
        parts = [self.status.value] + [child.value for child in self._tables()]
        return "<div class='bpfmagic-live-view'>" + "".join(f"<div>{p}</div>" for p in parts if p) + "</div>"

    def _static_bundle(self) -> dict:
        return {"text/html": self.snapshot_html(), "text/plain": repr(self)}

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data = {**self._static_bundle(), **data}  # the widget first where widgets render, its figures elsewhere
        return (data, bundle[1]) if isinstance(bundle, tuple) else data

    def _ipython_display_(self):
        from IPython.display import display

        self._handle = display(self._repr_mimebundle_(), raw=True, display_id=True)

    def _freeze(self) -> None:
        """The stopped view's output becomes its last figures (see the class's text)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.update(self._static_bundle(), raw=True)


class Watch(_LiveView):
    """Events, rate, lost and dropped counts, the last ROWS rows and (with
    ``by``) the number of rows per value of a column, refreshed every
    ``interval`` seconds until the stream stops (module unloaded) or the view
    is stopped. Buttons: Stop (this view stops updating; the stream keeps
    collecting) and Clear (the stream's rows and counters start afresh).
    A stream has one live view: a new Watch of it stops the previous one
    (re-running a ``%bpf watch`` cell must not pile up updater threads)."""

    def __init__(self, stream, by: str | None = None, rows: int = 10, interval: float = 0.5):
        import ipywidgets as w

        if by is not None and by not in stream.columns:
            raise UsageProblem(f"{stream.name} has no column {by!r} (columns: {', '.join(stream.columns)})")
        if interval <= 0:
            raise UsageProblem("--interval must be > 0 seconds")
        if rows < 0:
            raise UsageProblem(f"--rows must be 0 or more (got {rows})")
        self.stream = stream
        self.by = by
        self.rows = rows
        self.interval = interval
        self.values: dict[str, float] = {}  # the figures last shown, for code that reads the view
        self.status = w.HTML()
        # the rows and the counts side by side, their header rows level: top-aligned, each as wide as it is
        self.table = w.HTML(layout=w.Layout(flex="0 1 auto"))
        self.groups = w.HTML(layout=w.Layout(flex="0 0 auto", margin="0 0 0 24px"))
        self.stop_button = w.Button(description="Stop", icon="stop", tooltip="stop updating this view (the stream keeps collecting)")
        self.clear_button = w.Button(description="Clear", icon="trash", tooltip="clear the stream's rows and counters")
        self.stop_button.on_click(lambda _: self.stop())
        self.clear_button.on_click(lambda _: self._clear())
        body = [self.table, self.groups] if by else [self.table]
        self.tables = w.HBox(body, layout=w.Layout(display="flex", flex_flow="row nowrap", align_items="flex-start"))
        self.widget = w.VBox([w.HBox([self.status, self.stop_button, self.clear_button]), self.tables])
        self._stopped = threading.Event()
        self._last = (time.monotonic(), stream.count)
        previous = getattr(stream, "live_view", None)
        if previous is not None:
            previous.stop()
        self.update()
        self._thread = threading.Thread(target=self._run, name=f"bpfmagic-watch-{stream.name}", daemon=True)
        self._thread.start()
        stream.live_view = self
        self._on_stream_stop = lambda _stream: self.stop()
        stream.on_stop(self._on_stream_stop)

    # ------------------------------------------------------------ updating
    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            if self.stream.stopped.is_set():
                break
            if self.widget.comm is None:  # the widget was closed (view.widget.close(), front end)
                self._stopped.set()
                return
            self.update()
        self.update()  # the final figures, e.g. after the module was unloaded

    def update(self) -> None:
        """Read the stream and set the widgets' values (safe from any thread)."""
        s = self.stream
        snap = s.snapshot(self.rows, self.by)  # one lock: count, rows, tail and counts agree
        now, count = time.monotonic(), snap["count"]
        then, before = self._last
        rate = max(count - before, 0) / (now - then) if now > then else 0.0
        self._last = (now, count)
        lost, dropped, held = s.lost, snap["dropped"], snap["rows"]
        state = "running" if s.running else "stopped"
        view = "" if not self._stopped.is_set() else " · view stopped"
        error = f" · <span style='color:#b00'>error: {html.escape(repr(s.error))}</span>" if s.error else ""
        lost_style = " style='color:#b00'" if lost or lost is None else ""
        lost_text = f"lost {lost:,}" if lost is not None else "losses not counted"
        self.status.value = (
            f"<b>{html.escape(s.name)}</b> ({s.kind}, {state}{view}) · <b>{count:,}</b> events · "
            f"{_rate(rate)} · <span{lost_style}>{lost_text}</span> · dropped {dropped:,} · "
            f"rows {held:,} / {s.max_rows:,}{error}"
        )
        tail = snap["tail"]
        times = time_columns(tail)
        note = f"<div style='font-size:smaller;color:#555'>{TIME_NOTE.format(cols=', '.join(times))}</div>" if times else ""
        self.table.value = as_wall_clock(tail).to_html(max_cols=30, border=0) + note
        counted = None
        if self.by:
            counts = snap["counts"]
            counted = int(counts.sum())
            # one header row (value, count) like the rows' table beside it, not to_frame's two
            self.groups.value = counts.head(20).rename_axis(self.by).reset_index(allow_duplicates=True).to_html(index=False, border=0)
        # last: whoever sees these figures sees widgets showing them
        self.values = {"count": count, "rate": rate, "lost": lost, "dropped": dropped, "rows": held}
        if counted is not None:
            self.values["counted"] = counted

    def _tables(self) -> list:
        return [self.table, self.groups] if self.by else [self.table]

    def _clear(self) -> None:
        self.stream.clear()
        self._last = (time.monotonic(), 0)
        self.update()

    def stop(self) -> None:
        """Stop updating (joins the update thread)."""
        self._stopped.set()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        listener = getattr(self, "_on_stream_stop", None)
        if listener is not None:  # a stopped view need not stay referenced by the stream
            self.stream.remove_on_stop(listener)
        if getattr(self.stream, "live_view", None) is self:
            self.stream.live_view = None
        self.update()  # the view says it stopped
        self._freeze()

    def __repr__(self) -> str:
        return f"<bpfmagic Watch of {self.stream.name} ({'updating' if self.running else 'stopped'})>"


def _rate(per_second: float) -> str:
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f} M/s"
    if per_second >= 1e3:
        return f"{per_second / 1e3:.1f} k/s"
    return f"{per_second:.0f}/s"


_LIVE_MAP_VIEWS: dict = {}  # map name -> its MapWatch: one live view per map


class MapWatch(_LiveView):
    """A map's entries refreshed every ``interval`` seconds, with the change
    of each numeric value since the previous refresh (``COL.delta``) and its
    rate per second (``COL.rate``), the ``top`` keys by the rate of ``sort``
    (default: the first numeric value). Per-CPU values are summed. Every
    refresh is one read of the map, so the figures shown together come from
    the same pass (see maps/__init__.py for what the kernel does not make atomic).
    Stop button / ``stop()`` as for the stream view; the view stops by itself
    when the module is unloaded. ``frame`` is the table last shown and
    ``values`` its totals, for code that reads the view."""

    def __init__(self, view, top: int = 20, sort: str | None = None, interval: float = 0.5):
        import ipywidgets as w

        if interval <= 0:
            raise UsageProblem("--interval must be > 0 seconds")
        if top < 0:
            raise UsageProblem(f"--top must be 0 or more (got {top})")
        self.view, self.top, self.sort, self.interval = view, top, sort, interval
        self.frame = None
        self.values: dict = {}
        self.error: BaseException | None = None
        self._previous = None  # (time, frame) of the last refresh
        self.status = w.HTML()
        self.table = w.HTML()
        self.stop_button = w.Button(description="Stop", icon="stop", tooltip="stop updating this view")
        self.stop_button.on_click(lambda _: self.stop())
        self.widget = w.VBox([w.HBox([self.status, self.stop_button]), self.table])
        self._stopped = threading.Event()
        previous = _LIVE_MAP_VIEWS.get(view.name)
        if previous is not None:
            previous.stop()
        self.update()
        if sort is not None and sort not in self._numeric(self._previous[1]):
            raise UsageProblem(f"{view.name}: --sort takes a numeric value column ({', '.join(self._numeric(self._previous[1])) or 'none'})")
        _LIVE_MAP_VIEWS[view.name] = self
        self._thread = threading.Thread(target=self._run, name=f"bpfmagic-mapwatch-{view.name}", daemon=True)
        self._thread.start()

    def _tables(self) -> list:
        return [self.table]

    def _keys(self, frame) -> list[str]:
        key = getattr(self.view, "key", None)
        return key.columns if key is not None else ["array", "index"]

    def _numeric(self, frame) -> list[str]:
        keys = set(self._keys(frame))
        return [c for c in frame.columns if c not in keys and frame[c].dtype.kind in "iuf"]

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            if self.widget.comm is None:
                break
            try:
                self.update()
            except (UsageProblem, OSError) as e:  # the module was unloaded, or the read failed
                self.error = e
                self.status.value = f"<b>{html.escape(self.view.name)}</b> · stopped: {html.escape(str(e))}"
                break
        self._stopped.set()

    def update(self) -> None:
        """One read of the map; the table, deltas and rates all come from it."""
        import numpy as np

        frame = self.view.df(sum=True)
        now = time.monotonic()
        keys, numeric = self._keys(frame), self._numeric(frame)
        shown = frame.copy()
        interval = None
        if self._previous is not None and keys:
            then, before = self._previous
            interval = now - then
            try:  # where each key was in the previous read (-1: new since)
                pos = frame[keys].merge(before[keys].assign(_row=np.arange(len(before))), on=keys, how="left")["_row"]
            except TypeError:  # unhashable key columns (arrays in the key): no deltas
                pos = None
            if pos is not None:
                seen = pos.notna().to_numpy()
                rows = pos.fillna(0).to_numpy().astype(np.int64)
                for col in numeric:
                    new = frame[col].to_numpy()
                    old = np.where(seen, before[col].to_numpy()[rows], 0) if len(before) else np.zeros_like(new)
                    if new.dtype.kind == "f":
                        delta = new - old
                    else:  # unsigned arithmetic, as the counter wraps
                        delta = (new.astype(np.uint64) - old.astype(np.uint64)).view(np.int64)
                    shown[f"{col}.delta"] = delta
                    shown[f"{col}.rate"] = delta / interval if interval > 0 else 0.0
        order = self.sort or (numeric[0] if numeric else None)
        if order is not None:
            by = f"{order}.rate" if f"{order}.rate" in shown.columns else order
            shown = shown.sort_values(by, ascending=False, kind="stable", ignore_index=True)
        self._previous = (now, frame)
        top = shown.head(self.top)
        totals = {col: int(frame[col].sum()) if frame[col].dtype.kind in "iu" else float(frame[col].sum()) for col in numeric}
        deltas = {col: int(shown[f"{col}.delta"].sum()) for col in numeric if f"{col}.delta" in shown.columns}
        state = " · view stopped" if self._stopped.is_set() else ""
        read = self.view.last_read if hasattr(self.view, "last_read") else None
        how = f" · read by {read.method}: {read.syscalls} syscalls, {read.seconds * 1e3:.1f} ms" if read else ""
        every = f" · Δ over {interval:.2f} s" if interval else ""
        self.status.value = f"<b>{html.escape(self.view.name)}</b> · {len(frame):,} entries{every}{how}{state}"
        self.table.value = top.to_html(max_cols=40, border=0)
        # last: whoever sees these figures sees widgets showing them
        self.frame = top
        self.values = {"entries": len(frame), "interval": interval, "totals": totals, "deltas": deltas}

    def stop(self) -> None:
        self._stopped.set()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if _LIVE_MAP_VIEWS.get(self.view.name) is self:
            del _LIVE_MAP_VIEWS[self.view.name]
        if self.error is None and "view stopped" not in self.status.value:
            self.status.value += " · view stopped"
        self._freeze()

    def __repr__(self) -> str:
        return f"<bpfmagic MapWatch of {self.view.name} ({'updating' if self.running else 'stopped'})>"
