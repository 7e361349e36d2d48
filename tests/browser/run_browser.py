"""``make browser``: a tutorial notebook run in JupyterLab in a real browser.

    python tests/browser/run_browser.py [--out build/browser] [--timeout S] [--only cells|notebook] [NOTEBOOK]

Starts JupyterLab from this Python on 127.0.0.1 (a free port, a random
token, settings/config/runtime directories of its own, this checkout first
on the kernel's PYTHONPATH) over a copy of ``notebooks/`` (JupyterLab saves
what it runs; the repository's notebooks stay without outputs), drives
Debian's chromium with Playwright for Python (``/usr/bin/chromium``, never
a downloaded browser). JupyterLab gets this checkout's prebuilt extension
(``bpfmagic/labextension``) in its own data directory. First, in a notebook
made for it (``bpf-cells.ipynb``):

- the extension ``bpfmagic-cells`` is loaded and the ``%%bpf`` cell's editor
  has the C mimetype (the other code cells keep Python's);
- in that cell, a C comment is styled as a comment (the check can tell),
  ``#include`` is not (it is a preprocessor directive) and ``int`` is styled
  as a type (the CSS rules of CodeMirror's token spans name the theme's
  colour variables);
- Tab after ``%bpf `` in a code cell, with ``%load_ext bpfmagic`` run,
  opens JupyterLab's completer with bpfmagic's subcommands.

Then it runs every cell of NOTEBOOK and checks:

- no cell shows an error (cells tagged ``raises-exception`` excepted);
- the ``%bpf watch`` view renders as a widget (not "Loading widget", not
  "model not found", not its text repr);
- its event count grows between a read before and a read after the cells
  that follow it (the cells run in two steps: up to the view, then the rest);
- once the notebook stops the view, its output is its last figures as plain
  HTML ("view stopped", the count), no widget left to break a reopened notebook;
- after a save, the kernel shut down and the page reloaded, the view shows
  its last state from the notebook's saved widget state.

Screenshots go to ``--out`` (``10-bpf-cell.png``: the highlighted cell;
``11-completion.png``: the completer). ``--only`` runs one of the two
parts. Exit 0 when every check passed, 1 with one line
per failed check otherwise, 2 when the tools are missing. Whatever happens,
the JupyterLab server, its kernels and chromium are stopped on exit (also on
SIGTERM/SIGINT, e.g. from ``timeout``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LABEXTENSION = os.path.join(REPO, "bpfmagic", "labextension")  # prebuilt from labextension/ (see its README)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
WATCH_SOURCE = re.compile(r"%bpf watch\b")
COUNT = re.compile(r"([\d,]+)\s+events\b")
SETTINGS = {
    # every cell attached to the DOM: off-screen cells of a windowed notebook have no text
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # no "Would you like to get notified about official Jupyter news?" pop-up, nothing fetched
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    # a saved notebook keeps the widgets' last state (ipywidgets' own setting, off by default)
    "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {"saveState": True},
}


class Failed(Exception):
    pass


def log(msg: str) -> None:
    print(f"browser: {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the server
class Lab:
    """A JupyterLab server in its own process group, stopped by stop()."""

    def __init__(self, root: str, work: str):
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        for name in ("config", "data", "runtime", "settings", "workspaces"):
            os.makedirs(os.path.join(work, name), exist_ok=True)
        env.update(
            JUPYTER_CONFIG_DIR=os.path.join(work, "config"),
            JUPYTER_DATA_DIR=os.path.join(work, "data"),
            JUPYTER_RUNTIME_DIR=os.path.join(work, "runtime"),
            JUPYTERLAB_SETTINGS_DIR=os.path.join(work, "settings"),
            JUPYTERLAB_WORKSPACES_DIR=os.path.join(work, "workspaces"),
            PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
        )
        # this checkout's extension, found before any installed copy (the user data dir comes first)
        with open(os.path.join(LABEXTENSION, "package.json")) as f:
            self.extension = json.load(f)["name"]
        os.makedirs(os.path.join(work, "data", "labextensions"), exist_ok=True)
        os.symlink(LABEXTENSION, os.path.join(work, "data", "labextensions", self.extension))
        for path, value in SETTINGS.items():
            full = os.path.join(work, "settings", path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w") as f:
                json.dump(value, f)
        self.log_path = os.path.join(work, "jupyterlab.log")
        self._log = open(self.log_path, "w")
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.password=",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.url}/api/{path}", method=method, headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failed(f"JupyterLab exited with {self.proc.returncode}: {self.tail()}")
            try:
                self.api("status")
                return
            except OSError:
                time.sleep(0.3)
        raise Failed(f"JupyterLab did not answer on {self.url} within {timeout:.0f} s: {self.tail()}")

    def kernel_pids(self) -> list[int]:
        """The kernels' processes (children of the server, in their own sessions)."""
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.proc.pid:
                out.append(int(pid))
        return out

    def shutdown_kernels(self) -> None:
        with_errors = []
        try:
            for k in self.api("kernels"):
                try:
                    self.api(f"kernels/{k['id']}", method="DELETE")
                except OSError as e:
                    with_errors.append(str(e))
        except OSError as e:
            with_errors.append(str(e))
        if with_errors:
            log(f"could not shut kernels down through the API: {'; '.join(with_errors)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            children = self.kernel_pids()
            with_suppress(self.shutdown_kernels)
            with_suppress(os.killpg, self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with_suppress(os.killpg, self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            for pid in children:  # a kernel that outlived its server
                with_suppress(os.killpg, pid, signal.SIGKILL)
                with_suppress(os.kill, pid, signal.SIGKILL)
        self._log.close()

    def tail(self, lines: int = 15) -> str:
        self._log.flush()
        with open(self.log_path, errors="replace") as f:
            return " | ".join(f.read().splitlines()[-lines:])


def run_processes(work: str) -> list[int]:
    """Processes whose command line holds this run's directory: the server
    (root_dir), its kernels (connection file in the runtime dir), chromium
    and its helpers (user data dir)."""
    me, out = os.getpid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if int(pid) != me and work.encode() in cmdline:
            out.append(int(pid))
    return out


def kill_run_processes(work: str) -> None:
    for pid in run_processes(work):
        with_suppress(os.kill, pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while run_processes(work) and time.monotonic() < deadline:
        time.sleep(0.1)


def with_suppress(fn, *args):
    try:
        return fn(*args)
    except (OSError, ProcessLookupError, subprocess.SubprocessError):
        return None


# ------------------------------------------------------------------ the page
JS_CELLS = """() => {
  const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!nb || !nb.content || !nb.content.widgets) return null;
  return nb.content.widgets.map((w, i) => ({
    i, type: w.model.type, source: w.model.sharedModel.getSource(),
    tags: (w.model.getMetadata && w.model.getMetadata('tags')) || [],
    count: w.model.type === 'code' ? w.model.executionCount : null,
    state: w.model.type === 'code' ? (w.model.executionState || '') : '',
    errors: w.model.type === 'code'
      ? w.model.outputs.toJSON().filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)
      : [],
  }));
}"""

JS_KERNEL = """() => {
  const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = nb && nb.sessionContext && nb.sessionContext.session && nb.sessionContext.session.kernel;
  return k ? k.status : 'none';
}"""

JS_RUN = """async ([command, index]) => {
  const app = window.jupyterapp, nb = app.shell.currentWidget;
  app.shell.activateById(nb.id);
  nb.content.activeCellIndex = index;
  nb.content.deselectAll();
  await app.commands.execute(command);
}"""


def wait_for(fn, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise Failed(f"timed out after {timeout:.0f} s waiting for {what} (last seen: {last!r})")


class Page:
    def __init__(self, page, lab: Lab, rel: str, out: str):
        self.page, self.lab, self.rel, self.out = page, lab, rel, out
        self.shots: list[str] = []

    def open(self, timeout: float) -> None:
        self.page.goto(f"{self.lab.url}/lab/tree/{self.rel}?reset&token={self.lab.token}", wait_until="domcontentloaded", timeout=timeout * 1000)
        wait_for(lambda: self.page.evaluate(JS_CELLS), timeout, "the notebook to open")
        self.dismiss_popups()
        wait_for(lambda: self.page.evaluate(JS_KERNEL) == "idle", timeout, "the kernel to start")

    def dismiss_popups(self) -> None:
        """The news prompt or any other toast, if one shows despite the settings."""
        for sel in (".jp-toast-button:has-text('No')", ".Toastify__close-button"):
            for el in self.page.locator(sel).all():
                with_suppress_pw(el.click, timeout=1000)

    def cells(self) -> list[dict]:
        return self.page.evaluate(JS_CELLS)

    def run(self, command: str, index: int, timeout: float, until: int) -> None:
        """Run a notebook command with cell `index` active, then wait until cells
        [0, until) all have an execution count and the kernel is idle."""
        self.page.evaluate(JS_RUN, [command, index])

        def done():
            # finished, or stopped at a failed cell (JupyterLab runs no further after an error)
            code = [c for c in self.cells()[:until] if c["type"] == "code"]
            if self.page.evaluate(JS_KERNEL) != "idle" or any(c["state"] == "running" for c in code):
                return False
            failed = any(c["errors"] and "raises-exception" not in c["tags"] for c in code)
            return failed or all(c["count"] for c in code)

        try:
            wait_for(done, timeout, f"{command} to finish", interval=0.5)
        except Failed:
            left = [c["i"] for c in self.cells()[:until] if c["type"] == "code" and not c["count"]]
            raise Failed(
                f"{command} did not finish within {timeout:.0f} s (cells not run yet: {left}; kernel {self.page.evaluate(JS_KERNEL)})"
            ) from None

    def errors(self) -> list[str]:
        return [f"cell {c['i']}: {e}" for c in self.cells() if "raises-exception" not in c["tags"] for e in c["errors"]]

    def cell(self, index: int):
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def widget_text(self, index: int) -> str:
        out = self.cell(index).locator(".jp-OutputArea")
        return out.inner_text(timeout=5000) if out.count() else ""

    def widget_problem(self, index: int) -> str | None:
        """None when the cell shows a rendered widget, else what it shows instead."""
        area = self.cell(index).locator(".jp-OutputArea")
        text = area.inner_text(timeout=5000) if area.count() else ""
        for bad in ("Loading widget", "model not found", "Error displaying widget"):
            if bad in text:
                return f"the view shows {bad!r}"
        if not area.locator(".jupyter-widgets, .widget-vbox, .widget-html").count():
            return f"no widget element in the view's output (it shows {text[:120]!r})"
        if not COUNT.search(text):
            return f"the view has no event count (it shows {text[:120]!r})"
        return None

    def frozen_problem(self, index: int) -> str | None:
        """None when the cell shows a stopped view's last figures as plain HTML (what stays
        readable in a notebook reopened without widget state), else what it shows instead."""
        area = self.cell(index).locator(".jp-OutputArea")
        text = area.inner_text(timeout=5000) if area.count() else ""
        for bad in ("Loading widget", "model not found", "Error displaying widget"):
            if bad in text:
                return f"the stopped view shows {bad!r}"
        if area.locator(".jupyter-widgets, .widget-vbox").count():
            return "the stopped view is still a widget (its output should be its last figures as HTML)"
        if "view stopped" not in text or not COUNT.search(text):
            return f"the stopped view does not show its last figures (it shows {text[:120]!r})"
        return None

    def count(self, index: int) -> int:
        m = COUNT.search(self.widget_text(index))
        if not m:
            raise Failed(f"no event count in the view: {self.widget_text(index)[:200]!r}")
        return int(m.group(1).replace(",", ""))

    def shot(self, name: str, index: int | None = None) -> None:
        path = os.path.join(self.out, name)
        if index is not None:
            self.cell(index).scroll_into_view_if_needed(timeout=5000)
        self.page.screenshot(path=path, full_page=False)
        self.shots.append(path)


def with_suppress_pw(fn, **kw):
    try:
        fn(**kw)
    except Exception:  # noqa: BLE001 - a pop-up that went away on its own
        pass


# ------------------------------------------------------------------ %%bpf cells: C in the editor, completion
CELLS_NOTEBOOK = "bpf-cells.ipynb"
C_MIMETYPE = "text/x-csrc"
BPF_CELL = """%%bpf hello
#include <linux/bpf.h>
/* a C comment */
int hello(struct bpf_raw_tracepoint_args *ctx) {
    return 0;
}"""
# A few of bpfmagic's subcommands: the completer must offer them after `%bpf `.
SUBCOMMANDS = {"ls", "slots", "progarray", "watch", "unload"}
# The theme's colour variables that JupyterLab's highlight style (and the extension, for types) declare
COMMENT_COLOR, META_COLOR, TYPE_COLOR = "--jp-mirror-editor-comment-color", "--jp-mirror-editor-meta-color", "--jp-mirror-editor-variable-3-color"


def write_cells_notebook(path: str) -> None:
    def code(cell_id: str, source: str) -> dict:
        return {"cell_type": "code", "id": cell_id, "execution_count": None, "metadata": {}, "outputs": [], "source": source}

    nb = {
        "cells": [code("load", "%load_ext bpfmagic"), code("bpf", BPF_CELL), code("completion", "")],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    with open(path, "w") as f:
        json.dump(nb, f, indent=1)


JS_PLUGIN = """(id) => { const app = window.jupyterapp; return {known: app.hasPlugin(id), active: app.isPluginActivated(id)}; }"""

JS_SET_SOURCE = """([index, source]) => window.jupyterapp.shell.currentWidget.content.widgets[index].model.sharedModel.setSource(source)"""

JS_MIMETYPES = """() => window.jupyterapp.shell.currentWidget.content.widgets.map(w => w.model.mimeType)"""

# For each token: the innermost span of the cell's editor whose text starts with it, the colours
# the CSS rules matching it (or a highlighting span around it) declare, and its computed style.
# CodeMirror 6 puts its highlight styles into adopted style sheets.
JS_TOKENS = """([index, tokens]) => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
  const sheets = [...document.styleSheets, ...(document.adoptedStyleSheets || [])];
  const declared = el => {
    const out = [];
    for (; el && !el.classList.contains('cm-line'); el = el.parentElement) {
      for (const sheet of sheets) {
        let rules;
        try { rules = sheet.cssRules; } catch (e) { continue; }
        for (const r of rules) {
          if (r.selectorText && r.style && r.style.color && el.matches(r.selectorText)) out.push(r.style.color);
        }
      }
    }
    return out;
  };
  const spans = [...cell.node.querySelectorAll('.cm-content .cm-line span')];
  return tokens.map(token => {
    const hits = spans.filter(s => s.textContent.startsWith(token)).sort((a, b) => a.textContent.length - b.textContent.length);
    if (!hits.length) return {token, found: false};
    const el = hits[0], style = getComputedStyle(el);
    return {token, found: true, text: el.textContent, classes: el.className, declared: declared(el), color: style.color, fontStyle: style.fontStyle};
  });
}"""

JS_COMPLETER = """() => {
  const c = document.querySelector('.jp-Completer');
  if (!c || c.classList.contains('lm-mod-hidden')) return null;
  return [...c.querySelectorAll('.jp-Completer-item')].map(i => i.getAttribute('data-value') || i.textContent.trim());
}"""


def styled_with(token: dict, variable: str) -> bool:
    return any(variable in color for color in token["declared"])


def check_cells(page: Page, timeout: float) -> list[str]:
    """The %%bpf cell edited as C, and completion after `%bpf `: problems, one line each."""
    problems = []
    page.open(timeout=60)
    plugin = page.page.evaluate(JS_PLUGIN, f"{page.lab.extension}:plugin")
    if not plugin["known"] or not plugin["active"]:
        raise Failed(f"the JupyterLab extension {page.lab.extension} is not loaded (plugin {plugin}); see jupyterlab.log")
    bpf = 1  # the %%bpf cell of write_cells_notebook
    try:
        wait_for(lambda: page.page.evaluate(JS_MIMETYPES)[bpf] == C_MIMETYPE, 15, f"the %%bpf cell's editor to get {C_MIMETYPE}")
    except Failed as e:
        problems.append(str(e))
    mimetypes = page.page.evaluate(JS_MIMETYPES)
    log(f"editor mimetypes of the cells: {mimetypes}")
    if mimetypes[0] == C_MIMETYPE or mimetypes[2] == C_MIMETYPE:
        problems.append(f"a cell without %%bpf got {C_MIMETYPE}: {mimetypes}")
    time.sleep(0.5)  # the editor applies a language asynchronously; then CodeMirror re-highlights
    comment, include, int_ = page.page.evaluate(JS_TOKENS, [bpf, ["/* a C comment", "#include", "int"]])
    for t in (comment, include, int_):
        seen = f"span {t['text']!r} declares colours {t['declared']}, computed {t['color']} {t['fontStyle']}" if t["found"] else "no span"
        log(f"token {t['token']!r}: {seen}")
    if not all(t["found"] for t in (comment, include, int_)):
        problems.append(f"the %%bpf cell's tokens are not highlighted spans: {[t['token'] for t in (comment, include, int_) if not t['found']]}")
    else:
        if not styled_with(comment, COMMENT_COLOR):
            problems.append(f"a C comment in the %%bpf cell is not styled as a comment ({comment['declared']}): the check cannot tell comments")
        if styled_with(include, COMMENT_COLOR) or include["fontStyle"] == "italic" or not styled_with(include, META_COLOR):
            problems.append(f"#include in the %%bpf cell is not styled as a directive: span {include['text']!r} declares {include['declared']}")
        if not styled_with(int_, TYPE_COLOR):
            problems.append(f"int in the %%bpf cell is not styled as a type: span {int_['text']!r} declares {int_['declared']}")
    page.cell(bpf).screenshot(path=os.path.join(page.out, "10-bpf-cell.png"))
    # a cell that stops being %%bpf gets the notebook's mimetype back, and C again when it is %%bpf again
    for source, wanted in ((BPF_CELL.replace("%%bpf", "%%writefile", 1), mimetypes[0]), (BPF_CELL, C_MIMETYPE)):
        page.page.evaluate(JS_SET_SOURCE, [bpf, source])
        try:
            wait_for(lambda w=wanted: page.page.evaluate(JS_MIMETYPES)[bpf] == w, 10, f"the cell starting {source.split()[0]!r} to get {wanted}")
        except Failed as e:
            problems.append(str(e))
    # completion: the kernel answers once bpfmagic is loaded
    page.run("notebook:run-cell", 0, timeout, until=1)
    if errs := page.errors():
        raise Failed("%load_ext bpfmagic failed: " + " / ".join(errs))
    editor = page.cell(2).locator(".cm-content")
    editor.click()
    page.page.keyboard.type("%bpf ")
    page.page.keyboard.press("Tab")
    try:
        items = wait_for(lambda: page.page.evaluate(JS_COMPLETER), 15, "the completer to open after Tab on `%bpf `")
        log(f"completer after `%bpf `: {len(items)} items: {', '.join(items[:12])}{' ...' if len(items) > 12 else ''}")
        if missing := SUBCOMMANDS - set(items):
            problems.append(f"the completer after `%bpf ` lacks subcommands {sorted(missing)} (it offers {items[:20]})")
        page.shot("11-completion.png")
    except Failed as e:
        problems.append(str(e))
    page.page.keyboard.press("Escape")
    # leave the notebook saved (no "unsaved changes" prompt when the next one opens) and its kernel gone
    page.page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    wait_for(lambda: not page.page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model.dirty"), 20, "the notebook to be saved")
    page.lab.shutdown_kernels()
    return problems


# ------------------------------------------------------------------ the run
def drive(page: Page, timeout: float) -> list[str]:
    problems = []
    page.open(timeout=60)
    cells = page.cells()
    watch = next((c["i"] for c in cells if c["type"] == "code" and WATCH_SOURCE.search(c["source"])), None)
    if watch is None:
        raise Failed(f"{page.rel} has no %bpf watch cell")
    after = next((c["i"] for c in cells[watch + 1 :] if c["type"] == "code"), None)
    page.shot("01-opened.png")
    t0 = time.monotonic()
    # 1. every cell up to and including the view
    page.run("notebook:run-all-above", after if after is not None else len(cells), timeout, until=watch + 1)
    log(f"cells up to the view ran in {time.monotonic() - t0:.1f} s")
    if errs := page.errors():
        raise Failed("a cell failed: " + " / ".join(errs))
    wait_for(lambda: page.widget_problem(watch) is None, 20, f"the view (cell {watch}) to render", interval=0.5)
    first = page.count(watch)
    page.shot("02-view.png", watch)
    # 2. the rest: the cells after the view make events
    if after is not None:
        t1 = time.monotonic()
        page.run("notebook:run-all-below", after, timeout, until=len(cells))
        log(f"the other cells ran in {time.monotonic() - t1:.1f} s")
    if errs := page.errors():
        raise Failed("a cell failed: " + " / ".join(errs))
    if why := page.frozen_problem(watch):  # the notebook stops the view: its output is its last figures
        problems.append(f"after the run: {why}")
    second = page.count(watch)
    log(f"event count in the view: {first:,} then {second:,}")
    if second <= first:
        problems.append(f"the view's event count did not grow ({first:,} then {second:,})")
    page.shot("03-view-after.png", watch)
    page.page.screenshot(path=os.path.join(page.out, "04-end.png"), full_page=False)
    # 3. saved, kernel gone, reopened: the view's last state from the notebook's metadata
    page.page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    wait_for(lambda: not page.page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model.dirty"), 20, "the notebook to be saved")
    page.lab.shutdown_kernels()
    saved = json.load(open(os.path.join(page.lab_root, page.rel)))
    if "application/vnd.jupyter.widget-state+json" not in saved.get("metadata", {}).get("widgets", {}):
        problems.append("the saved notebook has no widget state")
    page.page.reload(wait_until="domcontentloaded")
    wait_for(lambda: page.page.evaluate(JS_CELLS), 60, "the notebook to reopen")
    page.dismiss_popups()
    try:
        wait_for(lambda: COUNT.search(page.widget_text(watch) or ""), 20, "the reopened view's last state", interval=0.5)
        reopened = page.count(watch)
        log(f"reopened without a kernel, the view shows {reopened:,} events")
        if reopened != second:
            problems.append(f"the reopened view shows {reopened:,} events, not the last {second:,}")
    except Failed as e:
        problems.append(f"reopened: {e} ({page.widget_text(watch)[:120]!r})")
    page.shot("05-reopened.png", watch)
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebook", nargs="?", default="notebooks/04-events-into-dataframes.ipynb")
    ap.add_argument("--out", default="build/browser")
    ap.add_argument("--timeout", type=float, default=150, help="seconds for each group of cells")
    ap.add_argument("--only", choices=("cells", "notebook"), help="run only the %%%%bpf cell checks, or only NOTEBOOK")
    args = ap.parse_args(argv)
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("browser: FAILED: playwright is not installed: pip install jupyterlab playwright", file=sys.stderr)
        return 2
    if not os.access(CHROMIUM, os.X_OK):
        print(f"browser: FAILED: no {CHROMIUM}: apt-get install -y chromium", file=sys.stderr)
        return 2
    notebook = os.path.abspath(args.notebook)
    out = os.path.abspath(args.out)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    work = tempfile.mkdtemp(prefix="bpfmagic-browser-")

    def on_signal(signum, _frame):
        # Playwright's sync API does not unwind cleanly from a signal: stop
        # everything from here (the server, its kernels and chromium all have
        # this run's directory on their command line) and leave.
        print(
            f"browser: FAILED: stopped by signal {signum} (the time limit?); JupyterLab, its kernel and chromium killed", file=sys.stderr, flush=True
        )
        kill_run_processes(work)
        shutil.rmtree(work, ignore_errors=True)
        os._exit(1)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    root = os.path.join(work, "root")
    shutil.copytree(os.path.dirname(notebook), os.path.join(root, "notebooks"), ignore=shutil.ignore_patterns(".ipynb_checkpoints", "build"))
    if os.path.isdir(os.path.join(REPO, "bpf")):
        shutil.copytree(os.path.join(REPO, "bpf"), os.path.join(root, "bpf"))
    rel = "notebooks/" + os.path.basename(notebook)
    write_cells_notebook(os.path.join(root, CELLS_NOTEBOOK))
    started = time.monotonic()
    lab = None
    problems: list[str] = []
    try:
        lab = Lab(root, work)
        lab.wait_ready(60)
        log(f"JupyterLab up on 127.0.0.1:{lab.port} in {time.monotonic() - started:.1f} s")
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                os.path.join(work, "chromium-profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1000},
            )
            try:
                browser_page = ctx.pages[0] if ctx.pages else ctx.new_page()
                parts = [("cells", CELLS_NOTEBOOK, check_cells), ("notebook", rel, drive)]
                for part, part_rel, check in parts:
                    if args.only and args.only != part:
                        continue
                    page = Page(browser_page, lab, part_rel, out)
                    page.lab_root = root
                    try:
                        found = check(page, args.timeout)
                    except (Failed, PlaywrightError) as e:
                        found = [str(e).splitlines()[0]]
                        with_suppress_pw(page.page.screenshot, path=os.path.join(out, f"failure-{part}.png"))
                    problems += [f"{part_rel}: {p}" for p in found]
            finally:
                ctx.close()
    except Failed as e:
        problems = [str(e)]
    finally:
        if lab is not None:
            t = time.monotonic()
            lab.stop()
            log(f"JupyterLab and its kernel stopped in {time.monotonic() - t:.1f} s")
            shutil.copy(lab.log_path, os.path.join(out, "jupyterlab.log"))
        kill_run_processes(work)
        shutil.rmtree(work, ignore_errors=True)
    took = time.monotonic() - started
    if problems:
        for p in problems:
            print(f"browser: FAILED: {p}", file=sys.stderr)
        print(
            f"browser: JupyterLab + chromium failed after {took:.0f} s; screenshots and the server log in {os.path.relpath(out)}",
            file=sys.stderr,
        )
        return 1
    done = {
        "cells": "the %%bpf cell is highlighted as C and `%bpf ` completes subcommands",
        "notebook": f"{rel} ran, the view rendered and grew",
    }
    passed = "; ".join(v for k, v in done.items() if args.only in (None, k))
    log(f"passed in {took:.0f} s in JupyterLab + chromium: {passed}; screenshots in {os.path.relpath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
