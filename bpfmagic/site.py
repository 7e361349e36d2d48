"""``make docs``: every tutorial notebook executed on this machine, then
rendered into a static site with Sphinx, MyST-NB and the Sphinx Book Theme.

    python -m bpfmagic.site [--out build/site] [--timeout S] [--readme README.md] [--no-execute] NOTEBOOK...

Each notebook is executed top to bottom (``cli.run_notebook``, the same
runner as ``bpfmagic run`` and the tests) into ``OUT/executed/``; one that
fails, or shows an error in a cell not tagged ``raises-exception``, fails the
build (exit 1) after the others were still built and rendered.

The executed copies are then prepared for reading (a live view frozen into
its last state, the kernel-headers note taken off the first cell and shown
once on the index) and rendered without executing them again
(``nb_execution_mode = "off"``): a sidebar of the tutorials in order,
previous/next links, full-text search, page titles from each notebook's
first heading, ``%%bpf`` cells highlighted as C, a download link to the
notebook, an index page with what each tutorial teaches (the README's table),
a page on running them (the README's set-up), and the kernel and date of the
build in every footer. Nothing is fetched from the network when the site is
viewed: it reads from ``file://`` or ``python -m http.server``.

This module is also the Sphinx extension that does the ``%%bpf`` highlighting
(``setup`` below).
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import re
import sys
import tempfile
import time

from pygments.lexer import RegexLexer, bygroups, using
from pygments.lexers.c_cpp import CLexer
from pygments.token import Keyword, Name, Text

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# session.headers_note(): printed by the first cell of every notebook that loads the extension
HEADERS_NOTE = re.compile(r"^note: BCC uses the headers of kernel .*\n?", re.M)
SITE_TITLE = "bpfmagic tutorials"
RUNNING_PAGE = "running"
REFERENCE_PAGE = "reference"
# README sections that make the "how to run them" page, besides its opening
RUNNING_SECTIONS = ("Environment notes",)


def title_and_line(nb, descriptions: dict[str, str], name: str) -> tuple[str, str]:
    """The notebook's first '# ' heading, and one line about it: the README's
    tutorial table entry when there is one, else the first sentence after the heading."""
    title, first_sentence = name, ""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        heading = next((ln for ln in lines if ln.startswith("# ")), None)
        if heading is None:
            continue
        title = heading[2:].strip()
        paragraph = []
        for ln in lines[lines.index(heading) + 1 :]:
            if ln.strip():
                paragraph.append(ln.strip())
            elif paragraph:
                break
        paragraph = " ".join(paragraph)
        match = re.match(r"(.+?[.!?])(\s|$)", paragraph)
        first_sentence = match.group(1) if match else paragraph
        break
    return title, descriptions.get(name, first_sentence)


def _read(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def readme_descriptions(readme_text: str) -> dict[str, str]:
    """``| `notebooks/NAME.ipynb` | what it shows |`` rows of the README's table."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^\|\s*`notebooks/([^`]+\.ipynb)`\s*\|\s*(.+?)\s*\|\s*$", readme_text, re.M)}


def readme_sections(readme_text: str) -> dict[str, str]:
    """The README split at its ``## `` headings: {heading: body}; the text before the first is under ""."""
    sections, name, lines, fence = {}, "", [], False
    for line in readme_text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and line.startswith("## "):
            sections[name] = "\n".join(lines).strip()
            name, lines = line[3:].strip(), []
        elif not (name == "" and line.startswith("# ")):  # the README's own title
            lines.append(line)
    sections[name] = "\n".join(lines).strip()
    return sections


# ------------------------------------------------------------ widgets, offline


def _widget_html(model_id: str, state: dict, depth: int = 0) -> str:
    """The last state of a widget as plain HTML: HTML/Label values, children
    in order, buttons as disabled buttons. Enough for bpfmagic's views."""
    import html

    model = state.get(model_id)
    if model is None or depth > 20:
        return ""
    st = model.get("state", {})
    name = st.get("_model_name", "")
    if "children" in st:
        inner = "".join(_widget_html(c.removeprefix("IPY_MODEL_"), state, depth + 1) for c in st["children"])
        direction = "row" if name == "HBoxModel" else "column"
        return f'<div style="display:flex;flex-direction:{direction};gap:.4rem">{inner}</div>'
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<div>{st.get('value', '')}</div>"
    if name == "LabelModel":
        return f"<div>{html.escape(str(st.get('value', '')))}</div>"
    if name == "ButtonModel":
        return f"<button disabled>{html.escape(st.get('description', ''))}</button>"
    if "value" in st and not isinstance(st["value"], (dict, list)):
        return f"<div>{html.escape(str(st['value']))}</div>"
    return ""


