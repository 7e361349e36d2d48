"""What a local unprivileged user can do to root's sessions through the
world-writable bpffs and the caches: nothing. The attacks run in a private
mount namespace with a bpffs of its own (tests/namespaces.py), so the real
/sys/fs/bpf/bpfmagic of concurrent sessions is never touched."""

from __future__ import annotations

import os
import pwd

import pytest

from ..namespaces import in_private_bpffs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plants files as another user: needs root")

# Digit-named directories of user nobody, the shape of dead sessions' pin
# dirs (pids above any live one), each holding a file that must survive.
PLANT = """
    import pwd, tempfile
    from bpfmagic import EnvironmentProblem, Session
    nobody = pwd.getpwnam("nobody").pw_uid
    def bait_dir():
        import atexit, shutil
        bait = tempfile.mkdtemp(prefix="bpfmagic-bait-")
        atexit.register(shutil.rmtree, bait, True)
        for entry in ("3999998", "3999999"):
            os.mkdir(os.path.join(bait, entry))
            os.mkdir(os.path.join(bait, entry, "flocked"))
            with open(os.path.join(bait, entry, "keep"), "w") as f:
                f.write("nobody's")
            for path in (os.path.join(bait, entry), os.path.join(bait, entry, "keep")):
                os.chown(path, nobody, nobody)
        os.chown(bait, nobody, nobody)
        os.chmod(bait, 0o755)
        return bait
    def survivors(bait):
        return sorted(e for e in os.listdir(bait) if os.path.exists(os.path.join(bait, e, "keep")))
    def start():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = Session()
        warned = " ".join(str(w.message) for w in caught if "/sys/fs/bpf/bpfmagic" in str(w.message))
        try:
            s.progarray("jt", 4)
            refused = ""
        except EnvironmentProblem as e:
            refused = str(e)
        s.close()
        return warned, refused
"""


def test_a_symlinked_pin_root_is_neither_followed_nor_pinned_through():
    facts = in_private_bpffs(
        PLANT,
        """
        bait = bait_dir()
        os.symlink(bait, "/sys/fs/bpf/bpfmagic")
        os.lchown("/sys/fs/bpf/bpfmagic", nobody, nobody)
        warned, refused = start()
        report(survivors=survivors(bait), added=sorted(set(os.listdir(bait)) - {"3999998", "3999999"}),
               still_a_link=os.path.islink("/sys/fs/bpf/bpfmagic"), warned=warned, refused=refused)
    """,
    )
    assert facts["survivors"] == ["3999998", "3999999"], "cleanup followed the link and deleted nobody's dirs"
    assert facts["added"] == [], "the session pinned through the link"
    assert facts["still_a_link"]
    for text in (facts["refused"], facts["warned"]):
        assert "symbolic link" in text and "user nobody" in text and "rm -rf /sys/fs/bpf/bpfmagic" in text


def test_a_pin_root_owned_by_another_user_is_refused():
    facts = in_private_bpffs(
        PLANT,
        """
        root = "/sys/fs/bpf/bpfmagic"
        os.mkdir(root)
        os.mkdir(root + "/3999999")
        os.mkdir(root + "/3999999/flocked")
        for path in (root, root + "/3999999", root + "/3999999/flocked"):
            os.chown(path, nobody, nobody)
        os.chmod(root, 0o777)
        warned, refused = start()
        report(entries=sorted(os.listdir(root)), inside=os.listdir(root + "/3999999"),
               owner=os.stat(root).st_uid, mode=os.stat(root).st_mode & 0o7777, refused=refused)
    """,
    )
    assert facts["entries"] == ["3999999"], "the session pinned into nobody's directory or removed from it"
    assert facts["inside"] == ["flocked"]
    assert facts["owner"] != 0 and facts["mode"] == 0o777  # not taken over either: the message says what to do
    assert "belongs to user nobody" in facts["refused"] and "rm -rf /sys/fs/bpf/bpfmagic" in facts["refused"]


