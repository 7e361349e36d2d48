"""Environment report: what works on this machine, and the fix for what doesn't.

``checks()`` returns a list of :class:`Check`; ``format_text()`` renders it
for a terminal (``bpfmagic doctor``), ``report()`` as a DataFrame
(``%bpf doctor``). Everything here only looks; the fixes are for the user
(or ``make setup``) to run. It works, degraded, where bcc or pandas cannot
be imported, and takes well under two seconds.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import platform
import shutil
import subprocess
import sys

from .kernel import env
from .kernel.features import probe_fentry

__all__ = ["Check", "checks", "report", "format_text", "required_ok", "probe_fentry"]

DIST_PACKAGES = "/usr/lib/python3/dist-packages"
VENV_FIX = "/usr/bin/python3 -m venv --system-site-packages .venv && .venv/bin/pip install -e ."


@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = False  # a failing required check makes `bpfmagic doctor` exit 1


# --------------------------------------------------------------------------
# individual checks
# --------------------------------------------------------------------------


def _check_privileges() -> Check:
    p = env.privileges()
    if p.can_load and p.can_trace and p.can_net:
        return Check("privileges", True, p.describe(), required=True)
    missing = ", ".join(p.missing) or "CAP_BPF"
    return Check(
        "privileges",
        False,
        f"{p.describe()}; missing {missing}: programs cannot be loaded or attached",
        f"setcap cap_bpf,cap_perfmon,cap_net_admin+ep {os.path.realpath(sys.executable)}  (as root; or run bpfmagic itself as root)",
        required=True,
    )


def _check_bcc() -> Check:
    try:
        import bcc  # noqa: F401
    except Exception as e:  # ImportError, OSError from libbcc, ...
        if os.path.isdir(os.path.join(DIST_PACKAGES, "bcc")):
            return Check(
                "bcc",
                False,
                f"cannot import bcc in {sys.executable} ({type(e).__name__}: {e}); python3-bpfcc is installed for /usr/bin/python3 only",
                VENV_FIX,
                required=True,
            )
        return Check(
            "bcc",
            False,
            f"cannot import bcc ({type(e).__name__}: {e})",
            "apt-get install -y python3-bpfcc",
            required=True,
        )
    version = getattr(bcc, "__version__", "unknown version")
    return Check("bcc", True, f"bcc {version} ({os.path.dirname(bcc.__file__)})", required=True)


def _check_headers() -> Check:
    info = env.kernel_headers_info()
    fix_install = "apt-get install -y linux-headers-amd64"
    if info.kind == "missing":
        return Check(
            "kernel headers",
            False,
            f"no headers for {info.running} in /lib/modules and none under /usr/src: BCC fails with 'Unable to find kernel headers'",
            fix_install,
            required=True,
        )
    if info.kind == "modules-build":
        return Check("kernel headers", True, f"{info.path} (matches the running kernel)", required=True)
    if info.kind == "env":
        return Check("kernel headers", True, f"BCC_KERNEL_SOURCE={info.path} (set by you)", required=True)
    note = (
        f"headers of {info.version} for running kernel {info.running}: kernel struct "
        "offsets may be wrong; uapi contexts and TRACEPOINT_PROBE args are fine; "
        "use --core for kernel structs"
    )
    if info.kind == "merged":
        return Check("kernel headers", True, f"merged tree {info.path}; {note}", required=True)
    return Check(  # "available": built on first use
        "kernel headers",
        True,
        f"Debian headers {info.version} installed; merged tree not built yet (built at first use); {note}",
        f"{sys.executable} -m bpfmagic.kernel.env",
        required=True,
    )


def _check_mount(name: str, mountpoint: str, fstype: str, source: str, required: bool, why: str) -> Check:
    if env.is_mounted(mountpoint, fstype):
        return Check(name, True, f"mounted at {mountpoint}", required=required)
    return Check(name, False, f"not mounted at {mountpoint} ({why})", f"mount -t {fstype} {source} {mountpoint}", required=required)


def _check_btf() -> Check:
    path = "/sys/kernel/btf/vmlinux"
    if os.path.isfile(path):
        return Check("BTF", True, f"{path} ({os.path.getsize(path) // 1024} KiB): --core and tp_btf work")
    return Check("BTF", False, f"{path} missing: --core (CO-RE) is unavailable", "none: needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")


def _kernel_config() -> tuple[dict[str, str] | None, str]:
    """The running kernel's config and where it came from."""
    sources = ("/proc/config.gz", f"/boot/config-{env.running_kernel()}")
    for src in sources:
        try:
            opener = gzip.open if src.endswith(".gz") else open
            with opener(src, "rt") as f:
                cfg = {}
                for line in f:
                    line = line.strip()
                    if line.startswith("CONFIG_") and "=" in line:
                        k, v = line.split("=", 1)
                        cfg[k] = v
                    elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
                        cfg[line[2 : -len(" is not set")]] = "n"
                return cfg, src
        except OSError:
            continue
    return None, ""


