"""The ring buffer decoder and the source rewrite on constructed input:
ring contents the kernel produces only under races (busy records), the
wrap-around of the double-mapped data area, and record type parsing."""

from __future__ import annotations

import numpy as np
import pytest

from bpfmagic.c.records import event_tables
from bpfmagic.events.readers import RINGBUF_BUSY, RINGBUF_DISCARD, decode_ring
from bpfmagic.events.records import RecordType, concatenate, parse_field


class State:
    variable = discarded = 0
    window = 4
    max_block = 1 << 20


def rtype():
    return RecordType([parse_field("seq", "u64", {}), parse_field("v", "u32", {})])  # 16 bytes


def ring(size: int, records: list[tuple[int, bytes]], start: int = 0):
    """A data area of SIZE bytes mapped twice (as the kernel maps it), with
    (header, payload) records written from position START on."""
    area = np.zeros(size, np.uint8)
    pos = start
    for header, payload in records:
        for i, byte in enumerate(int(header).to_bytes(4, "little") + bytes(4) + payload):
            area[(pos + i) % size] = byte
        pos += (8 + (header & ~(RINGBUF_BUSY | RINGBUF_DISCARD)) + 7) & ~7
    return np.concatenate([area, area]), pos


def rec(seq: int, v: int = 7) -> bytes:
    return seq.to_bytes(8, "little") + v.to_bytes(4, "little") + bytes(4)


def decode(data, start, end, size):
    state = State()
    batches, cons = decode_ring(data, start, end, size - 1, rtype(), state)
    seqs = concatenate(batches)["seq"].tolist() if batches else []
    return seqs, cons, state


def test_fixed_records_wrapping_around_the_end():
    records = [(16, rec(i)) for i in range(20)]
    data, end = ring(512, records, start=400)  # 24-byte records, wrapping at 512
    seqs, cons, state = decode(data, 400, end, 512)
    assert seqs == list(range(20)) and cons == end and state.variable == 0


def test_busy_record_stops_the_consumer_there():
    records = [(16, rec(0)), (16, rec(1)), (16 | RINGBUF_BUSY, rec(2)), (16, rec(3))]
    data, end = ring(1024, records)
    seqs, cons, _ = decode(data, 0, end, 1024)
    assert seqs == [0, 1] and cons == 48  # resumes at the busy record next time


def test_discarded_and_variable_records():
    records = [
        (16, rec(0)),
        (16 | RINGBUF_DISCARD, rec(1)),
        (12, rec(2)[:12]),
        (16, rec(3)),
        (24, rec(4) + b"\xff" * 8),
        (3 | RINGBUF_DISCARD, b"abc"),
        (16, rec(5)),
    ]
    data, end = ring(1024, records)
    seqs, cons, state = decode(data, 0, end, 1024)
    assert seqs == [0, 2, 3, 4, 5] and cons == end
    assert state.discarded == 2 and state.variable == 2
    batches, _ = decode_ring(data, 0, end, 1023, rtype(), State())
    values = concatenate(batches)["v"].tolist()
    assert values == [7, 7, 7, 7, 7]  # the 12-byte record kept v; its padding is zero


def test_a_run_longer_than_the_window_is_decoded_in_steps():
    records = [(16, rec(i)) for i in range(1000)]
    data, end = ring(1 << 15, records)
    seqs, cons, state = decode(data, 0, end, 1 << 15)
    assert seqs == list(range(1000)) and state.window > 4


def test_more_short_records_than_the_struct_size_allows_for():
    """Rows are allocated for as many struct-sized records as the range holds; 8-byte
    records (16 with the header, the struct's take 24) outnumber that: a second batch."""
    records = [(8, i.to_bytes(8, "little")) for i in range(30)] + [(16, rec(30))]
    data, end = ring(1024, records)
    seqs, cons, state = decode(data, 0, end, 1024)
    assert seqs == list(range(31)) and cons == end and state.variable == 30


