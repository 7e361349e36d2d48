"""Paths: the way each run goes through a chain of tail calls.

Cells loaded while paths are on (``Session.enable_paths()``) record, in a
per-CPU record ``__bm_path`` the session shares with every such cell:

- at each program's entry: when a tail call is in flight on this CPU (made
  with this very context), the program is that call's target (the hop is
  taken); otherwise a new run begins and the record starts over;
- at each tail-call site: before the call, a hop (site, key); after it, when
  the call fell through, why: the limit (33 tail calls already taken in this
  run) or an empty slot (anything else: empty, or a key past the end).

``test_run(..., path=True)`` reads the record of the CPU the run used.
Live (``Session.paths(array, seconds)``): while a collection runs, each
finished run's record (finished = the next run on that CPU begins) is
counted in a hash map keyed by the whole record, so the distinct paths come
with their counts; each CPU's last run is read from the record itself.

A site is ``base + line`` of its cell (the per-call-site counters' ids), a
program ``base + line`` of its definition. Programs loaded without paths run
the uninstrumented code; a chain that mixes both may lose a hop's target.
"""

from __future__ import annotations

import ctypes as ct
import struct
import time
from dataclasses import dataclass, field

from ..c.path_record import EMPTY, KEY_WORDS, LIMIT, MAX_HOPS, PATH_COUNTS, REC_SIZE  # noqa: F401  (the record the reader decodes)
from ..errors import UsageProblem
from ..kernel import libbpf


