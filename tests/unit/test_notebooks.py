"""Tutorial notebooks, executed top to bottom with nbclient on the real
kernel, with assertions on what they produced."""

from __future__ import annotations

import glob
import os

import nbformat

from bpfmagic.cli import run_notebook


def test_run_notebook_talks_to_its_kernel_over_private_unix_sockets(tmp_path, capfd):
    """`bpfmagic run` / `make docs`: the kernel listens on Unix sockets in a directory only
    this user can enter (no TCP port another local user could reach), removed afterwards."""
    import tempfile

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "sockets.ipynb"
    nbformat.write(nb, str(path))
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "bpfmagic-kernel-*")))
    seen = []
    import jupyter_client

    start = jupyter_client.AsyncKernelManager.start_kernel

    async def spy(self, **kw):
        seen.append((self.transport, self.ip, oct(os.stat(os.path.dirname(self.ip)).st_mode & 0o777)))
        return await start(self, **kw)

    jupyter_client.AsyncKernelManager.start_kernel = spy
    try:
        ok, _ = run_notebook(str(path), output=str(tmp_path / "out.ipynb"), timeout=120, echo=False)
    finally:
        jupyter_client.AsyncKernelManager.start_kernel = start
    assert ok
    assert len(seen) == 1 and seen[0][0] == "ipc" and seen[0][2] == "0o700", seen
    assert not set(glob.glob(os.path.join(tempfile.gettempdir(), "bpfmagic-kernel-*"))) - before  # (dead runs' may go too)
    assert "without encryption" not in capfd.readouterr().err


def test_a_notebook_whose_kernel_dies_fails_fast_and_leaves_nothing(tmp_path):
    """A cell that ends its kernel: `bpfmagic run` says so and returns (it once waited for
    the kernel's output forever, deaf to SIGTERM), its socket directory removed."""
    import subprocess
    import sys
    import tempfile

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "dies.ipynb"
    nbformat.write(nb, str(path))
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "bpfmagic-kernel-*")))
    r = subprocess.run([sys.executable, "-m", "bpfmagic.cli", "run", str(path), "--output", str(tmp_path / "out.ipynb")],
                       capture_output=True, text=True, timeout=90)  # fmt: skip
    assert r.returncode == 1 and "Kernel died" in r.stderr + r.stdout, (r.stdout, r.stderr)
    assert not set(glob.glob(os.path.join(tempfile.gettempdir(), "bpfmagic-kernel-*"))) - before  # (dead runs' may go too)
