"""Environment preparation: kernel headers for BCC, tracefs, bpffs, privileges.

Used by the Session when it starts and by ``bpfmagic doctor``. Nothing here
raises on an unprepared machine: every function returns something the caller
can report.

Kernel headers: BCC compiles against ``/lib/modules/$(uname -r)/build`` or
``$BCC_KERNEL_SOURCE``. On a machine whose running kernel has no headers
package (a VM kernel, for instance) we use the newest Debian headers
installed under /usr/src. Debian splits them in two directories,
``linux-headers-<ver>-common`` and ``linux-headers-<ver>-<flavour>``; BCC
needs both as one tree, so we build a merged tree of symlinks in the user's
cache directory (the flavour entries win) and point ``BCC_KERNEL_SOURCE`` at
it. Such headers belong to another kernel, hence :class:`HeadersMismatchWarning`.

Run ``python -m bpfmagic.kernel.env`` to prepare everything and print what was done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import warnings
from typing import NamedTuple

from ..errors import EnvironmentProblem

__all__ = [
    "HeadersMismatchWarning",
    "KernelOffsetsWarning",
    "HeadersInfo",
    "Status",
    "Privileges",
    "running_kernel",
    "headers_cache_dir",
    "find_debian_headers",
    "kernel_headers_info",
    "ensure_kernel_headers",
    "missing_headers_message",
    "is_mounted",
    "ensure_tracefs",
    "ensure_bpffs",
    "privileges",
    "prepare",
    "TRACEFS",
    "BPFFS",
]

TRACEFS = "/sys/kernel/tracing"
BPFFS = "/sys/fs/bpf"
USR_SRC = "/usr/src"
MODULES = "/lib/modules"

#: file written into a merged headers tree; records where it came from
STAMP = ".bpfmagic-headers.json"

# Debian names the flavour directory after the architecture.
_DEBIAN_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "armmp",
    "ppc64le": "powerpc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


class HeadersMismatchWarning(UserWarning):
    """BCC compiles against headers of a kernel other than the running one."""


class KernelOffsetsWarning(HeadersMismatchWarning):
    """A BCC cell reads kernel struct members whose offsets in those headers are
    not the running kernel's: its values are other bytes than they name."""


class Status(NamedTuple):
    """Outcome of an ``ensure_*`` call: ``ok, reason = ensure_tracefs()``."""

    ok: bool
    reason: str


def running_kernel() -> str:
    """``uname -r`` of the running kernel."""
    return os.uname().release


# --------------------------------------------------------------------------
# kernel headers
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HeadersInfo:
    """Where BCC's kernel headers come from.

    ``kind`` is one of ``"modules-build"`` (``/lib/modules/<running>/build``),
    ``"env"`` (``BCC_KERNEL_SOURCE`` set by the user), ``"merged"`` (our
    merged Debian tree), ``"available"`` (Debian headers installed but the
    merged tree not built yet) or ``"missing"``.
    """

    kind: str
    path: str | None
    running: str
    version: str | None = None  # e.g. "6.1.0-56-amd64" for a merged tree
    common: str | None = None
    flavour: str | None = None

    @property
    def ok(self) -> bool:
        return self.kind in ("modules-build", "env", "merged", "available")

    @property
    def mismatch(self) -> bool:
        return self.kind in ("merged", "available") and self.version != self.running


def headers_cache_dir() -> str:
    """``$XDG_CACHE_HOME/bpfmagic/headers`` (default ``~/.cache/bpfmagic/headers``)."""
    from . import cache

    return cache.cache_dir("headers")


