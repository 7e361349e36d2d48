"""Session-wide prog arrays: one kernel map per name, pinned so every cell's
BCC module opens the same map, with named keys and a record of what is in
each slot."""

from __future__ import annotations

import functools
import glob
import os
import platform
import re
import threading
import types
import weakref
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field

from .c.instrument import IMPLIED_CALLS, IMPLIED_MISSED
from .errors import NotFound, SlotError, UsageProblem
from .kernel import libbpf, pins
from .kernel.counters import CounterTable
from .kernel.progtypes import prog_type_name

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")  # used with fullmatch: `$` would let a final "\n" pass
MAX_ARRAY_SIZE = 1 << 20


def check_name(kind: str, name: str, max_len: int = 63) -> str:
    """Names become C identifiers and path components: only identifiers pass,
    so no name can reach a path outside the session's pin directory."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > max_len:
        raise UsageProblem(
            f"bad {kind} name {name!r}: use a C identifier (letters, digits, _; not starting with a digit; at most {max_len} characters)"
        )
    return name


@functools.lru_cache(maxsize=1)
def syscall_numbers() -> dict[str, int]:
    """Syscall name -> number for the running architecture, from the uapi
    unistd header of the installed libc headers, else BCC's table."""
    machine = platform.machine()
    candidates = {
        "x86_64": ["/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm/unistd_64.h"],
        "aarch64": ["/usr/include/aarch64-linux-gnu/asm/unistd.h", "/usr/include/asm-generic/unistd.h"],
    }.get(machine, []) + glob.glob("/usr/include/*/asm/unistd_64.h")
    table: dict[str, int] = {}
    for path in candidates:
        try:
            with open(path) as f:
                for m in re.finditer(r"#define\s+__NR_(\w+)\s+(\d+)\b", f.read()):
                    table.setdefault(m[1], int(m[2]))
        except OSError:
            continue
        if table:
            return table
    try:
        from bcc.syscall import syscalls  # BCC's (older) x86_64 table

        return {v.decode(): k for k, v in syscalls.items()}
    except Exception:
        return {}


def syscall_names() -> dict[int, str]:
    return {v: k for k, v in syscall_numbers().items()}