def _check_kprobes(cfg: dict[str, str] | None, cfg_src: str) -> Check:
    alt = "use raw_tracepoint:EVENT or tracepoint:CATEGORY:EVENT targets instead"
    if cfg is not None:
        on = cfg.get("CONFIG_KPROBES", "n") in ("y", "m")
        if on:
            return Check("kprobes", True, f"CONFIG_KPROBES=y ({cfg_src})")
        return Check("kprobes", False, f"CONFIG_KPROBES is off ({cfg_src}): kprobe:/kretprobe: targets fail", f"none: {alt}")
    # no config available: the perf 'kprobe' PMU exists iff kprobe events are built in
    pmu = "/sys/bus/event_source/devices/kprobe"
    kev = os.path.join(env.TRACEFS, "kprobe_events")
    if os.path.isdir(pmu) or os.path.exists(kev):
        return Check("kprobes", True, f"{pmu if os.path.isdir(pmu) else kev} present")
    return Check("kprobes", False, f"no {pmu}: kernel built without kprobe events", f"none: {alt}")


# -- fentry: one tiny BPF_PROG_TYPE_TRACING load through bpf(2) -------------


def _check_fentry(priv: env.Privileges) -> Check:
    alt = "none: use raw_tracepoint:/tracepoint: targets, or tp_btf via --core"
    if not priv.can_load:
        return Check("fentry", False, "not checked (no CAP_BPF)", alt)
    try:
        ok, detail = probe_fentry()
    except Exception as e:  # never let a probe break the report
        ok, detail = False, f"probe failed: {e}"
    return Check("fentry", ok, detail + ("" if ok else " (fentry/fexit/LSM unavailable)"), "" if ok else alt)


def _check_jit() -> Check:
    path = "/proc/sys/net/core/bpf_jit_enable"
    try:
        with open(path) as f:
            v = f.read().strip()
    except OSError as e:
        return Check("JIT", False, f"cannot read {path}: {e}", "")
    if v in ("1", "2"):
        return Check("JIT", True, f"bpf_jit_enable={v}")
    return Check("JIT", False, f"bpf_jit_enable={v}: programs run interpreted, timings are meaningless", "sysctl -w net.core.bpf_jit_enable=1")


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")


def _check_tool(name: str, pkg: str, why: str, version_args: list[str] | None = None) -> Check:
    path = _which(name)
    if not path:
        return Check(name, False, f"not found ({why})", f"apt-get install -y {pkg}")
    detail = path
    if version_args:
        try:
            out = subprocess.run([path, *version_args], capture_output=True, text=True, timeout=2).stdout
            first = out.strip().splitlines()[0] if out.strip() else ""
            detail = f"{path} ({first})" if first else path
        except (OSError, subprocess.SubprocessError):
            pass
    return Check(name, True, detail)


# --------------------------------------------------------------------------


def checks() -> list[Check]:
    """Run every check (fast, read-only) and return them in report order."""
    priv = env.privileges()
    cfg, cfg_src = _kernel_config()
    return [
        _check_privileges(),
        _check_bcc(),
        _check_headers(),
        _check_mount("tracefs", env.TRACEFS, "tracefs", "nodev", True, "needed by tracepoints, trace_printk and uprobes"),
        _check_mount("bpffs", env.BPFFS, "bpf", "bpf", False, "needed only for pins"),
        _check_btf(),
        _check_kprobes(cfg, cfg_src),
        _check_fentry(priv),
        _check_jit(),
        _check_tool("bpftool", "bpftool", "used for vmlinux.h and inspection", ["version"]),
        _check_tool("clang", "clang llvm libbpf-dev", "needed by --core", ["--version"]),
    ]


def required_ok(results: list[Check] | None = None) -> bool:
    """True when no required check fails."""
    results = checks() if results is None else results
    return all(c.ok for c in results if c.required)


def report(results: list[Check] | None = None):
    """The checks as a pandas DataFrame (columns name, ok, required, detail, fix)."""
    import pandas as pd

    results = checks() if results is None else results
    return pd.DataFrame(
        [{"name": c.name, "ok": c.ok, "required": c.required, "detail": c.detail, "fix": c.fix} for c in results],
        columns=["name", "ok", "required", "detail", "fix"],
    )


def format_text(results: list[Check] | None = None) -> str:
    """A terminal report: one line per check, the fix under each failure."""
    results = checks() if results is None else results
    width = max(len(c.name) for c in results)
    lines = [f"bpfmagic doctor: kernel {env.running_kernel()}, python {sys.executable} ({platform.python_version()})"]
    for c in results:
        mark = "ok  " if c.ok else ("FAIL" if c.required else "no  ")
        lines.append(f"  {mark}  {c.name:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"        {'':<{width}}  fix: {c.fix}")
    bad = [c.name for c in results if c.required and not c.ok]
    lines.append("required checks failed: " + ", ".join(bad) if bad else "all required checks pass")
    return "\n".join(lines)
