"""Progress of the work that takes seconds (the benches, the limits): tqdm's bar on a
terminal; in a notebook, an HTML bar updated in place through a display id, which
ends as one line saying what ran. Not tqdm's notebook bar: that is a widget, and a
notebook saved without widget state shows it as an error when opened again; an
HTML output is shown as it was left by every viewer."""

from __future__ import annotations

import html
import time

UPDATE_EVERY = 0.25  # seconds between two redraws of the notebook's bar


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class _NotebookBar:
    def __init__(self, total: int, desc: str):
        from IPython.display import display

        self.total, self.desc, self.n = total, desc, 0
        self.start = self.drawn = time.monotonic()
        self._handle = display(self._bundle(self._bar()), raw=True, display_id=True)

    def _bundle(self, page: str) -> dict:
        return {"text/html": page, "text/plain": f"{self.desc}: {self.n:,}/{self.total:,}"}

    def _bar(self) -> str:
        elapsed = time.monotonic() - self.start
        return (
            f'<progress value="{self.n}" max="{self.total}" style="width:16em;vertical-align:middle"></progress> '
            f"<code>{html.escape(self.desc)}</code> {self.n:,}/{self.total:,} · {elapsed:.0f} s"
        )

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.drawn >= UPDATE_EVERY or self.n >= self.total:
            self.drawn = now
            self._handle.update(self._bundle(self._bar()), raw=True)

    def close(self) -> None:
        elapsed = time.monotonic() - self.start
        done = "" if self.n >= self.total else f" (stopped at {self.n:,} of {self.total:,})"
        page = f"<code>{html.escape(self.desc)}</code>: {self.n:,} steps in {elapsed:.1f} s{done}"
        self._handle.update({"text/html": page, "text/plain": f"{self.desc}: {self.n:,} steps in {elapsed:.1f} s{done}"}, raw=True)


class progress:
    """``with progress(total, "bench_calls") as bar: ... bar.update()``."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.total, self.desc, self.enabled = total, desc, enabled
        self._bar = None

    def __enter__(self):
        if not self.enabled:
            return self
        if _in_notebook():
            self._bar = _NotebookBar(self.total, self.desc)
        else:
            from tqdm import tqdm

            # disable=None: drawn on a terminal only (no escape codes in logs and captured output)
            self._bar = tqdm(total=self.total, desc=self.desc, unit="run", leave=False, disable=None)
        return self

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