@dataclass(eq=False, kw_only=True)
class CallCounters:
    """The per-slot tail-call counters of a ProgArray (its base), split by occupant:
    what the calls into each slot were while each program sat there. Uses the
    array's ``name``, ``size`` and occupancy (``_entries``)."""

    # Counters bumped by the rewritten ARRAY.call() (a kernel/counters.CounterTable): [key] calls
    # made, [size + key] calls that fell through (empty slot or the 33-call limit), [2 * size]
    # calls past the end. Kernel run stats can't give this: a tail-call target's run_cnt never moves.
    counters: CounterTable | None = None
    counter_pin: str = ""
    # The counters are per index and never reset; these split them by occupant, so a
    # program is credited only with the calls made while it sat in a slot.
    # (calls, missed) at each index when its current occupant (or emptiness) came:
    baselines: dict[int, tuple[int, int]] = field(default_factory=dict)
    # program -> {index: (calls, missed)} of its finished stays; weak: gone with the program.
    earned: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)
    # Call sites with a constant slot count in the session's sites map instead (one counter per
    # hop, c/instrument.const_site_keys): (site id, index) of each, and the CallSites that holds them.
    implied: list[tuple[int, int]] = field(default_factory=list)
    sites: object = None

    def call_counts(self) -> tuple[list[int], list[int]]:
        """(calls, missed) per index, summed over CPUs; one more entry, at index ``size``, for
        the calls past the end of the array (every one of them missed: there is no slot)."""
        # Missed first, then calls: numbers read together agree (every miss counted had its
        # call counted before it). While programs run, a call in flight may show as taken for a moment.
        past = self.counters.sum(2 * self.size)
        missed = self.counters.sums(self.size, start=self.size) + [past]
        self._add_implied(missed, IMPLIED_MISSED)
        calls = self.counters.sums(self.size) + [past]
        self._add_implied(calls, IMPLIED_CALLS)
        return calls, missed

    def _add_implied(self, counts: list[int], run: int) -> None:
        """Add what the constant-slot call sites counted in run RUN of the sites map (one batch read)."""
        table = getattr(self.sites, "table", None)
        if not self.implied or table is None:
            return
        first = min(site for site, _ in self.implied)
        values = table.sums(max(site for site, _ in self.implied) - first + 1, start=run + first)
        for site, index in self.implied:
            counts[index] += values[site - first]

    def counts_at(self, index: int) -> tuple[int, int]:
        """(calls, missed) at one index since the array was created."""
        if self.counters is None or self.counters.fd < 0:
            return 0, 0
        if index >= self.size:  # past the end: every call missed
            past = self.counters.sum(2 * self.size)
            return past, past
        sites = [site for site, i in self.implied if i == index]
        table = getattr(self.sites, "table", None) if sites else None
        # missed first: see call_counts
        missed = self.counters.sum(self.size + index)
        missed += sum(table.sum(IMPLIED_MISSED + site) for site in sites) if table is not None else 0
        calls = self.counters.sum(index)
        calls += sum(table.sum(IMPLIED_CALLS + site) for site in sites) if table is not None else 0
        return calls, missed

    def credited(self, program, counts: dict | None = None) -> dict[int, tuple[int, int]]:
        """index -> (calls, missed) into this array's slots while PROGRAM sat in
        them: its finished stays plus the current ones. ``counts``: a
        slot_counts() reading to use instead of reading the counters again."""
        out = dict(self.earned.get(program, {}))
        for index, occupant in self._entries.items():
            if occupant is program:
                now = self.counts_at(index) if counts is None else counts.get((self.name, index), (0, 0))
                c0, m0 = self.baselines.get(index, (0, 0))
                c, m = out.get(index, (0, 0))
                out[index] = (c + now[0] - c0, m + now[1] - m0)
        return out

    def _turn_over(self, index: int) -> None:
        """End the stay of whatever is at index (crediting its program) and start the next.
        A call in flight during the map update may land on either side."""
        now = self.counts_at(index)
        occupant = self._entries.get(index)
        if occupant is not None:
            c0, m0 = self.baselines.get(index, (0, 0))
            stays = self.earned.setdefault(occupant, {})
            c, m = stays.get(index, (0, 0))
            stays[index] = (c + now[0] - c0, m + now[1] - m0)
        self.baselines[index] = now


