"""One way to a map (bpfmagic/maps/): module["t"], module.map("t") and Session.map give
the view class of the map's type, and that view still answers the spellings code
written for BCC's tables uses (``.value``, struct fields as attributes, ctypes writes,
BCC's own methods), checked against what a program wrote in a test run."""

from __future__ import annotations

import ctypes as ct

import pytest

from bpfmagic import UsageProblem
from bpfmagic.experiments import packets
from bpfmagic.maps import ArrayView, EventTableView, HashView, LpmTrieView, MapView, PerCpuArrayView, ProgArrayView, QueueView, SessionArrayView

from ..conftest import needs_root

pytestmark = needs_root

SOURCE = r"""
struct key_t { u32 a; u16 b; u8 src[4]; };
struct val_t { u64 packets; u64 bytes; };
struct lpm_key { u32 prefixlen; u32 addr; };
BPF_HASH(flows, struct key_t, struct val_t, 16);
BPF_ARRAY(hits, u64, 4);
BPF_PERCPU_ARRAY(per_cpu, u64, 2);
BPF_LPM_TRIE(routes, struct lpm_key, u32, 8);
BPF_QUEUE(recent, u32, 8);
BPF_RINGBUF_OUTPUT(events, 1);
BPF_PROG_ARRAY(jumps, 4);
struct ev { u32 seq; };

int count(struct xdp_md *ctx) {
    struct key_t k = {};
    k.a = 7; k.b = 9; k.src[0] = 10; k.src[3] = 1;
    struct val_t zero = {}, *v;
    flows.update(&k, &zero);
    v = flows.lookup(&k);
    if (v) { v->packets += 1; v->bytes += ctx->data_end - ctx->data; }
    u32 i = 1;
    u64 *h = hits.lookup(&i);
    if (h) *h += 1;
    struct ev e = {.seq = 5};
    events.ringbuf_output(&e, sizeof(e), 0);
    return XDP_PASS;
}
"""

FRAME = packets.udp_packet("10.0.0.1", "192.0.2.53", 5353, 53, b"q" * 20)


@pytest.fixture
def module(session):
    m = session.load("kinds", SOURCE)
    session.test_run("kinds.count", data=FRAME)
    return m


def test_every_door_to_a_map_gives_the_view_class_of_its_type(session, module):
    expected = {
        "flows": HashView,
        "hits": ArrayView,
        "per_cpu": PerCpuArrayView,
        "routes": LpmTrieView,
        "recent": QueueView,
        "events": EventTableView,
    }
    for table, cls in expected.items():
        assert type(module[table]) is cls and type(module.map(table)) is cls and type(session.map(table)) is cls, table
        assert isinstance(module[table], MapView)
    assert type(module["jumps"]) is ProgArrayView and type(session.map("jumps")) is ProgArrayView  # a session array the cell declares


def test_a_session_prog_array_no_cell_declares_is_a_map_view(session):
    session.progarray("lonely", 4)
    view = session.map("lonely")
    assert type(view) is SessionArrayView and isinstance(view, MapView)
    assert view.max_entries == 4 and len(view) == 0  # no program in any slot
    with pytest.raises(UsageProblem, match="prog array"):
        view[0] = 1


def test_reads_answer_bccs_ctypes_spellings(module):
    hits = module["hits"]
    assert hits[1] == 1 and hits[1].value == 1 and hits[0].value == 0
    ((key, value),) = module["flows"].items()
    assert (key.a, key.b, bytes(key.src)) == (7, 9, bytes([10, 0, 0, 1]))
    assert (value.packets, value.bytes) == (1, len(FRAME))
    assert value == {"packets": 1, "bytes": len(FRAME)}
    assert sorted(hits) == [0, 1, 2, 3] and dict(hits.items()) == {0: 0, 1: 1, 2: 0, 3: 0}


def test_writes_take_ctypes_values_and_bccs_own_methods_stay_reachable(module):
    hits = module["hits"]
    hits[2] = hits.Leaf(42)  # Leaf: BCC's own table's ctypes value type
    hits[3] = ct.c_ulonglong(5)
    assert hits.df()["value"].tolist() == [0, 1, 42, 5]
    assert dict(hits.items_lookup_batch()) == {0: 0, 1: 1, 2: 42, 3: 5}  # BCC's own batch read
    with pytest.raises(AttributeError):
        hits.no_such_method  # noqa: B018