def _version_key(ver: str) -> tuple:
    """Natural sort key: "6.1.0-56" < "6.1.0-128" < "6.10.0-1"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", ver) if p)


def find_debian_headers(usr_src: str = USR_SRC) -> tuple[str, str, str] | None:
    """Newest installed Debian headers pair.

    Returns ``(version_with_flavour, common_dir, flavour_dir)``, e.g.
    ``("6.1.0-56-amd64", "/usr/src/linux-headers-6.1.0-56-common",
    "/usr/src/linux-headers-6.1.0-56-amd64")``, or None.
    """
    try:
        names = os.listdir(usr_src)
    except OSError:
        return None
    arch = _DEBIAN_ARCH.get(platform.machine(), platform.machine())
    commons = {}
    for n in names:
        m = re.fullmatch(r"linux-headers-(.+)-common(-rt)?", n)
        if m and os.path.isdir(os.path.join(usr_src, n, "include")):
            commons[m.group(1) + (m.group(2) or "")] = os.path.join(usr_src, n)
    candidates = []
    for n in names:
        if n.endswith("-common") or n.endswith("-common-rt"):
            continue
        m = re.fullmatch(r"linux-headers-(\d[^-]*-[^-]+)-(.+)", n)
        if not m:
            continue
        ver, flavour = m.group(1), m.group(2)
        common = None
        if flavour.startswith("rt-"):
            common = commons.get(ver + "-rt")
        common = common or commons.get(ver)
        if common is None or not os.path.isdir(os.path.join(usr_src, n)):
            continue
        # prefer the plain architecture flavour ("amd64" over "cloud-amd64", "rt-amd64")
        rank = 2 if flavour == arch else (1 if flavour.endswith(arch) else 0)
        candidates.append((_version_key(ver), rank, f"{ver}-{flavour}", common, os.path.join(usr_src, n)))
    if not candidates:
        return None
    candidates.sort(key=lambda c: (c[0], c[1]))
    _, _, name, common, flav = candidates[-1]
    return name, common, flav


def _is_tree(path: str | None) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, "include", "linux", "kconfig.h"))


def _read_stamp(tree: str) -> dict | None:
    from . import cache

    data = cache.read_trusted(os.path.join(tree, STAMP))
    try:
        return json.loads(data) if data is not None else None
    except ValueError:
        return None


def _source_signature(common: str, flavour: str) -> dict:
    sig = {"common": common, "flavour": flavour}
    for key, d in (("common_mtime", common), ("flavour_mtime", flavour)):
        try:
            sig[key] = os.stat(d).st_mtime_ns
        except OSError:
            sig[key] = None
    return sig


def kernel_headers_info(usr_src: str = USR_SRC) -> HeadersInfo:
    """Describe the headers BCC would use, without changing anything."""
    running = running_kernel()
    build = os.path.join(MODULES, running, "build")
    if os.path.isdir(build):
        return HeadersInfo("modules-build", build, running, running)
    found = find_debian_headers(usr_src)
    ours = os.path.join(headers_cache_dir(), found[0]) if found else None
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env and os.path.isdir(env) and os.path.abspath(env) != ours:  # our own tree is checked below
        stamp = _read_stamp(env)
        if stamp:  # one of our merged trees, inherited from a parent process
            return HeadersInfo(
                "merged",
                env,
                running,
                stamp.get("version"),
                stamp.get("common"),
                stamp.get("flavour"),
            )
        return HeadersInfo("env", env, running)
    if found is None:
        return HeadersInfo("missing", None, running)
    name, common, flavour = found
    tree = os.path.join(headers_cache_dir(), name)
    if _tree_intact(tree, common, flavour, name):
        return HeadersInfo("merged", tree, running, name, common, flavour)
    return HeadersInfo("available", None, running, name, common, flavour)


def headers_name(tree: str) -> str:
    """The kernel a headers tree is of: the version our merged tree was built from, else its path."""
    stamp = _read_stamp(tree)
    return str(stamp.get("version")) if stamp and stamp.get("version") else tree


def _tree_intact(tree: str, common: str, flavour: str, name: str) -> bool:
    """The merged tree at TREE is trusted (every level ours, writable by no one
    else), stamped for these sources, and exactly its plan: nothing missing
    (an emptied include/), added or pointing elsewhere (a swapped link)."""
    from . import cache

    if not (cache.levels_trusted("headers", name) and _is_tree(tree)):
        return False
    if _read_stamp(tree) != {**_source_signature(common, flavour), "version": name}:
        return False
    plan = _merge_entries(common, flavour)
    expected: dict[str, set[str]] = {"": {STAMP}}
    for rel, (kind, src) in plan.items():
        expected.setdefault(os.path.dirname(rel), set()).add(os.path.basename(rel))
        path = os.path.join(tree, rel)
        try:
            if kind == "dir":
                if not cache.is_trusted(path):
                    return False
                expected.setdefault(rel, set())
            elif os.readlink(path) != src or os.lstat(path).st_uid != os.geteuid():
                return False
        except OSError:
            return False
    try:
        return all(set(os.listdir(os.path.join(tree, rel))) == names for rel, names in expected.items())
    except OSError:
        return False


def _is_real_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _merge_entries(common: str, flavour: str) -> dict[str, tuple[str, str]]:
    """Plan of the merged tree: relative path -> ("dir", "") or ("link", source).

    The -common tree overlaid by the flavour tree, as ``cp -as common/. dest;
    cp -as --remove-destination flavour/. dest`` would, except that a
    directory present on one side only becomes one symlink to that directory
    instead of a copy of its ~10,000 files (building takes milliseconds, not
    seconds). Only directories present in both trees are real directories.
    Flavour entries win; a flavour file or symlink replaces a common
    directory of the same name. Links are absolute, so the relative links
    inside Debian's trees (``scripts -> ../../lib/linux-kbuild-*``) resolve.
    """
    plan: dict[str, tuple[str, str]] = {}

    def merge(rel: str, c_dir: str, f_dir: str) -> None:
        names = set(os.listdir(c_dir)) | set(os.listdir(f_dir))
        for name in sorted(names):
            c, f = os.path.join(c_dir, name), os.path.join(f_dir, name)
            r = os.path.join(rel, name) if rel else name
            if _is_real_dir(c) and _is_real_dir(f):
                plan[r] = ("dir", "")
                merge(r, c, f)
            elif os.path.lexists(f):
                plan[r] = ("link", os.path.abspath(f))
            else:
                plan[r] = ("link", os.path.abspath(c))

    merge("", common, flavour)
    return plan


def _build_tree(dest: str, common: str, flavour: str, name: str) -> None:
    """Build the merged symlink tree at ``dest`` atomically, with explicit
    modes (0700 directories, a 0600 stamp) in a trusted cache directory."""
    from . import cache

    parent = cache.trusted_dir("headers")
    if os.path.dirname(dest) != parent:
        raise ValueError(f"{dest} is not in the headers cache {parent}")
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=parent)
    try:
        entries = _merge_entries(common, flavour)
        for rel in sorted(entries):  # parents sort before children
            kind, src = entries[rel]
            target = os.path.join(tmp, rel)
            if kind == "dir":
                cache.make_dir(target)
            else:
                os.symlink(src, target)
        cache.write_file(tmp, STAMP, json.dumps({**_source_signature(common, flavour), "version": name}).encode())
        os.chmod(tmp, cache.DIR_MODE)
        old = None
        if os.path.lexists(dest):  # stale tree (the headers package changed)
            old = tempfile.mkdtemp(prefix=f".{name}.old.", dir=parent)
            try:
                os.rename(dest, os.path.join(old, "tree"))
            except OSError:
                pass
        try:
            os.rename(tmp, dest)
            tmp = None
        except OSError:
            if not _is_tree(dest):  # nobody else won the race: a real failure
                raise
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


_warned = False


def _warn_mismatch(info: HeadersInfo) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        f"bpfmagic: the running kernel {info.running} has no headers; BCC compiles "
        f"against the headers of kernel {info.version} ({info.path}). Kernel struct "
        "offsets read with bpf_probe_read_kernel may be wrong. Safe: helpers, uapi "
        "contexts (xdp_md, __sk_buff, bpf_raw_tracepoint_args, pt_regs) and "
        "TRACEPOINT_PROBE args. For kernel structs use `%%bpf ... --core` "
        "(CO-RE with the running kernel's BTF).",
        HeadersMismatchWarning,
        stacklevel=3,
    )


def ensure_kernel_headers(usr_src: str = USR_SRC) -> str | None:
    """Make sure BCC finds kernel headers; return their directory or None.

    Returns ``/lib/modules/$(uname -r)/build`` or an existing
    ``$BCC_KERNEL_SOURCE`` as they are. Otherwise builds (once, cached) a
    merged tree of the newest Debian headers, sets ``BCC_KERNEL_SOURCE`` to it
    for this process and its children, and warns once per process with
    :class:`HeadersMismatchWarning`. None when no headers are installed
    (``apt-get install linux-headers-amd64``).
    """
    info = kernel_headers_info(usr_src)
    if info.kind in ("modules-build", "env"):
        return info.path
    if info.kind == "missing":
        return None
    path = info.path
    if info.kind == "available":
        path = os.path.join(headers_cache_dir(), info.version)
        try:
            _build_tree(path, info.common, info.flavour, info.version)
        except (OSError, EnvironmentProblem) as e:
            warnings.warn(
                f"bpfmagic: could not build the merged kernel headers tree at {path}: {e}",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        info = dataclasses.replace(info, kind="merged", path=path)
    os.environ["BCC_KERNEL_SOURCE"] = path
    if info.mismatch:
        _warn_mismatch(info)
    return path


def missing_headers_message() -> str:
    """Why BCC found no kernel headers, and the fix: none installed, or installed and
    bpfmagic could not build BCC's tree from them (its cache cannot be made: a user
    such as nobody, whose HOME is /nonexistent)."""
    info = kernel_headers_info()
    if info.kind != "available":
        return (
            "BCC found no kernel headers. Run `bpfmagic doctor`; usually `apt-get install -y linux-headers-amd64` "
            "fixes it (bpfmagic then builds a merged header tree by itself)."
        )
    from . import cache

    try:
        cache.trusted_dir("headers")
    except EnvironmentProblem as e:
        return (
            f"BCC found no kernel headers: those of kernel {info.version} are installed, but bpfmagic could not build BCC's "
            f"header tree from them. {e}; the session builds the tree when it starts, so restart the notebook's kernel after that."
        )
    return (
        f"BCC found no kernel headers: those of kernel {info.version} are installed, and bpfmagic builds BCC's header tree from "
        f"them when a session starts; this session did not (see `bpfmagic doctor`): restart the notebook's kernel."
    )


# --------------------------------------------------------------------------
# file systems
# --------------------------------------------------------------------------


def is_mounted(mountpoint: str, fstype: str) -> bool:
    """True if a file system of type ``fstype`` is mounted at ``mountpoint``."""
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] == mountpoint and parts[2] == fstype:
                    return True
    except OSError:
        pass
    return False


def _mount(source: str, target: str, fstype: str) -> str | None:
    """mount(2) through libc; returns None on success or an error text."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        # int mount(const char *source, const char *target, const char *fstype,
        #           unsigned long flags, const void *data)
        libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
        libc.mount.restype = ctypes.c_int
        if libc.mount(source.encode(), target.encode(), fstype.encode(), 0, None) == 0:
            return None
        err = ctypes.get_errno()
        return f"mount failed: {os.strerror(err)}"
    except (OSError, AttributeError) as e:
        return f"mount failed: {e}"


