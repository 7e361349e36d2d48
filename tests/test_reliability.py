"""Reliability under threads, floods, special files and bad input: each test
is a fault that once crashed, hung or misled, run on the real kernel."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import needs_root

pytestmark = needs_root

REPO = Path(__file__).resolve().parent.parent


def run_child(code: str, timeout: float = 120, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run CODE in a fresh Python that imports this checkout's bpfmagic: a
    crash (segfault, abort) there is a failed test, not a dead test run."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([*(prefix or []), sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def child_result(r: subprocess.CompletedProcess) -> dict:
    """The JSON the child printed on its last stdout line."""
    assert r.returncode == 0, f"child died with {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- threads

def test_two_sessions_load_from_two_threads_at_once():
    """BCC's compiler and fd 2 are process-wide: two Sessions loading at once
    from two threads once crashed inside BPF.__init__ and left fd 2 pointing at
    a deleted temp file."""
    r = run_child("""
        import json, os, threading
        from bpfmagic import Session
        SRC = '''
        BPF_ARRAY(hits, u64, 1);
        int count(struct xdp_md *ctx) {
            int k = 0; u64 *v = hits.lookup(&k);
            if (v) *v += 1;
            return %d;
        }
        '''
        before = os.fstat(2)
        barrier = threading.Barrier(2)
        results = {}
        def work(worker):
            s = Session()
            got = []
            try:
                barrier.wait()
                for i in range(10):
                    retval = 10 * worker + i % 4  # XDP_ABORTED..XDP_TX: a value test_run hands back
                    m = s.load(f"m{i}", SRC % (retval % 4))
                    run = s.test_run(f"m{i}.count", data=bytes(64), repeat=3)
                    got.append([run.retval, m["hits"][0].value])
            except BaseException as e:
                got.append(repr(e))
            finally:
                s.close()
            results[worker] = got
        threads = [threading.Thread(target=work, args=(w,)) for w in range(2)]
        for t in threads: t.start()
        for t in threads: t.join()
        after = os.fstat(2)
        print(json.dumps({"results": results, "fd2_same": (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)}))
    """)
    out = child_result(r)
    assert out["fd2_same"], "fd 2 no longer is the original stderr"
    for worker in ("0", "1"):
        assert out["results"][worker] == [[(10 * int(worker) + i % 4) % 4, 3] for i in range(10)], out


# ---------------------------------------------------------------- a cell never kills the process

FETCH_ADD = r"""
BPF_ARRAY(counter, {t}, 1);
int bump(struct xdp_md *ctx) {{
    int zero = 0;
    {t} *c = counter.lookup(&zero);
    if (!c)
        return XDP_ABORTED;
    {t} k = __sync_fetch_and_add(c, 1);  /* the old value, used */
    return k % 4;
}}
"""


def test_fetch_add_whose_result_is_used_counts_correctly(session):
    m = session.load("fetch64", FETCH_ADD.format(t="u64"))
    retvals = [session.test_run("fetch64.bump", data=bytes(64)).retval for _ in range(6)]
    assert retvals == [0, 1, 2, 3, 0, 1]  # each run saw the value before its own add
    assert m["counter"][0].value == 6


def test_an_aborting_libbcc_compile_is_an_error_not_a_dead_process(session):
    """libbcc's LLVM calls abort() for a 32-bit fetch-add whose value is used
    (BPF v1 has no such instruction); the cell is compiled in a child first."""
    from bpfmagic import BpfCompileError
    with pytest.raises(BpfCompileError) as info:
        session.load("fetch32", FETCH_ADD.format(t="u32"))
    text = str(info.value)
    assert "Invalid usage of the XADD return value" in text
    assert "fetch32:8" in text and "__sync_fetch_and_add(c, 1)" in text  # the cell's own line
    assert "u64" in text and "-mcpu=v3" in text  # what to do instead
    assert "fetch32" not in session.modules
    # the process and libbcc still work
    session.load("fetch64", FETCH_ADD.format(t="u64"))
    assert session.test_run("fetch64.bump", data=bytes(64)).retval == 0
