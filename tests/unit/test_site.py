"""`make docs`: bpfmagic.site executes notebooks and renders a static,
offline site with Sphinx. Small notebooks without BPF (a stand-in %%bpf magic), so no root is needed."""

from __future__ import annotations

import datetime
import os
import platform
import re

import myst_nb  # noqa: F401  (installed by make setup: the docs extra; missing is a failure, not a skip)
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from bpfmagic import site

from ..paths import REPO

PNG_CELL = """
import base64
from IPython.display import Image, SVG, display
# a 1x1 PNG and a small SVG, as plots and graph pictures come out
display(Image(data=base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle r="4" cx="5" cy="5"/></svg>'))
print("answer", 6 * 7)
"""


def write(path, cells):
    nb = new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    nb.cells = cells
    nbformat.write(nb, str(path))
    return str(path)


# a stand-in for the extension's cell magic: the page shows a %%bpf cell without root or BPF
FAKE_MAGIC = """
from IPython.core.magic import register_cell_magic

@register_cell_magic
def bpf(line, cell):
    print("loaded", line.split()[0])
"""

BPF_CELL = """%%bpf disp -a dispatch=raw_tracepoint:sys_enter
#include <linux/bpf.h>
BPF_PROG_ARRAY(progs, 8);
int dispatch(struct bpf_raw_tracepoint_args *ctx) {
    progs.call(ctx, 1);  /* if the slot is empty: fall through */
    return 0;
}"""

README = """# project

Set it up with `make setup`; it needs root.

## Tutorials

| notebook | what |
|---|---|
| `notebooks/01-good.ipynb` | draws with `display` |
| `notebooks/03-bpf.ipynb` | a dispatcher in a `%%bpf` cell |

## Quickstart

Open JupyterLab with the venv's kernel.

```
%load_ext bpfmagic
```

## Environment notes

- Kprobes are not available on this kernel.
"""


# what the extension prints in the first cell of every notebook on a machine without the running kernel's headers
PRINT_HEADERS_NOTE = """
from bpfmagic.session import headers_note
print(headers_note("running kernel 6.12.1 has no headers; BCC compiles against the headers of kernel 6.1.0"))
"""


def make_notebooks(tmp_path):
    src = tmp_path / "nb"
    src.mkdir()
    good = write(
        src / "01-good.ipynb",
        [
            new_markdown_cell("# 01 · A good one\n\nIt draws a *picture*. More text."),
            new_code_cell(PNG_CELL),
            new_code_cell("raise ValueError('shown on purpose')", metadata={"tags": ["raises-exception"]}),
        ],
    )
    bad = write(
        src / "02-bad.ipynb",
        [
            new_markdown_cell("# 02 · A broken one\n\nIt fails."),
            new_code_cell("1 / 0"),
        ],
    )
    bpf = write(
        src / "03-bpf.ipynb",
        [
            new_markdown_cell("# 03 · A dispatcher\n\nA cell of C."),
            new_code_cell(FAKE_MAGIC + PRINT_HEADERS_NOTE),
            new_code_cell(BPF_CELL),
        ],
    )
    readme = tmp_path / "README.md"
    readme.write_text(README)
    return good, bad, bpf, str(readme)