def _ensure_fs(mountpoint: str, fstype: str, source: str) -> Status:
    if is_mounted(mountpoint, fstype):
        return Status(True, f"{fstype} mounted at {mountpoint}")
    cmd = f"mount -t {fstype} {source} {mountpoint}"
    if os.geteuid() != 0:
        return Status(False, f"{fstype} not mounted at {mountpoint} and not root: run `{cmd}` as root")
    if not os.path.isdir(mountpoint):
        return Status(False, f"{mountpoint} does not exist (is sysfs mounted?)")
    err = _mount(source, mountpoint, fstype)
    if err is None and is_mounted(mountpoint, fstype):
        return Status(True, f"mounted {fstype} at {mountpoint}")
    return Status(False, f"{fstype} not mounted at {mountpoint}: {err or 'unknown error'}; try `{cmd}`")


def ensure_tracefs() -> Status:
    """Mount tracefs at /sys/kernel/tracing if needed (root only). Never raises."""
    return _ensure_fs(TRACEFS, "tracefs", "nodev")


def ensure_bpffs() -> Status:
    """Mount the bpf file system at /sys/fs/bpf if needed (root only). Never raises."""
    return _ensure_fs(BPFFS, "bpf", "bpf")


# --------------------------------------------------------------------------
# privileges
# --------------------------------------------------------------------------

