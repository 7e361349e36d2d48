"""Chain instruments: the verifier's cost per program and the chain's stack,
per-call-site counts, the graph of enum-keyed chains, counters read together,
slots across re-runs and unloads."""

from __future__ import annotations

import time

import pytest

from bpfmagic import UsageProblem
from bpfmagic.c.analysis import file_constants
from bpfmagic.experiments import graph as chain_graph


def test_enum_constants_are_read_on_the_tree():
    consts = file_constants(
        "#define X 4\nenum { A = 1, B, C = X << 1, D };\n"
        "typedef enum e { E = C + 1 } e_t;\nenum f { A = 7 };\n"
        "int f(void) { enum { Q = 3 }; return 0; }"
    )
    assert consts == {"B": "2", "C": "8", "D": "9", "E": "9", "X": "4"}  # A defined twice: left out


def test_call_sites_carry_their_lines():
    sites = chain_graph.call_sites("BPF_PROG_ARRAY(p, 4);\nint f(struct xdp_md *ctx) {\n  p.call(ctx, 1);\n  return 0; }")
    assert [(s.function, s.line) for s in sites] == [("f", 3)]


def _yaml_bomb(levels: int) -> str:
    """Nested aliases: each level lists the one before nine times (a few hundred bytes, 9**levels values)."""
    lines = ['a0: &a0 ["st.a"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nchain: *a{levels}\nstages: [st.a]\n"


def test_chain_files_that_would_exhaust_the_parser_are_refused_at_once(tmp_path):
    """Aliases, deep nesting, huge numbers and repeated keys: a clear refusal in well under a
    second, never the file's text in the message (its first line could be a secret)."""
    from bpfmagic.experiments.chain import load_file

    cases = {
        "bomb.yaml": (_yaml_bomb(9), "aliases"),
        "deep.yaml": ("stages: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than"),
        "digits.yaml": ("capacity: " + "9" * 5000 + "\nstages: [st.a]\n", "out of range"),
        "big.yaml": ("capacity: 99999999999\nstages: [st.a]\n", "capacity must be 1..1024"),
        "dup.yaml": ("stages: [st.a]\nstages: [st.b]\n", "the key 'stages' appears twice"),
        "secret.yaml": ("TOKEN=hunter2-secret\n: [\n", "not YAML"),
        "chainlist.yaml": ("chain: [1, 2]\nstages: [st.a]\n", "describes chain a list"),
    }
    for name, (text, said) in cases.items():
        (tmp_path / name).write_text(text)
        started = time.monotonic()
        with pytest.raises(UsageProblem, match=said) as err:
            load_file(None, "fw", str(tmp_path / name))
        assert time.monotonic() - started < 1.0, name
        assert "hunter2" not in str(err.value) and len(str(err.value)) < 300, str(err.value)
