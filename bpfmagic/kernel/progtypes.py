"""Program types: the kernel's enum bpf_prog_type by name, the aliases people
type, and the types BCC's naming conventions give auto-attached functions."""

from __future__ import annotations

# Kernel enum bpf_prog_type values (== BCC's BPF.<TYPE> constants).
PROG_TYPES = {
    "socket_filter": 1,
    "kprobe": 2,
    "sched_cls": 3,
    "sched_act": 4,
    "tracepoint": 5,
    "xdp": 6,
    "perf_event": 7,
    "cgroup_skb": 8,
    "lwt_in": 10,
    "sk_skb": 14,
    "sk_msg": 16,
    "raw_tracepoint": 17,
    "flow_dissector": 22,
    "tracing": 26,
    "ext": 28,  # freplace: replaces a global function of a loaded program
    "lsm": 29,
}
PROG_TYPE_NAMES = {v: k for k, v in PROG_TYPES.items()}
# Aliases people type.
PROG_TYPE_ALIASES = {
    "tc": "sched_cls",
    "socket": "socket_filter",
    "raw_tp": "raw_tracepoint",
    "uprobe": "kprobe",
    "perf": "perf_event",
    "tp": "tracepoint",
}

# BCC's naming conventions for auto-attached functions.
AUTO_PREFIXES = {
    "raw_tracepoint__": "raw_tracepoint",
    "tracepoint__": "tracepoint",
    "kprobe__": "kprobe",
    "kretprobe__": "kprobe",
    "kfunc__": "tracing",
    "kretfunc__": "tracing",
    "lsm__": "lsm",
}


def prog_type_name(value: int | str) -> str:
    if isinstance(value, int):
        return PROG_TYPE_NAMES.get(value, f"type {value}")
    return PROG_TYPE_ALIASES.get(value, value)


def prog_type_value(name: str) -> int:
    name = prog_type_name(name.lower())
    if name not in PROG_TYPES:
        raise ValueError(f"unknown program type {name!r}; known: {', '.join(sorted(PROG_TYPES))}")
    return PROG_TYPES[name]


def auto_attach_type(func: str) -> str | None:
    for prefix, ptype in AUTO_PREFIXES.items():
        if func.startswith(prefix):
            return ptype
    return None
