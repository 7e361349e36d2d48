"""Thin ctypes binding to the system libbpf (libbpf.so.1) for what BCC lacks:
map creation and pinning, links (XDP, TCX), BPF_PROG_TEST_RUN and run stats.

Every call returns a non-negative value or raises OSError with the kernel's errno.
"""

from __future__ import annotations

import ctypes as ct
import ctypes.util
import errno as _errno
import os

from .maptypes import MapType

_lib = None


def lib() -> ct.CDLL:
    """libbpf.so.1, loaded once on first use (it may be missing on a broken machine)."""
    global _lib
    if _lib is None:
        name = "libbpf.so.1"
        try:
            _lib = ct.CDLL(name, use_errno=True)
        except OSError:
            found = ctypes.util.find_library("bpf")
            if not found:
                raise
            _lib = ct.CDLL(found, use_errno=True)
        _declare(_lib)
    return _lib


# enum bpf_attach_type values from the uapi (stable ABI); map types: maptypes.MapType
# (the uapi spellings below are its values, for callers that create maps)
BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_PROG_ARRAY = MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.PROG_ARRAY
BPF_XDP = 37
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47
BPF_STATS_RUN_TIME = 0
BPF_ANY = 0
# The kernel-internal "operation not supported" (include/linux/errno.h), which some
# bpf() commands return to user space; not in Python's errno module.
ENOTSUPP = 524


class MapCreateOpts(ct.Structure):
    _fields_ = [
        ("sz", ct.c_size_t),
        ("btf_fd", ct.c_uint32),
        ("btf_key_type_id", ct.c_uint32),
        ("btf_value_type_id", ct.c_uint32),
        ("btf_vmlinux_value_type_id", ct.c_uint32),
        ("inner_map_fd", ct.c_uint32),
        ("map_flags", ct.c_uint32),
        ("map_extra", ct.c_uint64),
        ("numa_node", ct.c_uint32),
        ("map_ifindex", ct.c_uint32),
    ]


MAX_REPEAT = 2**31 - 1  # bpf_test_run_opts.repeat is an int


class TestRunOpts(ct.Structure):
    # struct bpf_test_run_opts of libbpf 1.x
    _fields_ = [
        ("sz", ct.c_size_t),
        ("data_in", ct.c_void_p),
        ("data_out", ct.c_void_p),
        ("data_size_in", ct.c_uint32),
        ("data_size_out", ct.c_uint32),
        ("ctx_in", ct.c_void_p),
        ("ctx_out", ct.c_void_p),
        ("ctx_size_in", ct.c_uint32),
        ("ctx_size_out", ct.c_uint32),
        ("retval", ct.c_uint32),
        ("repeat", ct.c_int),
        ("duration", ct.c_uint32),
        ("flags", ct.c_uint32),
        ("cpu", ct.c_uint32),
        ("batch_size", ct.c_uint32),
    ]


class ObjectOpenOpts(ct.Structure):
    # struct bpf_object_open_opts of libbpf 1.x, up to the last field we set (libbpf reads sz)
    _fields_ = [
        ("sz", ct.c_size_t),
        ("object_name", ct.c_char_p),
        ("relaxed_maps", ct.c_bool),
        ("pin_root_path", ct.c_char_p),
    ]


class BatchOpts(ct.Structure):
    # struct bpf_map_batch_opts of libbpf 1.x
    _fields_ = [("sz", ct.c_size_t), ("elem_flags", ct.c_uint64), ("flags", ct.c_uint64)]


class LinkCreateOpts(ct.Structure):
    # struct bpf_link_create_opts: only the leading fields we set; the union that
    # follows is zeroed by the padding (libbpf checks sz, so it must be the real size)
    _fields_ = [
        ("sz", ct.c_size_t),
        ("flags", ct.c_uint32),
        ("_union", ct.c_uint8 * 64),
    ]


