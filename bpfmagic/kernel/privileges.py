"""Refusals said as what they are: a missing capability for a program type
(EPERM), or the process's open-file limit (EMFILE), instead of a verifier or
compile error."""

from __future__ import annotations

import os
import re

from ..errors import EnvironmentProblem
from . import env

# Program types the kernel loads only with CAP_PERFMON, or CAP_NET_ADMIN, besides CAP_BPF (bpf_prog_load).
PERFMON_PROG_TYPES = {"kprobe", "tracepoint", "raw_tracepoint", "perf_event", "tracing", "lsm"}
NET_ADMIN_PROG_TYPES = {"sched_cls", "sched_act", "xdp", "lwt_in", "sk_skb", "sk_msg", "flow_dissector", "sock_ops"}
_GRANT = (
    "run Jupyter as root, or grant the capabilities to the interpreter: setcap cap_bpf,cap_perfmon,cap_net_admin+ep $(readlink -f $(which python3))"
)


def privilege_problem(what: str, ptype: str | None, text: str) -> EnvironmentProblem | None:
    """When TEXT (an exception and what went to fd 2) says the kernel refused
    WHAT for lack of privilege: which capability is missing, for what. None
    when the refusal is not about privileges, or this process has CAP_SYS_ADMIN
    (then EPERM is the kernel's policy, not a missing capability)."""
    if not re.search(r"Operation not permitted|Need super-user|Permission denied", text):
        return None
    p = env.privileges()
    if p.has("CAP_SYS_ADMIN"):
        return None
    have = f"this process has {p.describe()}"
    pinned = re.search(r"could not open bpf map: (\w+), error: Operation not permitted", text)
    if not p.has("CAP_BPF"):
        why = f"{what}: loading BPF programs and creating maps needs CAP_BPF (or root)"
    elif ptype in PERFMON_PROG_TYPES and not p.has("CAP_PERFMON"):
        why = f"{what}: {ptype} programs (tracing) need CAP_PERFMON besides CAP_BPF"
    elif ptype in NET_ADMIN_PROG_TYPES and not p.has("CAP_NET_ADMIN"):
        why = f"{what}: {ptype} programs (networking) need CAP_NET_ADMIN besides CAP_BPF"
    elif pinned:
        why = (
            f"{what}: map {pinned[1]} is shared through a pin, and BCC opens pinned maps by id "
            "(BPF_MAP_GET_FD_BY_ID), which the kernel allows only with CAP_SYS_ADMIN; session prog "
            "arrays (BPF_PROG_ARRAY, slots, tail-call counters) therefore need root"
        )
        return EnvironmentProblem(f"{why}; {have}. To fix: run Jupyter as root (or with CAP_SYS_ADMIN)", text)
    elif ptype is None and not p.has("CAP_PERFMON"):
        why = (
            f"{what}: the kernel refused it with EPERM; tracing programs, bpf_trace_printk and reads of "
            "kernel memory need CAP_PERFMON besides CAP_BPF"
        )
    else:
        why = f"{what}: the kernel refused it with EPERM; some helpers and program types are for CAP_SYS_ADMIN (root) only"
    return EnvironmentProblem(f"{why}; {have}. To fix: {_GRANT}", text)


def fd_limit_problem(what: str, text: str) -> EnvironmentProblem | None:
    """EMFILE said as what it is: the process's open-file limit, not the verifier."""
    if "Too many open files" not in text:
        return None
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_now = soft
    raise_to = hard if hard != resource.RLIM_INFINITY else 1 << 20
    return EnvironmentProblem(
        f"{what}: this process reached its open-file limit ({open_now} files open, `ulimit -n` is {soft}); "
        f"every loaded program, map and link holds one. Unload modules (`%bpf unload NAME`, `%bpf reset`), "
        f"or raise the limit: `ulimit -n {raise_to}` in the shell that starts Jupyter, or in the notebook "
        f"`import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({raise_to}, {raise_to}))` "
        f"(up to the hard limit, {hard if hard != resource.RLIM_INFINITY else 'unlimited'})",
        text,
    )
