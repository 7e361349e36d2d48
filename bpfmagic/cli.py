"""The ``bpfmagic`` command.

bpfmagic doctor                  environment report; exit 1 if a required check fails
bpfmagic run NOTEBOOK [--timeout S] [--output OUT.ipynb]
                                 execute a notebook headless, print each cell's
                                 text outputs, save the executed copy
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time

from .errors import EnvironmentProblem
from .kernel import trust

DEFAULT_BUILD_DIR = "build"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _doctor(args: argparse.Namespace) -> int:
    from . import doctor

    results = doctor.checks()
    print(doctor.format_text(results))
    return 0 if doctor.required_ok(results) else 1


def default_output(notebook: str) -> str:
    """``build/<stem>.ipynb`` under the current directory (never the source)."""
    stem = os.path.splitext(os.path.basename(notebook))[0]
    return os.path.join(DEFAULT_BUILD_DIR, f"{stem}.ipynb")


def _text_of(output) -> str:
    """The text a terminal would show for one notebook output."""
    kind = output.get("output_type")
    if kind == "stream":
        return output.get("text", "")
    if kind in ("execute_result", "display_data"):
        data = output.get("data", {})
        pictures = [m for m in ("image/png", "image/svg+xml") if m in data]
        if pictures:  # the repr of a Figure/SVG object tells a terminal reader nothing
            return f"[picture: {pictures[0]}, in the executed notebook]\n"
        if "application/vnd.jupyter.widget-view+json" in data:
            return "[live widget: open the executed notebook in Jupyter]\n"
        # prose a cell computed (IPython's Markdown) reads as its text, not as the object's repr
        text = data.get("text/markdown", data.get("text/plain"))
        if text is None:
            mimes = ", ".join(sorted(data)) or "nothing"
            return f"<{mimes}>\n"
        return text if text.endswith("\n") else text + "\n"
    if kind == "error":
        tb = "\n".join(output.get("traceback", [])) or f"{output.get('ename')}: {output.get('evalue')}"
        return _ANSI.sub("", tb) + "\n"
    return ""


def print_cell(cell, index: int, out=None) -> None:
    """Print a code cell's text outputs under a one-line header."""
    out = out or sys.stdout
    if cell.get("cell_type") != "code":
        return
    first = next((ln for ln in cell.get("source", "").splitlines() if ln.strip()), "")
    n = cell.get("execution_count")
    out.write(f"--- cell {index} [{n if n is not None else ' '}]: {first[:70]}\n")
    if "raises-exception" in cell.get("metadata", {}).get("tags", []):
        out.write("(this cell shows an error on purpose)\n")
    for o in cell.get("outputs", []):
        out.write(_text_of(o))
    out.flush()


def _kernel_manager(kernel_name: str):
    """A KernelManager whose ``kernel_name`` kernel runs this very interpreter.

    An installed ``python3`` kernelspec elsewhere (pyenv, ~/.local) would
    start an interpreter that cannot import bcc; pin it to sys.executable.
    """
    # The async manager: with a blocking one nbclient's output poll blocks its event loop, so
    # a kernel that dies mid-cell is never noticed and the run hangs for good.
    from jupyter_client import AsyncKernelManager as KernelManager
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class _Pinned(KernelSpecManager):
        def get_kernel_spec(self, name):
            if name == kernel_name:
                return KernelSpec(
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    display_name=f"Python 3 ({sys.executable})",
                    language="python",
                    metadata={"debugger": False},
                )
            return super().get_kernel_spec(name)

    sockets = private_sockets_dir()
    km = KernelManager(kernel_name=kernel_name, kernel_spec_manager=_Pinned(), transport="ipc", ip=os.path.join(sockets, "k"))
    # the connection file (the kernel's key) beside its sockets: removed with them, and by the next run after a SIGKILL
    km.connection_file = os.path.join(sockets, "kernel.json")
    km.sockets_dir = sockets
    return km


SOCKETS_PREFIX = "bpfmagic-kernel-"


def _sweep_dead_runs(base: str) -> None:
    """Remove socket directories of this user's runs that were killed (SIGKILL leaves them)."""
    me = os.geteuid()
    for entry in os.scandir(base) if os.path.isdir(base) else ():
        if not entry.name.startswith(SOCKETS_PREFIX):
            continue
        pid = entry.name[len(SOCKETS_PREFIX) :].split("-", 1)[0]
        try:
            st = entry.stat(follow_symlinks=False)
            if not entry.is_dir(follow_symlinks=False) or st.st_uid != me or not pid.isdigit():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            continue


