"""Run a Python snippet as a child process in namespaces of its own, so that
tests can attack or unmount /sys/fs/bpf without touching the real one that
concurrent sessions on this machine use; or without privileges."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

# The child's last stdout line is a JSON object: what it saw.
PRELUDE = textwrap.dedent("""
    import json, os, sys, warnings
    warnings.simplefilter("ignore")
    def report(**facts):
        print(json.dumps(facts), flush=True)
""")


def run_python(pieces: list[str], prefix: list[str], timeout: float = 120, env: dict | None = None, check: bool = True) -> dict:
    """Run the code PIECES (each dedented, then joined; report() defined) under
    the PREFIX command; returns the facts the code reported."""
    code = "\n".join(textwrap.dedent(p) for p in [PRELUDE, *pieces])
    out = subprocess.run(
        [*prefix, sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=timeout, env=child_env(env), cwd="/"
    )
    lines = out.stdout.strip().splitlines()
    if check and (out.returncode != 0 or not lines):
        raise AssertionError(f"child failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[-1]) if lines else {}


def child_env(env: dict | None = None) -> dict:
    """ENV (default: ours) where the child imports the bpfmagic under test:
    PYTHONPATH first (which may point elsewhere on purpose), then this one.
    Children run in /, so the current directory never decides."""
    import bpfmagic

    env = dict(os.environ if env is None else env)
    here = os.path.dirname(os.path.dirname(os.path.abspath(bpfmagic.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), here) if p)
    return env


# A private mount namespace (unshare -m makes every mount private) with a
# fresh bpffs of its own at /sys/fs/bpf: mode 1777, empty, like a booted machine.
PRIVATE_BPFFS = ["unshare", "-m", "sh", "-c", 'mount -t bpf bpf /sys/fs/bpf && exec "$@"', "sh"]


def in_private_bpffs(*pieces: str, **kw) -> dict:
    return run_python(list(pieces), PRIVATE_BPFFS, **kw)


# A private mount namespace where neither bpffs nor tracefs is mounted, as on
# a freshly booted machine (every stacked mount of each is removed).
UNMOUNTED = [
    "unshare",
    "-m",
    "sh",
    "-c",
    ('for m in /sys/fs/bpf /sys/kernel/tracing; do while mountpoint -q $m; do umount $m || exit 1; done; done; exec "$@"'),
    "sh",
]


def without_bpffs_and_tracefs(*pieces: str, **kw) -> dict:
    return run_python(list(pieces), UNMOUNTED, **kw)


# Root without any capability (none effective, permitted, inheritable,
# ambient or in the bounding set, and no way to regain them): unprivileged
# for BPF, yet still able to read a clone that lives under a 0700 directory,
# which user nobody could not (and would then silently import another copy).
WITHOUT_CAPABILITIES = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs"]

# In a child that must be another user: import first (as root, from wherever
# the clone is), then drop to nobody for what the test is about.
BECOME_NOBODY = """
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
"""

# User nobody holding CAP_BPF and no other capability (a user granted BPF and nothing else).
# Imported first as root, like BECOME_NOBODY (IMPORT_EVERYTHING); the capabilities survive
# setresuid only with PR_SET_KEEPCAPS, and capset then keeps CAP_BPF alone.
IMPORT_EVERYTHING = """
import importlib, pkgutil, bpfmagic
for _m in pkgutil.walk_packages(bpfmagic.__path__, "bpfmagic."):
    importlib.import_module(_m.name)
import bcc, pandas, numpy, yaml
# what the package imports lazily, on first use: the C parser and its grammar
from bpfmagic.c.analysis import analyse
analyse("int x;")
"""
BECOME_NOBODY_WITH_CAP_BPF = """
import ctypes
_libc = ctypes.CDLL(None, use_errno=True)
assert _libc.prctl(8, 1, 0, 0, 0) == 0  # PR_SET_KEEPCAPS
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
_caps = (_CapData * 2)()
_caps[1].effective = _caps[1].permitted = 1 << (39 - 32)  # CAP_BPF, in the second 32-bit word
assert _libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), _caps) == 0, os.strerror(ctypes.get_errno())
"""

# Root whose only capability is CAP_BPF (none of CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN).
ROOT_WITH_CAP_BPF_ONLY = ["setpriv", "--inh-caps=-all,+bpf", "--ambient-caps=-all,+bpf", "--bounding-set=-all,+bpf"]
