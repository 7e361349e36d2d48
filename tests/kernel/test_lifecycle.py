"""Lifecycle across processes: liveness that does not depend on pids (another
PID namespace), and a killed process that leaves nothing loaded."""

from __future__ import annotations

import os

import pytest

from ..namespaces import in_private_bpffs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs and makes namespaces: needs root")

# A dispatcher that tail-calls jt[1] (a program that drops): XDP_DROP (1)
# proves the slot is filled, XDP_PASS (2) that it is empty or the array gone.
CHAIN = """
BPF_PROG_ARRAY(jt, 4);
int drop(struct xdp_md *ctx) { return XDP_DROP; }
int entry(struct xdp_md *ctx) { jt.call(ctx, 1); return XDP_PASS; }
"""


# Run in a child PID namespace: a session with a filled slot; on a line from
# stdin it dies without cleaning up and with its reaper killed first.
PID_NS_CHILD = """
import os, signal, sys, warnings
warnings.simplefilter("ignore")
from bpfmagic import Session
from bpfmagic.kernel import libbpf
s = Session()
s.load("c", CHAIN, slots={"jt[1]": "drop"})
print(os.getpid(), s.pin_dir(), libbpf.test_run(s.program("c.entry").fd, data=bytes(64))["retval"], flush=True)
sys.stdin.readline()
from bpfmagic.kernel import pins
reaper = pins.process_dir().reaper_pid
os.kill(reaper, signal.SIGKILL)
while True:  # dead once a zombie (it is no child of ours: not ours to wait for) or gone
    try:
        with open(f"/proc/{reaper}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
    except FileNotFoundError:
        break
os._exit(0)
"""


def test_sessions_in_another_pid_namespace_keep_each_others_pins_and_clean_dead_ones():
    """A session in a child PID namespace cannot see the parent's pid (nor the
    parent the child's real one): neither may take the other for dead. Once
    the child is dead (its reaper killed too, so only cleanup can free it),
    the next session removes its pins. Run in a private bpffs: the sessions
    of this machine are not part of the experiment."""
    facts = in_private_bpffs(
        f"CHAIN = {CHAIN!r}",
        f"CHILD = {PID_NS_CHILD!r}",
        """
        import signal, subprocess
        from bpfmagic import Session
        from bpfmagic.kernel import libbpf
        def retval(s, spec):
            return libbpf.test_run(s.program(spec).fd, data=bytes(64))["retval"]
        parent = Session()
        parent.load("a", CHAIN, slots={"jt[1]": "drop"})
        child = subprocess.Popen(["unshare", "-p", "-f", "--mount-proc", sys.executable, "-c", "CHAIN = %r\\n" % CHAIN + CHILD],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        child_pid, child_dir, child_retval = child.stdout.readline().split()
        parent_pins_kept = os.path.exists(os.path.join(parent.pin_dir(), "jt"))
        parent.load("b", "BPF_PROG_ARRAY(jt, 4);\\nint entry(struct xdp_md *ctx) { jt.call(ctx, 1); return XDP_PASS; }\\n")
        parent_retval = retval(parent, "b.entry")  # b opened the pinned jt: still the same array
        other = Session()
        other.close()
        child_pins_kept = os.path.exists(os.path.join(child_dir, "jt"))
        child.stdin.write("die\\n")
        child.stdin.flush()
        child.wait()
        left_by_dead_child = os.path.exists(child_dir)
        third = Session()
        cleaned = not os.path.exists(os.path.dirname(child_dir))
        third.close()
        parent.close()
        report(child_pid=int(child_pid), child_retval=int(child_retval), parent_pins_kept=parent_pins_kept,
               parent_retval=parent_retval, child_pins_kept=child_pins_kept,
               left_by_dead_child=left_by_dead_child, cleaned=cleaned)
    """,
    )
    assert facts["child_pid"] < 10 and facts["child_retval"] == 1  # really in its own PID namespace, and working
    assert facts["parent_pins_kept"], "the session in the child PID namespace removed the parent's pins"
    assert facts["parent_retval"] == 1
    assert facts["child_pins_kept"], "a parent session removed the pins of the live child"
    assert facts["left_by_dead_child"]  # without its reaper, only the next session's cleanup frees it
    assert facts["cleaned"], "the dead child's pins were not cleaned"


