"""Environment preparation (bpfmagic.kernel.env), doctor and the CLI, on the real machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bpfmagic import doctor
from bpfmagic.kernel import env, features

from ..conftest import kernel_has_kprobes
from ..helpers import clean_env, run_python

PRIV = env.privileges()
needs_root = pytest.mark.skipif(not (PRIV.can_load and PRIV.can_trace), reason="needs CAP_BPF+CAP_PERFMON")


@needs_root
def test_bcc_compiles_and_loads_with_prepared_headers(tmp_path):
    r = run_python(
        """
        import time, warnings
        warnings.simplefilter("ignore")
        from bpfmagic.kernel import env
        print(env.ensure_kernel_headers())
        from bcc import BPF
        b = BPF(text=r'''
        BPF_ARRAY(cnt, u64, 1);
        RAW_TRACEPOINT_PROBE(sys_enter) {
            int k = 0;
            u64 *v = cnt.lookup(&k);
            if (v) __sync_fetch_and_add(v, 1);
            return 0;
        }''')
        time.sleep(0.1)
        open("/dev/null").close()
        print(b["cnt"][0].value)
        b.cleanup()
        """,
        env_=clean_env(XDG_CACHE_HOME=str(tmp_path)),
        python="/usr/bin/python3",
    )
    assert r.returncode == 0, r.stderr
    headers, count = r.stdout.split()
    assert os.path.isdir(headers)
    assert int(count) > 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_ensure_tracefs_then_doctor_reports_ok():
    ok, reason = env.ensure_tracefs()
    assert ok, reason
    assert env.is_mounted("/sys/kernel/tracing", "tracefs")
    ok, reason = env.ensure_bpffs()
    assert ok, reason
    assert env.is_mounted("/sys/fs/bpf", "bpf")
    by_name = {c.name: c for c in doctor.checks()}
    assert by_name["tracefs"].ok and by_name["bpffs"].ok
    assert os.path.exists("/sys/kernel/tracing/available_events")


def test_doctor_kprobes_matches_the_kernel():
    kp = next(c for c in doctor.checks() if c.name == "kprobes")
    assert kp.ok == kernel_has_kprobes()
    if not kp.ok:
        assert "raw_tracepoint" in kp.fix


def test_doctor_btf_and_jit_match_machine():
    by_name = {c.name: c for c in doctor.checks()}
    assert by_name["BTF"].ok == os.path.isfile("/sys/kernel/btf/vmlinux")
    jit = Path("/proc/sys/net/core/bpf_jit_enable").read_text().strip()
    assert by_name["JIT"].ok == (jit in ("1", "2"))


@pytest.mark.skipif(not os.path.isfile("/sys/kernel/btf/vmlinux"), reason="no BTF")
def test_btf_func_lookup_matches_bpftool():
    tid = features.btf_func_id("bpf_fentry_test1")
    assert isinstance(tid, int) and tid > 0
    bpftool = shutil.which("bpftool") or shutil.which("bpftool", path="/usr/sbin:/sbin")
    assert bpftool, "bpftool is missing: `make setup` installs it"
    out = subprocess.run([bpftool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux"], capture_output=True, text=True, timeout=60).stdout
    assert f"[{tid}] FUNC 'bpf_fentry_test1'" in out


def test_doctor_without_bcc_blocked_import():
    r = run_python(
        """
        import sys
        sys.modules["bcc"] = None  # import bcc -> ImportError
        from bpfmagic import doctor
        cs = doctor.checks()
        b = next(c for c in cs if c.name == "bcc")
        assert not b.ok and b.required, b
        print(b.fix)
        print(doctor.format_text(cs))
        """
    )
    assert r.returncode == 0, r.stderr
    fix = r.stdout.splitlines()[0]
    assert fix in ("apt-get install -y python3-bpfcc", doctor.VENV_FIX)
    assert "FAIL" in r.stdout and f"fix: {fix}" in r.stdout
    assert "required checks failed: bcc" in r.stdout