def test_cleanup_of_dead_entries_never_follows_a_link_or_removes_others_files():
    """In a root of our own: a dead entry holding a link to nobody's files, an
    entry that is itself a link, and an entry owned by nobody. Only the dead
    entry of our own goes, and nothing behind any link."""
    facts = in_private_bpffs(
        PLANT,
        """
        root = "/sys/fs/bpf/bpfmagic"
        bait = bait_dir()
        os.mkdir(root, 0o777)
        os.chmod(root, 0o777)                                 # ours, but loose: tightened, not refused
        os.mkdir(root + "/3999990")                            # dead session of ours (lock free)
        os.mkdir(root + "/3999990/flocked")
        os.mkdir(root + "/3999990/s1")
        os.symlink(bait + "/3999998", root + "/3999990/s1/jt")  # a link inside: unlinked, not followed
        os.symlink(bait, root + "/3999991")                    # an entry that is a link: left alone
        os.mkdir(root + "/3999992")                            # nobody's entry: not ours to remove
        os.mkdir(root + "/3999992/flocked")
        os.chown(root + "/3999992", nobody, nobody)
        warned, refused = start()
        report(entries=sorted(e for e in os.listdir(root) if e.startswith("39999")),
               survivors=survivors(bait), mode=os.stat(root).st_mode & 0o7777, warned=warned, refused=refused)
    """,
    )
    assert facts["entries"] == ["3999991", "3999992"]
    assert facts["survivors"] == ["3999998", "3999999"]
    assert facts["mode"] == 0o700
    assert not facts["refused"] and not facts["warned"]


def test_pin_directories_are_0700_whatever_the_umask():
    facts = in_private_bpffs("""
        os.umask(0)
        from bpfmagic import Session
        s = Session()
        s.progarray("jt", 4)
        modes = {}
        for top, dirs, files in os.walk("/sys/fs/bpf/bpfmagic"):
            modes[top] = os.stat(top).st_mode & 0o7777
        s.close()
        report(modes=modes)
    """)
    assert len(facts["modes"]) >= 4  # root, process, session, calls
    assert set(facts["modes"].values()) == {0o700}, facts["modes"]


def test_session_mounts_bpffs_and_tracefs_when_they_are_not_mounted():
    from ..namespaces import without_bpffs_and_tracefs

    facts = without_bpffs_and_tracefs("""
        from bpfmagic import Session
        from bpfmagic.kernel import env
        before = [env.is_mounted(env.BPFFS, "bpf"), env.is_mounted(env.TRACEFS, "tracefs")]
        s = Session()
        after = [env.is_mounted(env.BPFFS, "bpf"), env.is_mounted(env.TRACEFS, "tracefs")]
        m = s.load("t", '''
            BPF_PROG_ARRAY(jt, 4);
            BPF_ARRAY(hits, u64, 1);
            TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
                int k = 0;
                hits.atomic_increment(k);
                return 0;
            }
        ''')
        for _ in range(3):
            os.getppid()
        hits = m["hits"][0].value
        pinned = os.path.exists(os.path.join(s.pin_dir(), "jt"))
        s.close()
        report(before=before, after=after, hits=hits, pinned=pinned)
    """)
    assert facts["before"] == [False, False]
    assert facts["after"] == [True, True]
    assert facts["pinned"] and facts["hits"] >= 3


# ---------------------------------------------------------------- the cache
# Each test runs a child with a cache of its own (XDG_CACHE_HOME, HOME): the
# shared one of this machine is not part of the experiment.

