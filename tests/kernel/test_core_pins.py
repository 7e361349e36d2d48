"""Maps a --core cell pins by name (LIBBPF_PIN_BY_NAME), in the shape L3AF's
chains have: a root XDP program tail-calling through a pinned prog array,
network functions with pinned maps of their own. They are pinned in the
session's own directory, shared by its cells, removed with their modules;
a map pinned under /sys/fs/bpf by someone else is used only when the cell
names its directory."""

from __future__ import annotations

import contextlib
import ctypes as ct
import os

import pytest

from bpfmagic import BpfVerifierError, EnvironmentProblem
from bpfmagic.kernel import libbpf

from ..conftest import needs_root

pytestmark = needs_root

XDP_PASS, XDP_DROP, XDP_TX = 2, 1, 3
FRAME = bytes(64)
BPFFS = "/sys/fs/bpf"

ROOT = """#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 8);
    __type(key, u32);
    __type(value, u32);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} xdp_root_array SEC(".maps");

SEC("xdp")
int xdp_root(struct xdp_md *ctx)
{
    bpf_tail_call(ctx, &xdp_root_array, 0);
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
"""

# A network function of the chain: counts what it drops in a map it pins by name.
RATELIMIT = """#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, u32);
    __type(value, u64);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} rl_drop_count SEC(".maps");

SEC("xdp")
int _xdp_ratelimiting(struct xdp_md *ctx)
{
    u32 key = 0;
    u64 *dropped = bpf_map_lookup_elem(&rl_drop_count, &key);
    if (dropped)
        __sync_fetch_and_add(dropped, 1);
    return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
"""


def name_pins(session) -> list[str]:
    path = os.path.join(session.pin_dir(), "by-name")
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def map_id(module, table: str) -> int:
    return int(libbpf.fdinfo(module.object.map_handle(table).fd)["map_id"])


def u64_at(fd: int, key: int = 0) -> int:
    k, v = ct.c_uint32(key), ct.c_uint64()
    assert libbpf.lib().bpf_map_lookup_elem(fd, ct.byref(k), ct.byref(v)) == 0
    return v.value


def test_a_pinned_chain_loaded_again_after_reset_tail_calls_into_the_new_array(session):
    before = set(os.listdir(BPFFS))

    def load_chain():
        session.load("root", ROOT, core=True)
        session.load("rl", RATELIMIT, core=True, slots={"xdp_root_array[0]": "_xdp_ratelimiting"})
        return session.test_run("root.xdp_root", data=FRAME).retval

    assert load_chain() == XDP_DROP
    assert name_pins(session) == ["rl_drop_count"]  # the prog array is the session's own, pinned by it
    assert set(os.listdir(BPFFS)) == before  # nothing pinned at libbpf's default place
    session.reset()
    assert name_pins(session) == []

    assert load_chain() == XDP_DROP
    slot = session.slots("xdp_root_array").set_index("index").loc[0]
    assert (slot["program"], slot["calls"], slot["taken"], slot["missed"]) == ("rl._xdp_ratelimiting", 1, 1, 0)
    assert session.modules["rl"]["rl_drop_count"][0].value == 1  # a new map, not the one of before the reset
    pin_dir = session.pin_dir()
    session.close()
    assert not os.path.lexists(pin_dir)
    assert set(os.listdir(BPFFS)) == before


def test_cells_share_a_map_pinned_by_name_and_a_rerun_keeps_it(session):
    session.load("root", ROOT, core=True)
    rl = session.load("rl", RATELIMIT, core=True, slots={"xdp_root_array[0]": "_xdp_ratelimiting"})
    # Another cell declaring the same pinned map (a reader of the limiter's state) gets the same map.
    reader = session.load("reader", RATELIMIT.replace("_xdp_ratelimiting", "rl_reader"), core=True)
    assert map_id(reader, "rl_drop_count") == map_id(rl, "rl_drop_count")
    session.test_run("root.xdp_root", data=FRAME, repeat=3)

    session.load("rl", RATELIMIT, core=True, slots={"xdp_root_array[0]": "_xdp_ratelimiting"})  # re-run
    assert name_pins(session) == ["rl_drop_count"]
    session.test_run("root.xdp_root", data=FRAME)
    assert session.modules["rl"]["rl_drop_count"][0].value == 4  # the pinned map went on across the re-run

    session.unload("rl")
    assert name_pins(session) == ["rl_drop_count"]  # the reader still holds it
    session.unload("reader")
    assert name_pins(session) == []


def test_a_failed_load_leaves_no_pin(session):
    rejected = RATELIMIT.replace("return XDP_DROP;", "return *(u8 *)(long)ctx->data;")  # no bounds check: refused
    with pytest.raises(BpfVerifierError):
        session.load("rl", rejected, core=True)
    assert name_pins(session) == []
    assert "rl" not in session.modules


