"""One Session used from several threads at once (issue 19, item 1): each
test runs in a child process, so a crash (a segfault in libbcc, say) is a
failed test and not a dead test run. The children print what every thread
did and every error it met; the tests check that nothing crashed and that
the only errors are bpfmagic's own, saying what happened."""

from __future__ import annotations

import pytest

from ..conftest import needs_root
from ..programs import child_result, run_child

pytestmark = needs_root

# A reader thread reads the map tx_cnt in a loop (a fresh view each time, and
# one view kept from the start) while the main thread re-runs the cell that
# owns it. The cell also has a hash of other sizes: a view that read a closed
# fd number reused for that map would fail to decode or see other keys.
READER_WHILE_RERUN = """
    import collections, json, threading, time, warnings
    warnings.simplefilter("ignore")
    from bpfmagic import Session
    from bpfmagic.errors import BpfError

    SRC = '''
    BPF_ARRAY(tx_cnt, u64, 4);
    BPF_HASH(other, u32, u32, 64);
    int tx(struct xdp_md *ctx) { int k = 1; tx_cnt.increment(k); return XDP_PASS; }
    '''
    s = Session()
    s.load("tx", SRC)
    kept = s.map("tx_cnt")
    stop = threading.Event()
    errors, reads, wrong = collections.Counter(), collections.Counter(), []

    def reader():
        while not stop.is_set():
            for kind, read in (("fresh", lambda: s.map("tx_cnt").df()), ("kept", kept.df)):
                try:
                    frame = read()
                except BpfError as e:
                    errors[f"{type(e).__name__}: {e}"] += 1
                    continue
                except Exception as e:  # the bug: EBADF, a decode of another map, ...
                    errors[f"NOT BPFMAGIC'S {type(e).__name__}: {e}"] += 1
                    continue
                reads[kind] += 1
                if frame["key"].tolist() != [0, 1, 2, 3]:
                    wrong.append(frame.to_dict("list"))

    t = threading.Thread(target=reader)
    t.start()
    reruns, started = 0, time.monotonic()
    while time.monotonic() - started < SECONDS:
        s.load("tx", SRC)
        s.test_run("tx.tx")  # one count in each version's new map
        reruns += 1
    stop.set()
    t.join()
    last = kept.df()["value"].tolist()
    s.unload("tx")
    try:
        kept.df()
        after_unload = "no error"
    except BpfError as e:
        after_unload = str(e)
    s.close()
    print(json.dumps({"reruns": reruns, "reads": reads, "errors": errors, "wrong": wrong[:3], "last": last, "after_unload": after_unload}))
"""


def test_map_reads_from_a_thread_while_the_cell_that_owns_the_map_is_re_run():
    """It segfaulted in libbcc's bpf_table_name (the reader listing tables of a module being
    freed) and read closed fds (EBADF; a reused number would read another map)."""
    out = child_result(run_child(READER_WHILE_RERUN.replace("SECONDS", "6"), timeout=180))
    assert out["reruns"] >= 3, out
    assert out["reads"].get("fresh", 0) > 0 and out["reads"].get("kept", 0) > 0, out
    assert out["errors"] == {}, out
    assert out["wrong"] == [], out
    assert out["last"] == [0, 1, 0, 0], out  # the kept view follows the re-runs: it reads the current version's map
    assert out["after_unload"].startswith("the map tx_cnt of module tx was freed"), out


