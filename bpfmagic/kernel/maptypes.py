"""Map types: the kernel's enum bpf_map_type (uapi, a stable ABI), defined once
for the package, and the families the map views and readers tell apart."""

from __future__ import annotations

import enum


class MapType(enum.IntEnum):
    """enum bpf_map_type. An IntEnum: compares equal to the number fdinfo and libbpf give."""

    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    XSKMAP = 17
    SOCKHASH = 18
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    DEVMAP_HASH = 25
    STRUCT_OPS = 26
    RINGBUF = 27
    INODE_STORAGE = 28
    TASK_STORAGE = 29
    BLOOM_FILTER = 30

    @property
    def label(self) -> str:
        """The name bpfmagic shows: "lru_percpu_hash", as BPF_MAP_TYPE_LRU_PERCPU_HASH without its prefix."""
        return self.name.lower()


def type_name(map_type: int) -> str:
    """MAP_TYPE's name ("percpu_array"), or "type N" for one this table does not know."""
    try:
        return MapType(map_type).label
    except ValueError:
        return f"type {map_type}"


# Values one per possible CPU, each padded to 8 bytes.
PERCPU_TYPES = frozenset({MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH})
# Every index from 0 to max_entries - 1 exists; elements are set, never deleted.
ARRAY_TYPES = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY})
# Records a program writes for user space to consume as a stream, not entries to look up.
EVENT_TYPES = frozenset({MapType.RINGBUF, MapType.PERF_EVENT_ARRAY})
# No keys: values pushed and popped.
QUEUE_TYPES = frozenset({MapType.QUEUE, MapType.STACK})
# BPF_MAP_LOOKUP_BATCH / UPDATE_BATCH / DELETE_BATCH (hash and array maps, kernel 5.6 and later).
BATCH_TYPES = frozenset({MapType.HASH, MapType.ARRAY, MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH})
