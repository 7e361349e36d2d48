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
Live (``Session.paths(array, seconds)``): a collection window counts the
runs that begin while it is open. Each such run's record carries the
window's number and is counted in a hash map keyed by the whole record
when it is finished (finished = the next run on that CPU begins, in the
window or after it), so the distinct paths come with their counts. A
CPU's last run of the window is read from its record only once that CPU
has gone quiet: a record read while traffic goes on may be a run half-way
through (the reader on another CPU copies it while the run writes it).

A site is ``base + line`` of its cell (the per-call-site counters' ids), a
program ``base + line`` of its definition. Programs loaded without paths run
the uninstrumented code; a chain that mixes both may lose a hop's target.
"""

from __future__ import annotations

import ctypes as ct
import struct
import time
from dataclasses import dataclass, field

from ..c.path_record import CLOSING, EMPTY, KEY_WORDS, LIMIT, MAX_HOPS, PATH_COUNTS, REC_SIZE  # noqa: F401  (the record the reader decodes)
from ..errors import UsageProblem
from ..kernel import libbpf
from ..kernel.maptypes import MapType


@dataclass
class PathMaps:
    """The session's path maps: the per-CPU record, the path counts, the collection switch."""

    rec_fd: int  # one array element holding each CPU's record in turn (a row per CPU, at a fixed address)
    counts_fd: int
    ctl_fd: int
    pins: dict = field(default_factory=dict)  # name -> pin (BCC opens the counts and the switch by pin)
    rows: int = 0  # records in rec_fd's element: the possible CPUs
    window: int = 0  # the last collection window's number

    @classmethod
    def create(cls, pin_dir: str) -> "PathMaps":
        import os

        fds = []
        try:
            # Not a per-CPU map: a hop would pay two lookups (~3 ns each here); programs reach
            # this CPU's record by address (c/instrument.py, as the counters: kernel/counters.py).
            rows = libbpf.num_possible_cpus()
            fds.append(libbpf.map_create(MapType.ARRAY, "bm_path", 4, REC_SIZE * rows, 1))
            fds.append(libbpf.map_create(MapType.HASH, "bm_pathc", 4 * KEY_WORDS, 8, PATH_COUNTS))
            fds.append(libbpf.map_create(MapType.ARRAY, "bm_pathctl", 4, 4, 1))
            pins = {}
            os.makedirs(os.path.join(pin_dir, "calls"), exist_ok=True)
            for name, fd in zip(("bm_path", "bm_pathc", "bm_pathctl"), fds):
                pins[name] = os.path.join(pin_dir, "calls", name)
                libbpf.obj_pin(fd, pins[name])
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return cls(*fds, pins=pins, rows=rows)

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
        buf = ct.create_string_buffer(REC_SIZE * self.rows)
        key = ct.c_uint32(0)
        libbpf.check(libbpf.lib().bpf_map_lookup_elem(self.rec_fd, ct.byref(key), buf), "read the path records")
        return [buf.raw[i * REC_SIZE : (i + 1) * REC_SIZE] for i in range(self.rows)]

    def collecting(self, value: int) -> None:
        """The collection switch: 0 off, a window's number while it is open (runs that begin
        join it), that number | CLOSING while it closes (runs that begin count the run before
        them on their CPU if it was in the window, and join none)."""
        libbpf.map_update_u32(self.ctl_fd, 0, value)

    def next_window(self) -> int:
        self.window = self.window % (CLOSING - 1) + 1
        return self.window

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


def window_of(raw: bytes) -> int:
    """The collection window a record's run began in (0: none, or already counted)."""
    return struct.unpack_from("<I", raw, 4 * KEY_WORDS + 16)[0]


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
    import math

    import pandas as pd

    if during is None and (not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or not 0 <= seconds <= 3600):
        raise UsageProblem(f"paths: --seconds must be a number of seconds from 0 to 3600 (got {seconds!r})")
    if array is not None:
        session.array(array)  # an array the session has, or the error that says which it has
    maps = session.instruments.path_maps
    if maps is None:
        raise UsageProblem("paths are off: `%bpf paths --on` (Session.enable_paths()), then load the chain")
    maps.counted()  # start from nothing
    window = maps.next_window()
    maps.collecting(window)
    try:
        if during is not None:
            during()
        else:
            time.sleep(seconds)  # the collection window itself: traffic is counted while it is open
    finally:
        last = _close(maps, window)
    counts: dict[bytes, int] = {}
    for k, n in maps.counted().items():
        canon = _canonical(*decode(k)[:2])
        counts[canon] = counts.get(canon, 0) + n
    for raw in last:
        canon = _canonical(*decode(raw)[:2])
        counts[canon] = counts.get(canon, 0) + 1
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


QUIET_S = 0.02  # a CPU whose record has not changed for this long has finished its last run
CLOSE_S = 0.5  # at most this long to wait for every CPU to finish or go quiet


def _close(maps: PathMaps, window: int) -> list[bytes]:
    """Close WINDOW; the records of runs in it that no later run has counted (each CPU's last).

    A record is read only when it is at rest. The reader copies a CPU's record while that CPU
    may be writing it: taken while traffic goes on, it is often a run half-way through (a path
    with no end, or one program's hops and another's). So the window closes in two steps:
    first runs stop joining it but still count the run before them on their CPU (on a CPU with
    traffic the window's last run is counted by the next one, in BPF, whole); then the CPUs
    whose record is still of the window and has not changed for QUIET_S are read: no run is
    writing them (a run lasts microseconds and is not preempted: BH is off while it runs)."""
    maps.collecting(window | CLOSING)
    deadline = time.monotonic() + CLOSE_S
    seen: dict[int, tuple[bytes, float]] = {}
    while True:
        now = time.monotonic()
        quiet = {}
        for cpu, raw in enumerate(maps.records()):
            if window_of(raw) != window:
                continue
            old = seen.get(cpu)
            since = old[1] if old is not None and old[0] == raw else now
            seen[cpu] = (raw, since)
            quiet[cpu] = now - since >= QUIET_S
        if all(quiet.values()) or now >= deadline:
            break
        time.sleep(0.002)
    maps.collecting(0)
    # A run that began just before the switch went off may have counted its CPU's record
    # since: what changed is not taken from the record.
    return [raw for cpu, raw in enumerate(maps.records()) if quiet.get(cpu) and seen[cpu][0] == raw]


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
