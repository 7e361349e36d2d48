"""`make docs`: bpfmagic.site executes notebooks and renders a static,
offline site. Small notebooks without BPF, so no root is needed."""

from __future__ import annotations

import os
import re

import nbconvert  # noqa: F401  (installed by make setup: the docs extra; missing is a failure, not a skip)
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from bpfmagic import site

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


@pytest.fixture
def notebooks(tmp_path):
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
    readme = tmp_path / "README.md"
    readme.write_text("| notebook | what |\n|---|---|\n| `notebooks/01-good.ipynb` | draws with `display` |\n")
    return good, bad, str(readme)


def test_site_pages_and_index(notebooks, tmp_path):
    good, _, readme = notebooks
    out = tmp_path / "site"
    assert site.build([good], str(out), timeout=120, readme=readme, echo=False)
    index = (out / "index.html").read_text()
    assert '<a href="01-good.html">01 · A good one</a>' in index
    assert "draws with <code>display</code>" in index  # the README's line for it
    page = (out / "01-good.html").read_text()
    assert 'src="data:image/png;base64,iVBOR' in page  # pictures inline
    assert 'src="data:image/svg+xml;base64,PHN2Zy' in page
    assert "answer 42" in page and "shown on purpose" in page
    assert not re.search(r"<script[^>]*src=\"https?://", page)  # nothing fetched from the network
    assert (out / "executed" / "01-good.ipynb").exists()


def test_site_fails_when_a_notebook_fails(notebooks, tmp_path):
    good, bad, readme = notebooks
    out = tmp_path / "site"
    assert not site.build([bad, good], str(out), timeout=120, readme=readme, echo=False)
    index = (out / "index.html").read_text()
    assert "02 · A broken one" in index and "failed to run" in index
    assert "It fails." in index  # no README line: the first sentence
    assert os.path.exists(out / "01-good.html")  # the others are still built
    assert site.main([str(tmp_path / "missing.ipynb")]) == 2


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
