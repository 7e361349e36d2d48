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


class Watch:
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
        self.table = w.HTML()
        self.groups = w.HTML()
        self.stop_button = w.Button(description="Stop", icon="stop",
                                    tooltip="stop updating this view (the stream keeps collecting)")
        self.clear_button = w.Button(description="Clear", icon="trash",
                                     tooltip="clear the stream's rows and counters")
        self.stop_button.on_click(lambda _: self.stop())
        self.clear_button.on_click(lambda _: self._clear())
        body = [self.table, self.groups] if by else [self.table]
        self.widget = w.VBox([w.HBox([self.status, self.stop_button, self.clear_button]), w.HBox(body)])
        self._stopped = threading.Event()
        self._last = (time.monotonic(), stream.count)
        previous = getattr(stream, "_watch", None)
        if previous is not None:
            previous.stop()
        self.update()
        self._thread = threading.Thread(target=self._run, name=f"bpfmagic-watch-{stream.name}", daemon=True)
        self._thread.start()
        stream._watch = self
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
        now, count = time.monotonic(), s.count
        then, before = self._last
        rate = max(count - before, 0) / (now - then) if now > then else 0.0
        self._last = (now, count)
        lost, dropped, held = s.lost, s.dropped, len(s)
        state = "running" if s.running else "stopped"
        view = "" if not self._stopped.is_set() else " · view stopped"
        error = f" · <span style='color:#b00'>error: {html.escape(repr(s.error))}</span>" if s.error else ""
        lost_style = " style='color:#b00'" if lost else ""
        self.status.value = (
            f"<b>{html.escape(s.name)}</b> ({s.kind}, {state}{view}) · <b>{count:,}</b> events · "
            f"{_rate(rate)} · <span{lost_style}>lost {lost:,}</span> · dropped {dropped:,} · "
            f"rows {held:,} / {s.max_rows:,}{error}")
        self.table.value = s.tail(self.rows).to_html(max_cols=30, border=0)
        if self.by:
            counts = s.counts(self.by).head(20)
            self.groups.value = counts.to_frame().to_html(border=0)
        # last: whoever sees these figures sees widgets showing them
        self.values = {"count": count, "rate": rate, "lost": lost, "dropped": dropped, "rows": held}

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
        if getattr(self.stream, "_watch", None) is self:
            self.stream._watch = None

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self.stop()
        self.widget.close()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<bpfmagic Watch of {self.stream.name} ({'updating' if self.running else 'stopped'})>"


def _rate(per_second: float) -> str:
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f} M/s"
    if per_second >= 1e3:
        return f"{per_second / 1e3:.1f} k/s"
    return f"{per_second:.0f}/s"