@pytest.fixture
def notebooks(tmp_path):
    return make_notebooks(tmp_path)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One site from the good and the %%bpf notebook (Sphinx takes seconds: built once for the tests below)."""
    tmp_path = tmp_path_factory.mktemp("site")
    good, _, bpf, readme = make_notebooks(tmp_path)
    out = tmp_path / "site"
    reference = tmp_path / "reference.md"
    reference.write_text("# Reference\n\n## Magics\n\n`%bpf slots` shows the slots.\n")
    ok = site.build([good, bpf], str(out), timeout=120, readme=readme, progress=False, reference=str(reference))
    return ok, out


def text_of(path) -> str:
    return path.read_text(encoding="utf-8")


def test_site_builds(built):
    ok, out = built
    assert ok
    assert (out / "executed" / "01-good.ipynb").exists() and (out / "executed" / "03-bpf.ipynb").exists()


def test_page_titles_from_first_headings(built):
    _, out = built
    assert re.search(r"<title>01 · A good one\W", text_of(out / "01-good.html"))
    assert re.search(r"<title>03 · A dispatcher\W", text_of(out / "03-bpf.html"))
    assert re.search(r"<title>How to run the tutorials\W", text_of(out / "running.html"))


def test_navigation_sidebar_and_previous_next(built):
    _, out = built
    page = text_of(out / "01-good.html")
    for target in ("index.html", "running.html", "reference.html", "03-bpf.html"):  # the sidebar links every page
        assert f'href="{target}"' in page or f'href="{target}#' in page, target
    prev_next = re.search(r'<a class="left-prev"[^>]*href="([^"]+)".*?<a class="right-next"[^>]*href="([^"]+)"', page, re.S)
    # the "Start here" pages (running, reference) come before the tutorials
    assert prev_next and prev_next.groups() == ("reference.html", "03-bpf.html")


def test_search_index_and_page(built):
    _, out = built
    assert (out / "search.html").exists()
    index = text_of(out / "searchindex.js")
    assert "dispatcher" in index.lower()  # the notebooks' words are searchable


def test_bpf_cell_highlighted_as_c(built):
    _, out = built
    page = text_of(out / "03-bpf.html")
    block = re.search(r'<div class="highlight-bpf-cell[^"]*"><div class="highlight"><pre>(.*?)</pre>', page, re.S)
    assert block, "the %%bpf cell is not highlighted with the C lexer"
    code = block.group(1)
    assert '<span class="cp">#include' in code  # a preprocessor line, not a Python comment
    assert '<span class="kt">int</span>' in code  # a C type
    assert '<span class="cm">/* if the slot is empty: fall through */</span>' in code
    # the Python cell beside it keeps the IPython lexer
    assert 'class="highlight-ipython3' in page


def test_no_prompts_and_no_headers_note_on_pages(built):
    _, out = built
    for name in ("01-good.html", "03-bpf.html"):
        page = text_of(out / name)
        assert "In [" not in page and "Out[" not in page, name
        assert "BCC uses the headers" not in page, name
    assert "loaded disp" in text_of(out / "03-bpf.html")  # the cell's other output stays
    index = text_of(out / "index.html")
    assert "BCC uses the headers of kernel 6.1.0" in index  # shown once, on the index


def test_footer_names_kernel_and_date(built):
    _, out = built
    today = datetime.date.today().isoformat()
    for name in ("index.html", "01-good.html"):
        footer = text_of(out / name).split('<footer class="bd-footer-content', 1)[1]
        assert f"Linux {platform.release()} ({platform.machine()}), {today}" in footer, name


def test_index_lists_notebooks_with_descriptions(built):
    _, out = built
    index = text_of(out / "index.html")
    first = index.index('href="01-good.html"><span class="std std-doc">01 · A good one</span></a></strong>')
    second = index.index('href="03-bpf.html"><span class="std std-doc">03 · A dispatcher</span></a></strong>')
    assert first < second
    assert 'draws with <code class="docutils literal notranslate"><span class="pre">display</span></code>' in index
    assert "a dispatcher in a" in index  # the README's line for it


def test_running_page_from_readme(built):
    _, out = built
    page = text_of(out / "running.html")
    assert "Set it up with" in page and "Open JupyterLab with the venv" in page and "Kprobes are not available" in page
    assert "draws with" not in page  # the tutorial table is on the index, not here


def test_pages_are_offline(built):
    _, out = built
    for path in out.glob("*.html"):
        page = text_of(path)
        assert not re.search(r"<(script|link)[^>]*(src|href)=\"(https?:)?//", page), path.name
    page = text_of(out / "01-good.html")
    assert re.search(r'<img[^>]+src="_images/[^"]+\.png"', page)  # pictures beside the pages
    assert "answer 42" in page and "shown on purpose" in page
    # the notebook itself, for download
    assert (out / "_sources" / "01-good.ipynb").exists() and 'href="_sources/01-good.ipynb"' in page


def test_site_fails_when_a_notebook_fails(notebooks, tmp_path):
    good, bad, _, readme = notebooks
    out = tmp_path / "site"
    assert not site.build([bad, good], str(out), timeout=120, readme=readme, progress=False)
    index = text_of(out / "index.html")
    assert "02 · A broken one" in index and "failed to run" in index
    assert "It fails." in index  # no README line: the first sentence
    assert os.path.exists(out / "01-good.html")  # the others are still built
    assert site.main([str(tmp_path / "missing.ipynb")]) == 2


def test_no_execute_renders_notebooks_as_they_are(tmp_path):
    never_ran = write(tmp_path / "04-saved.ipynb", [new_markdown_cell("# 04 · Saved"), new_code_cell("print('ran' + 'now')")])
    out = tmp_path / "site"
    assert site.main(["--no-execute", "--out", str(out), "--readme", str(tmp_path / "none.md"), never_ran]) == 0
    page = text_of(out / "04-saved.html")
    assert "print" in page and "rannow" not in page
    assert (out / "executed" / "04-saved.ipynb").exists()


def test_frozen_widget_view():
    nb = new_notebook()
    model = lambda name, **state: {"model_name": name, "state": {"_model_name": name, **state}}  # noqa: E731
    nb.metadata["widgets"] = {
        site.WIDGET_STATE: {
            "state": {
                "box": model("VBoxModel", children=["IPY_MODEL_h", "IPY_MODEL_b"]),
                "h": model("HTMLModel", value="<b>1,234</b> events"),
                "b": model("ButtonModel", description="Stop"),
            }
        }
    }
    nb.cells = [
        new_code_cell("w", outputs=[nbformat.v4.new_output("display_data", data={site.WIDGET_VIEW: {"model_id": "box"}, "text/plain": "VBox(...)"})])
    ]
    assert site.freeze_widgets(nb) == 1
    html = nb.cells[0].outputs[0]["data"]["text/html"]
    assert "<b>1,234</b> events" in html and "<button disabled>Stop</button>" in html
    assert site.WIDGET_VIEW not in nb.cells[0].outputs[0]["data"] and "widgets" not in nb.metadata


def test_site_has_the_reference_page(built):
    """The README's reference lives in docs/reference.md and is a page of the site, in the sidebar."""
    ok, out = built
    page = text_of(out / "reference.html")
    assert "<title>Reference" in page and "shows the slots" in page
    assert 'href="reference.html"' in text_of(out / "index.html")


def test_the_repository_reference_is_linked_from_the_readme():
    root = REPO
    with open(os.path.join(root, "README.md")) as f:
        readme = f.read()
    assert "(docs/reference.md)" in readme and os.path.isfile(os.path.join(root, "docs", "reference.md"))
    with open(os.path.join(root, "docs", "reference.md")) as f:
        reference = f.read()
    for heading in ("## Magics, API, front end", "### Real-world C", "### Events: ring and perf buffers into DataFrames"):
        assert heading in reference