# A kernel process with everything a notebook holds: a dispatcher attached to
# raw_tracepoint:sys_enter tail-calling a slotted program that streams into a
# ring buffer. It prints the ids of every BPF object it holds an fd of (its
# prog arrays, counters, slotted program, ring, link) and its pin directory.
LOADED_CHILD = """
import json, os, sys, time, warnings
warnings.simplefilter("ignore")
from bpfmagic import Session
s = Session()
s.load("k", '''
struct event { u32 pid; };
BPF_PROG_ARRAY(jt, 4);
BPF_RINGBUF_OUTPUT(events, 8);
int on_enter(struct bpf_raw_tracepoint_args *ctx) {
    struct event e = {};
    e.pid = bpf_get_current_pid_tgid() >> 32;
    events.ringbuf_output(&e, sizeof(e), 0);
    return 0;
}
int dispatch(struct bpf_raw_tracepoint_args *ctx) { jt.call(ctx, 1); return 0; }
''', attach={"dispatch": "raw_tracepoint:sys_enter"}, slots={"jt[1]": "on_enter"})
stream = s.stream("events")
while stream.count == 0:
    time.sleep(0.01)
ids = {"prog": set(), "map": set(), "link": set()}
for fd in os.listdir("/proc/self/fdinfo"):
    try:
        text = open(f"/proc/self/fdinfo/{fd}").read()
    except OSError:
        continue
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    for kind in ids:
        if f"{kind}_id" in fields and not (kind == "prog" and "link_id" in fields):
            ids[kind].add(int(fields[f"{kind}_id"]))
print(json.dumps({"ids": {k: sorted(v) for k, v in ids.items()}, "pin_dir": s.pin_dir(),
                  "streamed": stream.count}), flush=True)
time.sleep(600)
"""


def _spawn(code: str, cache: str | None = None):
    """CODE in a child process; CACHE: its own XDG_CACHE_HOME."""
    import subprocess
    import sys

    from ..namespaces import child_env

    env = child_env(dict(os.environ, XDG_CACHE_HOME=cache) if cache else None)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd="/")


def test_sigkill_frees_everything_within_5_seconds_without_another_session():
    import json
    import signal
    import time

    from ..conftest import kernel_objects

    child = _spawn(LOADED_CHILD)
    try:
        facts = json.loads(child.stdout.readline())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed = time.monotonic()
    held = {kind: set(ids) for kind, ids in facts["ids"].items()}
    assert held["prog"] and held["link"] and len(held["map"]) >= 3 and facts["streamed"] > 0
    process_dir = os.path.dirname(facts["pin_dir"])
    assert os.path.isdir(process_dir) or time.monotonic() - killed < 5

    def remaining():
        now = kernel_objects()
        return {kind: ids & now[kind] for kind, ids in held.items() if ids & now[kind]}

    while (remaining() or os.path.exists(process_dir)) and time.monotonic() - killed < 5:
        time.sleep(0.05)
    freed_after = time.monotonic() - killed
    assert not remaining(), f"still loaded {freed_after:.1f} s after SIGKILL: {remaining()}"
    assert not os.path.exists(process_dir), f"{process_dir} still there {freed_after:.1f} s after SIGKILL"
    print(f"everything of the killed session gone {freed_after:.2f} s after SIGKILL")


# Compiles a big --core cell again and again, each time a new text (an
# unchanged one would come from the object cache without running clang).
CORE_COMPILING_CHILD = """
import itertools, warnings
warnings.simplefilter("ignore")
from bpfmagic import Session
s = Session()
print("ready", flush=True)
for n in itertools.count():
    source = "".join(f'SEC("xdp") int f{i}_{n}(struct xdp_md *ctx) {{ return XDP_PASS; }}\\n' for i in range(3000))
    s.load("slow", source, core=True)
"""


