"""`make test-kernels`: the kernel-dependent tests on this kernel and, in virtual machines,
on every other kernel installed under /boot (Debian's linux-image-amd64 gives 6.1, which
has kprobes and BPF trampolines; linux-image-6.12-amd64 gives 6.12, which also has 6.10's
tail-call counter shared across subprograms). Each guest is booted by virtme-ng under QEMU with this
machine's filesystem shared read-only and a writable run directory; the tests run there
with the project's own venv. Prints one matrix (test x kernel: pass / FAIL / skip) and
the line `kernels: K kernels, P passed, F failed`; exits 1 when a test failed anywhere.

    .venv/bin/python tests/kernels/matrix.py [--out build/kernels] [--timeout 1800] [--kvm] [--kernel 6.12 ...]

Software emulation (no KVM: a KVM guest hangs in early boot on these hosts): a guest
boots in about a minute and compiles slowly, so timings in it mean nothing; the objects
it compiles are cached in the run directory for the next run."""

from __future__ import annotations

import argparse
import glob
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

# Run as a script, outside the tests package: its own copy of tests/paths.REPO.
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The tests whose outcome depends on the kernel's features (each asserts the branch it finds).
KERNEL_TESTS = [
    "tests/kernels/test_kernel_features.py",
    "tests/kernels/test_fentry_freplace.py",
    "tests/kernels/test_optional_programs.py",
    "tests/kernels/test_tail_call_counter.py",
    "tests/kernel/test_counters.py",
    "tests/kernel/test_core.py::test_fentry_sections_follow_the_kernel",
    "tests/kernel/test_env.py::test_doctor_kprobes_matches_the_kernel",
]


def guest_kernels(only: list[str] | None = None) -> list[str]:
    """Kernel images under /boot other than the running kernel's; with `only`, those whose
    release starts with one of its entries ("6.12" picks 6.12.118+deb12-amd64)."""
    running = platform.release()
    found = sorted(p for p in glob.glob("/boot/vmlinuz-*") if os.path.basename(p)[len("vmlinuz-") :] != running and os.access(p, os.R_OK))
    if only:
        found = [p for p in found if any(os.path.basename(p)[len("vmlinuz-") :].startswith(o) for o in only)]
    return found


def pytest_command(junit: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *KERNEL_TESTS]


def run_here(out: str, timeout: float) -> tuple[str, float]:
    junit = os.path.join(out, "host.xml")
    started = time.monotonic()
    subprocess.run(pytest_command(junit), cwd=REPO, timeout=timeout, stdin=subprocess.DEVNULL)
    return junit, time.monotonic() - started


def run_in_guest(kernel: str, out: str, timeout: float, kvm: bool) -> tuple[str, float]:
    release = os.path.basename(kernel)[len("vmlinuz-") :]
    # absolute: the guest's HOME and caches live there, and clang runs from temporary directories
    run_dir = os.path.join(os.path.abspath(out), release)
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    junit = os.path.join(run_dir, "junit.xml")
    if os.path.exists(junit):
        os.unlink(junit)
    vng = shutil.which("vng", path=os.path.dirname(sys.executable)) or shutil.which("vng")
    if vng is None:
        raise SystemExit("virtme-ng is missing: `make test-kernels` installs it (pip install virtme-ng)")
    guest = [os.path.join(REPO, "tests", "kernels", "guest.sh"), run_dir, *pytest_command(junit)]
    cmd = [vng, "--run", kernel, "--user", "root", "--memory", "2G", "--cpus", "2", "--rwdir", run_dir, "--cwd", REPO]
    if not kvm:
        cmd.insert(1, "--disable-kvm")
    # vng runs virtme-run by name; the command goes after --, as the guest's argv
    env = dict(os.environ, PATH=os.path.dirname(vng) + os.pathsep + os.environ.get("PATH", ""))
    started = time.monotonic()
    # QEMU rewrites a regular file given as its stdout from offset 0: the guest's output comes
    # through a pipe and is copied into the log here.
    with open(os.path.join(run_dir, "console.log"), "w") as log:
        guest_run = subprocess.Popen(
            [*cmd, "--", *guest], cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        killer = threading.Timer(timeout, guest_run.kill)
        killer.start()
        try:
            for line in guest_run.stdout:
                log.write(line.decode(errors="replace"))
                log.flush()
            guest_run.wait()
        finally:
            killer.cancel()
        if guest_run.returncode < 0:
            log.write(f"\nmatrix: the guest ran past {timeout:.0f} s and was stopped\n")
    return junit, time.monotonic() - started


def outcomes(junit: str) -> dict[str, str]:
    """test id -> pass / FAIL / skip: reason, from pytest's JUnit XML ({} when there is none)."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return {}
    out = {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            out[name] = "FAIL"
        elif (skipped := case.find("skipped")) is not None:
            out[name] = "skip: " + (skipped.get("message") or "")[:40]
        else:
            out[name] = "pass"
    return out


def matrix(results: dict[str, dict[str, str]]) -> str:
    kernels = list(results)
    tests = sorted({t for r in results.values() for t in r})
    width = max([len(t) for t in tests] + [20])
    lines = [f"{'test':<{width}}  " + "  ".join(f"{k:<18}" for k in kernels)]
    for t in tests:
        lines.append(f"{t:<{width}}  " + "  ".join(f"{results[k].get(t, 'did not run'):<18}" for k in kernels))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "build", "kernels"), help="run directories (default build/kernels)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per kernel (default 1800)")
    ap.add_argument("--kvm", action="store_true", help="use KVM (hangs in early boot on some hosts)")
    ap.add_argument("--kernel", nargs="+", metavar="RELEASE", help="only the guest kernels whose release starts so (default: all under /boot)")
    args = ap.parse_args(argv)
    guests = guest_kernels(args.kernel)
    if args.kernel and not guests:
        raise SystemExit(f"matrix: no kernel under /boot matches {' '.join(args.kernel)}")
    os.makedirs(args.out, mode=0o700, exist_ok=True)
    results, seconds = {}, {}
    here = f"{platform.release()} (host)"
    junit, seconds[here] = run_here(args.out, args.timeout)
    results[here] = outcomes(junit)
    for kernel in guests:
        release = os.path.basename(kernel)[len("vmlinuz-") :]
        print(f"matrix: booting {release} (software emulation: slow) ...", flush=True)
        junit, seconds[release] = run_in_guest(kernel, args.out, args.timeout, args.kvm)
        results[release] = outcomes(junit)
        if not results[release]:
            results[release] = {t: "did not run" for t in results[here]}
            print(f"matrix: no results from {release}: see {os.path.join(args.out, release, 'console.log')}", flush=True)
    print()
    print(matrix(results))
    print()
    for k, s in seconds.items():
        print(f"{k}: {s:.0f} s")
    passed = sum(v == "pass" for r in results.values() for v in r.values())
    failed = sum(v in ("FAIL", "did not run") for r in results.values() for v in r.values())
    print(f"kernels: {len(results)} kernels, {passed} passed, {failed} failed")
    if len(results) < 2:
        print("(no other kernel under /boot: `make test-kernels` installs Debian's linux-image-amd64)")
    return 1 if failed or len(results) < 2 else 0


if __name__ == "__main__":
    sys.exit(main())
