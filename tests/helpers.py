"""Helpers that tests on both sides of the suite (tests/unit, tests/kernel) use: what
IPython's completer offers, a cell run in the shared shell, a function's last JIT
instruction, a child Python with this checkout on its path."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

from IPython.core.completer import provisionalcompleter

from .paths import REPO


def offered(ip, text: str, cursor: int | None = None) -> list[str]:
    """What IPython's completer offers with the cursor at the end of TEXT (or at CURSOR)."""
    with provisionalcompleter():
        return [c.text for c in ip.Completer.completions(text, len(text) if cursor is None else cursor)]


def run(ip, code: str):
    return ip.run_cell(textwrap.dedent(code))


def last_instruction(text, function):
    """The last instruction of FUNCTION's image, padding (int3) left out."""
    body = text.split(f"<{function}>:", 1)[1].split("\n<", 1)[0]
    rows = [r for r in body.splitlines() if re.match(r"^\s+[0-9a-f]+: ", r) and not r.split(": ", 1)[1].startswith("int3")]
    return rows[-1]


def clean_env(**extra) -> dict:
    """This process's environment for a child Python: this checkout on its path, no
    BCC_KERNEL_SOURCE, EXTRA added."""
    e = {k: v for k, v in os.environ.items() if k != "BCC_KERNEL_SOURCE"}
    e["PYTHONPATH"] = str(REPO)
    e.update(extra)
    return e


def run_python(code: str, *args: str, env_=None, timeout=60, python=sys.executable) -> subprocess.CompletedProcess:
    """CODE run by a child Python (ARGS before ``-c``) in the checkout, its output captured."""
    return subprocess.run(
        [python, *args, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env_ if env_ is not None else clean_env(),
    )
