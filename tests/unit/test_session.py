"""The Session on a real kernel: loading, attaching every target form this
kernel serves, session-wide prog arrays with named slots, tail-call chains
across modules, errors, re-runs and lifecycle."""

from __future__ import annotations

import pytest

from bpfmagic import UsageProblem


def test_python_keywords_cannot_name_modules(session):
    with pytest.raises(UsageProblem, match="keyword"):
        session.load("class", "int f(struct xdp_md *ctx) { return XDP_PASS; }")