def _declare(l: ct.CDLL) -> None:
    l.bpf_map_create.restype = ct.c_int
    l.bpf_map_create.argtypes = [ct.c_int, ct.c_char_p, ct.c_uint32, ct.c_uint32, ct.c_uint32, ct.POINTER(MapCreateOpts)]
    l.bpf_obj_pin.argtypes = [ct.c_int, ct.c_char_p]
    vp, u32p = ct.c_void_p, ct.POINTER(ct.c_uint32)
    for fname, args in [  # the map element and batch calls (maps/ reads and writes every map type with them)
        ("bpf_map_lookup_elem", [ct.c_int, vp, vp]),
        ("bpf_map_update_elem", [ct.c_int, vp, vp, ct.c_uint64]),
        ("bpf_map_delete_elem", [ct.c_int, vp]),
        ("bpf_map_lookup_and_delete_elem", [ct.c_int, vp, vp]),
        ("bpf_map_get_next_key", [ct.c_int, vp, vp]),
        ("bpf_map_lookup_batch", [ct.c_int, vp, vp, vp, vp, u32p, vp]),
        ("bpf_map_update_batch", [ct.c_int, vp, vp, u32p, vp]),
        ("bpf_map_delete_batch", [ct.c_int, vp, u32p, vp]),
    ]:
        f = getattr(l, fname)
        f.restype, f.argtypes = ct.c_int, args
    l.bpf_prog_test_run_opts.argtypes = [ct.c_int, ct.POINTER(TestRunOpts)]
    l.bpf_enable_stats.argtypes = [ct.c_int]
    l.bpf_link_create.argtypes = [ct.c_int, ct.c_int, ct.c_int, ct.POINTER(LinkCreateOpts)]
    l.bpf_link_update.argtypes = [ct.c_int, ct.c_int, ct.c_void_p]


def errno_of(ret: int) -> int:
    """The errno of a failed libbpf call (libbpf 1.x returns -errno), 0 on success."""
    if ret >= 0:
        return 0
    return -ret if ret < -1 else (ct.get_errno() or _errno.EINVAL)


def check(ret: int, what: str) -> int:
    if ret < 0:
        err = errno_of(ret)
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def map_create_prog_array(name: str, size: int) -> int:
    opts = MapCreateOpts(sz=ct.sizeof(MapCreateOpts))
    fd = lib().bpf_map_create(MapType.PROG_ARRAY, name[:15].encode(), 4, 4, size, ct.byref(opts))
    return check(fd, f"create prog array {name}")


def map_create(map_type: int, name: str, key_size: int, value_size: int, entries: int, flags: int = 0) -> int:
    opts = MapCreateOpts(sz=ct.sizeof(MapCreateOpts), map_flags=flags)
    fd = lib().bpf_map_create(map_type, name[:15].encode(), key_size, value_size, entries, ct.byref(opts))
    return check(fd, f"create map {name}")


def wait_for_running_programs() -> None:
    """Return once every BPF program (non-sleepable) running on any CPU when called has finished.

    The kernel's own way: an update of a map-in-map waits for an RCU grace period
    (maybe_wait_bpf_programs in kernel/bpf/syscall.c) so that no program still holds the old
    inner map; a program run, tail calls and all, is one RCU read-side section. The two maps
    exist only for this call."""
    fds = []
    try:
        fds.append(map_create(MapType.ARRAY, "bm_rcu_inner", 4, 4, 1))
        opts = MapCreateOpts(sz=ct.sizeof(MapCreateOpts), inner_map_fd=fds[0])
        fds.append(check(lib().bpf_map_create(MapType.ARRAY_OF_MAPS, b"bm_rcu_wait", 4, 4, 1, ct.byref(opts)), "create map bm_rcu_wait"))
        map_update_u32(fds[1], 0, fds[0])
    finally:
        for fd in fds:
            os.close(fd)


def num_possible_cpus() -> int:
    return check(lib().libbpf_num_possible_cpus(), "count possible CPUs")


def percpu_u64_sums(fd: int, size: int, start: int = 0) -> list[int]:
    """Sum over CPUs of the u64 values at keys start..start+size-1 of a per-CPU array, one batch call."""
    ncpu = num_possible_cpus()
    keys = (ct.c_uint32 * size)()
    values = (ct.c_uint64 * (size * ncpu))()
    count = ct.c_uint32(size)
    out_batch = ct.c_uint32(0)
    # in_batch is the key before the first one read (the kernel continues after it)
    in_batch = ct.byref(ct.c_uint32(start - 1)) if start else None
    ret = lib().bpf_map_lookup_batch(fd, in_batch, ct.byref(out_batch), keys, values, ct.byref(count), None)
    if ret < 0 and -ret != _errno.ENOENT and ct.get_errno() != _errno.ENOENT:
        check(ret, "read per-CPU array")
    sums = [0] * size
    for i in range(count.value):
        if start <= keys[i] < start + size:
            sums[keys[i] - start] = sum(values[i * ncpu : (i + 1) * ncpu])
    return sums


def percpu_u64_sum(fd: int, key: int) -> int:
    """Sum over CPUs of one u64 value of a per-CPU array."""
    ncpu = num_possible_cpus()
    k, values = ct.c_uint32(key), (ct.c_uint64 * ncpu)()
    check(lib().bpf_map_lookup_elem(fd, ct.byref(k), values), f"read key {key}")
    return sum(values)