# A cell reading a config value and tail-calling through a prog array, both pinned by name:
# what it returns says which maps it got.
PINNED_USER = """#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, u32);
    __type(value, u64);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} CONFIG SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 4);
    __type(key, u32);
    __type(value, u32);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} JUMPS SEC(".maps");

SEC("xdp")
int entry(struct xdp_md *ctx)
{
    u32 key = 0;
    u64 *mode = bpf_map_lookup_elem(&CONFIG, &key);
    if (mode && *mode == 42)
        return XDP_TX;
    bpf_tail_call(ctx, &JUMPS, 0);
    return XDP_PASS;
}
"""


@contextlib.contextmanager
def planted_pins(directory: str, config: str, jumps: str, decoy_fd: int):
    """A config map holding 42 and a prog array holding DECOY, pinned in DIRECTORY as
    another loader (or another user) would leave them."""
    fds = []
    paths = [os.path.join(directory, config), os.path.join(directory, jumps)]
    try:
        fds.append(libbpf.map_create(libbpf.BPF_MAP_TYPE_ARRAY, config, 4, 8, 1))
        k, v = ct.c_uint32(0), ct.c_uint64(42)
        assert libbpf.lib().bpf_map_update_elem(fds[0], ct.byref(k), ct.byref(v), 0) == 0
        fds.append(libbpf.map_create_prog_array(jumps, 4))
        libbpf.map_update_u32(fds[1], 0, decoy_fd)
        for fd, path in zip(fds, paths):
            libbpf.obj_pin(fd, path)
        yield fds
    finally:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for fd in fds:
            os.close(fd)


def test_a_map_pinned_under_sys_fs_bpf_by_someone_else_is_not_used(session):
    config, jumps = f"bm_cfg_{os.getpid()}", f"bm_jmp_{os.getpid()}"
    decoy = session.load("decoy", 'SEC("xdp") int tx(struct xdp_md *ctx) { return XDP_TX; }', core=True)
    with planted_pins(BPFFS, config, jumps, decoy.programs["tx"].fd) as (config_fd, _):
        m = session.load("user", PINNED_USER.replace("CONFIG", config).replace("JUMPS", jumps), core=True)
        assert session.test_run("user.entry", data=FRAME).retval == XDP_PASS  # its own config (0), its own empty array
        assert map_id(m, config) != int(libbpf.fdinfo(config_fd)["map_id"])
        assert any(f"{BPFFS}/{config} exists and was not used" in note for note in m.notes)
        assert any(f"{BPFFS}/{jumps} exists and was not used" in note for note in m.notes)
        session.unload("user")
        assert os.path.exists(os.path.join(BPFFS, config)) and u64_at(config_fd) == 42  # someone else's: left alone


def test_a_pin_root_named_by_the_cell_shares_its_maps_on_purpose(session):
    shared = os.path.join(BPFFS, f"bm_share_{os.getpid()}")
    os.mkdir(shared, 0o700)
    try:
        decoy = session.load("decoy", 'SEC("xdp") int tx(struct xdp_md *ctx) { return XDP_TX; }', core=True)
        with planted_pins(shared, "cfg", "jumps", decoy.programs["tx"].fd) as (config_fd, _):
            m = session.load("user", PINNED_USER.replace("CONFIG", "cfg").replace("JUMPS", "jumps"), core=True, pin_root=shared)
            assert session.test_run("user.entry", data=FRAME).retval == XDP_TX  # the config pinned there: 42
            assert map_id(m, "cfg") == int(libbpf.fdinfo(config_fd)["map_id"])
            session.unload("user")
            assert sorted(os.listdir(shared)) == ["cfg", "jumps"]  # found there, so left there
        # A map the session pins in a named root (none was there) goes with the module.
        session.load("user", PINNED_USER.replace("CONFIG", "cfg").replace("JUMPS", "jumps"), core=True, pin_root=shared)
        assert os.listdir(shared) == ["cfg"]  # the prog array is the session's array
        session.unload("user")
        assert os.listdir(shared) == []
    finally:
        os.rmdir(shared)


def test_a_pin_root_others_can_write_or_reach_through_a_link_is_refused(session, tmp_path):
    source = RATELIMIT
    with pytest.raises(EnvironmentProblem, match="every user can pin there"):
        session.load("rl", source, core=True, pin_root=BPFFS)
    open_dir = os.path.join(BPFFS, f"bm_open_{os.getpid()}")
    link = os.path.join(BPFFS, f"bm_link_{os.getpid()}")
    os.mkdir(open_dir)
    os.chmod(open_dir, 0o777)
    try:
        with pytest.raises(EnvironmentProblem, match="writable by other users"):
            session.load("rl", source, core=True, pin_root=open_dir)
        os.symlink(str(tmp_path), link)
        with pytest.raises(EnvironmentProblem, match="symbolic link"):
            session.load("rl", source, core=True, pin_root=link)
        with pytest.raises(EnvironmentProblem, match="under /sys/fs/bpf"):
            session.load("rl", source, core=True, pin_root=str(tmp_path))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.rmdir(open_dir)
    assert "rl" not in session.modules
