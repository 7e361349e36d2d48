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

import pytest

from bpfmagic.kernel import btf, env

pytestmark = [
    pytest.mark.skipif(
        os.path.isdir(f"/lib/modules/{os.uname().release}/build") or env.find_debian_headers() is None,
        reason="BCC compiles against the running kernel's own headers here: nothing can differ",
    ),
    pytest.mark.skipif(btf.vmlinux() is None or shutil.which("bpftool") is None, reason="needs vmlinux BTF and bpftool"),
]


def headers_warnings(vmlinux: bool) -> tuple[list[str], str]:
    """The HeadersMismatchWarning messages a new Session gives in a fresh Python (outside
    IPython, the note is a warning; the headers warning is once per process), with the
    running kernel's BTF or, without VMLINUX, as if it had none; and what else it printed."""
    import json

    from ..helpers import run_python

    r = run_python(
        f"""
        import json, warnings
        from bpfmagic import Session
        from bpfmagic.kernel import btf, env
        if not {vmlinux}:
            btf.vmlinux = lambda: None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Session(stats=False).close()
        print(json.dumps([str(w.message) for w in caught if issubclass(w.category, env.HeadersMismatchWarning)]))
        """
    )
    assert r.returncode == 0, r.stderr
    *printed, last = r.stdout.splitlines()
    return json.loads(last), "\n".join(printed)


def test_session_says_nothing_of_the_headers_when_cells_are_checked():
    """The per-session note is the fallback where cells cannot be checked (no BTF)."""
    assert headers_warnings(vmlinux=True) == ([], "")
    caught, printed = headers_warnings(vmlinux=False)
    assert [w for w in caught if "has no headers" in w] and printed == ""