CAPS = {
    "CAP_NET_ADMIN": 12,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_RESOURCE": 24,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
}


@dataclasses.dataclass(frozen=True)
class Privileges:
    euid: int
    cap_eff: int
    caps: frozenset[str]  # the CAPS names present in CapEff

    @property
    def root(self) -> bool:
        return self.euid == 0

    def has(self, cap: str) -> bool:
        return cap in self.caps

    @property
    def can_load(self) -> bool:
        """Can load BPF programs and create maps at all."""
        return self.has("CAP_SYS_ADMIN") or self.has("CAP_BPF")

    @property
    def can_trace(self) -> bool:
        """Can load and attach tracing programs (tracepoints, uprobes, perf)."""
        return self.has("CAP_SYS_ADMIN") or (self.has("CAP_BPF") and self.has("CAP_PERFMON"))

    @property
    def can_net(self) -> bool:
        """Can load and attach networking programs (XDP, tc, socket)."""
        return self.has("CAP_SYS_ADMIN") or (self.has("CAP_BPF") and self.has("CAP_NET_ADMIN"))

    @property
    def missing(self) -> list[str]:
        """Capabilities that would be needed for everything bpfmagic does."""
        if self.has("CAP_SYS_ADMIN"):
            return []
        return [c for c in ("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN") if not self.has(c)]

    def describe(self) -> str:
        who = "root" if self.root else f"uid {self.euid}"
        caps = ", ".join(sorted(self.caps)) or "none"
        return f"{who}; capabilities: {caps}"


