"""The %bpf commands are declared once (bpfmagic/magics/registry.py): what is made from
that declaration agrees with it. Nothing is loaded; only the Session's doors need one."""

from __future__ import annotations

from ..conftest import needs_root


@needs_root
def test_path_graph_draws_the_live_paths_on_the_chain(session):
    """Session.path_graph, the Python door of `%bpf paths ARRAY`'s picture: each edge as wide
    as the runs the kernel recorded along it."""
    from bpfmagic.kernel import libbpf

    from ..programs import PATH_CHAIN

    session.enable_paths()
    session.load("lv", PATH_CHAIN, slots={"pj[1]": "parse_eth", "pj[2]": "parse_ip"})
    entry = session.program("lv.entry")
    paths = session.paths("pj", during=lambda: libbpf.test_run(entry.fd, data=bytes(64), repeat=40))
    graph = session.path_graph(paths, "pj")
    assert graph.widths[("lv.entry", "pj[1]")] == 40 and graph.widths[("pj[2]", "lv.parse_ip")] == 40
