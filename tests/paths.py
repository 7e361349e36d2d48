"""Where things are in the checkout, for every test file and helper: REPO, the
repository's root (a str: it goes into paths, ``cwd=`` and ``PYTHONPATH`` alike).

tests/kernels/matrix.py and tests/browser/run_browser.py run as scripts, outside
the tests package (matrix.py on the host, before any guest boots): they find the
root from their own place."""

from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
