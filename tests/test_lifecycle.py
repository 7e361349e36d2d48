"""Lifecycle across processes: liveness that does not depend on pids (another
PID namespace), and a killed process that leaves nothing loaded."""
from __future__ import annotations

import os

import pytest

from .namespaces import in_private_bpffs

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
from bpfmagic import Session, libbpf
s = Session()
s.load("c", CHAIN, slots={"jt[1]": "drop"})
print(os.getpid(), s.pin_dir(), libbpf.test_run(s.program("c.entry").fd, data=bytes(64))["retval"], flush=True)
sys.stdin.readline()
from bpfmagic import pins
reaper = pins.process_dir().reaper
os.kill(reaper.pid, signal.SIGKILL)
reaper.wait()
os._exit(0)
"""


def test_sessions_in_another_pid_namespace_keep_each_others_pins_and_clean_dead_ones():
    """A session in a child PID namespace cannot see the parent's pid (nor the
    parent the child's real one): neither may take the other for dead. Once
    the child is dead (its reaper killed too, so only cleanup can free it),
    the next session removes its pins. Run in a private bpffs: the sessions
    of this machine are not part of the experiment."""
    facts = in_private_bpffs(f"CHAIN = {CHAIN!r}", f"CHILD = {PID_NS_CHILD!r}", """
        import signal, subprocess
        from bpfmagic import Session, libbpf
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
    """)
    assert facts["child_pid"] < 10 and facts["child_retval"] == 1  # really in its own PID namespace, and working
    assert facts["parent_pins_kept"], "the session in the child PID namespace removed the parent's pins"
    assert facts["parent_retval"] == 1
    assert facts["child_pins_kept"], "a parent session removed the pins of the live child"
    assert facts["left_by_dead_child"]  # without its reaper, only the next session's cleanup frees it
    assert facts["cleaned"], "the dead child's pins were not cleaned"