def test_a_core_compile_killed_midway_leaves_no_temp_dir(tmp_path):
    import signal
    import tempfile
    import time

    from bpfmagic.kernel import pins

    child = _spawn(CORE_COMPILING_CHILD, cache=str(tmp_path))  # its objects stay out of the shared cache
    compile_dir = None
    try:
        child.stdout.readline()
        deadline = time.monotonic() + 60
        while compile_dir is None and time.monotonic() < deadline:
            compile_dir = _clang_dir_of(child.pid)
            time.sleep(0.005)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed = time.monotonic()
    assert compile_dir and os.path.basename(compile_dir).startswith(pins.COMPILE_DIR_PREFIX)
    assert os.path.dirname(compile_dir) == tempfile.gettempdir()
    limit = pins.COMPILE_DIR_IDLE + 30  # clang of the dead process finishes first
    while os.path.exists(compile_dir) and time.monotonic() - killed < limit:
        time.sleep(0.1)
    assert not os.path.exists(compile_dir), f"{compile_dir} left {limit} s after its process was killed"
    print(f"compile dir of the killed process gone {time.monotonic() - killed:.2f} s after SIGKILL")


def _clang_dir_of(pid: int) -> str | None:
    """The working directory of a child process of PID (clang runs in the compile dir)."""
    for task in os.listdir("/proc"):
        if not task.isdigit():
            continue
        try:
            with open(f"/proc/{task}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                cwd = os.readlink(f"/proc/{task}/cwd")
                if "bpfmagic-core-" in cwd:
                    return cwd
        except (OSError, ValueError, IndexError):
            continue
    return None


# ---------------------------------------------------------------- prog arrays emptied before release
# The kernel empties a prog array when its last user reference goes, but that
# races with a process taking an fd by id (bpftool map list): the array and the
# programs in it can then stay loaded for good. bpfmagic empties its arrays
# itself first. The tests hold such an fd by id, as bpftool would: while it is
# open the kernel empties nothing, so what they see is what bpfmagic emptied.


def _map_fd_by_id(map_id: int) -> int:
    import ctypes as ct

    from bpfmagic.kernel import libbpf

    get = libbpf.lib().bpf_map_get_fd_by_id
    get.argtypes, get.restype = [ct.c_uint32], ct.c_int
    fd = get(map_id)
    assert fd >= 0, f"no map with id {map_id}"
    return fd


def _filled_slots(fd: int, size: int) -> dict[int, int]:
    """index -> id of the program in it, read through FD."""
    from bpfmagic.kernel import libbpf

    return {i: pid for i in range(size) if (pid := libbpf.map_lookup_u32(fd, i)) is not None}


def test_reset_empties_every_slot_of_a_prog_array_before_letting_it_go(session):
    m = session.load("c", CHAIN, slots={"jt[1]": "drop"})
    m.bpf["jt"][3] = m.programs["drop"].fd  # a slot filled through BCC's own table: the session has no record of it
    held = _map_fd_by_id(session.arrays["jt"].map_id)
    try:
        drop_id = m.programs["drop"].prog_id
        assert _filled_slots(held, 4) == {1: drop_id, 3: drop_id}
        session.reset()
        assert _filled_slots(held, 4) == {}
    finally:
        os.close(held)


# A session with jt[1] filled, killed: its reaper removes the pins.
KILLED_WITH_A_FILLED_ARRAY = """
import time, warnings
warnings.simplefilter("ignore")
from bpfmagic import Session
s = Session()
m = s.load("c", CHAIN, slots={"jt[1]": "drop"})
print(s.arrays["jt"].map_id, m.programs["drop"].prog_id, s.pin_dir(), flush=True)
time.sleep(600)
"""


def test_the_reaper_empties_the_prog_arrays_of_a_killed_session():
    import signal
    import time

    child = _spawn(KILLED_WITH_A_FILLED_ARRAY.replace("CHAIN", repr(CHAIN)))
    try:
        map_id, drop_id, pin_dir = child.stdout.readline().split()
        held = _map_fd_by_id(int(map_id))
        filled = _filled_slots(held, 4)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    try:
        assert filled == {1: int(drop_id)}
        process_dir = os.path.dirname(pin_dir)
        deadline = time.monotonic() + 5
        while os.path.exists(process_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(process_dir)
        assert _filled_slots(held, 4) == {}
    finally:
        os.close(held)