@dataclass(eq=False)
class ProgArray(CallCounters, MutableMapping):
    """A prog array of the session: its map fd (the session's own reference),
    its pin, its key names, and which program sits in each slot. The array is
    the one record of its occupancy (put, clear, adopt, move, release, rekey);
    a module's slots are read from the arrays (Module.slots).

    As a mapping, key -> the Program in that slot: ``arr["write"] = program``
    (a new name takes the lowest free index), ``del arr["write"]``,
    ``arr["write"]``, ``list(arr)`` (the keys of the filled slots), ``len(arr)``."""

    name: str
    size: int
    fd: int
    pin: str
    declared_type: str | None = None
    keys: str | None = None  # "syscalls" or None
    names: dict[str, int] = field(default_factory=dict)
    _entries: dict[int, object] = field(default_factory=dict, repr=False)  # index -> Program
    # Held by every change and read of the mapping (the session's lock when the session made it).
    lock: object = field(default_factory=threading.RLock, repr=False)

    __hash__ = object.__hash__  # one array is one kernel map: equal only to itself
    __eq__ = object.__eq__

    @property
    def entries(self) -> types.MappingProxyType:
        """index -> Program of the filled slots (read-only: the methods below change it)."""
        return types.MappingProxyType(self._entries)

    def __repr__(self) -> str:
        keys = "syscall keys" if self.keys == "syscalls" else f"{len(self.names)} named slots"
        return f"<ProgArray {self.name}: {self.size} slots of {self.owner_type or 'any type yet'}, {keys}, {len(self.entries)} filled>"

    # -- type
    @property
    def owner_type(self) -> str | None:
        """The type the kernel fixed for this array (set by the first program
        that uses it), else the one declared with --type."""
        info = libbpf.fdinfo(self.fd)
        if "owner_prog_type" in info:
            return prog_type_name(int(info["owner_prog_type"]))
        return self.declared_type

    @property
    def map_id(self) -> int:
        return int(libbpf.fdinfo(self.fd)["map_id"])

    # -- keys
    def label(self, index: int) -> str:
        """ARRAY[KEY] as every view shows a slot: the key's name if it has one, else the index."""
        return f"{self.name}[{self.key_name(index) or index}]"

    def key_name(self, index: int) -> str | None:
        if index >= self.size:
            return f"past the end (>= {self.size})"
        if self.keys == "syscalls":
            return syscall_names().get(index)
        for name, i in self.names.items():
            if i == index:
                return name
        return None

    def resolve(self, key: str | int, allocate: bool = False, pending: dict | None = None) -> int:
        """Index of KEY: an integer, a syscall name (keys=syscalls) or a
        registered name. With ``allocate`` a new name takes the lowest free
        index; it goes into ``pending`` (committed only when the cell loads)."""
        if isinstance(key, str) and re.fullmatch(r"0\d+", key):  # C would read 010 as octal 8: no guessing
            raise SlotError(f"{self.name}[{key}]: a slot index has no leading zero; write {int(key, 10)} (or 0x{int(key, 10):x})")
        if isinstance(key, int) or (isinstance(key, str) and re.fullmatch(r"\d+|0[xX][0-9a-fA-F]+", key)):
            index = int(key, 0) if isinstance(key, str) else key
            if not 0 <= index < self.size:
                raise SlotError(f"{self.name}[{index}]: index out of range (the array has {self.size} slots: 0..{self.size - 1})")
            return index
        if self.keys == "syscalls":
            number = syscall_numbers().get(key)
            if number is None:
                raise SlotError(f"{self.name}[{key}]: {key!r} is not a syscall of {platform.machine()}")
            if number >= self.size:
                raise SlotError(
                    f"{self.name}[{key}]: syscall {key} is number {number}, beyond the array's {self.size} slots; "
                    f"recreate it bigger (%bpf progarray {self.name} 512 --keys syscalls)"
                )
            return number
        check_name("slot", key)
        if key in self.names:
            return self.names[key]
        if pending is not None and key in pending:
            return pending[key]
        if not allocate:
            known = ", ".join(f"{n}={i}" for n, i in sorted(self.names.items(), key=lambda kv: kv[1])) or "none"
            raise SlotError(f"{self.name}[{key}]: no slot named {key!r} (named slots: {known})")
        taken = set(self.names.values()) | set(self._entries) | set((pending or {}).values())
        free = next((i for i in range(self.size) if i not in taken), None)
        if free is None:
            raise SlotError(f"{self.name}: no free slot left for {key!r} (all {self.size} in use)")
        if pending is not None:
            pending[key] = free
        else:
            self.names[key] = free
        return free

    # -- slots (kernel side)
    def put(self, index: int, program) -> None:
        """Store program at index; a type the array cannot hold is refused with both types named."""
        have = self.owner_type
        if have and have != program.type:
            raise SlotError(self.mismatch(program, have), **self._fields(index, program))
        try:
            libbpf.map_update_u32(self.fd, index, program.fd)
        except OSError as e:
            have = self.owner_type
            if have and have != program.type:
                raise SlotError(self.mismatch(program, have), **self._fields(index, program)) from None
            raise SlotError(
                f"{self.name}[{index}] = {program.qualname}: the kernel refused it ({e.strerror})", **self._fields(index, program), errno=e.errno
            ) from None
        self._turn_over(index)
        self._entries[index] = program

    def _fields(self, index: int, program=None) -> dict:
        return {"array": self.name, "key": self.key_name(index) or index, "program": program.qualname if program is not None else None}

    def mismatch(self, program, have: str) -> str:
        return (
            f"{self.name} holds {have} programs (the first program that used it fixed the type); "
            f"{program.qualname} is a {program.type} program. Tail calls only reach programs of the "
            f"caller's type: load {program.name} as {have} (its context parameter must fit), "
            f"or use another array."
        )

    def clear(self, index: int) -> None:
        libbpf.map_delete_u32(self.fd, index)
        self._turn_over(index)
        self._entries.pop(index, None)

    def adopt(self, index: int, program) -> None:
        """Record PROGRAM at INDEX where the loader put it already (libbpf fills a prog
        array declared with ``.values``): no map update, the stay starts now."""
        self._turn_over(index)
        self._entries[index] = program

    def move(self, old: int, new: int) -> None:
        """The program at OLD goes to NEW (NEW filled first: a call never finds neither)."""
        program = self._entries.get(old)
        if program is not None and old != new:
            self.put(new, program)
            self.clear(old)

    def held_by(self, module) -> list[int]:
        """The indices whose program is one of MODULE's, in order."""
        return sorted(i for i, p in self._entries.items() if p.module is module)

    def slots_of(self, program) -> list[str]:
        """ARRAY[KEY] of every slot PROGRAM sits in."""
        return [self.label(i) for i in sorted(self._entries) if self._entries[i] is program]

    def release(self, module) -> list[str]:
        """Empty every slot holding one of MODULE's programs (its module is going); returns
        what emptied, ARRAY[KEY] (was MODULE.FUNC)."""
        emptied = []
        for index in self.held_by(module):
            program = self._entries[index]
            try:
                self.clear(index)
            except OSError:
                continue
            emptied.append(f"{self.label(index)} (was {program.qualname})")
        return emptied

    def rekey_to_syscalls(self, compiled_in: set[str]) -> bool:
        """Switch an array whose slot names are all syscall names to syscall keys, moving
        each named program to its syscall's index (DESIGN's own example slots progs[write]
        first and asks for syscall keys after). Refused (False) when a name's old index is
        compiled into a loaded program (COMPILED_IN: the names SLOT() uses), or when the move
        would overwrite a slot."""
        numbers = syscall_numbers()
        if self.keys is not None or not self.names:
            return False
        if any(n not in numbers or numbers[n] >= self.size for n in self.names) or compiled_in & set(self.names):
            return False
        moves = {self.names[n]: numbers[n] for n in self.names}
        if any(new in self._entries and new not in moves for new in moves.values()):
            return False
        programs = {old: self._entries.get(old) for old in moves}
        for old, new in moves.items():  # every new index filled first, then the old ones emptied
            if programs[old] is not None and old != new:
                self.put(new, programs[old])
        for old, new in moves.items():
            if programs[old] is not None and old != new and old not in moves.values():
                self.clear(old)
        self.names.clear()
        self.keys = "syscalls"
        return True

    # -- the mapping: key -> Program
    def assign(self, key: str | int, program) -> int:
        """Put PROGRAM (a loaded Program) into slot KEY; a new name takes the lowest free
        index, kept only once the slot is filled. Returns the index."""
        with self.lock:
            program.require_loaded()
            pending: dict[str, int] = {}
            index = self.resolve(key, allocate=True, pending=pending)
            self.put(index, program)
            self.names.update(pending)
            return index

    def remove(self, key: str | int):
        """Empty slot KEY; returns the program that was there (None if it was empty)."""
        with self.lock:
            index = self.resolve(key)
            previous = self._entries.get(index)
            self.clear(index)
            return previous

    def _index_of(self, key) -> int:
        """KEY's index for a lookup: KeyError (NotFound) for what names no slot."""
        try:
            return self.resolve(key)
        except (SlotError, UsageProblem) as e:
            raise NotFound(e.message, "slot", str(key), tuple(map(str, self))) from None

    def __getitem__(self, key):
        with self.lock:
            index = self._index_of(key)
            if index not in self._entries:
                raise NotFound(f"{self.label(index)} is empty", "slot", str(key), tuple(map(str, self)))
            return self._entries[index]

    def __setitem__(self, key, program) -> None:
        self.assign(key, program)

    def __delitem__(self, key) -> None:
        with self.lock:
            index = self._index_of(key)
            if index not in self._entries:
                raise NotFound(f"{self.label(index)} is empty", "slot", str(key), tuple(map(str, self)))
            self.clear(index)

    def __iter__(self) -> Iterator[str | int]:
        """The keys of the filled slots: the name where the index has one, else the index."""
        with self.lock:
            return iter([self.key_name(i) or i for i in sorted(self._entries)])

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        # Emptied, every slot, before the session lets go of it (pins.empty_prog_array says
        # why); without crediting anyone: the counts go with the array.
        pins.empty_prog_array(self.fd)
        self._entries.clear()
        for path in (self.pin, self.counter_pin):
            with _suppress():
                os.unlink(path)
        with _suppress():
            os.close(self.fd)
        self.fd = -1
        if self.counters is not None:
            with _suppress():
                self.counters.close()