def _remove_sockets_dir(path: str, seconds: float = 5.0) -> None:
    """Remove a run's socket directory. A kernel that was still closing its sockets when
    the removal began can leave an entry behind (seen under load): try again a little."""
    deadline = time.monotonic() + seconds
    while True:
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path) or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def private_sockets_dir() -> str:
    """A new directory only this user can enter, for the kernel's Unix sockets (not TCP on
    127.0.0.1: other local users cannot reach its ports). Its parent must be one no other user
    can rename entries in (else they could swap ours for a 0777 one and connect to root's
    kernel); its identity is checked after it is made."""
    base = tempfile.gettempdir()
    if len(base) > 60:  # a Unix socket path has at most 107 bytes: a long TMPDIR would hang the start
        base = "/tmp"
    unsafe = trust.swappable_level(base)
    if unsafe:
        raise EnvironmentProblem(
            f"bpfmagic run: the temporary directory {base} is not safe for the kernel's sockets: another user "
            f"can replace entries in {unsafe}; set TMPDIR to a directory only you (or root) can write, or to /tmp"
        )
    _sweep_dead_runs(base)
    sockets = tempfile.mkdtemp(prefix=f"{SOCKETS_PREFIX}{os.getpid()}-", dir=base)
    fd = os.open(sockets, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        st, again = os.fstat(fd), os.lstat(sockets)
    finally:
        os.close(fd)
    if (st.st_dev, st.st_ino) != (again.st_dev, again.st_ino) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise EnvironmentProblem(f"bpfmagic run: {sockets} changed hands while it was made; not starting a kernel there")
    return sockets


def run_notebook(
    path: str, output: str | None = None, timeout: float = 600, kernel_name: str = "python3", echo: bool = True, on_cell=None
) -> tuple[bool, str]:
    """Execute ``path`` top to bottom in its own directory; save to ``output``.

    Returns ``(ok, output_path)``. With ``echo`` each cell's text outputs are
    printed as soon as it finished; ``on_cell(cell, index)`` is called after
    each code cell (a progress bar).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    output = output or default_output(path)
    if os.path.exists(output) and os.path.samefile(output, path):
        raise ValueError(f"output {output} would overwrite the source notebook")
    nb = nbformat.read(path, as_version=4)
    nbdir = os.path.dirname(os.path.abspath(path))

    def on_cell_executed(cell, cell_index, execute_reply=None, **kw):
        if echo:
            print_cell(cell, cell_index)
        if on_cell is not None:
            on_cell(cell, cell_index)

    km = _kernel_manager(kernel_name)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel_name,
        km=km,
        resources={"metadata": {"path": nbdir}},
        on_cell_executed=on_cell_executed,
        # the widgets' last state goes into the notebook's metadata: reopened later (or
        # rendered by `make docs`) a live view shows its last figures, not "model not found"
        store_widget_state=True,
    )
    ok = True
    failed = None
    try:
        client.execute()
    except CellExecutionError as e:
        ok, failed = False, e
    except Exception as e:  # kernel died, timeout, ...
        ok, failed = False, e
    finally:
        # nbclient leaves a kernel it did not start alone: stop it (everything it
        # loaded is freed with it) and remove its connection file.
        from jupyter_core.utils import run_sync

        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=False)
        run_sync(km.cleanup_resources)()
        _remove_sockets_dir(km.sockets_dir)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        nbformat.write(nb, output)
    if not ok:
        print(f"\n*** {path}: execution failed", file=sys.stderr)
        bad = next(
            (
                i
                for i, c in enumerate(nb.cells)
                if c.get("cell_type") == "code" and any(o.get("output_type") == "error" for o in c.get("outputs", []))
            ),
            None,
        )
        if bad is not None:
            print_cell(nb.cells[bad], bad, out=sys.stderr)
        else:
            print(_ANSI.sub("", str(failed)), file=sys.stderr)
    if echo:  # a quiet caller (make docs, the tests) says where it went its own way
        print(f"executed notebook: {output}", file=sys.stderr)
    return ok, output


def _run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.notebook):
        print(f"bpfmagic run: no such notebook: {args.notebook}", file=sys.stderr)
        return 2
    try:
        ok, _ = run_notebook(args.notebook, args.output, args.timeout, args.kernel)
    except ValueError as e:
        print(f"bpfmagic run: {e}", file=sys.stderr)
        return 2
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bpfmagic", description="eBPF tail-call experiments in Jupyter")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("doctor", help="check the environment; print the fix for each problem")
    p.set_defaults(func=_doctor)
    p = sub.add_parser("run", help="execute a notebook headless and print its text outputs")
    p.add_argument("notebook")
    p.add_argument("--timeout", type=float, default=600, help="seconds per cell (default 600)")
    p.add_argument("--output", "-o", help=f"executed copy (default {DEFAULT_BUILD_DIR}/<name>.ipynb)")
    p.add_argument("--kernel", default="python3", help=argparse.SUPPRESS)
    p.set_defaults(func=_run)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