CACHE_CHILD = """
    import pwd, shutil, stat
    from bpfmagic import Session
    from bpfmagic.kernel import libbpf
    nobody = pwd.getpwnam("nobody").pw_uid
    cache = os.path.join(os.environ["XDG_CACHE_HOME"], "bpfmagic")
    BCC_CELL = "int f(struct xdp_md *ctx) { return XDP_DROP; }\\n"
    CORE_CELL = 'SEC("xdp") int f(struct xdp_md *ctx) { __u64 x = XDP_DROP; return x; }\\n'
    def loads():
        # One BCC and one --core cell, each in a new session (which checks the caches again).
        out = {}
        for kind, source in (("bcc", BCC_CELL), ("core", CORE_CELL)):
            s = Session()
            try:
                m = s.load("m", source, core=kind == "core")
                out[kind] = libbpf.test_run(m.programs["f"].fd, data=bytes(64))["retval"]
            except Exception as e:
                out[kind] = f"{type(e).__name__}: {e}"[:300]
            s.close()
        return out
    def tree():
        return next(os.path.join(cache, "headers", d) for d in os.listdir(os.path.join(cache, "headers"))
                    if not d.startswith("."))
    def vmlinux_h():
        d = os.path.join(cache, "vmlinux")
        return os.path.join(d, os.listdir(d)[0], "vmlinux.h")
    def modes():
        found = {}
        for top, dirs, files in os.walk(cache):
            for name in [top] + [os.path.join(top, f) for f in files]:
                st = os.lstat(name)
                if not stat.S_ISLNK(st.st_mode):
                    found[os.path.relpath(name, cache)] = [stat.S_IMODE(st.st_mode), st.st_uid, stat.S_ISDIR(st.st_mode)]
        return found
"""


def in_own_cache(*pieces: str) -> dict:
    import shutil
    import tempfile

    from ..namespaces import run_python

    home = tempfile.mkdtemp(prefix="bpfmagic-cache-test-")
    env = {k: v for k, v in os.environ.items() if k != "BCC_KERNEL_SOURCE"}
    env.update(HOME=home, XDG_CACHE_HOME=os.path.join(home, "cache"))
    try:
        return run_python([CACHE_CHILD, *pieces], [], env=env)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_caches_made_under_umask_000_are_0700_and_0600():
    facts = in_own_cache("""
        os.umask(0)
        report(loads=loads(), modes=modes())
    """)
    assert facts["loads"] == {"bcc": 1, "core": 1}
    modes = facts["modes"]
    assert any(p.endswith("vmlinux.h") for p in modes) and any(p.endswith(".bpfmagic-headers.json") for p in modes)
    bad = {path: oct(mode) for path, (mode, uid, isdir) in modes.items() if mode & 0o077 or uid != os.geteuid() or (isdir and mode != 0o700)}
    assert not bad, f"cache entries other users can read or write: {bad}"


def test_a_cache_another_user_could_write_is_rebuilt_not_used():
    """User nobody could write into a cache level (0777, or owned by them) and
    plants a header: root's next cell must compile the real one."""
    facts = in_own_cache("""
        first = loads()
        import atexit, tempfile
        planted = tempfile.mkdtemp(prefix="bpfmagic-planted-")
        atexit.register(shutil.rmtree, planted, True)
        os.makedirs(planted + "/linux")
        with open(planted + "/linux/kconfig.h", "w") as f:
            f.write("#error planted by nobody\\n")
        with open(planted + "/vmlinux.h", "w") as f:
            f.write("#error planted by nobody\\n")
        after = {}
        # 1. include/ of the headers tree made 0777 (as an old umask did); nobody swaps include/linux.
        include = os.path.join(tree(), "include")
        os.chmod(include, 0o777)
        os.unlink(include + "/linux")
        os.symlink(planted + "/linux", include + "/linux")
        os.lchown(include + "/linux", nobody, nobody)
        after["world_writable_include"] = loads()
        after["include_linux"] = os.readlink(os.path.join(tree(), "include", "linux"))
        # 2. the vmlinux directory owned by nobody, who replaced vmlinux.h.
        vdir = os.path.dirname(vmlinux_h())
        os.chown(vdir, nobody, nobody)
        shutil.copy(planted + "/vmlinux.h", vmlinux_h())
        os.chown(vmlinux_h(), nobody, nobody)
        after["nobodys_vmlinux_dir"] = loads()
        # 3. the cache's top directory 0777: nothing under it can be trusted.
        os.chmod(cache, 0o777)
        after["world_writable_top"] = loads()
        report(first=first, after=after, modes=modes())
    """)
    assert facts["first"] == {"bcc": 1, "core": 1}
    for attack in ("world_writable_include", "nobodys_vmlinux_dir", "world_writable_top"):
        assert facts["after"][attack] == {"bcc": 1, "core": 1}, (attack, facts["after"][attack])
    assert facts["after"]["include_linux"].startswith("/usr/src/")
    bad = {path: (oct(mode), uid) for path, (mode, uid, _) in facts["modes"].items() if mode & 0o077 or uid != os.geteuid()}
    assert not bad