@dataclass
class PathMaps:
    """The session's path maps: the per-CPU record, the path counts, the collection switch."""

    rec_fd: int
    counts_fd: int
    ctl_fd: int
    pins: dict = field(default_factory=dict)  # name -> pin (BCC opens them by pin)

    @classmethod
    def create(cls, pin_dir: str) -> "PathMaps":
        import os

        fds = []
        try:
            fds.append(libbpf.map_create(libbpf.BPF_MAP_TYPE_PERCPU_ARRAY, "bm_path", 4, REC_SIZE, 1))
            fds.append(libbpf.map_create(1, "bm_pathc", 4 * KEY_WORDS, 8, PATH_COUNTS))  # BPF_MAP_TYPE_HASH
            fds.append(libbpf.map_create(2, "bm_pathctl", 4, 4, 1))  # BPF_MAP_TYPE_ARRAY
            pins = {}
            os.makedirs(os.path.join(pin_dir, "calls"), exist_ok=True)
            for name, fd in zip(("bm_path", "bm_pathc", "bm_pathctl"), fds):
                pins[name] = os.path.join(pin_dir, "calls", name)
                libbpf.obj_pin(fd, pins[name])
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return cls(*fds, pins=pins)

    def close(self) -> None:
        import contextlib
        import os

        for pin in self.pins.values():
            with contextlib.suppress(OSError):
                os.unlink(pin)
        for fd in (self.rec_fd, self.counts_fd, self.ctl_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- reading
    def records(self) -> list[bytes]:
        """The record of each CPU."""
        ncpu = libbpf.num_possible_cpus()
        buf = ct.create_string_buffer(REC_SIZE * ncpu)
        key = ct.c_uint32(0)
        libbpf._check(libbpf.lib().bpf_map_lookup_elem(self.rec_fd, ct.byref(key), buf), "read the path record")
        return [buf.raw[i * REC_SIZE : (i + 1) * REC_SIZE] for i in range(ncpu)]

    def collecting(self, on: bool) -> None:
        libbpf.map_update_u32(self.ctl_fd, 0, 1 if on else 0)

    def counted(self) -> dict[bytes, int]:
        """Path key -> runs, from the counts map; emptied as it is read."""
        out: dict[bytes, int] = {}
        l = libbpf.lib()
        l.bpf_map_get_next_key.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
        size = 4 * KEY_WORDS
        prev, key, value = None, ct.create_string_buffer(size), ct.c_uint64()
        keys = []
        while l.bpf_map_get_next_key(self.counts_fd, prev, key) == 0:
            keys.append(bytes(key.raw))
            prev = ct.create_string_buffer(key.raw, size)
        for k in keys:
            kb = ct.create_string_buffer(k, size)
            if l.bpf_map_lookup_elem(self.counts_fd, kb, ct.byref(value)) == 0:
                out[k] = out.get(k, 0) + value.value
            l.bpf_map_delete_elem(self.counts_fd, kb)
        return out


def decode(raw: bytes) -> tuple[int, list[tuple[int, int, int]], int, int]:
    """(entry id, [(site, key, target or EMPTY/LIMIT/0)], taken, serial) of a record (or a key)."""
    words = struct.unpack_from(f"<{KEY_WORDS}I", raw)
    hops, entry = words[0], words[1]
    hop = [(words[2 + 3 * i], words[3 + 3 * i], words[4 + 3 * i]) for i in range(min(hops, MAX_HOPS))]
    taken = serial = 0
    if len(raw) >= REC_SIZE:
        taken, serial = struct.unpack_from("<II", raw, 4 * KEY_WORDS)
    return entry, hop, taken, serial


# ------------------------------------------------------------ naming ids


def describe(session, entry: int, hops) -> tuple[list[dict], str]:
    """The hops as rows (program, array, key, name, target, outcome, line) and one line of text."""
    rows = []
    entry_name = session.sites.name(entry) or "?"
    text = [entry_name]
    current = entry_name
    for site, key, target in hops:
        owner = session.sites.owner(site)
        array = _site_array(owner, site)
        label = _slot_label(session, array, key)
        if target == EMPTY:
            outcome, target_name = "empty slot", None
        elif target == LIMIT:
            outcome, target_name = "limit reached", None
        elif target == 0:
            outcome, target_name = "not seen", None  # taken into a program loaded without paths
        else:
            outcome, target_name = "taken", session.sites.name(target) or "?"
        rows.append(
            {
                "hop": len(rows) + 1,
                "program": current,
                "line": site - owner[0] if owner else None,
                "array": array,
                "key": key,
                "slot": label,
                "target": target_name,
                "outcome": outcome,
            }
        )
        if target_name:
            text.append(target_name.split(".", 1)[-1] if "." in target_name else target_name)
            current = target_name
        else:
            text[-1] += f" ✗ {label} {'empty' if target == EMPTY else 'limit' if target == LIMIT else '?'}"
    return rows, " → ".join(text)


def _site_array(owner, site: int) -> str | None:
    if owner is None:
        return None
    base, _, syntax, _ = owner
    line = site - base
    return next((t.array for t in syntax.tail_calls if t.line == line), None)


def _slot_label(session, array: str | None, key: int) -> str:
    a = session.arrays.get(array) if array else None
    if a is None:
        return f"{array or '?'}[{key}]"
    return a.label(key) if 0 <= key < a.size else f"{array}[{key}]"


PATH_COLUMNS = ["hop", "program", "line", "array", "key", "slot", "target", "outcome"]


def path_frame(rows):
    import pandas as pd

    df = pd.DataFrame(rows, columns=PATH_COLUMNS)
    for col in ("line", "key"):
        df[col] = df[col].astype("Int64")
    return df


def live(session, seconds: float = 1.0, array: str | None = None, during=None):
    """The distinct paths runs took during SECONDS, or while ``during()`` ran (array: only
    those with a hop through it). Counting costs each run about 250 ns while it lasts."""
    import pandas as pd

    maps = session._path_maps
    if maps is None:
        raise UsageProblem("paths are off: `%bpf paths --on` (Session.enable_paths()), then load the chain")
    maps.counted()  # start from nothing
    # Each CPU's record now: the run in it is counted when the CPU's next run begins (in the
    # window, so it is taken back out below); runs in the window are counted the same way,
    # and each CPU's last one is read from its record at the end.
    before = {i: (decode(r)[3], r[: 4 * KEY_WORDS]) for i, r in enumerate(maps.records())}
    maps.collecting(True)
    try:
        if during is not None:
            during()
        else:
            time.sleep(seconds)  # the collection window itself: traffic is counted while it is open
    finally:
        maps.collecting(False)
    counts: dict[bytes, int] = {}
    for k, n in maps.counted().items():
        canon = _canonical(*decode(k)[:2])
        counts[canon] = counts.get(canon, 0) + n
    for i, raw in enumerate(maps.records()):  # each CPU's last run: not counted until the next one begins
        serial0, key0 = before.get(i, (None, b""))
        entry, hops, _, serial = decode(raw)
        if serial == serial0:
            continue
        canon = _canonical(entry, hops)
        counts[canon] = counts.get(canon, 0) + 1
        entry0, hops0, _, _ = decode(key0)
        if entry0:  # the run that was in the record before the window was counted by the window's first
            old = _canonical(entry0, hops0)
            counts[old] = counts.get(old, 0) - 1
    counts = {k: n for k, n in counts.items() if n > 0}
    rows = []
    edges: dict[tuple[str, str], int] = {}  # (program, slot) and (slot, program): runs along them
    for key, n in counts.items():
        entry, hops, _, _ = decode(key)
        hop_rows, text = describe(session, entry, hops)
        if array and not any(r["array"] == array for r in hop_rows):
            continue
        for r in hop_rows:
            edges[(r["program"], r["slot"])] = edges.get((r["program"], r["slot"]), 0) + n
            if r["target"]:
                edges[(r["slot"], r["target"])] = edges.get((r["slot"], r["target"]), 0) + n
        rows.append({"path": text, "runs": n, "hops": len(hop_rows), "ends": hop_rows[-1]["outcome"] if hop_rows else "no tail call"})
    df = pd.DataFrame(rows, columns=["path", "runs", "hops", "ends"])
    df = df.groupby(["path", "hops", "ends"], as_index=False)["runs"].sum() if len(df) else df
    total = int(df["runs"].sum()) if len(df) else 0
    df["share"] = df["runs"] / total if total else 0.0
    df = df.sort_values("runs", ascending=False).reset_index(drop=True)[["path", "runs", "share", "hops", "ends"]]
    df.attrs["seconds"] = None if during is not None else seconds
    df.attrs["edges"] = edges
    return df


def picture(session, df, array: str | None = None):
    """The chain graph with each edge as wide as the runs that went along it (live paths)."""
    g = session.graph(array)
    g.widths = dict(df.attrs.get("edges", {}))
    return g


def _canonical(entry: int, hops) -> bytes:
    words = [len(hops), entry]
    for h in hops:
        words += list(h)
    words += [0] * (KEY_WORDS - len(words))
    return struct.pack(f"<{KEY_WORDS}I", *words)
