"""``make docs``: every tutorial notebook executed and rendered to static
HTML, with an index page, readable offline.

    python -m bpfmagic.site [--out build/site] [--timeout S] NOTEBOOK...

Each notebook is executed top to bottom (``cli.run_notebook``, the same
runner as ``bpfmagic run`` and the tests); one that fails, or shows an error
in a cell not tagged ``raises-exception``, fails the build (exit 1) after
the others were still built. The pages are nbconvert's "lab" HTML with the
pictures inline (PNG and SVG outputs, images in Markdown embedded) and
nothing fetched from the network: the CDN scripts (require.js, MathJax) are
left out, and a live view (ipywidgets) is shown as the last state it had
when the notebook ran, from the widget state nbclient saved. The executed
notebooks are kept beside the pages (``executed/``).
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>\s*", re.I)

INDEX_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 52rem; margin: 2.5rem auto;
       padding: 0 1rem; line-height: 1.5; color: #222; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
p.lead { color: #555; margin-top: 0; }
ol { padding-left: 1.4rem; }
li { margin: .9rem 0; }
li a { font-weight: 600; text-decoration: none; }
li a:hover { text-decoration: underline; }
li .line { display: block; color: #444; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
.failed { color: #b00020; font-weight: 600; }
footer { margin-top: 2rem; color: #777; font-size: .9rem; }
"""


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


def readme_descriptions(readme: str) -> dict[str, str]:
    """``| `notebooks/NAME.ipynb` | what it shows |`` rows of the README's table."""
    out = {}
    try:
        with open(readme, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return out
    for m in re.finditer(r"^\|\s*`notebooks/([^`]+\.ipynb)`\s*\|\s*(.+?)\s*\|\s*$", text, re.M):
        out[m.group(1)] = m.group(2)
    return out


def inline_markdown(text: str) -> str:
    """`code`, *emphasis* and **strong** of a one-line description, as HTML."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            s = html.escape(part)
            s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
            s = re.sub(r"\*(.+?)\*", r"<em>\1</em>", s)
            out.append(s)
    return "".join(out).replace("\\|", "|")


# ------------------------------------------------------------ widgets, offline


def _widget_html(model_id: str, state: dict, depth: int = 0) -> str:
    """The last state of a widget as plain HTML: HTML/Label values, children
    in order, buttons as disabled buttons. Enough for bpfmagic's views."""
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


def render(nb) -> str:
    """One notebook as a self-contained HTML page."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.embed_images = True  # images referenced from Markdown, inline
    body, _ = exporter.from_notebook_node(nb)
    return _REMOTE_SCRIPT.sub("", body)


def index_page(entries: list[dict]) -> str:
    items = []
    for e in entries:
        state = "" if e["ok"] else ' <span class="failed">(failed to run)</span>'
        items.append(
            f'<li><a href="{html.escape(e["page"])}">{html.escape(e["title"])}</a>{state}<span class="line">{inline_markdown(e["line"])}</span></li>'
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>bpfmagic tutorials</title><style>{INDEX_CSS}</style></head><body>\n"
        "<h1>bpfmagic tutorials</h1>\n"
        '<p class="lead">eBPF tail-call experiments in Jupyter: each tutorial below was executed on a real '
        "kernel to make this page; the numbers in it are that kernel's.</p>\n"
        f"<ol>\n{chr(10).join(items)}\n</ol>\n"
        "<footer>Built by <code>make docs</code>; the executed notebooks are in "
        '<a href="executed/"><code>executed/</code></a>.</footer>\n</body></html>\n'
    )


def build(notebooks: list[str], out: str, timeout: float = 600, readme: str | None = None, echo: bool = True) -> bool:
    """Execute and render NOTEBOOKS into OUT; True when every one ran cleanly."""
    import nbformat

    from .cli import run_notebook

    if not notebooks:
        raise ValueError("no notebooks given")
    os.makedirs(os.path.join(out, "executed"), exist_ok=True)
    descriptions = readme_descriptions(readme) if readme else {}
    entries, failures = [], []
    for path in notebooks:
        name = os.path.basename(path)
        stem = os.path.splitext(name)[0]
        if echo:
            print(f"docs: {name}", flush=True)
        executed = os.path.join(out, "executed", name)
        ok, _ = run_notebook(path, output=executed, timeout=timeout, echo=False)
        nb = nbformat.read(executed, as_version=4)
        errors = unexpected_errors(nb)
        if not ok or errors:
            ok = False
            failures.append(f"{name}: " + ("; ".join(errors) or "execution failed"))
        title, line = title_and_line(nb, descriptions, name)
        freeze_widgets(nb)
        page = f"{stem}.html"
        with open(os.path.join(out, page), "w", encoding="utf-8") as f:
            f.write(render(nb))
        entries.append({"page": page, "title": title, "line": line, "ok": ok})
    with open(os.path.join(out, "index.html"), "w", encoding="utf-8") as f:
        f.write(index_page(entries))
    if echo:
        print(f"docs: {len(entries)} page(s) and index.html in {out}")
    for failure in failures:
        print(f"docs: FAILED {failure}", file=sys.stderr)
    return not failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bpfmagic.site", description="execute notebooks and render them to a static HTML site")
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--out", default=os.path.join("build", "site"), help="output directory (build/site)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per cell (default 600)")
    parser.add_argument("--readme", default="README.md", help="where the one-line descriptions come from")
    args = parser.parse_args(argv)
    missing = [p for p in args.notebooks if not os.path.isfile(p)]
    if missing:
        print(f"docs: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    return 0 if build(args.notebooks, args.out, args.timeout, args.readme) else 1


if __name__ == "__main__":
    sys.exit(main())