def freeze_widgets(nb) -> int:
    """Replace each widget view output by the HTML of its last saved state
    (the live view cannot run in a static page, and would need a CDN script).
    Returns how many views were frozen."""
    saved = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    frozen = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            view = data.get(WIDGET_VIEW)
            if view is None:
                continue
            snapshot = _widget_html(view.get("model_id", ""), saved)
            del data[WIDGET_VIEW]
            if snapshot:
                data["text/html"] = (
                    '<div class="bpfmagic-frozen-view" style="border:1px dashed #aaa;padding:.5rem">'
                    '<div style="color:#777;font-size:.85em">live view, as it was when the '
                    f"notebook ran</div>{snapshot}</div>"
                )
                frozen += 1
    nb.metadata.pop("widgets", None)
    return frozen


def remove_headers_note(nb) -> str | None:
    """Take the kernel-headers note out of the notebook's outputs (it is the
    same on every page); returns it, for the index to show once."""
    found = None
    for cell in nb.cells:
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                match = HEADERS_NOTE.search(output.get("text", ""))
                if match:
                    found = found or match.group(0).strip()
                    output["text"] = HEADERS_NOTE.sub("", output["text"])
                    if not output["text"]:
                        continue
            kept.append(output)
        if "outputs" in cell:
            cell["outputs"] = kept
    return found


# ------------------------------------------------------------ %%bpf cells as C


class BpfCellLexer(RegexLexer):
    """A ``%%bpf`` cell: the magic's line, then the body as C."""

    name = "bpfmagic cell"
    aliases = ["bpf-cell"]
    tokens = {"root": [(r"(%%bpf)([^\n]*\n?)", bygroups(Keyword, Name.Attribute)), (r"(?s).+", using(CLexer)), (r"\n", Text)]}


def _highlight_bpf_cells(app, doctree) -> None:
    """MyST-NB gives every code cell the notebook's lexer (IPython); a cell that
    starts with ``%%bpf`` is C, so it gets the lexer above."""
    from docutils import nodes

    for block in doctree.findall(nodes.literal_block):
        if block.astext().startswith("%%bpf"):
            block["language"] = "bpf-cell"


def setup(app):
    """Sphinx extension entry point (``extensions = ["bpfmagic.site"]``)."""
    app.add_lexer("bpf-cell", BpfCellLexer)
    app.connect("doctree-read", _highlight_bpf_cells)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# ------------------------------------------------------------ building