def uncounted_callers(modules) -> dict[str, list[str]]:
    """array name -> the loaded modules whose tail calls into it go uncounted (loaded with
    --no-count): its counts are then unknown."""
    out: dict[str, list[str]] = {}
    for module in modules:
        for name in sorted(module.uncounted_arrays):
            out.setdefault(name, []).append(module.name)
    return out


def not_counted_note(blind: dict[str, list[str]]) -> str:
    """One line for a table whose call counts are blanked (<NA>) because of BLIND."""
    parts = [f"{array} (by {', '.join(mods)})" for array, mods in sorted(blind.items())]
    return (
        "tail calls not counted into " + "; ".join(parts) + ": their calls/taken/missed are <NA> while those modules are "
        "loaded (they were loaded with --no-count; load them again without it to count)"
    )


def slot_counts(arrays) -> dict[tuple[str, int], tuple[int, int]]:
    """(array name, index) -> (calls, missed) since the array was created, for
    every slot whose counters moved: one batch read per array."""
    out = {}
    for array in arrays:
        calls, missed = array.call_counts()
        for index, (c, m) in enumerate(zip(calls, missed)):
            if c or m:
                out[(array.name, index)] = (c, m)
    return out


def _suppress():
    import contextlib

    return contextlib.suppress(OSError)