def reference_decode(data, start, end, size):
    """The ring walked one record at a time, in plain Python: what decode_ring must equal."""
    seqs, pos, raw = [], start, data.tobytes()
    while pos < end:
        header = int.from_bytes(raw[pos % size : pos % size + 4], "little")
        if header & RINGBUF_BUSY:
            break
        length = header & ~(RINGBUF_BUSY | RINGBUF_DISCARD)
        if not header & RINGBUF_DISCARD:
            seqs.append(int.from_bytes(raw[pos % size + 8 : pos % size + 8 + min(length, 8)].ljust(8, b"\0"), "little"))
        pos += (8 + length + 7) & ~7
    return seqs, pos


@pytest.mark.parametrize("seed", range(6))
def test_mixed_runs_equal_a_record_by_record_walk(seed):
    """Runs of fixed records cut by discarded, short, long and busy records, from a
    position that wraps around, through blocks smaller than the runs."""
    rng = np.random.default_rng(seed)
    size, records, seq = 1 << 14, [], 0
    while sum((8 + (h & 0xFFFF) + 7) & ~7 for h, _ in records) < (1 << 13):
        roll = rng.random()
        if roll < 0.8:
            header, payload = 16, rec(seq)
        elif roll < 0.88:
            header, payload = 16 | RINGBUF_DISCARD, rec(seq)
        elif roll < 0.96:
            length = int(rng.integers(1, 40))
            header, payload = length, (rec(seq) + bytes(40))[:length]
        else:
            header, payload = int(rng.integers(0, 20)) | RINGBUF_DISCARD, bytes(20)
            payload = payload[: header & 0xFFFF]
        records.append((header, payload))
        seq += 1
    if seed % 2:
        records[len(records) * 3 // 4] = (16 | RINGBUF_BUSY, rec(10**6))
    start = size - 200
    data, end = ring(size, records, start=start)
    state = State()
    state.max_block = 7
    batches, cons = decode_ring(data, start, end, size - 1, rtype(), state)
    expected, expected_cons = reference_decode(data, start, end, size)
    assert (concatenate(batches)["seq"].tolist() if batches else []) == expected
    assert cons == expected_cons


def test_batches_are_copies_and_trimmed_when_mostly_discarded():
    records = [(16, rec(0))] + [(16 | RINGBUF_DISCARD, rec(i)) for i in range(1, 40)] + [(16, rec(40))]
    data, end = ring(1024, records)
    batches, _ = decode_ring(data, 0, end, 1023, rtype(), State())
    data[:] = 0xFF  # the producers reuse the ring once the consumer position moves
    batch = concatenate(batches)
    assert batch["seq"].tolist() == [0, 40] and batch["v"].tolist() == [7, 7]
    assert sum(b.nbytes for b in batches) <= 2 * rtype().itemsize  # not the 41 rows allocated for


def test_a_frame_of_one_batch_is_a_copy_of_it():
    """The columns a stream keeps must not change when the user edits a DataFrame of them."""
    records = [(16, rec(i)) for i in range(4)]
    data, end = ring(1024, records)
    (batch,), _ = decode_ring(data, 0, end, 1023, rtype(), State())
    df = rtype().frame(batch)
    df.loc[0, "seq"] = 99
    assert batch["seq"].tolist() == [0, 1, 2, 3] and rtype().frame([batch])["seq"].tolist() == [0, 1, 2, 3]


def test_parse_fields_and_layout():
    typedefs = {"myu64": "unsigned long long", "name_t": "char [16]"}
    t = RecordType(
        [
            parse_field("a", "u8", typedefs),
            parse_field("b", "myu64", typedefs),
            parse_field("c", "name_t", typedefs),
            parse_field("d", "enum color", typedefs),
            parse_field("e", "void *", typedefs),
            parse_field("f", "u16[3]", typedefs),
            parse_field("g", "unsigned __int128", typedefs),
        ]
    )
    assert t.dtype.fields["b"][1] == 8 and t.dtype.fields["c"][1] == 16 and t.dtype.fields["d"][1] == 32
    assert t.dtype.fields["e"][1] == 40 and t.dtype.fields["f"][1] == 48 and t.dtype.fields["g"][1] == 64
    assert t.itemsize == 80  # clang: __int128 aligns to 16
    assert [f.kind for f in t.fields] == ["int", "int", "str", "int", "int", "array", "int128"]
    with pytest.raises(TypeError, match="nested structs"):
        parse_field("x", "struct inner", {})


def test_rewrite_counts_failures_and_keeps_lines():
    from bpfmagic.c import analyse, bcc_text

    src = (
        "#include <uapi/linux/ptrace.h>\n"
        "struct rec { u64 a; };\n"
        "BPF_RINGBUF_OUTPUT(events, 8);\n"
        "BPF_PERF_OUTPUT(perf);\n"
        "// events.ringbuf_output(&r, 8, 0); in a comment stays\n"
        "int f(void *ctx) { struct rec r = {}; events.ringbuf_output(&r, sizeof(r), 0);\n"
        "  struct rec *p = events.ringbuf_reserve(sizeof(*p)); if (p) events.ringbuf_submit(p, 0);\n"
        "  perf.perf_submit(ctx, &r, sizeof(r)); other.ringbuf_output(&r, 8, 0); return 0; }\n"
    )
    out, _header, _columns = bcc_text(analyse(src), {}, lambda a, k: 0, count_calls=True)
    assert out.count("\n") == src.count("\n")
    lines = out.split("\n")
    assert lines[1].startswith("BPF_PERCPU_ARRAY(__bm_lost, u64, 2);")
    assert event_tables(src) == ["events", "perf"]
    assert "u32 __bm_lk = 0" in lines[5] and "u32 __bm_lk = 0" in lines[6] and "u32 __bm_lk = 1" in lines[7]
    assert lines[4] == src.split("\n")[4]
    assert "({ int __bm_rc = other" not in out  # not a declared event table


def test_arrow_table_without_pandas_equals_the_dataframe_conversion(tmp_path):
    """The followed Parquet file's records go to Arrow straight from numpy:
    the same schema and values as the DataFrame's conversion, for every
    kind of column, over several batches; and they read back as the frame."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from bpfmagic.events.parquet import column_options

    spec = [("seq", "u64"), ("comm", "char[16]"), ("ok", "bool"), ("v", "u32[4]")]
    spec += [("big", "__int128"), ("x", "double"), ("b", "s8"), ("n", "char[2][4]")]
    rt = RecordType([parse_field(name, ctype, {}) for name, ctype in spec])
    records = rt.empty(5)
    records["seq"] = [1, 2, 3, 2**64 - 1, 0]  # a wrap: delta encoding must keep it
    records["comm"] = [b"bash", b"", b"x" * 16, b"sh\0junk", b"bash"]
    records["ok"][1] = True
    records["v"][2] = [1, 2, 3, 4]
    records["x"] = [0.5, -1, 1e300, 0, 3]
    records["b"] = [-128, 127, 0, -1, 5]
    records["n"][4] = [b"ab", b"cd"]
    schema = rt.arrow_schema()
    expected = pa.Table.from_pandas(rt.frame(records), schema=schema, preserve_index=False)
    table = rt.arrow_table([records[:2], records[2:2], records[2:]], schema)
    assert table.schema == schema and table.equals(expected)
    path = str(tmp_path / "kinds.parquet")
    with pq.ParquetWriter(path, schema, **column_options(rt)) as writer:
        writer.write_table(table)
    back = pq.read_table(path)
    assert back.equals(expected)
    encodings = {c.path_in_schema: c.encodings for c in (pq.ParquetFile(path).metadata.row_group(0).column(i) for i in range(back.num_columns))}
    assert "DELTA_BINARY_PACKED" in encodings["seq"] and "RLE_DICTIONARY" in encodings["comm"]
