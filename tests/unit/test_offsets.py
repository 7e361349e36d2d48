"""BCC cells that read kernel struct members, on the real kernel: where the
headers BCC compiles against (another kernel's, here) put a member elsewhere
than the running kernel, the cell warns before any data, naming the member
and both offsets; where they agree, or the cell reads only uapi contexts
and helpers, it says nothing. The cells have the shapes of BCC's exitsnoop
and runqlat tools.

The offsets the warnings must name are measured here apart from bpfmagic:
the headers' side by BCC itself (a function returning offsetof, its
compiled instruction read back), the kernel's side by bpftool's dump of
/sys/kernel/btf/vmlinux."""

from __future__ import annotations

import os
import shutil
import warnings

import pytest

from bpfmagic.kernel import btf, env

pytestmark = [
    pytest.mark.skipif(
        os.path.isdir(f"/lib/modules/{os.uname().release}/build") or env.find_debian_headers() is None,
        reason="BCC compiles against the running kernel's own headers here: nothing can differ",
    ),
    pytest.mark.skipif(btf.vmlinux() is None or shutil.which("bpftool") is None, reason="needs vmlinux BTF and bpftool"),
]


def test_session_says_nothing_of_the_headers_when_cells_are_checked(monkeypatch, capsys):
    """The per-session note is the fallback where cells cannot be checked (no BTF)."""
    import importlib

    from bpfmagic.session import _prepare_environment

    session_module = importlib.import_module("bpfmagic.session")  # (bpfmagic.session is also a function)

    # outside IPython the note is a warning (an earlier test may have started an in-process IPython)
    monkeypatch.setattr(session_module, "_in_ipython", lambda: False)

    def headers_warnings() -> list[str]:
        monkeypatch.setattr(env, "_warned", False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _prepare_environment()
        return [str(w.message) for w in caught if issubclass(w.category, env.HeadersMismatchWarning)]

    assert headers_warnings() == []
    monkeypatch.setattr(btf, "vmlinux", lambda: None)
    assert [w for w in headers_warnings() if "has no headers" in w]
    assert capsys.readouterr().out == ""