def unexpected_errors(nb) -> list[str]:
    """Errors in cells that are not tagged raises-exception."""
    return [
        f"{o.get('ename')}: {o.get('evalue', '')}"
        for c in nb.cells
        if c.cell_type == "code" and "raises-exception" not in c.get("metadata", {}).get("tags", [])
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def build_stamp(now: datetime.datetime | None = None) -> str:
    """Where and when the notebooks ran: kernel release, machine, date."""
    now = now or datetime.datetime.now().astimezone()
    return f"Linux {platform.release()} ({platform.machine()}), {now:%Y-%m-%d %H:%M %Z}"


def index_page(entries: list[dict], stamp: str, headers_note: str | None, reference: bool = False) -> str:
    """The landing page (MyST): what each tutorial teaches, in order; the toctrees that make the sidebar."""
    lines = [
        f"# {SITE_TITLE}",
        "",
        "eBPF tail-call experiments in Jupyter with [bpfmagic](running.md): `%%bpf` cells compile and load C,",
        "put the programs into named slots of prog arrays, and stream what they report into pandas DataFrames.",
        f"Every tutorial below was executed on a real kernel to make this site ({stamp}):",
        "the numbers in it are that kernel's. {doc}`How to run them yourself <running>`.",
        "",
    ]
    for n, e in enumerate(entries, 1):
        failed = " **(failed to run)**" if not e["ok"] else ""
        lines += [f"{n}. **[{e['title']}]({e['doc']}.ipynb)**{failed}\\", f"   {e['line']}", ""]
    if headers_note:
        lines += ["```{note}", f"Every notebook printed this when it loaded the extension, on this machine: {headers_note}", "```", ""]
    lines += ["```{toctree}", ":hidden:", ":caption: Start here", "", RUNNING_PAGE, *([REFERENCE_PAGE] if reference else []), "```", ""]
    lines += ["```{toctree}", ":hidden:", ":caption: Tutorials", "", *(e["doc"] for e in entries), "```", ""]
    return "\n".join(lines)


def running_page(readme_text: str) -> str:
    """How to set up and run the tutorials: the README's opening and set-up sections."""
    sections = readme_sections(readme_text)
    parts = ["# How to run the tutorials", "", sections.get("", "")]
    quickstart = sections.get("Quickstart", "").split("```")[0].strip()  # its prose before the first example
    if quickstart:
        parts += ["", "## A Jupyter front end", "", quickstart]
    for name in RUNNING_SECTIONS:
        if sections.get(name):
            parts += ["", f"## {name}", "", sections[name]]
    return "\n".join(parts) + "\n"


def sphinx_config(stamp: str) -> dict:
    return {
        "project": SITE_TITLE,
        "html_title": SITE_TITLE,
        "extensions": ["myst_nb", "bpfmagic.site"],
        "root_doc": "index",
        "nb_execution_mode": "off",  # executed above, on this machine; rendered as they ran
        "nb_ipywidgets_js": {},  # widget views are frozen into HTML: no widget scripts from a CDN
        "myst_heading_anchors": 3,
        "suppress_warnings": ["myst.header", "misc.highlighting_failure"],
        "html_theme": "sphinx_book_theme",
        "html_theme_options": {
            "use_download_button": True,  # the .ipynb behind each page (_sources/)
            "use_fullscreen_button": False,
            "show_navbar_depth": 1,
            "footer_content_items": ["extra-footer.html"],  # the theme's others say "By Author name not set"
            "navbar_persistent": [],  # the sidebar has the search field: no second one in a header bar
            "extra_footer": f"<p>Notebooks executed on {stamp} by <code>make docs</code>; "
            'the executed notebooks are in <a href="executed/">executed/</a>.</p>',
        },
        "html_show_sphinx": False,
        "html_copy_source": True,
        "html_last_updated_fmt": None,
    }


class _SphinxProgress:
    """Advances a tqdm bar as Sphinx reads and writes each page."""

    def __init__(self, bar, docs: set[str]):
        self.bar, self.docs = bar, docs

    def read(self, app, doctree):
        self.bar.update(1)

    def write(self, app, pagename, templatename, context, doctree):
        if pagename in self.docs:
            self.bar.update(1)


def render_site(src: str, out: str, docs: list[str], stamp: str, progress: bool) -> list[str]:
    """Sphinx over SRC into OUT; returns its warnings."""
    from sphinx.application import Sphinx
    from tqdm import tqdm

    warnings = io.StringIO()
    with (
        tempfile.TemporaryDirectory(prefix="bpfmagic-doctrees-") as doctrees,
        tqdm(total=2 * len(docs), desc="render", unit="page", disable=not progress or None, leave=False) as bar,
    ):
        app = Sphinx(src, None, out, doctrees, "html", confoverrides=sphinx_config(stamp), status=None, warning=warnings, freshenv=True)
        steps = _SphinxProgress(bar, set(docs))
        app.connect("doctree-read", steps.read)
        app.connect("html-page-context", steps.write)
        app.build()
    return [w for w in warnings.getvalue().splitlines() if w.strip()]


def run_notebooks(notebooks: list[str], executed_dir: str, timeout: float, progress: bool) -> list[tuple[str, bool, float]]:
    """Run each notebook into EXECUTED_DIR: (executed path, ran cleanly, seconds) each.
    A bar over the notebooks and one over the cells of the current one; a line per notebook when done."""
    import nbformat
    from tqdm import tqdm

    from .cli import run_notebook

    results = []
    # disable=None: bars only on a terminal; the per-notebook lines are printed either way
    bars = not progress or None
    with tqdm(notebooks, desc="notebooks", unit="nb", disable=bars) as outer:
        for path in outer:
            name = os.path.basename(path)
            outer.set_postfix_str(name)
            executed = os.path.join(executed_dir, name)
            # nbclient skips empty code cells: they are not counted either
            cells = sum(1 for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" and c.source.strip())
            started = time.monotonic()
            with tqdm(total=cells, desc=os.path.splitext(name)[0][:24], unit="cell", disable=bars, leave=False) as inner:
                ok, _ = run_notebook(path, output=executed, timeout=timeout, echo=False, on_cell=lambda *_: inner.update(1))
            seconds = time.monotonic() - started
            if progress:
                tqdm.write(f"docs: {name}: {cells} code cells in {seconds:.0f} s{'' if ok else ', FAILED'}")
            results.append((executed, ok, seconds))
    return results


def build(
    notebooks: list[str],
    out: str,
    timeout: float = 600,
    readme: str | None = None,
    progress: bool = True,
    execute: bool = True,
    reference: str | None = None,
) -> bool:
    """Execute NOTEBOOKS and render them into OUT; True when every one ran cleanly.
    With ``execute=False`` they are rendered as they are (notebooks executed before)."""
    import shutil

    import nbformat

    if not notebooks:
        raise ValueError("no notebooks given")
    readme_text = _read(readme)
    descriptions = readme_descriptions(readme_text)
    started = time.monotonic()
    stamp = build_stamp()
    executed_dir = os.path.join(out, "executed")
    if execute:
        ran = run_notebooks(notebooks, executed_dir, timeout, progress)
    else:
        os.makedirs(executed_dir, exist_ok=True)
        ran = []
        for path in notebooks:
            copy = os.path.join(executed_dir, os.path.basename(path))
            if not (os.path.exists(copy) and os.path.samefile(copy, path)):
                shutil.copyfile(path, copy)
            ran.append((copy, True, 0.0))
        # the date they ran, not this one (the kernel is assumed to be this machine's)
        newest = max(os.path.getmtime(p) for p in notebooks)
        stamp = build_stamp(datetime.datetime.fromtimestamp(newest).astimezone())

    entries, failures, headers_note = [], [], None
    with tempfile.TemporaryDirectory(prefix="bpfmagic-site-") as src:
        for executed, ok, _ in ran:
            name = os.path.basename(executed)
            nb = nbformat.read(executed, as_version=4)
            errors = unexpected_errors(nb)
            if not ok or errors:
                ok = False
                failures.append(f"{name}: " + ("; ".join(errors) or "execution failed"))
            title, line = title_and_line(nb, descriptions, name)
            freeze_widgets(nb)
            headers_note = remove_headers_note(nb) or headers_note
            nbformat.write(nb, os.path.join(src, name))
            entries.append({"doc": os.path.splitext(name)[0], "title": title, "line": line, "ok": ok})
        reference_text = _read(reference)
        if reference_text:  # docs/reference.md: the README's reference, as a page of the site
            with open(os.path.join(src, f"{REFERENCE_PAGE}.md"), "w", encoding="utf-8") as f:
                f.write(reference_text)
        with open(os.path.join(src, "index.md"), "w", encoding="utf-8") as f:
            f.write(index_page(entries, stamp, headers_note, reference=bool(reference_text)))
        with open(os.path.join(src, f"{RUNNING_PAGE}.md"), "w", encoding="utf-8") as f:
            f.write(running_page(readme_text))
        pages = [e["doc"] for e in entries] + ["index", RUNNING_PAGE] + ([REFERENCE_PAGE] if reference_text else [])
        warnings = render_site(src, out, pages, stamp, progress)

    if progress:
        for warning in warnings:
            print(f"docs: sphinx: {warning}", file=sys.stderr)
        print(f"docs: {len(entries)} notebook(s) in {time.monotonic() - started:.0f} s; open {os.path.join(out, 'index.html')}")
    for failure in failures:
        print(f"docs: FAILED {failure}", file=sys.stderr)
    return not failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bpfmagic.site", description="execute notebooks and render them to a static HTML site")
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--out", default=os.path.join("build", "site"), help="output directory (build/site)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per cell (default 600)")
    parser.add_argument("--readme", default="README.md", help="where the tutorials' descriptions and the set-up page come from")
    parser.add_argument("--reference", default=os.path.join("docs", "reference.md"), help="the reference page (MyST Markdown)")
    parser.add_argument(
        "--no-execute",
        dest="execute",
        action="store_false",
        help="render notebooks executed before (e.g. build/site/executed/*.ipynb) without running them",
    )
    args = parser.parse_args(argv)
    missing = [p for p in args.notebooks if not os.path.isfile(p)]
    if missing:
        print(f"docs: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    return 0 if build(args.notebooks, args.out, args.timeout, args.readme, execute=args.execute, reference=args.reference) else 1


if __name__ == "__main__":
    sys.exit(main())
