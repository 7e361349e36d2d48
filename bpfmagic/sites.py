"""Per call site counters: one counter table for the whole session, ``__bm_sites``
(kernel/counters.py: a row per CPU, bumped at a fixed address),
with five runs of SITES counters (calls, fell through, of those the limit; and
calls and fall-throughs at sites whose key is one constant slot, which the
slot's counts include: c/instrument.const_site_keys).

Each load that counts gets a base; a site's id is base + the line of the cell
it is on, and a function's id is base + the line of its definition (paths
name hops by those). The map is made on first use and pinned (its pin names
it in the session's directory); cells reach it by its fd (BCC) or as their
``.bss.__bm_sites`` (--core)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from .c.analysis import constant_key
from .c.instrument import IMPLIED_CALLS, IMPLIED_MISSED, SITES, SITES_ENTRIES
from .kernel.counters import CounterTable

MISSES_COLUMNS = ["module", "function", "line", "array", "key", "slot", "calls", "taken", "missed", "slot_empty", "limit_reached"]


class CallSites:
    """The session's call-site counters and which load owns which ids."""

    def __init__(self, pin_map: Callable[[int, str], str]):
        self._pin_map = pin_map  # pins a new map under the session's directory, returns the pin
        self.table: CounterTable | None = None
        self.pin = ""
        self._next = 0
        self._owners: list = []  # (base, lines, syntax, module name) of every load with site ids

    def allocate(self, syntax, module_name: str) -> int | None:
        """A base for a load's ids; None when the map is full (then only per-slot counts)."""
        lines = _lines(syntax.source)
        if self._next + lines > SITES:
            return None
        if self.table is None:
            table = CounterTable("bm_sites", SITES_ENTRIES)
            try:
                self.pin = self._pin_map(table.fd, "bm_sites")
            except OSError:
                table.close()
                raise
            self.table = table
        base = self._next
        self._next += lines
        self._owners.append((base, lines, syntax, module_name))
        return base

    def owner(self, site: int):
        """(base, lines, syntax, module name) of the load a site or function id belongs to."""
        for owner in self._owners:
            if owner[0] <= site < owner[0] + owner[1]:
                return owner
        return None

    def name(self, site: int) -> str | None:
        """MODULE.FUNC of a function id (MODULE:LINE for an id that is no function's)."""
        owner = self.owner(site)
        if owner is None:
            return None
        base, _, syntax, module_name = owner
        line = site - base
        fn = next((f.name for f in syntax.functions.values() if f.line == line), None)
        return f"{module_name}.{fn}" if fn else f"{module_name}:{line}"

    def counts(self, module) -> dict[int, tuple[int, int]]:
        """line of the cell -> (calls, fell through) at MODULE's tail-call site(s) on that line
        (fall-throughs read first, so they never exceed the calls)."""
        if module.site_base is None or self.table is None:
            return {}
        lines, base, table = _lines(module.source), module.site_base, self.table
        missed = table.sums(lines, start=SITES + base)
        missed_implied = table.sums(lines, start=IMPLIED_MISSED + base)
        calls = table.sums(lines, start=base)
        calls_implied = table.sums(lines, start=IMPLIED_CALLS + base)
        return {t.line: (calls[t.line] + calls_implied[t.line], missed[t.line] + missed_implied[t.line]) for t in module.syntax.tail_calls}

    def imply(self, base: int, implied: dict[int, tuple[str, int]], arrays: dict) -> None:
        """Credit the constant-slot call sites of a load (line -> (array, index)) to their slots."""
        for line, (name, index) in implied.items():
            array = arrays[name]
            array.sites = self
            array.implied.append((base + line, index))

    def misses(self, modules, arrays):
        """Session.misses(): why tail calls fell through, per call site of MODULES."""
        import pandas as pd

        rows = []
        for m in modules:
            if m.site_base is None or self.table is None:
                continue
            limit = self.table.sums(_lines(m.source), start=2 * SITES + m.site_base)
            counts = self.counts(m)
            for t in m.syntax.tail_calls:
                calls, missed = counts.get(t.line, (0, 0))
                lim = limit[t.line] if m.paths else None  # the split is recorded only with paths on
                a = arrays.get(t.array) if t.array else None
                index = constant_key(t.key, m.source, a.resolve) if a is not None and t.kind != "chain" else None
                slot = a.label(index) if index is not None and 0 <= index < a.size else None
                rows.append(
                    {
                        "module": m.name,
                        "function": t.function,
                        "line": t.line,
                        "array": t.array,
                        "key": t.key,
                        "slot": slot,
                        "calls": calls,
                        "taken": calls - missed,
                        "missed": missed,
                        "slot_empty": missed - lim if lim is not None else None,
                        "limit_reached": lim,
                    }
                )
        df = pd.DataFrame(rows, columns=MISSES_COLUMNS)
        for col in ("slot_empty", "limit_reached"):
            df[col] = df[col].astype("Int64")
        return df.drop_duplicates(["module", "line"]).reset_index(drop=True)

    def free(self) -> None:
        """The map and every id (the next load that counts makes them again)."""
        if self.table is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.pin)
            self.table.close()
            self.table = None
        self._next = 0
        self._owners.clear()


def _lines(source: str) -> int:
    return source.count("\n") + 2  # ids for every line, and the one past the last