def test_a_damaged_cache_is_rebuilt():
    """A truncated vmlinux.h made every --core cell fail; an emptied include/
    every BCC cell. Both are found and redone."""
    facts = in_own_cache("""
        first = loads()
        with open(vmlinux_h(), "r+") as f:
            f.truncate(4096)
        include = os.path.join(tree(), "include")
        for name in os.listdir(include):
            os.unlink(os.path.join(include, name))
        report(first=first, after=loads(), include=len(os.listdir(os.path.join(tree(), "include"))),
               vmlinux_size=os.path.getsize(vmlinux_h()))
    """)
    assert facts["first"] == {"bcc": 1, "core": 1}
    assert facts["after"] == {"bcc": 1, "core": 1}
    assert facts["include"] > 10 and facts["vmlinux_size"] > 100_000


def test_uprobe_paths_another_user_could_change_are_refused(session, tmp_path):
    """A uprobe on a path is on what that file holds when root attaches: a file another user
    can write, or swap in a directory they can write, would choose where root's probe goes.
    A FIFO would block the cell; neither may happen."""
    import pwd
    import shutil

    from bpfmagic import AttachError

    src = "int on_call(struct pt_regs *ctx) { return 0; }\n"
    libc = os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")
    private = tmp_path / "mine"
    private.mkdir(mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # writable by all, not sticky
    nobody = pwd.getpwnam("nobody").pw_uid
    os.mkfifo(private / "fifo")
    (private / "notelf").write_bytes(b"#!/bin/sh\n")
    theirs = private / "theirs.so"
    shutil.copy(libc, theirs)
    os.chown(theirs, nobody, -1)
    swappable = shared / "libc.so"
    shutil.copy(libc, swappable)
    os.symlink(swappable, private / "link.so")
    cases = {
        private / "fifo": "is not a regular file",
        private / "missing.so": "No such file",
        private / "notelf": "is not an ELF file",
        theirs: "can be changed by another user",
        private / "link.so": "lets another user replace libc.so",
    }
    for path, said in cases.items():
        with pytest.raises(AttachError, match=said):
            session.load("up", src, attach={"on_call": f"uprobe:{path}:getpid"})
    ours = private / "libc-copy.so"
    shutil.copy(libc, ours)
    m = session.load("up", src, attach={"on_call": f"uprobe:{ours}:getpid"})
    assert [a.target.kind for a in m.attachments] == ["uprobe"]


# ------------------------------------------------------------------ bpfmagic run's sockets


def _tmpdir(monkeypatch, path):
    import tempfile

    monkeypatch.setenv("TMPDIR", str(path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile caches its first answer


def test_run_refuses_a_tmpdir_another_user_can_swap_entries_in(monkeypatch):
    """Another user's TMPDIR (or a 0777 one without the sticky bit) would let them swap root's
    socket directory for their own and connect to root's kernel: refused, saying why."""
    import tempfile
    from pathlib import Path

    from bpfmagic.cli import private_sockets_dir
    from bpfmagic.errors import EnvironmentProblem

    nobody = pwd.getpwnam("nobody").pw_uid
    tmp_path = Path(tempfile.mkdtemp(dir="/tmp"))  # short: a long TMPDIR is not used at all (socket paths)
    request_cleanup = str(tmp_path)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, nobody, nobody)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    for base in (theirs, open_dir, theirs / "sub"):
        if base.name == "sub":
            base.mkdir()  # root's own directory inside theirs: its parent is still theirs
        _tmpdir(monkeypatch, base)
        with pytest.raises(EnvironmentProblem, match="another user can replace entries in"):
            private_sockets_dir()
        assert not [p for p in os.listdir(base) if p.startswith("bpfmagic-kernel-")]
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # /tmp's shape: others cannot rename what is ours
    _tmpdir(monkeypatch, sticky)
    made = private_sockets_dir()
    try:
        assert os.path.dirname(made) == str(sticky) and (os.stat(made).st_mode & 0o777) == 0o700
    finally:
        import shutil

        shutil.rmtree(request_cleanup)


def test_run_killed_leaves_sockets_the_next_run_removes(tmp_path, monkeypatch):
    """SIGKILL of `bpfmagic run` leaves its socket directory (and the kernel's connection file
    in it); the next run removes the directories of dead runs, and only this user's."""
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    import nbformat

    from bpfmagic.cli import private_sockets_dir

    base = Path(tempfile.mkdtemp(dir="/tmp"))  # short: a long TMPDIR is not used at all (socket paths)
    _tmpdir(monkeypatch, base)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\nprint('started', flush=True)\ntime.sleep(60)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "sleeps.ipynb"
    nbformat.write(nb, str(path))
    env = dict(os.environ, TMPDIR=str(base))
    run = subprocess.Popen([sys.executable, "-m", "bpfmagic.cli", "run", str(path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        left = []
        while time.monotonic() < deadline:
            left = [p for p in os.listdir(base) if p.startswith("bpfmagic-kernel-")]
            if left and os.path.exists(base / left[0] / "kernel.json"):
                break
            time.sleep(0.2)
        assert left and os.path.exists(base / left[0] / "kernel.json"), "no socket directory with the connection file"
        time.sleep(2)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        assert os.path.isdir(base / left[0])  # what SIGKILL leaves
        nobody = pwd.getpwnam("nobody").pw_uid
        foreign = base / "bpfmagic-kernel-3999999-x"
        foreign.mkdir()
        os.chown(foreign, nobody, nobody)
        mine = private_sockets_dir()
        now = sorted(p for p in os.listdir(base) if p.startswith("bpfmagic-kernel-"))
        assert now == sorted([os.path.basename(mine), foreign.name]), now  # the dead run's gone, nobody's kept
    finally:
        run.kill()
        run.wait()
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- users without full privileges
# issue 19 item 8: what a user holding CAP_BPF but not everything is told, in place of a raw
# PermissionError, "apt-get install linux-headers" or libbpf's "try raising ulimit -l".

UNPRIVILEGED_CELLS = """
    from bpfmagic import Session
    XDP_CORE = 'SEC("xdp") int f(struct xdp_md *ctx) { return XDP_DROP; }'
    XDP_BCC = "int f(struct xdp_md *ctx) { return XDP_DROP; }"
    TRACING_CORE = 'SEC("raw_tp/sys_enter") int f(void *ctx) { return 0; }'
    def refusal(source, core):
        s = Session()  # each in a new session: BCC's header tree is built when a session starts
        try:
            s.load("m", source, core=core)
            return "loaded"
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        finally:
            s.close()
"""


def _debian_headers_installed_but_no_build_dir() -> bool:
    """Headers BCC can use only through bpfmagic's merged tree (this machine kind, KERNEL.md)."""
    import glob

    return bool(glob.glob("/usr/src/linux-headers-*-common")) and not os.path.isdir(f"/lib/modules/{os.uname().release}/build")


def test_nobody_with_cap_bpf_and_no_home_is_told_where_the_caches_go_and_the_fix_works():
    import shutil
    import tempfile

    from ..namespaces import BECOME_NOBODY_WITH_CAP_BPF, IMPORT_EVERYTHING, run_python

    nobody = pwd.getpwnam("nobody").pw_uid
    cache = tempfile.mkdtemp(prefix="bpfmagic-nobody-cache-")
    os.chown(cache, nobody, nobody)
    env = {k: v for k, v in os.environ.items() if k not in ("BCC_KERNEL_SOURCE", "XDG_CACHE_HOME")}
    env["HOME"] = "/nonexistent"  # nobody's home in /etc/passwd
    try:
        facts = run_python(
            [
                IMPORT_EVERYTHING,
                UNPRIVILEGED_CELLS,
                BECOME_NOBODY_WITH_CAP_BPF,
                f"""
                caps = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff"))
                without = {{"core": refusal(XDP_CORE, True), "bcc": refusal(XDP_BCC, False)}}
                os.environ["XDG_CACHE_HOME"] = {cache!r}  # what the message says to do
                report(uid=os.getuid(), caps=caps, without=without, fixed={{"core": refusal(XDP_CORE, True), "bcc": refusal(XDP_BCC, False)}})
                """,
            ],
            [],
            env=env,
            timeout=300,
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    assert facts["uid"] == nobody and facts["caps"] == f"{1 << 39:016x}"  # CAP_BPF alone
    core = facts["without"]["core"]
    assert core.startswith("EnvironmentProblem: bpfmagic keeps its caches"), core
    assert "in /nonexistent/.cache/bpfmagic (XDG_CACHE_HOME is not set and HOME is /nonexistent)" in core
    assert "cannot create /nonexistent: Permission denied" in core and "Set XDG_CACHE_HOME to a directory this user can write" in core
    bcc = facts["without"]["bcc"]
    if _debian_headers_installed_but_no_build_dir():
        assert bcc.startswith("EnvironmentProblem: BCC found no kernel headers: those of kernel "), bcc
        assert "are installed, but bpfmagic could not build BCC's header tree from them" in bcc and "Set XDG_CACHE_HOME" in bcc
        assert "apt-get" not in bcc
    # With XDG_CACHE_HOME set as told, both cells get as far as the kernel, which wants CAP_NET_ADMIN for XDP.
    for kind, text in facts["fixed"].items():
        assert text.startswith("EnvironmentProblem: m.f (as xdp): xdp programs (networking) need CAP_NET_ADMIN besides CAP_BPF"), (kind, text)
        assert "uid 65534; capabilities: CAP_BPF" in text


def test_root_with_only_cap_bpf_is_told_the_capability_a_core_cell_needs():
    from ..namespaces import ROOT_WITH_CAP_BPF_ONLY, run_python

    facts = run_python(
        [UNPRIVILEGED_CELLS, "report(xdp=refusal(XDP_CORE, True), tracing=refusal(TRACING_CORE, True), bcc=refusal(XDP_BCC, False))"],
        ROOT_WITH_CAP_BPF_ONLY,
        timeout=300,
    )
    for kind in ("xdp", "bcc"):
        assert facts[kind].startswith("EnvironmentProblem: m.f (as xdp): xdp programs (networking) need CAP_NET_ADMIN besides CAP_BPF"), facts
        assert "this process has root; capabilities: CAP_BPF." in facts[kind]
    assert "ulimit" not in facts["xdp"]  # libbpf's guess for any EPERM as root
    tracing = facts["tracing"]
    assert tracing.startswith("EnvironmentProblem: m.f (as raw_tracepoint): raw_tracepoint programs (tracing) need CAP_PERFMON besides CAP_BPF"), (
        tracing
    )
