"""Maps as DataFrames (bpfmagic/maps.py), for both backends, against what a
program wrote during test runs with known packets, and writes from Python
read back by a program (its retval)."""

from __future__ import annotations

import pytest


def test_layouts_from_ctypes_round_trip():
    """Nested structs, char[M][N], number arrays and bit-fields: pack, then decode, in pure Python."""
    import ctypes as ct

    from bpfmagic.kernel.fields import ctypes_fields
    from bpfmagic.maps import Layout

    class Inner(ct.Structure):
        _fields_ = [("lo", ct.c_uint16), ("hi", ct.c_int8)]

    class Value(ct.Structure):
        _fields_ = [
            ("names", (ct.c_char * 4) * 2),
            ("inner", Inner),
            ("samples", ct.c_int32 * 3),
            ("flags", ct.c_uint32, 3),
            ("level", ct.c_int32, 5),
            ("__pad_end", ct.c_char * 0),
        ]

    layout = Layout(ctypes_fields(Value), ct.sizeof(Value), "value")
    assert layout.columns == ["names", "inner.lo", "inner.hi", "samples", "flags", "level"]
    rec = layout.pack({"names": ["ab", "cdef"], "inner": {"lo": 65535, "hi": -2}, "samples": [1, -2, 3], "flags": 5, "level": -7}, "v")
    raw = Value.from_buffer_copy(rec.tobytes()[: ct.sizeof(Value)])
    assert (raw.names[0].value, raw.names[1].value) == (b"ab", b"cdef") and raw.inner.hi == -2
    assert (raw.flags, raw.level, list(raw.samples)) == (5, -7, [1, -2, 3])
    decoded = layout.decode_one(rec[0])
    assert decoded["names"].tolist() == ["ab", "cdef"] and decoded["level"] == -7 and decoded["flags"] == 5
    with pytest.raises(ValueError, match="field 'level'.*out of range -16..15"):
        layout.pack({"level": 16}, "v")
    with pytest.raises(ValueError, match="field 'names'.*5 bytes do not fit in 4"):
        layout.pack({"names": ["abcde", ""]}, "v")