def obj_pin(fd: int, path: str) -> None:
    check(lib().bpf_obj_pin(fd, path.encode()), f"pin {path}")


def map_update_u32(fd: int, key: int, value: int) -> None:
    k, v = ct.c_uint32(key), ct.c_uint32(value)
    check(lib().bpf_map_update_elem(fd, ct.byref(k), ct.byref(v), BPF_ANY), f"update key {key}")


def map_lookup_u32(fd: int, key: int) -> int | None:
    """The u32 at key, None when empty. For a prog array, the id of the
    program in the slot (what the kernel returns to user space)."""
    k, v = ct.c_uint32(key), ct.c_uint32()
    if lib().bpf_map_lookup_elem(fd, ct.byref(k), ct.byref(v)) < 0:
        return None
    return v.value


def map_delete_u32(fd: int, key: int) -> bool:
    """Delete key; False when it was not there."""
    k = ct.c_uint32(key)
    ret = lib().bpf_map_delete_elem(fd, ct.byref(k))
    if ret < 0 and (-ret == _errno.ENOENT or ct.get_errno() == _errno.ENOENT):
        return False
    check(ret, f"delete key {key}")
    return True


def enable_stats() -> int:
    """An fd that keeps kernel run-time stats on while it is open."""
    return check(lib().bpf_enable_stats(BPF_STATS_RUN_TIME), "enable run-time stats")


def link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    opts = LinkCreateOpts(sz=ct.sizeof(LinkCreateOpts))
    return check(lib().bpf_link_create(prog_fd, target_fd, attach_type, ct.byref(opts)), "create link")


def test_run(prog_fd: int, data: bytes | None = None, ctx: bytes | None = None, repeat: int = 0, data_out_size: int | None = None) -> dict:
    """BPF_PROG_TEST_RUN: returns retval, duration (ns per run, as the kernel
    averages it), data_out and ctx_out."""
    opts = TestRunOpts(sz=ct.sizeof(TestRunOpts))
    keep = []
    if data is not None:
        buf_in = ct.create_string_buffer(bytes(data), len(data))
        out_size = data_out_size if data_out_size is not None else max(len(data) + 256, 4096)
        buf_out = ct.create_string_buffer(out_size)
        keep += [buf_in, buf_out]
        opts.data_in, opts.data_size_in = ct.cast(buf_in, ct.c_void_p), len(data)
        opts.data_out, opts.data_size_out = ct.cast(buf_out, ct.c_void_p), out_size
    if ctx is not None:
        ctx_in = ct.create_string_buffer(bytes(ctx), len(ctx))
        keep.append(ctx_in)
        opts.ctx_in, opts.ctx_size_in = ct.cast(ctx_in, ct.c_void_p), len(ctx)
    if not 0 <= repeat <= MAX_REPEAT:  # ctypes would wrap it silently
        raise ValueError(f"repeat must be 0..{MAX_REPEAT} (got {repeat})")
    opts.repeat = repeat
    check(lib().bpf_prog_test_run_opts(prog_fd, ct.byref(opts)), "BPF_PROG_TEST_RUN")
    data_out = bytes(keep[1].raw[: opts.data_size_out]) if data is not None else None
    return {"retval": opts.retval, "duration_ns": opts.duration, "data_out": data_out}


def fdinfo(fd: int) -> dict[str, str]:
    """Key/value pairs of /proc/self/fdinfo/FD: prog_id, run_cnt, run_time_ns,
    map_id, owner_prog_type, ... as the kernel reports them."""
    out = {}
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


_object_api_declared = False