def create(name: str, size: int, pin: str, prog_type: str | None = None, keys: str | None = None, lock=None) -> ProgArray:
    """The kernel maps of a new array (the prog array and its call counters),
    pinned. Session.progarray has checked every argument already."""
    fd, counters = -1, None
    try:
        fd = libbpf.map_create_prog_array(name, size)
        # [i] calls into slot i, [size + i] those that missed, [2 * size] calls past the end
        counters = CounterTable(name[:11] + "_tcc", 2 * size + 1)
        libbpf.obj_pin(fd, pin)
        pins.make_dir(os.path.join(os.path.dirname(pin), "calls"))
        libbpf.obj_pin(counters.fd, counter_pin(pin))
    except OSError:
        if fd >= 0:
            os.close(fd)
        if counters is not None:
            counters.close()
        with _suppress():
            os.unlink(pin)
        raise
    array = ProgArray(name=name, size=size, fd=fd, pin=pin, declared_type=prog_type, keys=keys, counters=counters, counter_pin=counter_pin(pin))
    if lock is not None:
        array.lock = lock
    return array


def counter_pin(pin: str) -> str:
    """Where an array's call counters are pinned (bpffs refuses dots in names)."""
    return os.path.join(os.path.dirname(pin), "calls", os.path.basename(pin))