# Nine threads on one Session: two reload cells (one of them a stage in a
# chain, one a producer of events), one loads and unloads modules with their
# own arrays, two test-run, one reads maps, one writes a map, one reads a
# stream, one moves slots and asks for the session's views.
NINE_THREADS = """
    import collections, json, threading, time, traceback, warnings
    warnings.simplefilter("ignore")
    from bpfmagic import Session
    from bpfmagic.errors import BpfError

    CHAIN = '''
    BPF_PROG_ARRAY(jt, 8);
    BPF_ARRAY(tx_cnt, u64, 4);
    int entry(struct xdp_md *ctx) { int k = 0; tx_cnt.increment(k); jt.call(ctx, 1); return XDP_PASS; }
    '''
    STAGE = "int drop(struct xdp_md *ctx) { return XDP_DROP; }\\n"
    EVENTS = '''
    struct ev { u64 n; };
    BPF_RINGBUF_OUTPUT(events, 8);
    int emit(struct xdp_md *ctx) { struct ev e = {.n = 7}; events.ringbuf_output(&e, sizeof(e), 0); return XDP_PASS; }
    '''
    s = Session()
    s.load("c", CHAIN)
    s.load("st", STAGE, slots={"jt[1]": "drop"})
    s.load("ev", EVENTS)
    stop = threading.Event()
    done, errors, foreign = collections.Counter(), collections.Counter(), []

    def loop(kind, step):
        i = 0
        while not stop.is_set():
            try:
                step(i)
                done[kind] += 1
            except BpfError as e:
                errors[f"{kind}: {type(e).__name__}: {str(e).splitlines()[0]}"] += 1
            except Exception as e:  # what must not happen: a raw OSError, KeyError, RuntimeError, ...
                foreign.append(f"{kind}: {type(e).__name__}: {e}\\n{traceback.format_exc()[-1500:]}")
            i += 1

    def rerun_stage(i):
        s.load("st", STAGE, slots={"jt[1]": "drop"})

    def load_and_unload(i):
        s.load(f"tmp{i % 2}", f"BPF_PROG_ARRAY(extra{i % 2}, 2);\\nBPF_HASH(h{i % 2}, u32, u64, 16);\\n" + STAGE)
        s.unload(f"tmp{i % 2}")
        s.unload(f"extra{i % 2}")

    def run_chain(i):
        r = s.test_run("c.entry", data=bytes(64), repeat=5)
        assert r.retval_name in ("XDP_DROP", "XDP_PASS"), r  # an empty slot falls through to XDP_PASS

    def run_events(i):
        s.test_run("ev.emit", data=bytes(64))
        if i % 20 == 19:
            s.load("ev", EVENTS)  # a re-run: a new stream

    def read_maps(i):
        frame = s.map("tx_cnt").df()
        assert frame["key"].tolist() == [0, 1, 2, 3], frame
        s.map("c.jt").df()

    view = s.map("tx_cnt")

    def write_map(i):
        view[2] = i
        assert view[3] == 0

    def read_stream(i):
        st = s.stream("events")
        rows = st.df()
        assert rows.empty or set(rows["n"]) == {7}, rows

    def move_slots(i):
        if i % 2:
            s.unslot("jt[1]")
        else:
            s.slot("jt[1]", "st.drop")
        s.slots(); s.ls(); s.stats()

    steps = [rerun_stage, load_and_unload, run_chain, run_events, read_maps, write_map, read_stream, move_slots]
    steps.append(lambda i: s.program("st.drop").info())  # a Program kept across re-runs is refused, not misread
    threads = [threading.Thread(target=loop, args=(f.__name__ if f.__name__ != "<lambda>" else "program_info", f)) for f in steps]
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join()
    streamed = s.stream("events").count
    s.close()
    print(json.dumps({"threads": len(threads), "done": done, "errors": errors, "foreign": foreign[:5], "streamed": streamed}))
"""


def test_nine_threads_mixing_loads_runs_maps_streams_and_slots_on_one_session():
    out = child_result(run_child(NINE_THREADS.replace("SECONDS", "8"), timeout=240))
    assert out["threads"] == 9
    assert out["foreign"] == [], "\n".join(out["foreign"])
    kinds = ["rerun_stage", "load_and_unload", "run_chain", "run_events", "read_maps", "write_map", "read_stream", "move_slots", "program_info"]
    assert all(out["done"].get(kind, 0) > 0 for kind in kinds), out["done"]
    # The only errors expected: a stream between a re-run's stop and start, or a program
    # asked for while its module was being replaced; each says so in bpfmagic's words.
    for error, count in out["errors"].items():
        assert error.split(": ")[1] in ("UsageProblem", "SlotError"), error
    print(out["done"], out["errors"])


@pytest.mark.parametrize("door", ["info", "dump"])
def test_a_program_kept_across_a_re_run_is_refused_not_read_through_its_closed_fd(session, door):
    """The old version's fd number is closed by the re-run and may already name another
    program: reading it would describe that one."""
    from bpfmagic import UsageProblem

    stage = "int drop(struct xdp_md *ctx) { return XDP_DROP; }\n"
    old = session.load("st", stage).program("drop")
    session.load("st", stage)
    with pytest.raises(UsageProblem, match=r"the program drop of module st was freed .* s\.program\('st\.drop'\)"):
        old.info() if door == "info" else old.dump()
    assert session.program("st.drop").info()["prog_id"] != ""
