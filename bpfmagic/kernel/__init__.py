"""Kernel access, one module per concept: the libbpf binding (libbpf.py),
program types (progtypes.py), attach targets and links (attach.py), bpffs
pins (pins.py), the BTF reader (btf.py) and what is built from it: map
key/value fields (fields.py), ring record structs (structs.py), global
variables' values (values.py); what the kernel says of a loaded program
(proginfo.py), what this kernel can do (features.py), the machine's mounts, headers and privileges
(env.py, privileges.py), the trusted cache (cache.py) and the one lock
around what a process shares with itself (lock.py).

Nothing here knows about cells, modules or the Session."""