def object_api() -> ct.CDLL:
    """libbpf with its object, program, map and BTF calls declared (the --core path, globals)."""
    global _object_api_declared
    l = lib()
    if not _object_api_declared:
        vp, cp = ct.c_void_p, ct.c_char_p
        for fname, res, args in [
            ("bpf_object__open_mem", vp, [vp, ct.c_size_t, ct.POINTER(ObjectOpenOpts)]),
            ("bpf_object__load", ct.c_int, [vp]),
            ("bpf_object__close", None, [vp]),
            ("bpf_object__next_program", vp, [vp, vp]),
            ("bpf_object__next_map", vp, [vp, vp]),
            ("bpf_program__name", cp, [vp]),
            ("bpf_program__section_name", cp, [vp]),
            ("bpf_program__fd", ct.c_int, [vp]),
            ("bpf_program__type", ct.c_int, [vp]),
            ("bpf_program__set_type", ct.c_int, [vp, ct.c_int]),
            ("bpf_program__expected_attach_type", ct.c_int, [vp]),
            ("bpf_program__set_attach_target", ct.c_int, [vp, ct.c_int, cp]),
            ("bpf_program__autoload", ct.c_bool, [vp]),
            ("bpf_program__set_autoload", ct.c_int, [vp, ct.c_bool]),
            ("bpf_program__attach", vp, [vp]),
            ("bpf_map__name", cp, [vp]),
            ("bpf_map__fd", ct.c_int, [vp]),
            ("bpf_map__type", ct.c_int, [vp]),
            ("bpf_map__max_entries", ct.c_uint32, [vp]),
            ("bpf_map__key_size", ct.c_uint32, [vp]),
            ("bpf_map__value_size", ct.c_uint32, [vp]),
            ("bpf_map__set_key_size", ct.c_int, [vp, ct.c_uint32]),
            ("bpf_map__set_value_size", ct.c_int, [vp, ct.c_uint32]),
            ("bpf_map__reuse_fd", ct.c_int, [vp, ct.c_int]),
            ("bpf_map__set_pin_path", ct.c_int, [vp, cp]),
            ("bpf_map__pin_path", cp, [vp]),
            ("bpf_map__is_pinned", ct.c_bool, [vp]),
            ("bpf_link__destroy", ct.c_int, [vp]),
            ("bpf_program__set_log_level", ct.c_int, [vp, ct.c_uint32]),
            ("libbpf_set_print", vp, [vp]),
            ("libbpf_get_error", ct.c_long, [vp]),
            ("bpf_object__btf", vp, [vp]),
            ("btf__find_by_name_kind", ct.c_int32, [vp, cp, ct.c_uint32]),
            ("btf__type_by_id", vp, [vp, ct.c_uint32]),
            ("btf__resolve_size", ct.c_int64, [vp, ct.c_uint32]),
            ("btf__name_by_offset", cp, [vp, ct.c_uint32]),
            ("bpf_map__btf_key_type_id", ct.c_uint32, [vp]),
            ("bpf_map__btf_value_type_id", ct.c_uint32, [vp]),
            ("bpf_map__initial_value", vp, [vp, ct.POINTER(ct.c_size_t)]),
        ]:
            f = getattr(l, fname)
            f.restype, f.argtypes = res, args
        _object_api_declared = True
    return l


# perf_buffer__new's callbacks: sample(ctx, cpu, data, size) and lost(ctx, cpu, count).
_PERF_SAMPLE_FN = ct.CFUNCTYPE(None, ct.c_void_p, ct.c_int, ct.c_void_p, ct.c_uint32)
_PERF_LOST_FN = ct.CFUNCTYPE(None, ct.c_void_p, ct.c_int, ct.c_uint64)


class PerfBuffer:
    """libbpf's per-CPU readers of one perf event array (``perf_buffer__new``):
    ON_EVENT(cpu, data, size) and ON_LOST(count) run from consume(), as BCC's do.
    One epoll fd stands for all CPUs' buffers."""

    def __init__(self, map_fd: int, page_cnt: int, on_event, on_lost):
        l = object_api()
        vp = ct.c_void_p
        for fname, res, args in [
            ("perf_buffer__new", vp, [ct.c_int, ct.c_size_t, _PERF_SAMPLE_FN, _PERF_LOST_FN, vp, vp]),
            ("perf_buffer__consume", ct.c_int, [vp]),
            ("perf_buffer__epoll_fd", ct.c_int, [vp]),
            ("perf_buffer__free", None, [vp]),
        ]:
            f = getattr(l, fname)
            f.restype, f.argtypes = res, args
        # kept referenced: libbpf calls them for as long as the buffer lives
        self._sample = _PERF_SAMPLE_FN(lambda _ctx, cpu, data, size: on_event(cpu, data, size))
        self._lost = _PERF_LOST_FN(lambda _ctx, _cpu, count: on_lost(count))
        ptr = l.perf_buffer__new(map_fd, page_cnt, self._sample, self._lost, None, None)
        if not ptr:  # libbpf 1.x: NULL, and the error in errno (libbpf_get_error reads it)
            err = -l.libbpf_get_error(None) or _errno.ENOMEM
            raise OSError(err, f"perf_buffer__new: {os.strerror(err)}")
        self._ptr = ptr

    def fds(self) -> list[int]:
        return [lib().perf_buffer__epoll_fd(self._ptr)] if self._ptr else []

    def consume(self) -> None:
        if self._ptr:
            lib().perf_buffer__consume(self._ptr)

    def close(self) -> None:
        if self._ptr:
            lib().perf_buffer__free(self._ptr)
            self._ptr = None
