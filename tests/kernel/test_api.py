"""The Python API people hold: programs with their operations, session prog arrays as
mappings of key -> program, errors with fields, instruments set for a block. Real
programs on the real kernel: slotting through ``s.arrays[...]`` changes what a test
run does."""

from __future__ import annotations

import pytest

from bpfmagic import NotFound, SlotError
from bpfmagic.kernel import libbpf

from ..conftest import needs_root

pytestmark = needs_root

# The entry tail-calls progs[write] and returns XDP_PASS when the slot is empty; the
# programs slotted there return their own action, so the retval says which one ran.
DISPATCH = """
BPF_PROG_ARRAY(progs, 4);
int entry(struct xdp_md *ctx) { progs.call(ctx, SLOT(progs, write)); return XDP_PASS; }
int drop(struct xdp_md *ctx) { return XDP_DROP; }
int tx(struct xdp_md *ctx) { return XDP_TX; }
"""


def test_slotting_through_the_array_mapping_changes_what_a_run_does(session):
    m = session.load("disp", DISPATCH)
    arr = session.arrays["progs"]
    assert len(arr) == 0 and list(arr) == []
    assert m.programs["entry"].test_run().retval_name == "XDP_PASS"  # empty slot: the call falls through

    arr["write"] = m.program("drop")
    assert arr["write"] is m.programs["drop"] and list(arr) == ["write"] and len(arr) == 1
    # the kernel's own slot holds the program's id, and the run took the tail call
    assert libbpf.map_lookup_u32(arr.fd, arr.names["write"]) == m.programs["drop"].prog_id
    r = m.programs["entry"].test_run()
    assert r.retval_name == "XDP_DROP"
    taken = r.tail_calls.set_index("slot").loc["progs[write]"]
    assert (taken["calls"], taken["taken"], taken["missed"]) == (1, 1, 0)

    arr["write"] = m.program("tx")  # a hot swap: one map update
    assert session.test_run("disp.entry").retval_name == "XDP_TX"
    assert m.slots == [("progs", arr.names["write"])]

    del arr["write"]
    assert len(arr) == 0 and "write" not in arr and m.slots == []
    assert libbpf.map_lookup_u32(arr.fd, arr.names["write"]) is None
    assert m.programs["entry"].test_run().retval_name == "XDP_PASS"


def test_a_new_key_takes_the_lowest_free_index(session):
    m = session.load("disp", DISPATCH)  # SLOT(progs, write) named index 0
    arr = session.arrays["progs"]
    arr["read"] = m.program("tx")
    assert arr.names == {"write": 0, "read": 1} and arr.entries[1] is m.programs["tx"]
    assert session.slots("progs").set_index("key").loc["read", "program"] == "disp.tx"
    arr[3] = m.program("drop")  # an index works as a key too
    assert list(arr) == ["read", 3]


def test_lookups_of_empty_or_unknown_slots_are_key_errors_with_fields(session):
    m = session.load("disp", DISPATCH)
    arr = session.arrays["progs"]
    with pytest.raises(KeyError) as e:
        arr["write"]  # named, empty
    assert isinstance(e.value, NotFound) and (e.value.kind, e.value.name) == ("slot", "write")
    with pytest.raises(NotFound) as e:
        del arr["nosuch"]
    assert (e.value.kind, e.value.name) == ("slot", "nosuch")
    assert arr.get("write") is None and arr.get(2) is None
    arr["write"] = m.program("drop")
    assert e.value.known == () and arr.get("write") is m.programs["drop"]


def test_a_program_of_another_type_is_refused_with_its_fields(session):
    m = session.load("disp", DISPATCH)
    other = session.load("tp", "int f(struct bpf_raw_tracepoint_args *ctx) { return 0; }")
    arr = session.arrays["progs"]
    arr["write"] = m.program("drop")  # the array now holds xdp programs
    with pytest.raises(SlotError) as e:
        arr["read"] = other.program("f")
    assert (e.value.array, e.value.key, e.value.program) == ("progs", 1, "tp.f")
    assert "read" not in arr.names  # the name is kept only once its slot is filled
    with pytest.raises(SlotError) as e:
        session.array("nosuch")
    assert e.value.array == "nosuch" and e.value.hint == "%bpf progarray nosuch N"


def test_a_freed_programs_operations_are_refused(session):
    m = session.load("disp", DISPATCH)
    old_drop = m.program("drop")
    session.load("disp", DISPATCH)  # a re-run: the old version is freed
    with pytest.raises(Exception, match="freed"):
        old_drop.test_run()
    with pytest.raises(Exception, match="freed"):
        session.arrays["progs"]["write"] = old_drop


def test_program_operations(session):
    m = session.load("disp", DISPATCH)
    p = m.program("drop")
    assert "r0 = 1" in p.dump()  # XDP_DROP, in the xlated code
    assert p.verifier.insns_processed >= 2
    session.arrays["progs"]["write"] = p
    m.programs["entry"].test_run(repeat=3)
    stats = m.programs["entry"].stats
    assert stats["program"] == "disp.entry" and stats["slots"] == ""
    assert p.stats["slots"] == "progs[write]" and p.stats["tail_calls_in"] == 3


def test_instrumentation_is_set_for_a_block_and_put_back(session):
    assert session.stats_enabled and not session.paths_enabled
    with session.instrumentation(stats=False, paths=True):
        assert not session.stats_enabled and session.paths_enabled
        m = session.load("disp", DISPATCH)
    assert session.stats_enabled and not session.paths_enabled
    assert m.paths  # loaded inside the block: it records paths
    session.arrays["progs"]["write"] = m.program("drop")
    r = m.programs["entry"].test_run(path=True)
    assert r.path_text == "disp.entry → drop" and r.retval_name == "XDP_DROP"