def privileges() -> Privileges:
    """Effective uid and the BPF-related capabilities (from CapEff)."""
    cap_eff = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    cap_eff = int(line.split()[1], 16)
                    break
    except (OSError, ValueError):
        pass
    caps = frozenset(name for name, bit in CAPS.items() if cap_eff >> bit & 1)
    return Privileges(os.geteuid(), cap_eff, caps)


# --------------------------------------------------------------------------


def prepare() -> dict:
    """Everything a Session needs before loading: headers, tracefs, bpffs.

    Returns ``{"headers": path or None, "tracefs": Status, "bpffs": Status,
    "privileges": Privileges}``. Never raises; may emit HeadersMismatchWarning.
    """
    return {
        "headers": ensure_kernel_headers(),
        "tracefs": ensure_tracefs(),
        "bpffs": ensure_bpffs(),
        "privileges": privileges(),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bpfmagic.kernel.env``: prepare the machine and say what was done."""
    before = kernel_headers_info()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = prepare()
    headers = result["headers"]
    if headers is None:
        print("kernel headers: MISSING: apt-get install -y linux-headers-amd64")
    elif before.kind == "available":
        print(f"kernel headers: built merged tree {headers} (headers {before.version}, running kernel {before.running})")
    else:
        print(f"kernel headers: {headers} ({before.kind})")
    for w in caught:
        print(f"  note: {w.message}")
    for key in ("tracefs", "bpffs"):
        ok, reason = result[key]
        print(f"{key}: {'ok' if ok else 'FAILED'}: {reason}")
    print(f"privileges: {result['privileges'].describe()}")
    ok = headers is not None and result["tracefs"].ok and result["bpffs"].ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
